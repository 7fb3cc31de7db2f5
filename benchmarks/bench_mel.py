"""Log-mel benchmark: the fused Triton kernel and the C++ core next to the PyTorch reference, same
inputs, same group.

Framings: per-window (``[B, T, 16000]`` windows, the released model) and streaming (one utterance ``[L]``
framed once on the 10 ms grid). ``MESHTALK_BENCH_SIZE=full``: B=8, T=32 windows and 60 s streamed; the
default "smoke" size is tiny so the normal test suite runs every case. Triton cases need a CUDA GPU,
cpp cases CPU tensors (the core uses every core, as torch does).
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_mel.py --benchmark-enable``.
"""
import os

import pytest
import torch

import meshtalk_fast as mf
from common import device_label, require_backend, skip_triton_without_gpu, synchronized

SIZE = os.environ.get("MESHTALK_BENCH_SIZE", "smoke")
if SIZE not in ("smoke", "full"):
    raise ValueError(f"MESHTALK_BENCH_SIZE must be 'smoke' or 'full', got {SIZE!r}")
WINDOWS = (8, 32) if SIZE == "full" else (1, 2)      # (B, T) windows of 16000 samples
STREAM_SECONDS = 60 if SIZE == "full" else 0.25
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mel_inputs(framing: str) -> torch.Tensor:
    """One setup for every backend: ``[B, T, 16000]`` windows or ``[L]`` samples on DEVICE."""
    g = torch.Generator().manual_seed(0)
    if framing == "windows":
        B, T = WINDOWS
        return (0.01 * torch.randn(B, T, 16000, generator=g)).to(DEVICE)
    return (0.01 * torch.randn(int(STREAM_SECONDS * 16000), generator=g)).to(DEVICE)


@pytest.mark.parametrize("framing", ["windows", "stream"])
@pytest.mark.parametrize("backend", ["torch", "triton", "cpp"])
def test_log_mel(benchmark, backend, framing):
    skip_triton_without_gpu(backend, DEVICE)
    require_backend("log_mel", backend, DEVICE)
    x = mel_inputs(framing)
    label = f"B={WINDOWS[0]} T={WINDOWS[1]}" if framing == "windows" else f"{STREAM_SECONDS:g} s"
    benchmark.group = f"log_mel {framing} {label} ({device_label(DEVICE)})"
    benchmark.extra_info["frames"] = x.numel() // x.shape[-1] * (1 + x.shape[-1] // 160)
    out = benchmark(synchronized(lambda: mf.log_mel(x, backend=backend)))
    assert out.shape == (*x.shape[:-1], 80, 1 + x.shape[-1] // 160)
