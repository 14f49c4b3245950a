"""Hard negatives: the shapes each loss takes, no judged-relevant document as a negative, mined once
and read from the cache by every trial, and bad requests refused before Ray starts."""

from __future__ import annotations

import json
import subprocess

import datasets
import pytest
import yaml
from mlflow.tracking import MlflowClient

from lossweep.sweep import negatives
from lossweep.sweep.cli import main
from lossweep.sweep.inputs import mining_input, train_pairs
from lossweep.sweep.models import load_model
from lossweep.sweep.phases import run_sweep
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import Tracker

MINED = datasets.Dataset.from_dict(
    {
        "anchor": ["q1", "q1", "q2"],
        "positive": ["d1", "d2", "d3"],
        "negative_1": ["d4", "d4", "d1"],
        "negative_2": ["d5", "d5", "d6"],
        "scores": [[0.9, 0.5, 0.4], [0.8, 0.5, 0.4], [0.7, 0.6, 0.3]],
    }
)


def test_each_loss_gets_the_shape_it_takes():
    assert negatives.shape_for("MultipleNegativesRankingLoss") == "n-tuple"
    assert negatives.shape_for("TripletLoss") == "triplets"
    assert negatives.shape_for("GISTEmbedLoss") == "triplets"  # at most one negative
    assert negatives.shape_for("OnlineContrastiveLoss") == negatives.shape_for("ContrastiveLoss") == "labeled-pairs"
    assert negatives.shape_for("CoSENTLoss") is None  # scored pairs: nothing to do with negatives
    assert negatives.shape_for("TripletLoss", "labeled-pairs") is None

    assert negatives.shape(MINED, "n-tuple").column_names == ["anchor", "positive", "negative_1", "negative_2"]
    triplets = negatives.shape(MINED, "triplets")
    assert len(triplets) == 6 and triplets[1] == {"anchor": "q1", "positive": "d1", "negative": "d5"}
    pairs = negatives.shape(MINED, "labeled-pairs")
    rows = set(zip(pairs["sentence1"], pairs["sentence2"], pairs["label"], strict=True))
    assert rows == {
        ("q1", "d1", 1), ("q1", "d2", 1), ("q2", "d3", 1),
        ("q1", "d4", 0), ("q1", "d5", 0), ("q2", "d1", 0), ("q2", "d6", 0),
    }  # fmt: skip
    assert len(pairs) == len(rows)  # q1's negatives once, not once per positive


def test_documents_judged_relevant_are_never_negatives_and_spares_fill_in():
    # q2's mined d1 is judged relevant to q2 (a judgement the pairs do not hold): it is dropped and
    # the next candidate takes its place; a row left short of negatives is dropped.
    kept, dropped = negatives._without_relevant(MINED, {"q2": {"d1", "d3"}}, wanted=1)
    assert dropped == 1
    assert kept["negative_1"] == ["d4", "d4", "d6"] and kept["scores"][2] == [0.7, 0.3]
    kept, dropped = negatives._without_relevant(MINED, {"q2": {"d1", "d6"}}, wanted=2)
    assert kept["anchor"] == ["q1", "q1"] and dropped == 2


@pytest.mark.slow
def test_mining_cranfield_drops_every_judged_relevant_document(data_dir, tmp_path):
    # One pair per query (its most relevant document), as many training sets have it: the other
    # documents judged relevant are not in the pairs, so sentence-transformers alone would take the
    # ones it ranks high as negatives.
    spec = parse_spec(
        {
            "name": "mine",
            "data_dir": str(data_dir),
            "model": "minilm",
            "max_seq_length": 64,
            "train": {"path": "cranfield", "split": "train", "view": "top-pairs"},
            "negatives": {"num_negatives": 3, "range_max": 30},
            "loss": {"name": "TripletLoss"},
            "training": {"steps": 1},
        }
    )
    inputs = mining_input(spec, train_pairs(spec))
    model = load_model("minilm")
    model.max_seq_length = 64
    summary = negatives.mine(inputs, negatives.knobs(spec), model, tmp_path / "cache")
    mined = negatives.read(tmp_path / "cache")
    assert summary["dropped_false_negatives"] > 0 and summary["rows"] == len(mined) > 0
    several = 0
    for row in mined:
        relevant = inputs.relevant[row["anchor"]]
        several += len(relevant) >= 5
        assert not relevant & {row["negative_1"], row["negative_2"], row["negative_3"]}
        assert row["scores"][1] >= row["scores"][2] >= row["scores"][3]  # still the hardest first
    assert several, "no query with several relevant documents was mined"
    assert set(summary["score_margin_quantiles"]) == {"p5", "p25", "p50", "p75", "p95"}


