"""LoRA adapters (PEFT): added to a model's transformer, saved and loaded in PEFT's folder layout, merged
into the weights for export.

sentence-transformers' `model.add_adapter` goes through transformers' PEFT integration, which refuses
every peft older than the one it pins (transformers 5.24 wants peft >= 0.22, a release the package
index here does not have). lossweep calls PEFT's own `inject_adapter_in_model` instead, which any peft
>= 0.20 has, and writes the files that integration reads (`adapter_config.json` and
`adapter_model.safetensors` in the transformer module's folder, no full weights), so a folder lossweep
saves loads with `SentenceTransformer(folder)` wherever that integration works, and with `load` here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer

if TYPE_CHECKING:
    from .spec import AdapterSpec

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_ATTRIBUTE = "lossweep_adapter"  # the LoraConfig of the adapter a model carries


def _peft() -> Any:
    try:
        import peft
    except ImportError as error:
        raise ImportError("adapter: LoRA needs peft; pip install 'lossweep[lora]'") from error
    return peft


def transformer(model: SentenceTransformer) -> Transformer:
    """The model's transformer module, the one an adapter goes into."""
    return next(module for module in model if isinstance(module, Transformer))


def adapter_of(model: SentenceTransformer) -> Any | None:
    """The LoraConfig of the adapter the model carries, or None for a plain model."""
    return getattr(model, _ATTRIBUTE, None)


def add_adapter(model: SentenceTransformer, adapter: AdapterSpec, base: str) -> None:
    """Add a fresh LoRA adapter to the model's transformer and freeze everything else in it.
    `base`: the base model's folder or hub id, recorded in the adapter's config as PEFT does."""
    peft = _peft()
    config = peft.LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=list(adapter.target_modules) if adapter.target_modules else None,
        base_model_name_or_path=base,
    )
    peft.inject_adapter_in_model(config, transformer(model).auto_model)
    setattr(model, _ATTRIBUTE, config)


def adapter_problem(model: SentenceTransformer, adapter: AdapterSpec, base: str) -> str | None:
    """Why the adapter cannot go into this model ('field: message'), or None; tried on the model itself."""
    try:
        add_adapter(model, adapter, base)
    except ImportError as error:
        return str(error)
    except ValueError as error:  # PEFT names the layers it could not find
        layers = [n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        return (
            f"adapter.target_modules: {str(error).splitlines()[0][:200]}; this model's linear layers are "
            f"named {sorted(set(layers))}"
        )
    return None


def trained_tensors(model: SentenceTransformer) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the model: every tensor, or with an adapter the adapter's only."""
    if adapter_of(model) is None:
        return model.state_dict()
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _transformer_folder(folder: Path) -> Path:
    """The folder a saved model's transformer module lives in (modules.json names it)."""
    modules = json.loads((folder / "modules.json").read_text())
    entry = next((m for m in modules if m["type"].endswith("Transformer")), modules[0])
    return folder / entry["path"]


def holds_adapter(folder: str | Path) -> bool:
    """Whether a model folder holds an adapter (and its base model's name) instead of full weights."""
    folder = Path(folder)
    return (folder / "modules.json").is_file() and (_transformer_folder(folder) / ADAPTER_CONFIG).is_file()


def save(model: SentenceTransformer, folder: Path) -> None:
    """Save the model as a sentence-transformers folder; with an adapter, the adapter in place of the
    transformer's weights."""
    model.save(str(folder))
    config = adapter_of(model)
    if config is None:
        return
    module = _transformer_folder(folder)
    for weights in module.glob("model*.safetensors"):
        weights.unlink()
    (module / "model.safetensors.index.json").unlink(missing_ok=True)
    config.save_pretrained(str(module))
    state = _peft().get_peft_model_state_dict(transformer(model).auto_model)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(module / ADAPTER_WEIGHTS))


def load(folder: str | Path, device: str | None = "cpu") -> SentenceTransformer:
    """A model folder with an adapter: its base model (named in the adapter's config) with the adapter
    added and its weights loaded, and the folder's own settings (prompts, max_seq_length)."""
    peft = _peft()
    folder = Path(folder)
    module = _transformer_folder(folder)
    config = peft.LoraConfig.from_pretrained(str(module))
    base = config.base_model_name_or_path
    if not base or not (Path(base).exists() or base.count("/") == 1):
        raise FileNotFoundError(f"{module / ADAPTER_CONFIG}: base_model_name_or_path {base!r} is not a folder here")
    model = SentenceTransformer(base, device=device)
    settings = json.loads((module / "sentence_bert_config.json").read_text())
    if settings.get("max_seq_length"):
        model.max_seq_length = settings["max_seq_length"]
    own = json.loads((folder / "config_sentence_transformers.json").read_text())
    model.prompts = dict(own.get("prompts") or {})
    model.default_prompt_name = own.get("default_prompt_name")
    if own.get("similarity_fn_name"):
        model.similarity_fn_name = own["similarity_fn_name"]
    peft.inject_adapter_in_model(config, transformer(model).auto_model)
    result = peft.set_peft_model_state_dict(transformer(model).auto_model, load_file(str(module / ADAPTER_WEIGHTS)))
    if result.unexpected_keys:
        unknown = result.unexpected_keys[:3]
        raise ValueError(f"{module / ADAPTER_WEIGHTS}: tensors this adapter does not have: {unknown}")
    setattr(model, _ATTRIBUTE, config)
    return model.to(device) if device else model


def merge(model: SentenceTransformer) -> SentenceTransformer:
    """Fold the adapter into the weights it adapts and remove it: a plain model, loadable anywhere."""
    if adapter_of(model) is None:
        return model
    from peft.tuners.lora import LoraLayer

    inner = transformer(model).auto_model
    for name, layer in [(n, m) for n, m in inner.named_modules() if isinstance(m, LoraLayer)]:
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(inner.get_submodule(parent), child, layer.get_base_layer())
    delattr(model, _ATTRIBUTE)
    return model
