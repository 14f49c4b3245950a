"""The terminal shows values as they are: a bracketed value is text, never rich markup."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from rich.console import Console

from lossweep.sweep.console import Plan, SweepMonitor, print_leaderboard
from lossweep.sweep.leaderboard import Leaderboard, Row
from lossweep.sweep.protocol import Phase, Tag, TrialState

CONFIG = {"loss": "MultipleNegativesRankingLoss", "MultipleNegativesRankingLoss": {"directions": ["query_to_doc"]}}


def fake_run(run_id: str, scale: float) -> SimpleNamespace:
    config = CONFIG | {"MultipleNegativesRankingLoss": CONFIG["MultipleNegativesRankingLoss"] | {"scale": scale}}
    now = int(time.time() * 1000)
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, start_time=now - 5000, end_time=now),
        data=SimpleNamespace(
            tags={
                Tag.PHASE: Phase.SEARCH,
                Tag.LOSS: "MNRL [pairs]",
                Tag.STATE: TrialState.COMPLETED,
                Tag.TRIAL_CONFIG: json.dumps(config),
            },
            metrics={"train/step": 10, "train/loss": 0.5, "eval/val/ndcg_at_10": 0.4},
            params={},
        ),
    )


def test_the_live_table_and_the_event_lines_keep_bracketed_values():
    runs = [fake_run("a" * 32, 10.0), fake_run("b" * 32, 20.0)]
    plan = Plan("p" * 32, 2, 1, 10, "eval/val/ndcg_at_10")
    console = Console(record=True, width=200)
    monitor = SweepMonitor(console, "sqlite:///unused.db", plan)
    console.print(monitor.render(runs))
    table = console.export_text()
    assert "MNRL [pairs]" in table and "scale=10" in table
    console = Console(record=True, width=200, force_terminal=False)
    SweepMonitor(console, "sqlite:///unused.db", plan)._events(runs)
    assert "MNRL [pairs]" in console.export_text()


def test_the_leaderboard_keeps_bracketed_values():
    row = Row("MultipleNegativesRankingLoss", config={"directions": ["query_to_doc"]}, selection=0.5, selected=True)
    board = Leaderboard("search", "eval/val/ndcg_at_10", "val", None, rows=[row], verdict="Selected [x] on val.")
    console = Console(record=True, width=300)
    print_leaderboard(board, console)
    text = console.export_text()
    assert "directions=[query_to_doc]" in text and "Selected [x] on val." in text
