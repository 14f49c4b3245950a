"""The untrained model's scores on eval sets, computed once per (model, eval set, sequence length, sizes)
and cached under `<output_dir>/untrained/<key>.json` (metrics and per-query values), as mined negatives
are: `lossweep plan` reads them before any training, and a second plan or sweep of the same model and
data scores nothing again.

Scoring runs as a Ray task with one worker's resources (`tasks.py`), as the sweep's own baseline does;
a large corpus is encoded across the cluster first.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import storage
from .inputs import EvalSet, eval_fingerprint, load_eval
from .models import model_fingerprint
from .prompts import spec_prompts
from .spec import Spec

VERSION = 1  # part of every key: bump when what is scored for the same inputs changes


def cache_key(spec: Spec, eval_set: EvalSet) -> str:
    """One key per (model, eval set's content and type, sequence length, sizes scored, prompts)."""
    prompts = spec_prompts(spec)
    parts = {
        "version": VERSION,
        "model": model_fingerprint(spec.model),
        "max_seq_length": spec.max_seq_length,
        "set": eval_fingerprint(eval_set),
        "type": eval_set.ref.type,
        "dims": list(spec.evaluation.dims or spec.matryoshka_dims or ()),
    }
    if prompts.any:  # no prompt: the key it had before prompts existed
        parts["prompts"] = [prompts.query, prompts.document]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_file(spec: Spec, eval_set: EvalSet) -> str:
    return storage.join(spec.output_dir, "untrained", f"{cache_key(spec, eval_set)}.json")


def scores(spec: Spec, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per eval set named: {"metrics": name -> value, "per_query": name -> item -> value}, read from the
    cache or scored now (in one Ray task for every set missing) and cached."""
    from .tasks import score_untrained  # Ray, only when something must be scored

    sets = {ref.label: load_eval(ref, spec) for ref in spec.eval if ref.label in labels}
    found: dict[str, dict[str, Any]] = {}
    for label, eval_set in sets.items():
        text = storage.read_text(cache_file(spec, eval_set))
        if text is not None:
            found[label] = json.loads(text)
    missing = [label for label in labels if label not in found]
    if missing:
        for label, result in score_untrained(spec, missing).items():
            storage.write_text(cache_file(spec, sets[label]), json.dumps(result))
            found[label] = result
    return found
