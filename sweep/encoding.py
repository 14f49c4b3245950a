"""Encoding a corpus across the cluster: Ray Data's `map_batches` over a pool of encoder actors, each
with one training worker's CPUs and GPUs, as many as the sweep may use at once.

Mining encodes the whole training corpus once; on a cluster of GPUs, one task encoding it leaves the
others idle. Here the texts go to `actors` model replicas (a Ray Data actor pool), and the vectors
come back in the texts' order. Mining then runs sentence-transformers' own `mine_hard_negatives` on a
`Precomputed` model that answers its `encode_query` / `encode_document` calls from those vectors,
so the search, the margins and the sampling stay sentence-transformers'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FAISS_FROM = 200_000  # corpus documents from which mining searches with faiss (BENCHMARKS.md: why)


class _Encoder:
    """One replica of the model on a Ray Data actor: texts in, unit vectors out, in batches."""

    def __init__(
        self, model_ref: str, max_seq_length: int | None, side: str, prompt: str | None, batch_size: int
    ) -> None:
        import torch

        from . import storage
        from .models import load_model

        if storage.is_uri(model_ref):  # a trained checkpoint's model in a bucket
            model_ref = str(storage.local_copy(model_ref))
        self.model = load_model(model_ref, device="cuda" if torch.cuda.is_available() else "cpu")
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.encode = self.model.encode_query if side == "query" else self.model.encode_document
        self.prompt, self.batch_size = prompt, batch_size  # '' keeps the model's own prompt out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encode(
            list(batch["text"]),
            prompt=self.prompt,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return {"row": batch["row"], "vector": vectors.astype(np.float32)}


def encode_on_cluster(
    model_ref: str,
    texts: Sequence[str],
    *,
    side: str,
    prompt: str | None,
    max_seq_length: int | None,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    batch_size: int = 64,
) -> np.ndarray:
    """Unit-normalised embeddings of `texts`, in order, as the model's `encode_query` or `encode_document`
    (`side`) gives them with `prompt`, encoded by `actors` replicas of the model (Ray Data `map_batches`
    over an actor pool; Ray must be running)."""
    import ray.data

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    per_block = max(batch_size, -(-len(texts) // (4 * actors)))  # a few blocks per actor keep every replica busy
    # Blocks made here, in the driver: no read or repartition task needs a CPU the actors hold.
    rows = ray.data.from_items(
        [{"row": i, "text": text} for i, text in enumerate(texts)], override_num_blocks=-(-len(texts) // per_block)
    )
    encoded = rows.map_batches(
        _Encoder,
        fn_constructor_kwargs={
            "model_ref": model_ref,
            "max_seq_length": max_seq_length,
            "side": side,
            "prompt": prompt,
            "batch_size": batch_size,
        },
        batch_size=per_block,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    order, vectors = [], []
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        order.append(batch["row"])
        vectors.append(np.stack(batch["vector"]))
    found = np.concatenate(vectors)[np.argsort(np.concatenate(order))]
    return found


class Precomputed:
    """A SentenceTransformer whose `encode_query` / `encode_document` answer from vectors encoded
    elsewhere (by text) for the sides given; the other side, and everything else (similarity, device,
    dimension), is the model's own."""

    def __init__(self, model: Any, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        self._model, self._vectors = model, vectors  # side ("query" | "document") -> text -> vector

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _lookup(self, side: str, texts: Sequence[str], **kwargs: Any):
        import torch

        found = np.stack([self._vectors[side][text] for text in texts])
        return torch.from_numpy(found).to(self._model.device) if kwargs.get("convert_to_tensor") else found

    def encode_query(self, texts: Sequence[str], **kwargs: Any):
        if "query" not in self._vectors:
            return self._model.encode_query(texts, **kwargs)
        return self._lookup("query", texts, **kwargs)

    def encode_document(self, texts: Sequence[str], **kwargs: Any):
        if "document" not in self._vectors:
            return self._model.encode_document(texts, **kwargs)
        return self._lookup("document", texts, **kwargs)
