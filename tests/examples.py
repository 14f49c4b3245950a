"""A small real dataset for every loss of the catalogue, in the format that loss takes."""

from __future__ import annotations

import random
from pathlib import Path

import datasets

from lossweep.losses import LossConfig, get_entry
from lossweep.sweep import data
from lossweep.sweep.models import load_model
from lossweep.sweep.teacher import with_teacher_embeddings, with_teacher_scores


def grouped_classes(data_dir: Path, n: int, per_class: int = 4, seed: int = 0) -> datasets.Dataset:
    """Banking77 texts, `per_class` rows from each of n // per_class intents, shuffled."""
    full = data.banking77(data_dir / "banking77", "train")
    rows = []
    for label in range(n // per_class):
        rows += [i for i, y in enumerate(full["label"]) if y == label][:per_class]
    random.Random(seed).shuffle(rows)
    return full.select(rows)


def dataset_for(config: LossConfig, data_dir: Path, n: int, teacher: str) -> datasets.Dataset:
    """`n` real rows in the format of `config`'s loss (its base's for a modifier)."""
    name = config.base.name if config.base else config.name
    snli = data_dir / "snli"
    texts = data.unique_texts(data.snli_pairs(snli, "dev"))
    if name in ("DistillKLDivLoss", "MarginMSELoss"):
        return with_teacher_scores(data.snli_triplets(snli, "dev").select(range(n)), load_model(teacher))
    if name in ("MSELoss", "EmbedDistillLoss"):
        return with_teacher_embeddings(data.texts_view(texts[:n]), load_model(teacher))
    if name in (
        "MultipleNegativesSymmetricRankingLoss",
        "CachedMultipleNegativesSymmetricRankingLoss",
        "MegaBatchMarginLoss",
    ):
        return data.snli_pairs(snli, "dev").select(range(n))
    if name in ("TripletLoss", "AnglELoss") or get_entry(name).formats[0].more == "negative":
        return data.snli_triplets(snli, "dev").select(range(n))
    if name in ("CoSENTLoss", "CosineSimilarityLoss"):
        return data.stsb(data_dir / "stsbenchmark", "train").select(range(n))
    if name in ("ContrastiveLoss", "OnlineContrastiveLoss"):
        return data.paws(data_dir / "paws", "dev").select(range(n))
    if get_entry(name).sampler == "group_by_label":
        return grouped_classes(data_dir, n)
    if name == "SoftmaxLoss":
        return data.snli_pair_class(snli, "dev").select(range(n))
    if name == "ContrastiveTensionLoss":
        return data.contrastive_tension_view(texts[: 2 * n], seed=0).select(range(n))
    if name == "ContrastiveTensionLossInBatchNegatives":
        return data.texts_view(texts[:n])
    if name == "GlobalOrthogonalRegularizationLoss":
        return data.snli_pairs(snli, "dev").select(range(n))
    if name == "DenoisingAutoEncoderLoss":
        return data.denoising_view(texts[:n], seed=0)
    raise KeyError(f"no example data for {name}")


def example_config(name: str, guide: str) -> LossConfig:
    """The loss with the parameters a tiny test needs (a guide, small GradCache chunks, 3 labels...)."""
    params: dict = {}
    if name in ("GISTEmbedLoss", "CachedGISTEmbedLoss"):
        params["guide"] = guide
    if "mini_batch_size" in get_entry(name).defaults():
        params["mini_batch_size"] = 4
    if name == "SoftmaxLoss":
        params["num_labels"] = 3
    if get_entry(name).modifier:
        dims = {"matryoshka_dims": [32, 16, 8]} if "Matryoshka" in name else {}
        return LossConfig(name, dims, LossConfig("MultipleNegativesRankingLoss"))
    return LossConfig(name, params)
