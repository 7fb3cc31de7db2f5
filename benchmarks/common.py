"""Helpers shared by the benchmark suites."""
import pytest
import torch

import meshtalk_fast as mf


def require_backend(op: str, backend: str, device: torch.device = torch.device("cpu")) -> None:
    """Skip the case, naming the reason, when ``backend`` of ``op`` cannot run on ``device`` (no CUDA
    GPU for triton, no built C++ core for cpp). Checked outside grad mode, as the benchmarks run the
    ops (the C++ core computes no gradients)."""
    with torch.no_grad():
        reason = mf.available_backends(op, device)[backend]
    if reason is not None:
        pytest.skip(f"{op} backend {backend!r} cannot run here: {reason}")


def synchronized(fn):
    """``fn`` wrapped so a timing includes the GPU work it queued (a no-op on the CPU)."""
    def call():
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return call
