"""CUDA-aware clock reads: `cuda_synchronize(device)` before reading a clock.

CUDA kernels run asynchronously: without a synchronise before reading the clock, a timed span
would measure the launch, not the work. On a CPU device it never imports or touches CUDA.
Stage times themselves are taken by the harness and the engines (time.perf_counter_ns).
"""

from __future__ import annotations


def _is_cuda(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


def cuda_synchronize(device: str) -> None:
    """Wait for queued kernels on `device`; a no-op for CPU devices."""
    if not _is_cuda(device):
        return
    import torch

    torch.cuda.synchronize(device)
