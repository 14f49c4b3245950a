"""Checkpoints in shared storage cannot run code: a planted pickle payload is refused, not executed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses

from lossweep.sweep import checkpoint


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _training_state(tiny_model_path: str):
    model = SentenceTransformer(tiny_model_path, device="cpu")
    loss = losses.MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, loss, optimizer, scheduler


def test_a_checkpoint_round_trips_through_weights_only_files(tiny_model_path, tmp_path):
    model, loss, optimizer, scheduler = _training_state(tiny_model_path)
    checkpoint.save(tmp_path, model, loss, optimizer, scheduler, step=7, metrics={"eval/x": 0.5})
    assert {p.name for p in tmp_path.iterdir()} == {"model", "weights.safetensors", "state.pt", "metrics.json"}
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    step, metrics = checkpoint.load(tmp_path, model, loss, optimizer, scheduler)
    assert (step, metrics) == (7, {"eval/x": 0.5})
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_a_planted_pickle_payload_is_refused_and_never_runs(tiny_model_path, tmp_path):
    model, loss, optimizer, scheduler = _training_state(tiny_model_path)
    checkpoint.save(tmp_path, model, loss, optimizer, scheduler, step=3, metrics={})
    marker = tmp_path.parent / "payload-ran"
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    state["optimizer"]["planted"] = _Payload(marker)
    torch.save(state, tmp_path / "state.pt")  # what someone with write access to the bucket could do
    with pytest.raises(checkpoint.UnsafeCheckpoint, match="state.pt holds objects other than tensors"):
        checkpoint.load(tmp_path, model, loss, optimizer, scheduler)
    assert not marker.exists()
    # The same file read with pickle (weights_only=False) does run the payload: the test can fail.
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert marker.exists()


def test_a_finished_trial_keeps_its_final_model_only(tiny_model_path, tmp_path):
    model, loss, optimizer, scheduler = _training_state(tiny_model_path)
    for step in (2, 4):
        checkpoint.save(tmp_path / f"checkpoint_00000{step // 2 - 1}", model, loss, optimizer, scheduler, step, {})
    final = tmp_path / "checkpoint_000001"
    before = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    freed = checkpoint.keep_final(str(final))
    after = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000001"]
    assert sorted(p.name for p in final.iterdir()) == ["metrics.json", "model"]
    assert freed == before - after and after < before / 2
    kept = SentenceTransformer(str(final / "model"), device="cpu")  # what export and verdict scoring load
    assert torch.allclose(
        kept.encode(["a wing"], convert_to_tensor=True), model.encode(["a wing"], convert_to_tensor=True)
    )
    assert checkpoint.keep_final(str(final)) == 0  # a second pass (a resumed driver) frees nothing
    assert checkpoint.keep_final(str(tmp_path / "gone" / "checkpoint_000000")) == 0  # nor does a missing one


def test_an_attempt_tune_never_recorded_loses_its_checkpoints_and_keeps_its_logs(tmp_path):
    # A phase's experiment: a recorded trial, and one a killed driver started before Tune saved it
    for trial in ("trainable_1", "trainable_2"):
        for index in (0, 1):
            (tmp_path / trial / f"checkpoint_00000{index}").mkdir(parents=True)
            (tmp_path / trial / f"checkpoint_00000{index}" / "state.pt").write_bytes(b"x" * 100)
        (tmp_path / trial / "result.json").write_text("{}")
    freed = checkpoint.drop_untracked(str(tmp_path), {"trainable_1"})
    assert freed == 200
    assert sorted(p.name for p in (tmp_path / "trainable_1").iterdir()) == [
        "checkpoint_000000",
        "checkpoint_000001",
        "result.json",
    ]
    assert [p.name for p in (tmp_path / "trainable_2").iterdir()] == ["result.json"]
    assert checkpoint.drop_untracked(str(tmp_path / "gone"), set()) == 0
