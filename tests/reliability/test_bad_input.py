"""Bad specs and datasets: one clear message naming the field or file and the fix, a non-zero exit,
and nothing half-written (no MLflow run, no checkpoint folder). Each case differs from those in
tests/sweep/test_spec.py and tests/losses/test_formats.py."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lossweep.sweep.cli import main


@pytest.fixture
def base(data_dir, tiny_model_path, tmp_path) -> dict:
    return {
        "name": "bad",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [{"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 50, "name": "sts"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 2},
        "output_dir": str(tmp_path / "runs"),
    }


def csv_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rows.csv"
    path.write_text(text)
    return str(path)


def beir_copy(tmp_path: Path, data_dir: Path, extra_qrel: str) -> str:
    folder = tmp_path / "beir"
    shutil.copytree(data_dir / "cranfield", folder)
    with (folder / "qrels" / "test.tsv").open("a") as handle:
        handle.write(extra_qrel)
    return str(folder)


SWEEP = {"mode": "search", "losses": ["MultipleNegativesRankingLoss"], "trials": 2, "scheduler": "none"}


def case(command: str, expected: str, spec=None, raw: str | None = None, own_store: bool = False):
    """`own_store`: the spec names its MLflow store, so the test passes no --tracking-uri."""
    return {"command": command, "expected": expected, "spec": spec, "raw": raw, "own_store": own_store}


CASES = {
    "malformed YAML": case("train", "line 2, column 8: not valid YAML", raw="name: x\n  train: [\n"),
    "YAML that is not a mapping": case("train", "a spec is a YAML mapping of fields", raw="- name: x\n"),
    "empty texts": case(
        "train",
        "column 'anchor' has 1 empty or missing texts: drop or fill those rows",
        spec=lambda s, t, d: s.update(
            train={"path": csv_file(t, "anchor,positive\nwing lift,lift on wings\n ,drag\n")}
        ),
    ),
    "labels of the wrong type": case(
        "train",
        "map the label strings to numbers, e.g. dataset.map(lambda row: {'score': float(...)})",
        spec=lambda s, t, d: s.update(
            loss={"name": "CoSENTLoss"}, train={"path": csv_file(t, "sentence1,sentence2,score\na,b,high\nc,d,low\n")}
        ),
    ),
    "qrels with an unknown corpus id": case(
        "train",
        "qrels/test.tsv:610: corpus id '99999' is not in corpus.jsonl; fix or drop the line",
        spec=lambda s, t, d: s.update(
            eval=[{"type": "retrieval", "path": beir_copy(t, d, "151\t99999\t2\n"), "split": "test"}]
        ),
    ),
    "qrels with an unknown query id": case(
        "train",
        "qrels/test.tsv:610: query id '9999' is not in queries.jsonl",
        spec=lambda s, t, d: s.update(
            eval=[{"type": "retrieval", "path": beir_copy(t, d, "9999\t12\t2\n"), "split": "test"}]
        ),
    ),
    "Matryoshka dims beyond the model in a sweep": case(
        "sweep",
        "sweep.shared.matryoshka_dims.choices: [64] exceed the model's embedding size 32",
        spec=lambda s, t, d: s.update(sweep=SWEEP | {"shared": {"matryoshka_dims": {"choices": [[32, 16], [64, 32]]}}}),
    ),
    "more workers than the cluster's CPUs": case(
        "train",
        "workers=8 x cpus_per_worker=1 needs 8 CPUs per trial, but this Ray cluster has 2",
        spec=lambda s, t, d: s.update(resources={"workers": 8}),
    ),
    "GPUs on a CPU-only cluster": case(
        "train",
        "gpus_per_worker=1 needs 1 GPUs per trial, but this Ray cluster has 0",
        spec=lambda s, t, d: s.update(resources={"workers": 1, "gpus_per_worker": 1}),
    ),
    "unreachable MLflow server": case(
        "train",
        "mlflow.tracking_uri: cannot reach the MLflow server at http://127.0.0.1:9",
        spec=lambda s, t, d: s.update(mlflow={"tracking_uri": "http://127.0.0.1:9"}),
        own_store=True,
    ),
    "read-only output folder": case(
        "train",
        "output_dir: /proc/lossweep-runs is not writable (checkpoints go there); choose a writable folder",
        spec=lambda s, t, d: s.update(output_dir="/proc/lossweep-runs"),
    ),
    "read-only MLflow store": case(
        "train",
        "cannot write the SQLite store /proc/lossweep/mlflow.db (read-only folder)",
        spec=lambda s, t, d: s.update(mlflow={"tracking_uri": "sqlite:////proc/lossweep/mlflow.db"}),
        own_store=True,
    ),
    "distillation without teacher labels": case(
        "train",
        "or set the spec's `teacher:` to a model that computes them",
        spec=lambda s, t, d: s.update(loss={"name": "DistillKLDivLoss"}, train={"path": "snli", "split": "dev"}),
    ),
    "a view on a data file": case(
        "train",
        "a data file has no views but ['texts', 'contrastive-tension', 'denoising']; drop view 'pairs'",
        spec=lambda s, t, d: s.update(train={"path": csv_file(t, "anchor,positive\na,b\n"), "view": "pairs"}),
    ),
    "STS evaluation on triplets": case(
        "train",
        "sts evaluation needs rows (sentence1, sentence2, score)",
        spec=lambda s, t, d: s.update(eval=[{"type": "sts", "path": "snli", "split": "test", "name": "nli"}]),
    ),
    "unknown loss in a sweep": case(
        "sweep",
        "sweep.losses[1].name: unknown loss 'TripletLos': did you mean TripletLoss",
        spec=lambda s, t, d: s.update(sweep=SWEEP | {"losses": ["MultipleNegativesRankingLoss", "TripletLos"]}),
    ),
    "a range for a parameter the loss lacks": case(
        "sweep",
        "sweep.params.MultipleNegativesRankingLoss.margin: MultipleNegativesRankingLoss has no parameter 'margin'",
        spec=lambda s, t, d: s.update(
            sweep=SWEEP | {"params": {"MultipleNegativesRankingLoss": {"margin": {"low": 0.1, "high": 1}}}}
        ),
    ),
    "a sweep metric no evaluation produces": case(
        "sweep",
        "sweep.metric: 'eval/other/ndcg_at_10' is not a metric of the selection set 'sts'; "
        "it produces eval/sts/spearman_cosine",
        spec=lambda s, t, d: s.update(sweep=SWEEP | {"metric": "eval/other/ndcg_at_10"}),
    ),
    "a log range through zero": case(
        "sweep",
        "sweep.shared.learning_rate.low: 0.0: a log range needs low > 0",
        spec=lambda s, t, d: s.update(
            sweep=SWEEP | {"shared": {"learning_rate": {"low": 0, "high": 1e-3, "log": True}}}
        ),
    ),
    "a folder that is not a model": case(
        "train",
        "not a model folder (no modules.json or config.json)",
        spec=lambda s, t, d: s.update(model=str(t)),
    ),
    "a hub dataset while offline": case(
        "train",
        "hub dataset 'nobody/no-such-dataset' (subset None, split train) could not be loaded",
        spec=lambda s, t, d: s.update(train={"hub": "nobody/no-such-dataset"}),
    ),
    "a sweep on epochs": case(
        "sweep",
        "training.epochs: sweeps compare trials on a fixed budget; set training.steps instead",
        spec=lambda s, t, d: s.update(training={"batch_size": 16, "epochs": 1}, sweep=SWEEP),
    ),
    "an unknown spec version": case(
        "train",
        "version: 2 is not supported; this lossweep reads version 1",
        spec=lambda s, t, d: s.update(version=2),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_clearly_and_leaves_nothing(name, base, ray_local, data_dir, tmp_path, capfd):
    given = CASES[name]
    path = tmp_path / "spec.yaml"
    if given["raw"] is not None:
        path.write_text(given["raw"])
    else:
        spec = copy.deepcopy(base)
        given["spec"](spec, tmp_path, data_dir)
        path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "mlflow.db"

    store_option = [] if given["own_store"] else ["--tracking-uri", f"sqlite:///{store}"]
    code = main([given["command"], str(path), *store_option])

    err = capfd.readouterr().err
    assert code != 0
    assert given["expected"] in err, err
    assert f"{path}: 1 error" in err, err  # the message names the spec file...
    if store.exists():  # ...and no run, not even a failed one, was written
        client = MlflowClient(f"sqlite:///{store}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_at_least_fifteen_distinct_cases():
    assert len(CASES) >= 15
    assert len({json.dumps(c["expected"]) for c in CASES.values()}) == len(CASES)
