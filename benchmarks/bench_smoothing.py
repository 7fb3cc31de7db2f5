"""The released post-smoothing (ops "post_smooth" and "smooth_step"): the PyTorch reference next to the
C++ core, same inputs, same group. Whole sequences, and one frame pushed into a streaming smoother
(delay 4, the live path's per-frame cost).

``MESHTALK_BENCH_SIZE=full``: 60 s at 30 fps (T=1800) of V=6172 vertices; the default "smoke" size is
tiny so the normal test suite runs every case.
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_smoothing.py --benchmark-enable``.
"""
import os

import pytest
import torch

import meshtalk_fast as mf
from common import require_backend
from meshtalk_fast.base.dispatch import resolve

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
T, V = (1800, 6172) if FULL else (20, 50)


def smoothing_inputs():
    """One setup for every backend: frames [T, V, 3] and masks ([V], [V])."""
    g = torch.Generator().manual_seed(0)
    return 100 * torch.randn(T, V, 3, generator=g), (torch.rand(V, generator=g), torch.rand(V, generator=g))



@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_post_smooth(benchmark, backend):
    require_backend("post_smooth", backend)
    frames, masks = smoothing_inputs()
    benchmark.group = f"post_smooth T={T} V={V}"
    benchmark.extra_info["frames"] = T
    with torch.no_grad():
        out = benchmark(mf.post_smooth, frames, *masks, backend=backend)
    assert out.shape == (T, V, 3)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_smooth_step(benchmark, backend):
    require_backend("smooth_step", backend)
    frames, masks = smoothing_inputs()
    benchmark.group = f"smooth_step (one frame, delay 4) V={V}"
    smoother = resolve("smooth_step", backend, torch.device("cpu"))(*masks, 4)
    smoother.push(frames[:12])  # past the start: every push emits one frame
    frame = frames[12:13]
    out = benchmark(smoother.push, frame)
    assert out.shape == (1, V, 3)
