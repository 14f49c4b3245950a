"""Hard negatives: mined once per (data, mining model, knobs), cached, and shaped for each loss.

Retrieval data gives (anchor, positive) pairs; triplet and contrastive losses need negatives, and the
choice of negatives decides how well they do. sentence-transformers' `util.mine_hard_negatives`
mines them: it embeds anchors and a corpus (for a BEIR folder, its whole corpus) with a model and
picks, per anchor, candidates ranked between `range_min` and `range_max` that pass the score and
margin filters. It never picks a positive that the *dataset* pairs with the same anchor; lossweep
also drops any document judged relevant to the anchor's query that the training pairs do not hold
(the qrels of a BEIR split, pairs cut by `limit` or carved out for validation), mining a few extra
candidates so each anchor still gets `num_negatives`.

Mining runs once, as a Ray task with one worker's resources, and is cached under
`<output_dir>/negatives/<key>/` (`mined.parquet`: anchor, positive, negative_1..n, scores;
`summary.json`). Trials read the cache and shape it for their loss: n-tuples for losses that take
(anchor, positive, negatives...), triplets (one row per negative) for those that take exactly three
texts, and labelled pairs (1 for the positive, 0 for each negative) for contrastive losses.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from lossweep.losses import InputFormat, LabelKind, get_entry
from lossweep.losses.formats import LABEL_COLUMNS

from . import storage
from .data import fingerprint
from .prompts import MODEL, NONE, spec_prompts
from .prompts import resolve as resolve_prompts

MINING_VERSION = 1  # part of every cache key: bump when what is mined for the same inputs changes
SHAPES = ("n-tuple", "triplets", "labeled-pairs")


class NegativesError(ValueError):
    """Mining cannot run as asked; the message names the field and the fix."""


@dataclass(frozen=True)
class Knobs:
    """What `mine_hard_negatives` is asked for (the spec's `negatives` section, model resolved)."""

    model: str
    num_negatives: int
    range_min: int
    range_max: int | None
    max_score: float | None
    absolute_margin: float | None
    relative_margin: float | None
    sampling_strategy: str
    seed: int
    batch_size: int
    query_prompt: str = ""  # the mining model's prompts: the spec's for its own model
    document_prompt: str = ""


def knobs(spec) -> Knobs:
    """The mining knobs of a spec (its `negatives` section), the mining model defaulting to the spec's
    and mining with the spec's prompts; another mining model uses its own (none where `prompts: none`)."""
    n = spec.negatives
    own_model = n.model is None or n.model == spec.model
    prompts = spec_prompts(spec) if own_model else resolve_prompts(MODEL if spec.prompts != NONE else NONE, n.model)
    return Knobs(
        n.model or spec.model,
        n.num_negatives,
        n.range_min,
        n.range_max,
        n.max_score,
        n.absolute_margin,
        n.relative_margin,
        n.sampling_strategy,
        n.seed,
        n.batch_size,
        prompts.query,
        prompts.document,
    )


# --- Which losses use them, and in which shape ---------------------------------------------------------


def shape_for(loss_name: str, requested: str = "auto") -> str | None:
    """The mined shape a loss takes (None: it cannot take mined negatives)."""
    entry = get_entry(loss_name)
    formats = entry.formats
    if requested != "auto":
        return requested if any(_fits(fmt, requested) for fmt in formats) else None
    for shape in SHAPES:
        if any(_fits(fmt, shape) for fmt in formats):
            return shape
    return None


def mined_shape(loss_name: str, requested: str = "auto", num_negatives: int = 1) -> str | None:
    """The shape a loss trains on once negatives are mined for (anchor, positive) pairs: the shape it
    takes and whose rows it fits; None when mining cannot serve it (a modifier: ask its base)."""
    from lossweep.losses.fit import fit

    if get_entry(loss_name).modifier:
        return None
    shape = shape_for(loss_name, requested)
    return shape if shape is not None and fit(loss_name, shaped_features(shape, num_negatives)).ok else None


def _fits(fmt: InputFormat, shape: str) -> bool:
    if shape == "labeled-pairs":
        return len(fmt.roles) == 2 and fmt.label is LabelKind.BINARY and fmt.more is None
    if fmt.label is not LabelKind.NONE:
        return False
    if shape == "triplets":
        return fmt.accepts_texts(3)
    return fmt.more == "negative" and fmt.max_more is None and len(fmt.roles) == 2  # n-tuple


def shaped_features(shape: str, num_negatives: int) -> datasets.Features:
    """The columns a shape has, for checking a loss against mined data before anything is mined."""
    text = datasets.Value("string")
    if shape == "labeled-pairs":
        return datasets.Features({"sentence1": text, "sentence2": text, "label": datasets.Value("int64")})
    if shape == "triplets":
        return datasets.Features({"anchor": text, "positive": text, "negative": text})
    negatives = {f"negative_{i}": text for i in range(1, num_negatives + 1)}
    return datasets.Features({"anchor": text, "positive": text} | negatives)


def shape(mined: datasets.Dataset, kind: str) -> datasets.Dataset:
    """Mined n-tuples (anchor, positive, negative_1..n[, scores]) in the shape a loss takes."""
    negatives = [c for c in mined.column_names if c.startswith("negative_")]
    if kind == "n-tuple":
        return mined.select_columns(["anchor", "positive", *negatives])
    anchors, positives = mined["anchor"], mined["positive"]
    columns = [mined[c] for c in negatives]
    if kind == "triplets":
        rows = [(a, p, n[i]) for i, (a, p) in enumerate(zip(anchors, positives, strict=True)) for n in columns]
        return datasets.Dataset.from_dict(
            {"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows], "negative": [r[2] for r in rows]}
        )
    pairs = dict.fromkeys((a, p, 1) for a, p in zip(anchors, positives, strict=True))
    pairs |= dict.fromkeys((a, n[i], 0) for i, a in enumerate(anchors) for n in columns)
    rows = list(pairs)
    return datasets.Dataset.from_dict(
        {"sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows], "label": [r[2] for r in rows]},
        features=shaped_features("labeled-pairs", 0),
    )


# --- Inputs, checks and the cache key --------------------------------------------------------------------


@dataclass(frozen=True)
class MiningInput:
    """The pairs to mine for, the corpus to mine from, and each anchor's documents judged relevant."""

    pairs: datasets.Dataset
    corpus: list[str] | None  # None: the positives (the dataset is not a BEIR folder)
    relevant: dict[str, set[str]]


def problems(inputs: MiningInput, k: Knobs, resolve_model) -> list[str]:
    """Everything wrong with a mining request that shows before Ray starts, each with its field and fix."""
    found = []
    columns = inputs.pairs.column_names
    if len(columns) != 2 or any(c in LABEL_COLUMNS for c in columns):
        found.append(
            f"negatives: mining needs (anchor, positive) pairs, but the training data has columns {columns}; "
            "use a pairs view of the data (e.g. view: pairs) or drop the negatives section"
        )
    try:
        resolve_model(k.model)
    except ValueError as error:
        found.append(f"negatives.model: {error}")
    if k.num_negatives < 1:
        found.append(f"negatives.num_negatives: {k.num_negatives} must be at least 1")
    if k.range_min < 0:
        found.append(f"negatives.range_min: {k.range_min} must be >= 0")
    if k.range_max is not None and k.range_min >= k.range_max:
        found.append(f"negatives.range_min: {k.range_min} >= range_max {k.range_max}; range_min must be the smaller")
    elif k.range_max is not None and k.num_negatives > k.range_max - k.range_min:
        found.append(
            f"negatives.num_negatives: {k.num_negatives} per anchor, but only {k.range_max - k.range_min} candidates "
            f"rank between range_min {k.range_min} and range_max {k.range_max}; raise range_max or ask for fewer"
        )
    if not found:
        size = len(set(inputs.corpus if inputs.corpus is not None else inputs.pairs[columns[1]]))
        most_relevant = max((len(docs) for docs in inputs.relevant.values()), default=1)
        if k.num_negatives > size - most_relevant - k.range_min:
            found.append(
                f"negatives.num_negatives: {k.num_negatives} per anchor, but the corpus has {size} texts, "
                f"{most_relevant} of them relevant to one anchor; ask for fewer negatives"
            )
    if k.sampling_strategy not in ("top", "random"):
        found.append(f"negatives.sampling_strategy: {k.sampling_strategy!r} is not one of ['top', 'random']")
    return found


def cache_key(inputs: MiningInput, k: Knobs, model_id: str) -> str:
    """One key per (training pairs, corpus, judgements, mining model, knobs)."""
    digest = hashlib.sha256()
    head = {"version": MINING_VERSION, "pairs": fingerprint(inputs.pairs), "model": model_id}
    digest.update(json.dumps(head).encode())
    asked = {name: value for name, value in asdict(k).items() if not (name.endswith("_prompt") and not value)}
    digest.update(json.dumps(asked | {"model": None}, sort_keys=True).encode())  # no prompt: the key of old
    for text in inputs.corpus or ():
        digest.update(text.encode())
    for anchor in sorted(inputs.relevant):
        digest.update(json.dumps([anchor, sorted(inputs.relevant[anchor])]).encode())
    return digest.hexdigest()[:16]


def cache_dir(output_dir: str, key: str) -> str:
    """The cache folder of one mining key: a local path or a URI, as output_dir is."""
    return storage.join(output_dir, "negatives", key)


def read_summary(directory: str | Path) -> dict[str, Any] | None:
    """The summary of a cache folder; None if nothing was mined there (summary.json is written last)."""
    text = storage.read_text(storage.join(str(directory), "summary.json"))
    return json.loads(text) if text is not None else None


def read(directory: str | Path) -> datasets.Dataset:
    """The mined n-tuples of a cache folder; an error with the fix if they were never mined."""
    location = storage.join(str(directory), "mined.parquet")
    if read_summary(directory) is None or not storage.exists(location):
        raise NegativesError(
            f"{location}: no mined negatives here; mine them first with `lossweep negatives SPEC` "
            "(lossweep train and sweep do it themselves)"
        )
    return datasets.Dataset.from_parquet(str(storage.local_copy(str(directory)) / "mined.parquet"))


# --- Mining ----------------------------------------------------------------------------------------------


def mine(inputs: MiningInput, k: Knobs, model, directory: str | Path, use_faiss: bool = False) -> dict[str, Any]:
    """Mine with sentence-transformers (its faiss search with `use_faiss`), drop judged-relevant documents,
    write the cache (a local folder or a URI; summary.json last, so a half-written cache is never read);
    the summary."""
    from sentence_transformers.util import mine_hard_negatives

    started = time.perf_counter()
    random.seed(k.seed)  # `sampling_strategy: random` samples with Python's random
    anchor, positive = inputs.pairs.column_names
    pairs = inputs.pairs.rename_columns({anchor: "anchor", positive: "positive"})
    in_dataset: dict[str, set[str]] = {}
    for a, p in zip(pairs["anchor"], pairs["positive"], strict=True):
        in_dataset.setdefault(a, set()).add(p)
    # Documents judged relevant but absent from the pairs can come up as candidates: mine spares.
    spares = max((len(docs - in_dataset.get(a, set())) for a, docs in inputs.relevant.items()), default=0)
    if k.range_max is not None:
        spares = min(spares, k.range_max - k.range_min - k.num_negatives)
    mined = mine_hard_negatives(
        pairs,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=inputs.corpus,
        range_min=k.range_min,
        range_max=k.range_max,
        max_score=k.max_score,
        absolute_margin=k.absolute_margin,
        relative_margin=k.relative_margin,
        num_negatives=k.num_negatives + spares,
        sampling_strategy=k.sampling_strategy,
        output_format="n-tuple",
        output_scores=True,
        batch_size=k.batch_size,
        use_faiss=use_faiss,
        query_prompt=k.query_prompt,  # '' keeps a model's own prompt out, as `prompts: none` asks
        corpus_prompt=k.document_prompt,
        verbose=False,
    )
    kept, dropped = _without_relevant(mined, inputs.relevant, k.num_negatives)
    with tempfile.TemporaryDirectory() as tmp:
        kept.to_parquet(str(Path(tmp) / "mined.parquet"))
        storage.upload(Path(tmp), str(directory))
    summary = _summary(pairs, kept, dropped, k, time.perf_counter() - started)
    storage.write_text(storage.join(str(directory), "summary.json"), json.dumps(summary, indent=2))
    return summary


def _without_relevant(
    mined: datasets.Dataset, relevant: dict[str, set[str]], wanted: int
) -> tuple[datasets.Dataset, int]:
    """Each row's first `wanted` negatives that are not judged relevant to its anchor; rows that keep
    fewer are dropped. Returns the rows and how many relevant documents were dropped as negatives."""
    columns = sorted((c for c in mined.column_names if c.startswith("negative_")), key=lambda c: int(c.split("_")[1]))
    out: dict[str, list] = {"anchor": [], "positive": [], **{f"negative_{i}": [] for i in range(1, wanted + 1)}}
    out["scores"] = []
    dropped = 0
    for row in mined:
        bad = relevant.get(row["anchor"], set())
        candidates = [(row[c], row["scores"][i + 1]) for i, c in enumerate(columns)]
        clean = [(text, score) for text, score in candidates if text not in bad]
        dropped += len(candidates) - len(clean)
        if len(clean) < wanted:
            continue
        out["anchor"].append(row["anchor"])
        out["positive"].append(row["positive"])
        for i, (text, _) in enumerate(clean[:wanted], start=1):
            out[f"negative_{i}"].append(text)
        out["scores"].append([row["scores"][0]] + [score for _, score in clean[:wanted]])
    return datasets.Dataset.from_dict(out), dropped


def _summary(pairs: datasets.Dataset, kept: datasets.Dataset, dropped: int, k: Knobs, seconds: float) -> dict:
    scores = np.array(kept["scores"]) if len(kept) else np.zeros((0, k.num_negatives + 1))
    margins = (scores[:, :1] - scores[:, 1:]).ravel() if len(kept) else np.zeros(0)
    quantiles = {f"p{q}": float(np.percentile(margins, q)) for q in (5, 25, 50, 75, 95)} if margins.size else {}
    return {
        "pairs": len(pairs),
        "rows": len(kept),
        "anchors": len(set(kept["anchor"])),
        "pairs_without_enough_negatives": len(pairs) - len(kept),
        "negatives_per_anchor": k.num_negatives,
        "score_margin_quantiles": quantiles,  # positive score minus negative score, over all mined negatives
        "dropped_false_negatives": dropped,
        "mining_seconds": round(seconds, 2),
        "knobs": asdict(k),
    }
