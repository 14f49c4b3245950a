"""N workers x batch B train exactly like one worker x batch N*B, for every loss of the catalogue.

Two real gloo processes each train on their half of every global batch for two SGD steps; one
process trains on the whole global batches. The trainable parameters must agree to 1e-5 (float32:
absolute, or relative for weights that grew past 1).
Dropout is off in the tiny model; losses that sample layers or dims (AdaptiveLayer, Matryoshka2d)
draw from Python's `random`, seeded identically in every process, so they pick the same ones.
"""

from __future__ import annotations

import pytest
import torch

from lossweep.losses import LOSSES, LossConfig
from lossweep.sweep.models import load_model

from examples import dataset_for, example_config
from parity import run

WORKERS, LOCAL_BATCH, STEPS = 2, 8, 2

VARIANTS = {
    "MNRL-gte-directions-hard-negatives": LossConfig(
        "MultipleNegativesRankingLoss",
        {
            "directions": ["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"],
            "hardness_mode": "all_negatives",
            "hardness_strength": 5.0,
        },
    ),
    "MNRL-symmetric-per-direction": LossConfig(
        "MultipleNegativesRankingLoss",
        {"directions": ["query_to_doc", "doc_to_query"], "partition_mode": "per_direction"},
    ),
    "Matryoshka-CachedMNRL": LossConfig(
        "MatryoshkaLoss",
        {"matryoshka_dims": [32, 16, 8]},
        LossConfig("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 4}),
    ),
    "Matryoshka-CoSENT": LossConfig("MatryoshkaLoss", {"matryoshka_dims": [32, 8]}, LossConfig("CoSENTLoss")),
    "AdaptiveLayer-BatchHardTriplet": LossConfig("AdaptiveLayerLoss", {}, LossConfig("BatchHardTripletLoss")),
    "MegaBatchMargin-not-mini-batched": LossConfig("MegaBatchMarginLoss", {"use_mini_batched_version": False}),
    "Contrastive-summed": LossConfig("ContrastiveLoss", {"size_average": False}),
    "GIST-no-anchor-contrast-triplets": None,
}

CASE_IDS = sorted(LOSSES) + sorted(VARIANTS)


def _config(case_id: str, guide: str) -> LossConfig:
    if case_id == "GIST-no-anchor-contrast-triplets":
        return LossConfig("GISTEmbedLoss", {"guide": guide, "contrast_anchors": False, "margin": 0.05})
    return VARIANTS.get(case_id) or example_config(case_id, guide)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir, tiny_model_path, tiny_guide_path):
    n = WORKERS * LOCAL_BATCH * STEPS
    cases = []
    for case_id in CASE_IDS:
        config = _config(case_id, tiny_guide_path)
        rows = dataset_for(config, data_dir, n=n, teacher=tiny_guide_path).to_dict()
        cases.append((case_id, config, rows))
    root = tmp_path_factory.mktemp("parity")
    run(cases, tiny_model_path, root / "one", world=1, steps=STEPS, lr=0.1)
    run(cases, tiny_model_path, root / "two", world=WORKERS, steps=STEPS, lr=0.1)
    return root


@pytest.fixture(scope="module")
def initial(tiny_model_path):
    return {f"model.{n}": p.detach().clone() for n, p in load_model(tiny_model_path).named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_two_workers_equal_one_worker_on_the_global_batch(case_id, trained, initial):
    one = torch.load(trained / "one" / f"{case_id}.pt")
    two = torch.load(trained / "two" / f"{case_id}.pt")
    assert one.keys() == two.keys()
    moved = max((one[k] - initial[k]).abs().max().item() for k in one if k in initial)
    diff = max(((one[k] - two[k]).abs() / one[k].abs().clamp(min=1)).max().item() for k in one)
    assert moved > 1e-3, f"{case_id}: training barely moved the weights ({moved:.2e}); the comparison would be vacuous"
    assert diff < 1e-5, f"{case_id}: 2 workers differ from 1 worker by {diff:.2e} (weights moved {moved:.2e})"
