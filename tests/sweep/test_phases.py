"""The sweep driver's pure parts: how many trials it plans, and the loss parameters it reads off the data,
for a modifier's base too. No Ray."""

from __future__ import annotations

import datasets

from lossweep.sweep.phases import _planned_trials, _with_data_params
from lossweep.sweep.space import build_space
from lossweep.sweep.spec import parse_spec


def spec(sweep: dict):
    data = {
        "name": "p",
        "train": {"path": "x"},
        "eval": [{"type": "retrieval", "path": "v", "name": "val"}, {"type": "retrieval", "path": "t", "name": "test"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"steps": 4},
        "sweep": {"select_on": "val", "scheduler": "none", "losses": ["MultipleNegativesRankingLoss", "TripletLoss"]}
        | sweep,
    }
    return parse_spec(data)


def test_the_trials_a_sweep_plans():
    search = spec({"mode": "search", "trials": 5})
    assert _planned_trials(search, build_space(search, None)[0]) == 5
    compare = spec({"mode": "compare", "trials": 3, "seeds": 4})
    assert _planned_trials(compare, build_space(compare, None)[0]) == 2 * 3 + 2 * 4
    adaptive = spec({"mode": "compare", "trials": 3, "seeds": {"min": 3, "max": 6}, "rescore": {"top": 2, "seeds": 1}})
    assert _planned_trials(adaptive, build_space(adaptive, None)[0]) == 2 * 3 + 2 * 2 * 1 + 2 * 3  # min seeds


def test_a_modifier_over_a_loss_that_reads_the_data_gets_its_parameters():
    # AdaptiveLayerLoss over SoftmaxLoss: SoftmaxLoss's num_labels is the data's number of classes
    adaptive = {"name": "AdaptiveLayerLoss", "base": {"name": "SoftmaxLoss"}}
    sweep = spec({"mode": "search", "losses": [adaptive, "SoftmaxLoss"]})
    rows = datasets.Dataset.from_dict({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"], "label": [0, 2, 1]})
    space = _with_data_params(build_space(sweep, rows)[0], rows)
    wrapped, plain = space.candidates
    assert wrapped.config.base.params["num_labels"] == 3 and "num_labels" not in wrapped.config.params
    assert plain.config.params["num_labels"] == 3
