"""A trial's checkpoint: everything needed to resume it, in files that cannot run code when read.

- `model/`: the model as a sentence-transformers folder (what `export` and verdict scoring load; with
  a LoRA adapter, the adapter and its base model's name, not the full weights);
- `weights.safetensors`: the trained tensors (the model's, or its adapter's, and the loss's own, e.g. a classifier);
- `state.pt`: optimiser, scheduler and random-generator state, read with `torch.load(weights_only=True)`
  (tensors, numbers, strings and containers only);
- `metrics.json`: what the trial reported at that step.

A sweep's finished trial keeps only what export and verdict scoring read (`keep_final`): its final
checkpoint's `model/` and `metrics.json`, a quarter of a MiniLM checkpoint with AdamW state; an
attempt Tune never recorded (its driver went down first) keeps none (`drop_untracked`).

Checkpoints can live in shared storage that other people write to; a file planted there must not
run code on every worker that resumes (pickle does). A `state.pt` with anything else in it is
refused with `UnsafeCheckpoint`.
"""

from __future__ import annotations

import json
import pickle
import posixpath
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import adapters, storage


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file holds something other than tensors and plain data; it is not loaded."""


def _own_parameters(loss: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors the loss owns beside the model (a classifier, a second encoder)."""
    in_model = {id(p) for p in model.parameters()}
    return {n: p for n, p in loss.named_parameters() if id(p) not in in_model}


def _rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position, "gauss": [has_gauss, gauss]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    *mt, version = state["python"]
    random.setstate((version, tuple(mt), state["python_gauss"]))
    numpy = state["numpy"]
    has_gauss, gauss = numpy["gauss"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, model, loss: nn.Module, optimizer, scheduler, step: int, metrics: dict) -> None:
    """Write a checkpoint of the training state at `step` into `directory`."""
    adapters.save(model, directory / "model")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in adapters.trained_tensors(model).items()}
    tensors |= {f"loss.{k}": v.detach().cpu().contiguous() for k, v in _own_parameters(loss, model).items()}
    save_file(_unshared(tensors), str(directory / "weights.safetensors"))
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    torch.save(state | {"rng": _rng_state()}, directory / "state.pt")
    (directory / "metrics.json").write_text(json.dumps(metrics))


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def load(directory: Path, model, loss: nn.Module, optimizer, scheduler) -> tuple[int, dict]:
    """Restore the training state saved in `directory`; returns (step, metrics reported then)."""
    try:
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(
            f"{directory / 'state.pt'} holds objects other than tensors and plain data, so it is not loaded "
            f"(it was not written by lossweep, or was changed since): {str(error).splitlines()[0][:200]}. "
            "Delete the checkpoint folder to start the trial over"
        ) from None
    tensors = load_file(str(directory / "weights.safetensors"))
    saved = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    if adapters.adapter_of(model) is None:
        model.load_state_dict(saved)
    else:  # the adapter's tensors only: the frozen base is the base model as loaded
        missing = set(adapters.trained_tensors(model)) - set(saved)
        unexpected = model.load_state_dict(saved, strict=False).unexpected_keys
        if missing or unexpected:
            raise UnsafeCheckpoint(
                f"{directory / 'weights.safetensors'} does not hold this trial's adapter (missing "
                f"{sorted(missing)[:3]}, unexpected {unexpected[:3]}); delete the checkpoint folder to start over"
            )
    own = _own_parameters(loss, model)
    with torch.no_grad():
        for name, value in tensors.items():
            if name.startswith("loss."):
                own[name.removeprefix("loss.")].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["step"], json.loads((directory / "metrics.json").read_text())


RESUME_ONLY = ("state.pt", "weights.safetensors")  # read only to resume a trial


def keep_final(location: str) -> int:
    """Reduce a finished trial's checkpoints to what export and verdict scoring read: the final one
    (`location`) without its resume-only files; its other checkpoints go. Returns the bytes freed."""
    fs, path = storage.filesystem(location)
    path = path.rstrip("/")
    freed = 0
    for info in fs.get_file_info(pafs.FileSelector(posixpath.dirname(path), allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_") and info.path != path:
            freed += _size(fs, info.path)
            fs.delete_dir(info.path)
    for name in RESUME_ONLY:
        info = fs.get_file_info(posixpath.join(path, name))
        if info.type == pafs.FileType.File:
            freed += info.size
            fs.delete_file(info.path)
    return freed


def drop_checkpoints(location: str) -> int:
    """Delete every checkpoint folder directly inside `location` (a trial's, or a worker group's run
    folder); what else is there (logs, results) stays. Returns the bytes freed."""
    fs, path = storage.filesystem(location)
    freed = 0
    for info in fs.get_file_info(pafs.FileSelector(path.rstrip("/"), allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
            freed += _size(fs, info.path)
            fs.delete_dir(info.path)
    return freed


def drop_untracked(experiment: str, trial_folders: set[str]) -> int:
    """Delete the checkpoints in the trial folders of a Tune experiment other than `trial_folders`
    (names): attempts a driver started before it went down and Tune never recorded, whose trials ran
    again under new ids. Returns the bytes freed."""
    fs, path = storage.filesystem(experiment)
    return sum(
        drop_checkpoints(storage.join(experiment, info.base_name))
        for info in fs.get_file_info(pafs.FileSelector(path.rstrip("/"), allow_not_found=True))
        if info.type == pafs.FileType.Directory and info.base_name not in trial_folders
    )


def _size(fs: pafs.FileSystem, folder: str) -> int:
    files = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
    return sum(info.size for info in files if info.type == pafs.FileType.File)
