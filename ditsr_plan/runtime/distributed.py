"""Data-parallel training on PyTorch's own engine: ``torchrun`` starts the processes, this module joins them.

``torchrun --nproc_per_node N -m ditsr_plan run PLAN`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous variables; :func:`join` reads them and initialises the process group (NCCL on CUDA, gloo on
CPU). Without them (a plain ``ditsr-plan run``) there is one process and nothing here does anything.

What each rank does (see docs/runtime.md, "Several GPUs"):
- every rank builds the same modules from the same seed, and checks at start that its schedule graph has
  the same hash as rank 0's;
- rank ``r`` trains on samples ``r*b .. r*b+b-1`` of each step's global batch of ``N*b`` samples (every
  sample has its own seed), the generator under DistributedDataParallel;
- the discriminator is not wrapped: it also runs inside the generator's loss, so its gradients (R1's
  double backward included) are averaged with an explicit all-reduce after its backward;
- the EMA is updated on every rank (the weights are identical, so are the EMAs);
- rank 0 alone logs, evaluates, writes checkpoints and the report; every rank resumes from the same
  checkpoint; stop decisions (a signal on any rank, a watch that fires on rank 0) reach every rank.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from .errors import RunFailure


class DistributedError(RunFailure):
    """The ranks of a run disagree (plan, weights) or cannot be joined."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def from_env() -> Ranks:
    """The ranks torchrun describes in the environment (one process when it does not)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def join(ranks: Ranks, device_type: str) -> Ranks:
    """Initialise the process group for ``ranks`` (NCCL for CUDA, gloo for CPU)."""
    if not ranks.enabled:
        return ranks
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not tdist.is_initialized():
        # evaluation and checkpoint writing happen on rank 0 while the others wait in the next
        # all-reduce: allow them an hour, not the default ten minutes
        tdist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world, timeout=datetime.timedelta(hours=1))
    return Ranks(ranks.rank, ranks.world, ranks.local_rank, backend)


def leave(ranks: Ranks) -> None:
    if ranks.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        tdist.barrier()


def gather_objects(ranks: Ranks, value: object) -> list[object]:
    """``value`` of every rank, in rank order (a list of one without DDP)."""
    if not ranks.enabled:
        return [value]
    out: list[object] = [None] * ranks.world
    tdist.all_gather_object(out, value)
    return out


def broadcast_object(ranks: Ranks, value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not ranks.enabled:
        return value
    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def sum_floats(ranks: Ranks, values: list[float], device: torch.device) -> list[float]:
    """The element-wise sum over ranks of ``values`` (float64; NaN and inf propagate)."""
    if not ranks.enabled or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return t.tolist()


def average_gradients(ranks: Ranks, module: torch.nn.Module) -> None:
    """Average ``module``'s gradients over the ranks (for modules not wrapped in DDP)."""
    if not ranks.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= ranks.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def weights_digest(groups: list) -> str:
    """An exact checksum of the bits of every tensor (computed where they live): two ranks with the same
    digest hold the same weights. ``groups``: modules (their parameters and buffers) or dicts of tensors."""
    total = torch.zeros((), dtype=torch.int64)
    for m_index, group in enumerate(groups):
        tensors = group.values() if isinstance(group, dict) else [*group.parameters(), *group.buffers()]
        for index, t in enumerate(tensors):
            t = t.detach().contiguous()
            if t.dtype.is_floating_point and t.element_size() == 8:
                bits = t.view(torch.int64)
            elif t.dtype.is_floating_point and t.element_size() == 4:
                bits = t.view(torch.int32).to(torch.int64)
            elif t.dtype.is_floating_point and t.element_size() == 2:
                bits = t.view(torch.int16).to(torch.int64)
            else:
                bits = t.to(torch.int64)
            positions = torch.arange(1, bits.numel() + 1, device=bits.device, dtype=torch.int64)
            total = total + ((bits.reshape(-1) * positions).sum().cpu() * (1000003 * (m_index + 1) + index))
    return f"{int(total) & (2**64 - 1):016x}"
