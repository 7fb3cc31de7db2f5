"""AudioEncoder benchmark: windows [B, T, 16000] -> audio codes [B, T, 128] (log-mel included).

Reference here; fast paths join the same group. ``MESHTALK_BENCH_SIZE=full``: B=8, T=32 (a training
batch) and B=1, T=90 (3 s of inference); default "smoke" is tiny.
"""
import os

import pytest
import torch

import meshtalk_fast as mf

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SHAPES = [(8, 32), (1, 90)] if FULL else [(1, 2)]


def encoder_inputs(B: int, T: int):
    """One setup for every backend: a model and real-looking windows [B, T, 16000]."""
    torch.manual_seed(0)
    model = mf.MeshTalk(50, heads=4, classes=8).eval()  # the audio encoder does not depend on V, H, C
    return model, 0.01 * torch.randn(B, T, 16000, generator=torch.Generator().manual_seed(B * T))


@pytest.mark.parametrize("B,T", SHAPES)
@pytest.mark.parametrize("backend", ["torch"])
def test_encode_audio(benchmark, backend, B, T):
    model, windows = encoder_inputs(B, T)
    benchmark.group = f"encode_audio B={B} T={T}"
    benchmark.extra_info["frames"] = B * T
    with torch.no_grad():
        out = benchmark(lambda: model.encode_audio(windows, backend=backend))
    assert out.shape == (B, T, 128)
