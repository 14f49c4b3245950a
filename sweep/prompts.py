"""The prompts an instruction-tuned embedder expects ("query: " / "passage: " for E5, BGE's query
instruction...), resolved once from the spec and the model and applied everywhere the model reads
text: each training column (as sentence-transformers' trainer applies `prompts=`), every evaluator's
queries and corpus, mining and the untrained model's scores.

Which side gets which prompt follows sentence-transformers: `encode_query` for queries,
`encode_document` for documents. Rows without a label (anchor, positive, negatives...) are a query
and its documents; labelled rows (scored pairs, 0/1 pairs, class texts) are symmetric, and every
text takes the query prompt, as MTEB encodes symmetric tasks. `columns` overrides a training column.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL, NONE = "model", "none"  # the model's own prompts; no prompt anywhere
CONFIG = "config_sentence_transformers.json"  # where a sentence-transformers model declares its prompts
DOCUMENT_NAMES = ("document", "passage", "corpus")  # what models call the document side's prompt
PARAM = "applied_prompts"  # the MLflow params of the prompts applied


@dataclass(frozen=True)
class Prompts:
    """The prompt of each side ('' for none) and where it came from."""

    query: str = ""
    document: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)  # training columns given their own
    source: str = NONE  # "spec", "model" (the model's own) or "none"

    def for_columns(self, texts: Sequence[str], labelled: bool) -> list[str]:
        """The prompt of each text column of training rows, in order."""
        sides = [self.query] * len(texts) if labelled else [self.query] + [self.document] * (len(texts) - 1)
        return [self.columns.get(column, side) for column, side in zip(texts, sides, strict=True)]

    @property
    def any(self) -> bool:
        return bool(self.query or self.document or any(self.columns.values()))

    def params(self) -> dict[str, str]:
        """The prompts as MLflow params record them: the strings applied, beside the spec's `prompts`
        (which may say only `model`)."""
        out = {f"{PARAM}.source": self.source, f"{PARAM}.query": self.query, f"{PARAM}.document": self.document}
        return out | {f"{PARAM}.columns.{name}": prompt for name, prompt in self.columns.items()}

    def declare(self, model) -> None:
        """Make these the model's own `query` / `document` prompts, so that its checkpoints and the
        exported model encode as it was trained (its other named prompts stay)."""
        if self.source == MODEL:
            return
        kept = {name: prompt for name, prompt in model.prompts.items() if name not in ("query", *DOCUMENT_NAMES)}
        model.prompts = kept | {name: p for name, p in (("query", self.query), ("document", self.document)) if p}

    def describe(self) -> str:
        """One line for `lossweep validate` and the logs."""
        if not self.any:
            return "prompts: none" + (" (the model declares none)" if self.source == MODEL else "")
        sides = f"query {self.query!r}, document {self.document!r}"
        sides += "".join(f", {name} {prompt!r}" for name, prompt in self.columns.items())
        origin = "the model's own" if self.source == MODEL else "from the spec"
        return f"prompts: {origin} ({sides})"


def declared(model_ref: str) -> dict[str, str]:
    """The prompts a model declares in its sentence-transformers config (read from the folder or the
    Hugging Face cache, without loading the model); {} when it declares none, or is not there (the
    model checks say so)."""
    from .models import ModelError, resolve_model

    try:
        return dict(_declared(resolve_model(model_ref)))
    except ModelError:
        return {}


@functools.lru_cache(maxsize=8)
def _declared(resolved: str) -> tuple[tuple[str, str], ...]:
    path = Path(resolved) / CONFIG
    if not path.is_file():
        import huggingface_hub

        cached = huggingface_hub.try_to_load_from_cache(resolved, CONFIG)
        path = Path(cached) if isinstance(cached, str) else None
    if path is None:
        return ()
    prompts = json.loads(path.read_text()).get("prompts") or {}
    return tuple((str(name), str(prompt)) for name, prompt in prompts.items())


def resolve(setting: Any, model_ref: str) -> Prompts:
    """The prompts of a spec's `prompts` value (`model`, `none` or {query, document, columns})."""
    if setting == NONE or setting is None:
        return Prompts(source=NONE)
    if setting == MODEL:
        own = declared(model_ref)
        document = next((own[name] for name in DOCUMENT_NAMES if name in own), "")
        return Prompts(own.get("query", ""), document, source=MODEL)
    values = setting if isinstance(setting, Mapping) else setting.model_dump()
    return Prompts(values.get("query") or "", values.get("document") or "", dict(values.get("columns") or {}), "spec")


def spec_prompts(spec) -> Prompts:
    """The prompts a spec's model trains, is scored and mines with."""
    return resolve(spec.prompts, spec.model)
