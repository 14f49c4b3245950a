"""The checks that relate a spec's sections: each one fires on its own, is skipped (not crashed) when a
field it needs is broken, and a check that fails for another reason surfaces instead of being skipped."""

from __future__ import annotations

import copy

import pytest

import lossweep.sweep.relations as relations
from lossweep.sweep.spec import SpecError, parse_spec

BASE = {
    "name": "r",
    "train": {"path": "x"},
    "eval": [{"type": "retrieval", "path": "v", "name": "val"}, {"type": "retrieval", "path": "t", "name": "test"}],
    "loss": {"name": "MultipleNegativesRankingLoss"},
    "training": {"batch_size": 8, "steps": 2},
}
SWEEP = {"mode": "search", "select_on": "val", "scheduler": "none"}

# relation -> (a change that makes it fire, its message, the field it needs broken as well)
CASES = {
    "_version": (lambda s: s.update(version=2), "version: 2 is not supported", ("training", {"steps": "x"})),
    "_steps_or_epochs": (
        lambda s: s["training"].update(epochs=1),
        "training: set exactly one of steps or epochs",
        ("resources", {"workers": 0}),
    ),
    "_batch_and_workers": (
        lambda s: s.update(resources={"workers": 3}),
        "training.batch_size: 8 is not divisible by resources.workers=3",
        ("loss", {"name": "NoSuchLoss"}),
    ),
    "_precision_and_gpus": (
        lambda s: s["training"].update(precision="fp16"),
        "training.precision: fp16 needs GPUs",
        ("eval", "not a list"),
    ),
    "_loss_and_data_steps": (
        lambda s: s.update(
            matryoshka_dims=[8],
            loss={
                "name": "MatryoshkaLoss",
                "params": {"matryoshka_dims": [8]},
                "base": {"name": "MultipleNegativesRankingLoss"},
            },
        ),
        "matryoshka_dims: the loss is already MatryoshkaLoss",
        ("training", {"batch_size": -1, "steps": 2}),
    ),
    "_eval_sets": (
        lambda s: s["eval"].append({"type": "retrieval", "path": "w", "name": "val"}),
        "eval: two evaluation sets are named 'val'",
        ("loss", {"name": 3}),
    ),
    "_sweep_budget": (
        lambda s: s.update(sweep=SWEEP | {"scheduler": "asha"}),
        "evaluation.every_steps: ASHA stops trials at intermediate evaluations",
        ("resources", {"workers": 0}),
    ),
    "_selection": (
        lambda s: s.update(sweep=SWEEP | {"select_on": "nope"}),
        "sweep.select_on: 'nope' is not an eval set",
        ("training", {"steps": -1}),
    ),
    "_metric": (
        lambda s: s.update(sweep=SWEEP | {"metric": "eval/val/ndcg_at_5"}),
        "sweep.metric: 'eval/val/ndcg_at_5' is not a metric of the selection set 'val'",
        ("evaluation", {"dims": "many"}),
    ),
    "_sweep_losses": (
        lambda s: s.update(sweep=SWEEP | {"losses": ["TripletLos"]}),
        "sweep.losses[0].name: unknown loss 'TripletLos'",
        ("negatives", {"num_negatives": 0}),
    ),
    "_searched_batch": (
        lambda s: s.update(resources={"workers": 2}, sweep=SWEEP | {"shared": {"batch_size": {"choices": [8, 9]}}}),
        "sweep.shared.batch_size.choices: [9] not divisible by resources.workers=2",
        ("train", {"path": 7}),
    ),
    "_training_sets": (
        lambda s: s.update(train=[{"path": "x"}, {"path": "y", "name": "x"}]),
        "train: two training sets are named 'x'",
        ("training", {"steps": "x"}),
    ),
    "_searched_mixing": (
        lambda s: s.update(sweep=SWEEP | {"shared": {"mixing": {"choices": ["round_robin"]}}}),
        "sweep.shared.mixing: orders the batches of several training sets",
        ("resources", {"workers": 0}),
    ),
    "_sampled_verdict": (
        lambda s: (s["eval"][1].update(sample={"size": 100}), s.update(sweep=SWEEP)),
        "eval[1].sample: 'test' judges the winner, on its whole corpus",
        ("training", {"steps": -1}),
    ),
    "_searched_adapter": (
        lambda s: s.update(sweep=SWEEP | {"shared": {"lora_r": {"choices": [4, 16]}}}),
        "sweep.shared.lora_r: searches a LoRA adapter, but the spec trains every weight",
        ("adapter", {"r": 0}),
    ),
}


def problems_of(data: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return caught.value.problems


def test_every_relation_has_a_case():
    assert set(CASES) == {check.__name__ for check in relations.RELATIONS + relations.SWEEP_RELATIONS}


@pytest.mark.parametrize("name", CASES)
def test_each_relation_fires_alone_and_beside_a_broken_field(name):
    change, expected, (broken, value) = CASES[name]
    data = copy.deepcopy(BASE)
    change(data)
    assert any(expected in p for p in problems_of(data)), problems_of(data)
    # With another section broken the check still runs (or is skipped for the field it needs), never crashes
    data[broken] = value
    found = problems_of(data)
    assert any(p.startswith(broken) for p in found), found


def test_a_check_that_fails_for_another_reason_surfaces(monkeypatch):
    def buggy(spec):
        return spec.training.no_such_field  # a bug, not a broken field

    monkeypatch.setattr(relations, "RELATIONS", [*relations.RELATIONS, buggy])
    data = copy.deepcopy(BASE) | {"resources": {"workers": 0}}  # read leniently: the checks run again
    with pytest.raises(AttributeError):
        parse_spec(data)
