"""The search space in milliseconds: define-by-run with Optuna's FixedTrial, the grid, refused
combinations never sampled, the trial spec. No Ray, no data files."""

from __future__ import annotations

import json

import optuna
import pytest

from lossweep.losses import config_errors
from lossweep.sweep.space import DefineByRun, build_space, grid_configs, space_problems, trial_spec
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.studies import nest


def spec_with(sweep: dict, workers: int = 1, negatives: dict | None = None):
    data = {
        "name": "space",
        "train": {"path": "x"},
        "eval": [{"type": "retrieval", "path": "x"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"steps": 10, "batch_size": 8},
        "resources": {"workers": workers},
        "sweep": {"scheduler": "none"} | sweep,
    }
    if negatives is not None:
        data["negatives"] = negatives
    return parse_spec(data)


def sampled(space, fixed: dict) -> tuple[dict, dict]:
    """What a trial with these values samples (FixedTrial refuses any other name) and its constants."""
    trial = optuna.trial.FixedTrial(fixed)
    constants = DefineByRun(space)(trial) or {}
    return trial.params, constants


def test_a_trial_samples_only_the_parameters_of_the_loss_it_picked():
    spec = spec_with(
        {
            "losses": ["TripletLoss", "CoSENTLoss"],
            "shared": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}},
        }
    )
    space, _ = build_space(spec, None)
    params, constants = sampled(
        space,
        {"loss": "TripletLoss", "TripletLoss/distance_metric": "cosine", "TripletLoss/triplet_margin": 0.3}
        | {"shared/learning_rate": 1e-4},
    )
    assert set(params) == {"loss", "TripletLoss/distance_metric", "TripletLoss/triplet_margin", "shared/learning_rate"}
    assert constants == {}
    with pytest.raises(ValueError):  # a CoSENT trial never asks for a triplet margin
        sampled(space, {"loss": "CoSENTLoss", "TripletLoss/triplet_margin": 0.3})


