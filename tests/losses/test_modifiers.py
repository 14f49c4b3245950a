"""Modifiers (Matryoshka, Matryoshka2d, AdaptiveLayer) wrap exactly the bases the registry allows.

Every modifier is built around every plain loss and trained one step on real data of the base's
format: the registry must refuse precisely the pairs that fail.
"""

from __future__ import annotations

import math
import warnings

import pytest

from lossweep.losses import LOSSES, LossConfig, build_loss, get_entry
from lossweep.sweep.models import load_model
from lossweep.sweep.step import collate, loss_value

from examples import dataset_for, example_config

MODIFIERS = [name for name, entry in LOSSES.items() if entry.modifier]
BASES = [name for name, entry in LOSSES.items() if not entry.modifier]


def _one_step(config: LossConfig, data_dir, model_path, guide_path) -> str | None:
    """None when a training step works, else what went wrong."""
    model = load_model(model_path)
    dataset = dataset_for(config, data_dir, n=8, teacher=guide_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # AdaptiveLayer only warns about cached bases
            loss = build_loss(config, model, distributed=False, load_model=load_model)
            features, labels = collate(model, dataset.to_dict())
            value = loss_value(loss(features, labels))
            value.backward()
    except Exception as error:  # any failure is the finding
        return f"{type(error).__name__}: {error}"
    return None if math.isfinite(value.item()) else f"loss {value.item()}"


@pytest.mark.slow
@pytest.mark.parametrize("modifier", MODIFIERS)
def test_registry_refuses_exactly_the_bases_that_fail(modifier, data_dir, tiny_model_path, tiny_guide_path):
    wrong = []
    for base in BASES:
        base_config = example_config(base, guide=tiny_guide_path)
        # Every dim in every step: Matryoshka2d otherwise samples one dim, and may skip truncation.
        params = {"matryoshka_dims": [32, 16], "n_dims_per_step": -1} if "Matryoshka" in modifier else {}
        config = LossConfig(modifier, params, base_config)
        refused = get_entry(modifier).refuses(base_config)
        failure = _one_step(config, data_dir, tiny_model_path, tiny_guide_path) if not refused else None
        if refused:
            # A refused pair must really fail when forced (bypassing the registry's check).
            forced = LossConfig(modifier, params, base_config)
            failure = _forced_failure(forced, data_dir, tiny_model_path, tiny_guide_path)
            if failure is None:
                wrong.append(f"{base}: refused ({refused}) but trains fine")
        elif failure:
            wrong.append(f"{base}: allowed but fails: {failure}")
    assert not wrong, "\n".join(wrong)


def _forced_failure(config: LossConfig, data_dir, model_path, guide_path) -> str | None:
    import lossweep.losses.registry as registry

    original = registry.LossEntry.refuses
    registry.LossEntry.refuses = lambda self, base: None
    try:
        return _one_step(config, data_dir, model_path, guide_path)
    finally:
        registry.LossEntry.refuses = original