def test_losses_with_negatives_lists_what_mining_makes_eligible(data_dir, capfd):
    assert main(["losses", "--data", str(data_dir / "cranfield"), "--negatives", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capfd.readouterr().out)}
    assert not rows["TripletLoss"]["fits"] and rows["TripletLoss"]["fits_with_mined_negatives"].startswith("triplets")
    assert rows["OnlineContrastiveLoss"]["fits_with_mined_negatives"] == "labeled pairs (1 / 0)"
    assert rows["MultipleNegativesRankingLoss"]["fits"]
    assert rows["CoSENTLoss"]["fits_with_mined_negatives"] is None


@pytest.mark.slow
def test_mined_once_then_every_trial_reads_the_cache(ray_local, data_dir, tiny_model_path, tmp_path):
    fixed = {"distance_metric": "cosine"}
    spec = {
        "name": "mined",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [
            {"type": "retrieval", "from_train": {"size": 20}, "name": "cranfield-val"},
            {"type": "retrieval", "path": "cranfield", "split": "test", "limit": 20, "name": "cranfield"},
        ],
        "negatives": {"num_negatives": 2},
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 3},
        "resources": {"workers": 1},
        "output_dir": str(tmp_path / "runs"),
        "mlflow": {"experiment": "mined"},
        "sweep": {
            "mode": "search",
            "sampler": "grid",
            "scheduler": "none",
            "max_concurrent": 2,
            "select_on": "cranfield-val",
            "losses": [
                {"name": "MultipleNegativesRankingLoss", "params": MNRL},
                {"name": "MultipleNegativesRankingLoss", "params": MNRL, "negatives": True},
                {"name": "TripletLoss", "params": fixed | {"triplet_margin": 0.5}},
                {"name": "OnlineContrastiveLoss", "params": fixed | {"margin": 0.5}},
            ],
            "negatives": {"range_max": {"choices": [10, 20]}},
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    # Given the negatives mined ahead with `lossweep negatives` (a miss: both configs are mined)
    first = subprocess.run(["lossweep", "negatives", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count(": mined in") == 2 and "found in the cache" not in first.stdout
    assert "Batches" not in first.stdout + first.stderr and "(_mine pid=" not in first.stdout + first.stderr
    assert "logs of Ray and the workers:" in first.stdout  # Ray's output went to the log file
    caches = sorted((tmp_path / "runs" / "negatives").iterdir())
    written = {c.name: (c / "mined.parquet").stat().st_mtime_ns for c in caches}

    # When the sweep runs (a hit: nothing is mined again)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(parse_spec(spec), tracking_uri=uri)
    assert sum("found in the cache" in note for note in outcome.notes) == 2
    assert {c.name: (c / "mined.parquet").stat().st_mtime_ns for c in caches} == written

    # Then each trial that trains on negatives names the cached set it read, with its summary
    client = MlflowClient(uri)
    parent = client.get_run(outcome.parent_run_id)
    keys = json.loads(parent.data.tags["lossweep.negatives_keys"])
    assert sorted(keys) == sorted(written)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "negatives")} == {
        f"negatives/{k}.json" for k in keys
    }
    trials = [r for r in Tracker(uri).children(outcome.parent_run_id) if r.data.tags["lossweep.phase"] == "search"]
    by_loss = {}
    for run in trials:
        by_loss.setdefault(run.data.tags["lossweep.loss"], []).append(run)
        assert run.data.tags["lossweep.trial_state"] == "completed", run.data.tags.get("lossweep.error")
    assert {name: len(runs) for name, runs in by_loss.items()} == {
        "MultipleNegativesRankingLoss": 1,
        "MultipleNegativesRankingLoss + mined negatives": 2,
        "TripletLoss": 2,
        "OnlineContrastiveLoss": 2,
    }
    assert "lossweep.negatives_key" not in by_loss["MultipleNegativesRankingLoss"][0].data.tags
    for name in ("MultipleNegativesRankingLoss + mined negatives", "TripletLoss", "OnlineContrastiveLoss"):
        picked = set()
        for run in by_loss[name]:
            key = run.data.tags["lossweep.negatives_key"]
            summary = json.loads((tmp_path / "runs" / "negatives" / key / "summary.json").read_text())
            assert int(run.data.params["negatives.range_max"]) == summary["knobs"]["range_max"]
            assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"negatives.json"}
            picked.add(key)
        assert picked == set(keys)  # each loss trained on both mining configs


MNRL = {
    "scale": 20.0,
    "similarity_fct": "cos_sim",
    "directions": ["query_to_doc"],
    "partition_mode": "joint",
    "hardness_mode": None,
    "hardness_strength": 0.0,
}
