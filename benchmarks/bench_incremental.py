"""Step-at-a-time decoding (ops "sample_step" and "decode_step"): the latency of one frame of B
streams, the PyTorch steppers (incremental.py) next to the C++ core's (SamplerState / DecoderState
through _cpp.CppPriorStepper / CppDecoderStepper), same inputs, same group.

``MESHTALK_BENCH_SIZE=full``: the released sizes (H=16, C=128, V=6172), B = 1 (one live stream, a frame
every 33 ms) and B = 32 (a server batch); the default "smoke" size is tiny so the normal test suite
runs every case. Each call is one step; the steppers are first run 20 steps so every historic tap is
live (a step then costs the same at any t).
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_incremental.py --benchmark-enable``.
"""
import os

import pytest
import torch

import meshtalk_fast as mf
from common import require_backend
from meshtalk_fast.base.dispatch import resolve

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SIZE = dict(V=6172, H=16, C=128) if FULL else dict(V=50, H=4, C=8)
BATCHES = [1, 32] if FULL else [1, 3]
WARMUP = 20


def make_model() -> mf.MeshTalk:
    torch.manual_seed(0)
    return mf.MeshTalk(SIZE["V"], heads=SIZE["H"], classes=SIZE["C"]).eval()


def step_inputs(B: int):
    """One setup for every backend: model, audio code [B, A], template [V, 3], one-hot codes [B, 1, H, C]."""
    g = torch.Generator().manual_seed(B)
    labels = torch.randint(0, SIZE["C"], (B, 1, SIZE["H"]), generator=g)
    return (make_model(), torch.randn(B, 128, generator=g), torch.randn(SIZE["V"], 3, generator=g),
            torch.nn.functional.one_hot(labels, SIZE["C"]).float())



@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_sample_step(benchmark, backend, B):
    require_backend("sample_step", backend)
    model, audio_code, _, _ = step_inputs(B)
    benchmark.group = f"sample_step B={B} H={SIZE['H']} C={SIZE['C']}"
    benchmark.extra_info["frames"] = B
    stepper = resolve("sample_step", backend, torch.device("cpu"))(model, B, False, torch.Generator().manual_seed(0))
    for _ in range(WARMUP):
        stepper.step(audio_code)
    out = benchmark(stepper.step, audio_code)
    assert out.shape == (B, SIZE["H"], SIZE["C"]) and torch.all(out.sum(-1) == 1)


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_decode_step(benchmark, backend, B):
    require_backend("decode_step", backend)
    model, _, template, one_hot = step_inputs(B)
    benchmark.group = f"decode_step B={B} V={SIZE['V']} H={SIZE['H']} C={SIZE['C']}"
    benchmark.extra_info["frames"] = B
    stepper = resolve("decode_step", backend, torch.device("cpu"))(model, template)
    for _ in range(WARMUP):
        stepper.step(one_hot)
    out = benchmark(stepper.step, one_hot)
    assert out.shape == (B, 1, SIZE["V"], 3)
