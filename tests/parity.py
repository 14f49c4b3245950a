"""Train the same losses on N gloo workers x B rows and on one process x N*B rows, for comparison."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lossweep.losses import LossConfig, build_loss
from lossweep.sweep.models import load_model
from lossweep.sweep.step import Optimisation, collate, train_step, trainable_parameters

Case = tuple[str, LossConfig, dict]  # (id, loss, column-major rows: steps * global batch)


def trained_state(model: torch.nn.Module, loss: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable weights ('model.*') and those the loss owns besides ('loss.*')."""
    state = {f"model.{n}": p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    own = {id(p) for p in model.parameters()}
    state |= {
        f"loss.{n}": p.detach().clone() for n, p in loss.named_parameters() if p.requires_grad and id(p) not in own
    }
    return state


def train_cases(
    rank: int, world: int, cases: list[Case], model_path: str, out: str, steps: int, lr: float, rendezvous: str
) -> None:
    """Train every case for `steps` SGD steps; rank 0 saves each case's trainable parameters."""
    if world > 1:
        dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        for case_id, config, rows in cases:
            random.seed(0)  # AdaptiveLayer and Matryoshka sample layers/dims with `random`
            torch.manual_seed(0)
            model = load_model(model_path)
            loss = build_loss(config, model, distributed=world > 1, load_model=load_model)
            params = trainable_parameters(loss)
            optimizer = torch.optim.SGD(params, lr=lr)
            n = len(next(iter(rows.values())))
            global_batch = n // steps
            local = global_batch // world
            for step in range(steps):
                start = step * global_batch + rank * local
                batch = {column: values[start : start + local] for column, values in rows.items()}
                features, labels = collate(model, batch)
                train_step(Optimisation(loss, optimizer, params), features, labels)
            if rank == 0:
                torch.save(trained_state(model, loss), Path(out) / f"{case_id}.pt")
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(cases: list[Case], model_path: str, out: Path, world: int, steps: int, lr: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as rendezvous:
        args = (world, cases, model_path, str(out), steps, lr, file_rendezvous(rendezvous))
        if world == 1:
            train_cases(0, *args)
        else:
            mp.start_processes(train_cases, args=args, nprocs=world, start_method="spawn")


def file_rendezvous(folder: str) -> str:
    """An init_method for processes on one machine: a file, not a TCP port that another test's Ray or
    gloo group can take between choosing it and binding it (EADDRINUSE)."""
    return f"file://{Path(folder) / 'rendezvous'}"
