"""Sampler benchmarks (op "sample"): the autoregressive sampler (bench_decoder.py: the VertexUnet decoder).

Reference (PyTorch) and the C++ core ("cpp") in the same groups on the same inputs. Sizes:
``MESHTALK_BENCH_SIZE=full`` gives the released sizes (H=16, C=128, V=6172, T=90); the default
"smoke" size runs in the normal test suite so these benchmarks never rot.
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_sampler.py --benchmark-enable``.
The wider measurements of the C++ core (frames/s over B, real-time batch, memory, GEMM backends)
come from ``python benchmarks/decoding_report.py``; both feed benchmarks/RESULTS.md.
"""
import os

import pytest
import torch

import meshtalk_fast as mf
from common import require_backend

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SIZE = dict(V=6172, H=16, C=128, T=90) if FULL else dict(V=50, H=4, C=8, T=3)
SAMPLE_BATCHES = [1, 32] if FULL else [1, 3]


def make_model() -> mf.MeshTalk:
    """The model both decoding benchmarks use (random weights at SIZE)."""
    torch.manual_seed(0)
    return mf.MeshTalk(SIZE["V"], heads=SIZE["H"], classes=SIZE["C"]).eval()


def sample_inputs(B: int):
    """One setup for every sampler backend: model and audio codes [B, T, 128]."""
    return make_model(), torch.randn(B, SIZE["T"], 128, generator=torch.Generator().manual_seed(B))



@pytest.mark.parametrize("B", SAMPLE_BATCHES)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_sample(benchmark, backend, B):
    require_backend("sample", backend)
    model, audio_code = sample_inputs(B)
    benchmark.group = f"sample B={B} T={SIZE['T']} H={SIZE['H']} C={SIZE['C']}"
    benchmark.extra_info["frames"] = B * SIZE["T"]
    run = lambda: model.sample(audio_code, argmax=True, backend=backend)  # noqa: E731
    run()  # warm-up: the cpp backend lays out (and caches) the weights on its first call
    out = benchmark(run)
    assert out.shape == (B, SIZE["T"], SIZE["H"], SIZE["C"])
