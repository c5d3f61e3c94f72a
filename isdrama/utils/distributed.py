"""torch.distributed helpers that are no-ops in a single process."""

from __future__ import annotations

from typing import Any


def gather_lists(rows: list[Any]) -> list[Any]:
    """Every rank's ``rows`` concatenated in rank order (every rank gets the union) under
    torch.distributed with more than one process, else ``rows``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, rows)
    return [r for part in everything for r in part]


__all__ = ["gather_lists"]


def broadcast_module_buffers(module: Any, src: int = 0) -> None:
    """Copy rank ``src``'s buffers of ``module`` to every rank (no-op without a process group);
    e.g. codebooks initialised by k-means on one rank's data."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src)
