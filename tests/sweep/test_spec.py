"""Experiment specs: every shipped file validates; bad specs fail with every error, before Ray starts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import lossweep.sweep.driver as driver
import lossweep.sweep.preflight as preflight
import lossweep.sweep.tasks as tasks
from lossweep.losses import LOSSES
from lossweep.sweep.cli import main
from lossweep.sweep.inputs import validate
from lossweep.sweep.spec import SpecError, json_schema, load_spec, parse_spec

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))
SCHEMA = Path(__file__).resolve().parents[2] / "experiments" / "spec.schema.json"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_validates(path, data_dir, monkeypatch):
    monkeypatch.setenv("LOSSWEEP_DATA_DIR", str(data_dir))
    validate(load_spec(path), str(path))


def test_every_shipped_experiment_passes_the_published_json_schema():
    # What editors check as users type (experiments/*.yaml point at it); the copy must be current.
    schema = json.loads(SCHEMA.read_text())
    assert schema == json_schema(), (
        "experiments/spec.schema.json is stale: lossweep schema > experiments/spec.schema.json"
    )
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXPERIMENTS:
        errors = [
            f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))
        ]
        assert not errors, f"{path.name}: {errors}"
        assert path.read_text().startswith("# yaml-language-server: $schema=spec.schema.json")
    bad = {"name": "x", "train": {"path": "p"}, "loss": {"name": "MultipleNegativesRankingLoss"}, "trainig": {}}
    assert any("trainig" in e.message for e in validator.iter_errors(bad))  # unknown keys are refused there too


def test_one_pass_reports_structure_each_section_and_their_relations():
    # A missing name and training data, an unknown loss, a compare with two seeds, a misspelled loss
    # parameter in the sweep, and a batch the workers cannot share: all at once.
    with pytest.raises(SpecError) as caught:
        parse_spec(
            {
                "loss": {"name": "NoSuchLoss"},
                "training": {"batch_size": 9, "steps": 10},
                "resources": {"workers": 2},
                "sweep": {"mode": "compare", "seeds": 2, "losses": [{"name": "TripletLoss", "params": {"margin": 1}}]},
            }
        )
    problems = caught.value.problems
    for expected in (
        "name: required",
        "train: required",
        "loss.name: unknown loss 'NoSuchLoss'",
        "sweep.seeds: 2: compare mode needs at least 3 seeds",
        "sweep.losses[0].params.margin: TripletLoss has no parameter 'margin'; did you mean 'triplet_margin'?",
        "training.batch_size: 9 is not divisible by resources.workers=2",
    ):
        assert any(p.startswith(expected) for p in problems), f"{expected!r} not in {problems}"


@pytest.fixture
def good(data_dir, tiny_model_path) -> dict:
    return {
        "name": "unit",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [{"type": "retrieval", "path": "cranfield", "split": "test"}],
        "loss": {"name": "MultipleNegativesRankingLoss", "params": {"scale": 20.0}},
        "training": {"batch_size": 8, "steps": 2},
        "resources": {"workers": 2},
    }


@pytest.fixture
def errors_of(monkeypatch, tmp_path):
    """The problems `train` refuses a spec with; it must refuse before it starts or joins Ray."""

    def ray_started(*args, **kwargs):
        raise AssertionError("Ray was started for a bad spec")

    monkeypatch.setattr(preflight, "ensure_ray", ray_started)
    monkeypatch.setattr(tasks, "ensure_ray", ray_started)
    monkeypatch.setattr(driver, "run_trainer", ray_started)

    def errors(data: dict) -> list[str]:
        with pytest.raises(SpecError) as caught:
            driver.train(parse_spec(data, "bad.yaml"), source="bad.yaml", tracking_uri=f"sqlite:///{tmp_path}/m.db")
        return caught.value.problems

    return errors


def test_the_good_spec_is_valid(good):
    assert len(validate(parse_spec(good)).train) == 1003


BAD_SPECS = {
    "unknown loss": (
        lambda s: s["loss"].update(name="MultipleNegativeRankingLoss"),
        "loss.name: unknown loss 'MultipleNegativeRankingLoss': did you mean MultipleNegativesRankingLoss",
    ),
    "parameter of another loss": (
        lambda s: s["loss"]["params"].update(margin=0.5),
        "loss.params.margin: MultipleNegativesRankingLoss has no parameter 'margin'",
    ),
    "data without the loss's label": (
        lambda s: s.update(loss={"name": "CoSENTLoss"}),
        "train: CoSENTLoss cannot train on cranfield (split train): it needs a label column (a float similarity score)",
    ),
    "missing data folder": (
        lambda s: s["train"].update(path="cranfeld"),
        "train: cranfeld: no such file or folder under data_dir",
    ),
    "batch not divisible by workers": (
        lambda s: s["training"].update(batch_size=9),
        "training.batch_size: 9 is not divisible by resources.workers=2: each worker takes an equal share",
    ),
    "search range low > high": (
        lambda s: s.update(sweep={"params": {"MultipleNegativesRankingLoss": {"scale": {"low": 50, "high": 10}}}}),
        "sweep.params.MultipleNegativesRankingLoss.scale: low=50.0 > high=10.0; swap them",
    ),
    "unknown key": (
        lambda s: s.update(trainig=s.pop("training")),
        "trainig: unknown key; did you mean 'training'?",
    ),
    "negative steps": (
        lambda s: s["training"].update(steps=-5),
        "training.steps: -5 must be a positive number of optimizer steps",
    ),
    "wrong type": (
        lambda s: s["training"].update(learning_rate="fast"),
        "training.learning_rate: expected a number, got 'fast'",
    ),
    "matryoshka dim larger than the model": (
        lambda s: s.update(matryoshka_dims=[64, 32]),
        "matryoshka_dims: [64] exceed the model's embedding size 32; use sizes <= 32",
    ),
    "steps and epochs": (
        lambda s: s["training"].update(epochs=1),
        "training: set exactly one of steps or epochs",
    ),
    "unknown precision": (
        lambda s: s["training"].update(precision="fp8"),
        "training.precision: 'fp8' is not one of ['fp32', 'bf16', 'fp16']",
    ),
    "workers sharing a GPU": (
        lambda s: s.update(resources={"workers": 2, "gpus_per_worker": 0.5}),
        "resources.gpus_per_worker: 0.5: several workers cannot share a GPU (NCCL needs one per rank); use 1",
    ),
    "fp16 without a GPU": (
        lambda s: s["training"].update(precision="fp16"),
        "training.precision: fp16 needs GPUs (resources.gpus_per_worker > 0); on CPU use bf16 or fp32",
    ),
    "retrieval evaluation on scored pairs": (
        lambda s: s["eval"][0].update(path="stsbenchmark"),
        "label 'score' holds 0.5; retrieval reads it as a relevance grade (0 = not relevant, 1, 2... = relevant): "
        "use whole numbers >= 0, or judge similarity scores with type: sts",
    ),
    "missing required field": (
        lambda s: s.pop("loss"),
        "loss: required; set it to a mapping",
    ),
    "too few distinct texts for the batch": (
        lambda s: s["train"].update(limit=40),
        "training.batch_size: 40 training rows cannot fill one global batch of 8 with the no_duplicates sampler",
    ),
    "unknown split": (
        lambda s: s["train"].update(split="dev"),
        "no qrels for split 'dev'; splits found: ['test', 'train']",
    ),
    "a parameter both fixed and searched": (
        lambda s: s.update(
            sweep={
                "losses": [{"name": "MultipleNegativesRankingLoss", "params": {"scale": 20.0}}],
                "params": {"MultipleNegativesRankingLoss": {"scale": {"choices": [10.0, 30.0]}}},
            }
        ),
        "sweep.params.MultipleNegativesRankingLoss.scale: fixed to 20.0 by sweep.losses; search it or fix it, not both",
    ),
    "compare judged on the set that chose its configurations": (
        lambda s: s.update(sweep={"mode": "compare", "losses": ["MultipleNegativesRankingLoss"], "seeds": 3}),
        "sweep.select_on: compare mode would judge the losses on 'cranfield', the set that chose their configurations",
    ),
    "compare with two seeds": (
        lambda s: s.update(sweep={"mode": "compare", "seeds": 2}),
        "sweep.seeds: 2: compare mode needs at least 3 seeds per loss to measure training noise",
    ),
    "select_on names no eval set": (
        lambda s: s.update(sweep={"select_on": "cranfield-val"}),
        "sweep.select_on: 'cranfield-val' is not an eval set; eval sets are ['cranfield']",
    ),
    "a carved set with a path as well": (
        lambda s: s["eval"].append({"type": "retrieval", "path": "cranfield", "from_train": {"size": 10}, "name": "v"}),
        "eval[1]: set exactly one of path, hub, or from_train",
    ),
    "carving more queries than training has": (
        lambda s: s["eval"].append({"type": "retrieval", "from_train": {"size": 500}, "name": "val"}),
        "eval[1]: from_train.size: 500 held-out queries would leave no training query of 150; hold out fewer",
    ),
    "mining negatives without (anchor, positive) pairs": (
        lambda s: s.update(
            train={"path": "stsbenchmark", "split": "train", "limit": 100}, negatives={}, loss={"name": "TripletLoss"}
        ),
        "negatives: mining needs (anchor, positive) pairs, but the training data has columns "
        "['sentence1', 'sentence2', 'score']",
    ),
    "a mining model that does not exist": (
        lambda s: s.update(negatives={"model": "/nowhere/model"}, loss={"name": "TripletLoss"}),
        "negatives.model: /nowhere/model: no such model folder",
    ),
    "mining range_min above range_max": (
        lambda s: s.update(negatives={"range_min": 60, "range_max": 50}, loss={"name": "TripletLoss"}),
        "negatives.range_min: 60 >= range_max 50; range_min must be the smaller",
    ),
    "more negatives than candidates": (
        lambda s: s.update(negatives={"num_negatives": 30, "range_max": 20}, loss={"name": "TripletLoss"}),
        "negatives.num_negatives: 30 per anchor, but only 20 candidates rank between range_min 0 and range_max 20",
    ),
    "more negatives than the corpus holds": (
        lambda s: s.update(negatives={"num_negatives": 1400}, loss={"name": "TripletLoss"}),
        "negatives.num_negatives: 1400 per anchor, but the corpus has 1398 texts",
    ),
    "a mining knob searched over a range": (
        lambda s: s.update(negatives={}, sweep={"negatives": {"relative_margin": {"low": 0.0, "high": 0.1}}}),
        "sweep.negatives.relative_margin: mining knobs are searched over choices",
    ),
    "a sweep metric the selection set does not produce": (
        lambda s: s.update(sweep={"metric": "eval/cranfield/ndcg_at_5", "scheduler": "none"}),
        "sweep.metric: 'eval/cranfield/ndcg_at_5' is not a metric of the selection set 'cranfield'; did you mean "
        "'eval/cranfield/ndcg_at_10'?",
    ),
    "an eval set name MLflow cannot log": (
        lambda s: s["eval"][0].update(name="cranfield (test)"),
        "eval[0].name: 'cranfield (test)' cannot name MLflow metrics",
    ),
    "a searched batch size the workers cannot share": (
        lambda s: s.update(sweep={"scheduler": "none", "shared": {"batch_size": {"low": 7, "high": 32}}}),
        "sweep.shared.batch_size.low: 7 is not a multiple of resources.workers=2; batch sizes are drawn from low in "
        "steps of 2",
    ),
    "a retrieval set carved from scored pairs": (
        lambda s: (
            s.update(train={"path": "stsbenchmark", "split": "dev"}, loss={"name": "CoSENTLoss"}),
            s["eval"].append({"type": "retrieval", "from_train": {"size": 10}, "name": "val"}),
        ),
        "eval[1]: from_train: label 'score' holds",
    ),
    "two base models of one name": (
        lambda s: s.update(sweep={"scheduler": "none", "models": [s["model"], {"model": s["model"]}]}),
        "sweep.models: two models are named 'model'; give them distinct `name`s",
    ),
    "a base model that is not there": (
        lambda s: s.update(sweep={"scheduler": "none", "models": [s["model"], "no-such/model-anywhere"]}),
        "sweep.models[1].model: 'no-such/model-anywhere'",
    ),
    "a base model named with a slash": (
        lambda s: s.update(sweep={"scheduler": "none", "models": [{"model": s["model"], "name": "tiny/2"}]}),
        "sweep.models[0].name: 'tiny/2' cannot name a model",
    ),
    "warm start over several base models": (
        lambda s: s.update(sweep={"scheduler": "none", "warm_start": True, "models": [s["model"]]}),
        "sweep.warm_start: is not yet for sweeps over several models",
    ),
    "Matryoshka sizes one base model cannot give": (
        lambda s: s.update(matryoshka_dims=[64, 32], sweep={"scheduler": "none", "models": ["minilm", s["model"]]}),
        "matryoshka_dims: [64] exceed the model 'model''s embedding size 32",
    ),
    "two training sets of one name": (
        lambda s: s.update(train=[s["train"], {"path": "cranfield", "split": "train", "loss": {"name": "CoSENTLoss"}}]),
        "train: two training sets are named 'cranfield'",
    ),
    "a training set of several that its loss cannot take": (
        lambda s: s.update(train=[s["train"], {"path": "snli", "split": "dev", "loss": {"name": "CoSENTLoss"}}]),
        "train[1].loss: CoSENTLoss cannot train on train[1] (snli)",
    ),
    "a swept loss that fits none of several sets": (
        lambda s: s.update(
            train=[
                {"path": "stsbenchmark", "split": "dev"},
                {"path": "cranfield", "split": "train", "loss": {"name": "MultipleNegativesRankingLoss"}},
            ]
        ),
        "loss: MultipleNegativesRankingLoss fits none of the training sets without a loss of their own (stsbenchmark)",
    ),
    "a validation set carved from several sets": (
        lambda s: (
            s.update(train=[s["train"], {"path": "stsbenchmark", "split": "dev", "loss": {"name": "CoSENTLoss"}}]),
            s["eval"].append({"type": "retrieval", "from_train": {"size": 10}, "name": "val"}),
        ),
        "eval[1].from_train: carving a validation set is not yet for several training sets",
    ),
    "mixing searched over one training set": (
        lambda s: s.update(sweep={"scheduler": "none", "shared": {"mixing": {"choices": ["round_robin"]}}}),
        "sweep.shared.mixing: orders the batches of several training sets, but `train` is one set",
    ),
    "a corpus choice on a BEIR folder": (
        lambda s: s["eval"][0].update(corpus="own"),
        "eval[0]: corpus: 'own' is for retrieval from pairs; a BEIR folder has its corpus",
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=str)
def test_bad_spec_gives_a_clear_error_before_ray_starts(case, good, errors_of):
    change, expected = BAD_SPECS[case]
    spec = copy.deepcopy(good)
    change(spec)
    problems = errors_of(spec)
    assert any(expected in p for p in problems), f"{expected!r} not in {problems}"


def test_all_errors_are_reported_at_once(good, errors_of):
    spec = copy.deepcopy(good)
    spec["training"].update(batch_size=9, steps=0)
    spec["loss"]["params"]["scael"] = 3
    problems = errors_of(spec)
    assert len(problems) == 3
    assert sorted(p.split(":")[0] for p in problems) == ["loss.params.scael", "training.batch_size", "training.steps"]


def test_cli_validate_exit_codes(good, tmp_path, capfd):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(good))
    assert main(["validate", str(path)]) == 0
    assert "valid (MultipleNegativesRankingLoss, 1003 training rows)" in capfd.readouterr().out
    good["training"]["batch_size"] = 9
    path.write_text(yaml.safe_dump(good))
    assert main(["validate", str(path)]) == 2  # refused; 1 is kept for a run that failed
    err = capfd.readouterr().err
    assert f"{path}: 1 error" in err and "training.batch_size: 9 is not divisible" in err


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    assert not (tmp_path / "pwned").exists()


def test_the_schema_describes_every_field_names_the_losses_and_bounds_the_numbers():
    schema = json_schema()
    sections = {"Spec": schema} | schema["$defs"]
    undescribed = [
        f"{name}.{key}"
        for name, section in sections.items()
        for key, field in section.get("properties", {}).items()
        if "description" not in field
    ]
    assert not undescribed
    assert schema["$defs"]["LossSpec"]["properties"]["name"]["enum"] == list(LOSSES)
    validator = jsonschema.Draft202012Validator(schema)
    base = {"name": "x", "train": {"path": "p"}, "loss": {"name": "MultipleNegativesRankingLoss"}}
    for bad, field in [
        ({"training": {"steps": -5}}, "steps"),
        ({"resources": {"workers": 0}}, "workers"),
        ({"training": {"learning_rate": 0}}, "learning_rate"),
        ({"training": {"warmup_ratio": 1.0}}, "warmup_ratio"),
        ({"loss": {"name": "TripletLos"}}, "name"),
        ({"eval": [{"type": "retrieval", "path": "p", "name": "a (b)"}]}, "name"),
    ]:
        errors = list(validator.iter_errors(base | bad))
        assert errors and any(field in list(e.absolute_path) for e in errors), bad
    assert not list(validator.iter_errors(base | {"training": {"steps": 5}, "resources": {"workers": 2}}))


def test_a_spec_keeps_its_hash_when_fields_are_added_with_their_defaults(good):
    spec = parse_spec(good)
    explicit = parse_spec(good | {"train": good["train"] | {"columns": {}, "encode_labels": False}})
    assert spec.hash() == explicit.hash()
    assert spec.hash() != parse_spec(good | {"training": good["training"] | {"steps": 3}}).hash()


def test_readme_lists_every_spec_field():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    fields = readme.split("### Spec fields", 1)[1].split("\n## ", 1)[0]
    schema = json_schema()
    names = {key for section in [schema, *schema["$defs"].values()] for key in section.get("properties", {})}
    assert sorted(name for name in names if f"`{name}`" not in fields and f"{name}:" not in fields) == []