def test_a_refused_categorical_combination_is_fixed_not_sampled():
    # MNRL refuses partition_mode per_direction with the query_to_query direction: once the directions
    # include it, partition_mode is no longer sampled but fixed to the valid value.
    spec = spec_with({"losses": ["MultipleNegativesRankingLoss"]})
    space, _ = build_space(spec, None)
    four = ["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
    fixed = {
        "MultipleNegativesRankingLoss/scale": 20.0,
        "MultipleNegativesRankingLoss/similarity_fct": "cos_sim",
        "MultipleNegativesRankingLoss/directions": json.dumps(four),
        "MultipleNegativesRankingLoss/hardness_mode": None,
        "MultipleNegativesRankingLoss/hardness_strength": 0.0,
    }
    params, constants = sampled(space, fixed)
    assert "MultipleNegativesRankingLoss/partition_mode" not in params
    assert constants["MultipleNegativesRankingLoss/partition_mode"] == "joint"
    trial = trial_spec(spec, space, {"loss": "MultipleNegativesRankingLoss"} | nest(fixed | constants))
    assert trial.loss.params["partition_mode"] == "joint" and not config_errors(trial.loss_config())


def test_every_sampled_trial_is_a_configuration_its_loss_accepts():
    spec = spec_with({"losses": ["MultipleNegativesRankingLoss", "GlobalOrthogonalRegularizationLoss"]})
    space, _ = build_space(spec, None)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(300):
        trial = study.ask()
        constants = DefineByRun(space)(trial) or {}
        config = nest(trial.params | constants)
        spec_of_trial = trial_spec(spec, space, config)
        assert not config_errors(spec_of_trial.loss_config()), config
        study.tell(trial, 0.0)


def test_numeric_ranges_that_reach_a_refused_combination_are_refused():
    spec = spec_with(
        {
            "losses": ["GlobalOrthogonalRegularizationLoss"],
            "params": {
                "GlobalOrthogonalRegularizationLoss": {
                    "mean_weight": {"low": 0.0, "high": 1.0},
                    "second_moment_weight": {"low": 0.0, "high": 1.0},
                }
            },
        }
    )
    problems = space_problems(build_space(spec, None)[0])
    assert problems == [
        "sweep.params.GlobalOrthogonalRegularizationLoss: the search can sample mean_weight=0, "
        "second_moment_weight=0, which GlobalOrthogonalRegularizationLoss refuses (at least one of mean_weight or "
        "second_moment_weight must be non-zero); narrow the ranges"
    ]
    assert not space_problems(build_space(spec_with({"losses": ["GlobalOrthogonalRegularizationLoss"]}), None)[0])


def test_the_grid_is_every_accepted_combination():
    spec = spec_with(
        {
            "sampler": "grid",
            "losses": ["TripletLoss", "SoftmaxLoss"],
            "params": {
                "TripletLoss": {
                    "distance_metric": {"choices": ["cosine", "euclidean"]},
                    "triplet_margin": {"choices": [0.5, 1.0]},
                },
            },
            "shared": {"learning_rate": {"choices": [1e-5, 1e-4]}},
        }
    )
    configs = grid_configs(build_space(spec, None)[0])
    triplet = [c for c in configs if c["loss"] == "TripletLoss"]
    softmax = [c for c in configs if c["loss"] == "SoftmaxLoss"]
    assert len(triplet) == 2 * 2 * 2
    # SoftmaxLoss: 3 boolean concatenations x 2 learning rates, minus the one with all three off
    assert len(softmax) == (2**3 - 1) * 2
    assert all(any(c["SoftmaxLoss"].values()) for c in softmax)


def test_batch_sizes_are_drawn_in_multiples_of_the_workers():
    spec = spec_with({"losses": ["TripletLoss"], "shared": {"batch_size": {"low": 8, "high": 64}}}, workers=4)
    space, _ = build_space(spec, None)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    sizes = set()
    for _ in range(50):
        trial = study.ask()
        DefineByRun(space)(trial)
        sizes.add(trial.params["shared/batch_size"])
        study.tell(trial, 0.0)
    assert sizes <= set(range(8, 65, 4)) and len(sizes) > 5


def test_the_trial_spec_takes_the_sampled_values_and_the_mining_knobs():
    spec = spec_with(
        {
            "losses": ["MultipleNegativesRankingLoss", {"name": "MultipleNegativesRankingLoss", "negatives": True}],
            "negatives": {"range_max": {"choices": [10, 50]}},
            "shared": {"learning_rate": {"low": 1e-5, "high": 1e-3}},
        },
        negatives={"num_negatives": 2},
    )
    from datasets import Features, Value

    pairs = Features({"anchor": Value("string"), "positive": Value("string")})
    space, _ = build_space(spec, _Features(pairs))
    mined = next(c for c in space.candidates if c.negatives)
    assert mined.name == "MultipleNegativesRankingLoss + mined negatives" and mined.mined
    config = {
        "loss": mined.name,
        mined.name: {"scale": 30.0},
        "shared": {"learning_rate": 3e-4},
        "negatives": {"range_max": 50},
    }
    trial = trial_spec(spec, space, config, seed=1042)
    assert trial.loss.negatives and trial.loss.params["scale"] == 30.0
    assert trial.negatives.range_max == 50 and trial.negatives.num_negatives == 2
    assert (trial.training.learning_rate, trial.training.seed, trial.sweep) == (3e-4, 1042, None)
    assert trial.loss_label() == "MultipleNegativesRankingLoss + mined negatives"


class _Features:
    """Enough of a dataset for `build_space` to see its columns."""

    def __init__(self, features) -> None:
        self.features = features


def test_every_model_and_loss_is_a_candidate_and_its_trial_trains_that_model_with_its_settings():
    spec = spec_with(
        {
            "losses": ["CoSENTLoss", "TripletLoss"],
            "models": ["minilm", {"model": "/models/e5-small", "max_seq_length": 64, "prompts": "none"}],
        }
    ).replace(max_seq_length=128, prompts={"query": "q: ", "document": "d: "})
    space, _ = build_space(spec, None)
    names = [c.name for c in space.candidates]
    assert names == [
        "CoSENTLoss @ minilm",
        "TripletLoss @ minilm",
        "CoSENTLoss @ e5-small",
        "TripletLoss @ e5-small",
    ]
    # A search picks (model, loss) as one categorical; the loss's own parameters follow as before
    params, _ = sampled(
        space,
        {"loss": "TripletLoss @ e5-small", "TripletLoss @ e5-small/triplet_margin": 0.3}
        | {"TripletLoss @ e5-small/distance_metric": "cosine"},
    )
    assert params["loss"] == "TripletLoss @ e5-small"
    small = trial_spec(spec, space, nest(params))
    assert (small.model, small.max_seq_length, small.prompts) == ("/models/e5-small", 64, "none")
    assert small.loss.name == "TripletLoss" and small.loss.params["triplet_margin"] == 0.3
    mini = trial_spec(spec, space, {"loss": "CoSENTLoss @ minilm", "CoSENTLoss @ minilm": {}})
    assert (mini.model, mini.max_seq_length, mini.prompts.query) == ("minilm", 128, "q: ")  # the spec's own
    assert set(spec.model_specs()) == {"minilm", "e5-small"}
    assert space.describe()["losses"]["CoSENTLoss @ e5-small"]["model"]["max_seq_length"] == 64
