"""Labels from a teacher model, for the distillation losses (MarginMSE, DistillKLDiv, MSE, EmbedDistill)."""

from __future__ import annotations

import datasets
import torch
from sentence_transformers import SentenceTransformer


def _encode(teacher: SentenceTransformer, texts: list[str], batch_size: int) -> torch.Tensor:
    return teacher.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)


def with_teacher_scores(
    dataset: datasets.Dataset, teacher: SentenceTransformer, batch_size: int = 64
) -> datasets.Dataset:
    """Add `label` = the teacher's cosine score of the first column against each other column.

    Fits DistillKLDivLoss (one score per candidate) and MarginMSELoss (which also takes the
    per-candidate scores and forms the margins itself).
    """
    columns = dataset.column_names
    query = _encode(teacher, dataset[columns[0]], batch_size)
    scores = [(query * _encode(teacher, dataset[c], batch_size)).sum(-1) for c in columns[1:]]
    return dataset.add_column("label", torch.stack(scores, dim=1).cpu().tolist())


def with_teacher_embeddings(
    dataset: datasets.Dataset, teacher: SentenceTransformer, batch_size: int = 64
) -> datasets.Dataset:
    """Add `label` = the teacher's embedding of the first column (MSELoss, EmbedDistillLoss)."""
    embeddings = teacher.encode(dataset[dataset.column_names[0]], batch_size=batch_size, convert_to_numpy=True)
    return dataset.add_column("label", embeddings.tolist())
