"""Bad input, one table: every case gets its exit status (2: refused before anything ran; 0 for the
inputs that used to break and now work), a message naming the field or file and the fix, no
traceback, and nothing half-written (no MLflow run, no checkpoint folder). Each case differs from those
in tests/sweep/test_spec.py and tests/losses/test_formats.py."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
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


SWEEP = {"mode": "search", "losses": ["MultipleNegativesRankingLoss"], "trials": 2, "scheduler": "none"}
DEAD_SERVER = "http://127.0.0.1:5999"  # nothing listens there
STS_0_5 = "sentence1,sentence2,score\na man plays,a man is playing,4.8\na cat sits,the sky is blue,0.2\n"


@dataclass
class Case:
    """`argv` with {spec}, {store} (a SQLite store) and {tmp} filled in; `spec` changes the base spec
    (given it, tmp_path and the data folder) unless `raw` gives the file's text; `files` are written to
    tmp_path first; `store`: pass --tracking-uri {store} (not when the case names its own store)."""

    argv: list[str]
    code: int
    expected: tuple[str, ...]
    spec: Callable | None = None
    raw: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    store: bool = True
    ray: bool = False  # the check needs the cluster's size: a local Ray
    in_spec: bool = True  # a refused spec: the message names the spec file and counts its errors


def train(expected: str, spec=None, raw=None, **kwargs) -> Case:
    return Case(["train", "{spec}"], 2, (expected,), spec, raw, **kwargs)


def validate(expected: str, spec=None, code: int = 2, **kwargs) -> Case:
    return Case(["validate", "{spec}"], code, (expected,), spec, store=False, **kwargs)


def saved_dataset(tmp: Path) -> str:
    """A folder written by DatasetDict.save_to_disk, with a train split only."""
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})}).save_to_disk(
        str(tmp / "saved")
    )
    return str(tmp / "saved")


def beir_copy(tmp: Path, data: Path, extra_qrel: str) -> str:
    folder = tmp / "beir"
    shutil.copytree(data / "cranfield", folder)
    with (folder / "qrels" / "test.tsv").open("a") as handle:
        handle.write(extra_qrel)
    return str(folder)


CASES = {
    # --- The spec file itself
    "malformed YAML": train("line 2, column 8: not valid YAML", raw="name: x\n  train: [\n"),
    "YAML that is not a mapping": train("a spec is a YAML mapping of fields", raw="- name: x\n"),
    "a key given twice": train(
        "'training' is given twice (first on line 2); keep one", raw="a: 1\ntraining: {}\ntraining: {}\n"
    ),
    "a spec that is not text": Case(
        ["validate", "{tmp}/binary.yaml"], 2, ("not a text file",), files={"binary.yaml": "\udcff"}
    ),
    "a folder for a spec": Case(["validate", "{tmp}"], 2, ("file not found (it is a folder)",)),
    "an unknown spec version": train("version: 2 is not supported", spec=lambda s, t, d: s.update(version=2)),
    # --- Values, in the sections that read them
    "no workers": validate(
        "resources.workers: 0 must be at least 1", lambda s, t, d: s.update(resources={"workers": 0})
    ),
    "a sequence length of 0": validate("max_seq_length: 0 must be >= 1", lambda s, t, d: s.update(max_seq_length=0)),
    "a loss parameter of the wrong type": validate(
        "loss.params.scale: scale must be float, got '20' (str)",
        lambda s, t, d: s["loss"].update(params={"scale": "20"}),
    ),
    "a numeric range on a choice parameter": validate(
        "sweep.params.MultipleNegativesRankingLoss.similarity_fct: similarity_fct is a choice parameter, not a "
        "number: search it over choices, e.g. {choices: ['cos_sim', 'dot_score']}",
        lambda s, t, d: s.update(
            sweep=SWEEP | {"params": {"MultipleNegativesRankingLoss": {"similarity_fct": {"low": 1, "high": 2}}}}
        ),
    ),
    "a choice the parameter does not take": validate(
        "similarity_fct='cosine' is not one of ['cos_sim', 'dot_score']",
        lambda s, t, d: s.update(
            sweep=SWEEP
            | {"params": {"MultipleNegativesRankingLoss": {"similarity_fct": {"choices": ["cos_sim", "cosine"]}}}}
        ),
    ),
    "a searched range the parameter refuses": validate(
        "sweep.params.MultipleNegativesRankingLoss.scale: -5.0 cannot be searched: scale must be > 0",
        lambda s, t, d: s.update(
            sweep=SWEEP | {"params": {"MultipleNegativesRankingLoss": {"scale": {"low": -5, "high": 20}}}}
        ),
    ),
    "a negative learning rate searched": validate(
        "sweep.shared.learning_rate: cannot search -0.001: -0.001 must be > 0",
        lambda s, t, d: s.update(sweep=SWEEP | {"shared": {"learning_rate": {"low": -1e-3, "high": 1e-3}}}),
    ),
    "a corpus choice on a non-retrieval set": validate(
        "eval[0].corpus: only retrieval evaluation searches a corpus; drop it for a sts set",
        lambda s, t, d: s["eval"][0].update(corpus="own"),
    ),
    "two columns renamed to one": validate(
        "train.columns: two columns would be renamed to 'anchor'",
        lambda s, t, d: s["train"].update(columns={"a": "anchor", "b": "anchor"}),
    ),
    # --- Files and folders
    "a data file with only a header": validate(
        "rows.csv: no rows, only a header; add rows",
        lambda s, t, d: s.update(train={"path": str(t / "rows.csv")}),
        files={"rows.csv": "anchor,positive\n"},
    ),
    "an empty data file": validate(
        "rows.csv: the file is empty",
        lambda s, t, d: s.update(train={"path": str(t / "rows.csv")}),
        files={"rows.csv": ""},
    ),
    "a relative path that is not under data_dir": validate(
        "train: nowhere.csv: no such file or folder under data_dir",
        lambda s, t, d: s.update(train={"path": "nowhere.csv"}),
    ),
    "a split a saved dataset lacks": validate(
        "saved: no split 'dev'; the saved dataset has ['train']",
        lambda s, t, d: s.update(train={"path": saved_dataset(t), "split": "dev"}),
    ),
    "a JSONL file that is not JSON": validate(
        "rows.jsonl: cannot be read as jsonl (",
        lambda s, t, d: s.update(train={"path": str(t / "rows.jsonl")}),
        files={"rows.jsonl": '{"anchor": "a", "positive": "b"}\n{not json}\n'},
    ),
    "a subset on a local path": validate(
        "train.subset: is a hub dataset's configuration; a local path has none",
        lambda s, t, d: s["train"].update(subset="x"),
    ),
    "a tracking URI that is no store": Case(
        ["validate", "{spec}"],
        2,
        ("mlflow.tracking_uri: 'foo://bar' is not an MLflow tracking store",),
        lambda s, t, d: s.update(mlflow={"tracking_uri": "foo://bar"}),
        store=False,
        in_spec=False,
    ),
    "a column to rename that the data lacks": validate(
        "train: columns: ['question'] not in the data, whose columns are ['anchor', 'positive']",
        lambda s, t, d: s["train"].update(columns={"question": "anchor"}),
    ),
    "a float column not named as a label": validate(
        "if it is the label, name it 'score' (sentence-transformers reads label, labels, score, scores): in a spec "
        "`columns: {similarity: score}` on the data entry",
        lambda s, t, d: s.update(train={"path": str(t / "rows.csv")}, loss={"name": "CoSENTLoss"}),
        files={"rows.csv": "sentence1,sentence2,similarity\na,b,0.5\nc,d,0.1\n"},
    ),
    "empty texts": train(
        "column 'anchor' has 1 empty or missing texts: drop or fill those rows",
        spec=lambda s, t, d: s.update(train={"path": str(t / "rows.csv")}),
        files={"rows.csv": "anchor,positive\nwing lift,lift on wings\n ,drag\n"},
    ),
    "an eval set with missing texts": validate(
        "eval[0]: sts (",
        lambda s, t, d: s.update(eval=[{"type": "sts", "path": str(t / "sts.csv"), "name": "sts"}]),
        files={"sts.csv": "sentence1,sentence2,score\na,b,0.5\n,d,0.1\n"},
    ),
    "labels of the wrong type": train(
        "map the label strings to numbers, e.g. dataset.map(lambda row: {'score': float(...)})",
        spec=lambda s, t, d: s.update(loss={"name": "CoSENTLoss"}, train={"path": str(t / "rows.csv")}),
        files={"rows.csv": "sentence1,sentence2,score\na,b,high\nc,d,low\n"},
    ),
    "CosineSimilarityLoss on 0-5 scores": validate(
        "CosineSimilarityLoss cannot train on",
        lambda s, t, d: s.update(loss={"name": "CosineSimilarityLoss"}, train={"path": str(t / "sts.csv")}),
        files={"sts.csv": STS_0_5},
    ),
    "qrels with an unknown corpus id": train(
        "qrels/test.tsv:610: corpus id '99999' is not in corpus.jsonl; fix or drop the line",
        spec=lambda s, t, d: s.update(
            eval=[{"type": "retrieval", "path": beir_copy(t, d, "151\t99999\t2\n"), "split": "test"}]
        ),
    ),
    "qrels with an unknown query id": train(
        "qrels/test.tsv:610: query id '9999' is not in queries.jsonl",
        spec=lambda s, t, d: s.update(
            eval=[{"type": "retrieval", "path": beir_copy(t, d, "9999\t12\t2\n"), "split": "test"}]
        ),
    ),
    "a view on a data file": train(
        "a data file has no views but ['texts', 'contrastive-tension', 'denoising']; drop view 'pairs'",
        spec=lambda s, t, d: s.update(train={"path": str(t / "rows.csv"), "view": "pairs"}),
        files={"rows.csv": "anchor,positive\na,b\n"},
    ),
    "STS evaluation on triplets": train(
        "sts evaluation needs rows (sentence1, sentence2, score)",
        spec=lambda s, t, d: s.update(eval=[{"type": "sts", "path": "snli", "split": "test", "name": "nli"}]),
    ),
    "class evaluation on pairs": validate(
        "classes evaluation needs rows (text, label) with a class per text; found columns ['anchor', 'positive'] "
        "(rename them with `columns`",
        lambda s, t, d: s.update(eval=[{"type": "classes", "path": "snli", "split": "test", "view": "pairs"}]),
    ),
    "retrieval evaluation on class-labelled texts": validate(
        "retrieval from rows needs (query, document) pairs, found columns ['text', 'label']; rename the columns "
        "(spec: columns), or judge class-labelled texts with type: classes",
        lambda s, t, d: s.update(eval=[{"type": "retrieval", "path": "banking77", "split": "test"}]),
    ),
    "retrieval evaluation on similarity scores": validate(
        "label 'score' holds 4.8; retrieval reads it as a relevance grade",
        lambda s, t, d: s.update(eval=[{"type": "retrieval", "path": str(t / "sts.csv"), "name": "r"}]),
        files={"sts.csv": STS_0_5},
    ),
    "carving more class texts than there are": validate(
        "eval[0]: from_train.size: 20000 held-out texts would leave none of the 10003 training texts",
        lambda s, t, d: s.update(
            train={"path": "banking77"},
            loss={"name": "BatchHardTripletLoss"},
            eval=[{"type": "classes", "from_train": {"size": 20000}, "name": "v"}],
        ),
    ),
    # --- Models
    "a close miss of the packaged model": validate(
        "model: 'minilmm' is neither a model folder nor a hub id; did you mean 'minilm'",
        lambda s, t, d: s.update(model="minilmm"),
    ),
    "a hub model that is not in the cache, offline": validate(
        "model: 'someone/does-not-exist-model': not a local folder, and not in the Hugging Face cache",
        lambda s, t, d: s.update(model="someone/does-not-exist-model"),
    ),
    "a mining model that is not there": validate(
        "negatives.model: 'nobody/nomodel': not a local folder, and not in the Hugging Face cache",
        lambda s, t, d: s.update(negatives={"model": "nobody/nomodel"}, loss={"name": "TripletLoss"}),
    ),
    "a GIST guide that is not there": validate(
        "loss.params.guide: /no/guide: no such model folder",
        lambda s, t, d: s.update(loss={"name": "GISTEmbedLoss", "params": {"guide": "/no/guide"}}),
    ),
    "a teacher that is not there": validate(
        "teacher: /no/teacher: no such model folder", lambda s, t, d: s.update(teacher="/no/teacher")
    ),
    "a folder that is not a model": train(
        "not a model folder (no modules.json or config.json)", spec=lambda s, t, d: s.update(model=str(t))
    ),
    "Matryoshka dims beyond the model in a sweep": Case(
        ["sweep", "{spec}"],
        2,
        ("sweep.shared.matryoshka_dims.choices: [64] exceed the model's embedding size 32",),
        lambda s, t, d: s.update(sweep=SWEEP | {"shared": {"matryoshka_dims": {"choices": [[32, 16], [64, 32]]}}}),
    ),
    # --- The sweep
    "unknown loss in a sweep": Case(
        ["sweep", "{spec}"],
        2,
        ("sweep.losses[1].name: unknown loss 'TripletLos': did you mean TripletLoss",),
        lambda s, t, d: s.update(sweep=SWEEP | {"losses": ["MultipleNegativesRankingLoss", "TripletLos"]}),
    ),
    "a range for a parameter the loss lacks": Case(
        ["sweep", "{spec}"],
        2,
        ("sweep.params.MultipleNegativesRankingLoss.margin: MultipleNegativesRankingLoss has no parameter 'margin'",),
        lambda s, t, d: s.update(
            sweep=SWEEP | {"params": {"MultipleNegativesRankingLoss": {"margin": {"low": 0.1, "high": 1}}}}
        ),
    ),
    "a sweep metric no evaluation produces": Case(
        ["sweep", "{spec}"],
        2,
        ("sweep.metric: 'eval/other/ndcg_at_10' is not a metric of the selection set 'sts'",),
        lambda s, t, d: s.update(sweep=SWEEP | {"metric": "eval/other/ndcg_at_10"}),
    ),
    "a log range through zero": Case(
        ["sweep", "{spec}"],
        2,
        ("sweep.shared.learning_rate.low: 0.0: a log range needs low > 0",),
        lambda s, t, d: s.update(sweep=SWEEP | {"shared": {"learning_rate": {"low": 0, "high": 1e-3, "log": True}}}),
    ),
    "a sweep on epochs": Case(
        ["sweep", "{spec}"],
        2,
        ("training.epochs: sweeps compare trials on a fixed budget; set training.steps instead",),
        lambda s, t, d: s.update(training={"batch_size": 16, "epochs": 1}, sweep=SWEEP),
    ),
    "a sweep without a sweep section": Case(
        ["sweep", "{spec}"], 2, ("sweep: missing; add a sweep section",), lambda s, t, d: None
    ),
    "distillation without teacher labels": train(
        "or set the spec's `teacher:` to a model that computes them",
        spec=lambda s, t, d: s.update(loss={"name": "DistillKLDivLoss"}, train={"path": "snli", "split": "dev"}),
    ),
    "a hub dataset while offline": train(
        "hub dataset 'nobody/no-such-dataset' (subset None, split train) could not be loaded",
        spec=lambda s, t, d: s.update(train={"hub": "nobody/no-such-dataset"}),
    ),
    "mining for a spec without negatives": Case(
        ["negatives", "{spec}"], 2, ("negatives: missing; add a negatives section",), lambda s, t, d: None
    ),
    # --- The outside world
    "more workers than the cluster's CPUs": train(
        "workers=8 x cpus_per_worker=1 needs 8 CPUs per trial, but this Ray cluster has 2",
        spec=lambda s, t, d: s.update(resources={"workers": 8}),
        ray=True,
    ),
    # One worker trains in-process, without Ray: the machine's GPUs are what it has
    "GPUs on a CPU-only machine": train(
        "gpus_per_worker=1 needs 1 GPUs, but this machine has 0",
        spec=lambda s, t, d: s.update(resources={"workers": 1, "gpus_per_worker": 1}),
    ),
    "unreachable MLflow server in the spec": train(
        f"mlflow.tracking_uri: cannot reach the MLflow server at {DEAD_SERVER}",
        spec=lambda s, t, d: s.update(mlflow={"tracking_uri": DEAD_SERVER}),
        store=False,
    ),
    "read-only output folder": train(
        "output_dir: /proc/lossweep-runs is not writable (checkpoints go there); choose a writable folder",
        spec=lambda s, t, d: s.update(output_dir="/proc/lossweep-runs"),
    ),
    "read-only MLflow store": train(
        "cannot write the SQLite store /proc/lossweep/mlflow.db (read-only folder)",
        spec=lambda s, t, d: s.update(mlflow={"tracking_uri": "sqlite:////proc/lossweep/mlflow.db"}),
        store=False,
    ),
    "validate against an unreachable server": Case(
        ["validate", "{spec}", "--tracking-uri", DEAD_SERVER],
        2,
        (f"--tracking-uri: cannot reach the MLflow server at {DEAD_SERVER}",),
        lambda s, t, d: None,
        store=False,
        in_spec=False,
    ),
    "report from an unreachable server": Case(
        ["report", "quickstart", "--tracking-uri", DEAD_SERVER], 2, ("cannot reach the MLflow server",), store=False
    ),
    "reproduce from an unreachable server": Case(
        ["reproduce", "66fd08a0", "--tracking-uri", DEAD_SERVER], 2, ("cannot reach the MLflow server",), store=False
    ),
    "export from an unreachable server": Case(
        ["export", "quickstart", "{tmp}/out", "--tracking-uri", DEAD_SERVER],
        2,
        ("cannot reach the MLflow server",),
        store=False,
    ),
    "a sweep name no store holds": Case(
        ["report", "no-such-sweep", "--tracking-uri", "{store}"], 2, ("no sweep named 'no-such-sweep'",), store=False
    ),
    # --- `lossweep losses --data`
    "losses on a data file with only a header": Case(
        ["losses", "--data", "{tmp}/rows.csv"],
        2,
        ("rows.csv: no rows, only a header",),
        files={"rows.csv": "a,b\n"},
        store=False,
    ),
    "losses on a path that is not under the data folder": Case(
        ["losses", "--data", "nowhere", "--data-dir", "{tmp}"],
        2,
        ("nowhere: no such file or folder under data_dir",),
        store=False,
    ),
    # --- Inputs that used to break and now work
    "an eval set named train": validate(
        "valid (MultipleNegativesRankingLoss, 1003 training rows)",
        lambda s, t, d: s["eval"][0].update(name="train"),
        code=0,
    ),
    "retrieval judged on a CSV of pairs": validate(
        "valid (MultipleNegativesRankingLoss, 1003 training rows)",
        lambda s, t, d: s.update(eval=[{"type": "retrieval", "path": str(t / "pairs.csv"), "name": "pairs"}]),
        code=0,
        files={"pairs.csv": "anchor,positive\nwhat lifts a wing,lift\nwhat is drag,drag\n"},
    ),
    "losses on a folder under the data folder": Case(
        ["losses", "--data", "snli", "--split", "dev", "--view", "triplets"], 0, ("losses fit snli",), store=False
    ),
}


@pytest.fixture
def needs_ray(request):
    if CASES[request.node.callspec.params["name"]].ray:
        request.getfixturevalue("ray_local")


def run_case(name: str, base: dict, data_dir: Path, tmp_path: Path, capfd) -> tuple[Case, int, str]:
    given = CASES[name]
    for file, text in given.files.items():
        (tmp_path / file).write_text(text, encoding="utf-8", errors="surrogateescape")
    path = tmp_path / "spec.yaml"
    if given.raw is not None:
        path.write_text(given.raw)
    else:
        spec = copy.deepcopy(base)
        if given.spec is not None:
            given.spec(spec, tmp_path, data_dir)
        path.write_text(yaml.safe_dump(spec))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [a.format(spec=path, store=store, tmp=tmp_path) for a in given.argv]
    argv += ["--tracking-uri", store] if given.store else []
    code = main(argv)
    captured = capfd.readouterr()
    return given, code, captured.out + captured.err


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if c.ray else n for n, c in CASES.items()])
def test_bad_input_gets_its_exit_status_a_clear_message_and_leaves_nothing(
    name, base, data_dir, tmp_path, capfd, monkeypatch, needs_ray
):
    monkeypatch.setenv("LOSSWEEP_DATA_DIR", str(data_dir))
    given, code, output = run_case(name, base, data_dir, tmp_path, capfd)
    assert code == given.code, output
    for expected in given.expected:
        assert expected in output, output
    assert "Traceback" not in output
    if given.code == 2 and given.in_spec and given.raw is None and given.argv[1] == "{spec}":
        assert "1 error" in output and str(tmp_path / "spec.yaml") in output  # the spec file is named
    store = tmp_path / "mlflow.db"
    if store.exists():  # no run was written, not even a failed one
        client = MlflowClient(f"sqlite:///{store}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
