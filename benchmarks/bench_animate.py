"""End-to-end real-time factor of speech -> smoothed meshes: offline ``animate`` and live
``StreamingAnimator`` (pushed one 533-sample frame period at a time), per backend.

The reference (``torch``) and the fast path (``cpp``, the C++ sampler/decoder, where built) share each
group and its inputs. ``MESHTALK_BENCH_SIZE=full``: 60 s of speech at the released sizes (V=6172,
16 heads x 128 classes); default "smoke": ~1.5 s at small sizes, run once in the normal test suite.
``MESHTALK_BENCH_THREADS=N`` sets torch's CPU threads (default: torch's for "full", 1 for "smoke",
which is all tiny ops that two threads on a busy 2-core machine mostly spend waiting). Each case stores
``real_time_factor`` (audio seconds / compute seconds, > 1 is faster than real time) in extra_info.
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_animate.py --benchmark-enable``.
"""
import math
import os
import time

import pytest
import torch

import meshtalk_fast as mf
from common import load_weights_or_skip, require_backend

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SECONDS = 60.0 if FULL else 1.5
SIZE = dict(V=6172, H=16, C=128) if FULL else dict(V=300, H=4, C=16)
THREADS = os.environ.get("MESHTALK_BENCH_THREADS") or (None if FULL else "1")


@pytest.fixture(autouse=True, scope="module")
def threads():
    n = torch.get_num_threads()
    if THREADS:
        torch.set_num_threads(int(THREADS))
    yield
    torch.set_num_threads(n)


def speech(seconds: float) -> torch.Tensor:
    """Synthetic speech-like audio ``[L]``: a gliding 120-220 Hz tone with harmonics and noise,
    amplitude-modulated at a syllable rate of 4 Hz, normalised as released."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * 16000), dtype=torch.float64) / 16000
    f0 = 170 + 50 * torch.sin(2 * math.pi * 0.3 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / 16000
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t).clamp(min=0)
    x = envelope * voiced + 0.05 * torch.randn(t.shape, generator=g, dtype=torch.float64)
    return (0.01 * x / x.abs().mean()).float()


def make_inputs():
    """One setup for every backend: model, template [V, 3], masks ([V], [V]) and audio [L]."""
    torch.manual_seed(0)
    model = mf.MeshTalk(SIZE["V"], heads=SIZE["H"], classes=SIZE["C"]).eval()
    g = torch.Generator().manual_seed(1)
    template = 100 * torch.randn(SIZE["V"], 3, generator=g)
    masks = (torch.rand(SIZE["V"], generator=g), torch.rand(SIZE["V"], generator=g))
    return model, template, masks, speech(SECONDS)


def record(benchmark, audio: torch.Tensor, frames: int, elapsed: float) -> None:
    seconds = audio.shape[0] / 16000
    benchmark.extra_info.update(audio_s=seconds, frames=frames, threads=torch.get_num_threads(),
                                real_time_factor=seconds / elapsed, **SIZE)


@pytest.mark.parametrize("mode", ["torch", "cpp", "cpp-bf16", "cpp-int8"])
def test_animate_offline(benchmark, mode):
    """``cpp-bf16`` / ``cpp-int8``: the C++ sampler and decoder with reduced-precision weights
    (``animate(weights=...)``), beside float32 and the reference on the same inputs."""
    backend, _, weights = mode.partition("-")
    require_backend("sample", backend)
    require_backend("decode", backend)
    model, template, masks, audio = make_inputs()
    if weights:
        from meshtalk_fast.backends import cpp as _cpp

        try:  # the core refuses a mode this CPU's kernels cannot run
            load_weights_or_skip(lambda: _cpp.context_weights(model, weights=weights), weights)
        finally:  # the probe's laid-out weights are dropped: each mode's timed run lays out its own, as float32's does
            _cpp._CACHE.pop(model, None)
    benchmark.group = f"animate offline {SECONDS:g} s V={SIZE['V']} H={SIZE['H']} C={SIZE['C']}"
    timing = {}

    def run():
        t0 = time.perf_counter()
        out = mf.animate(audio, template, model, seed=0, backend=backend, smooth_masks=masks, progress=False,
                         normalize=False, weights=weights or None)
        timing["s"] = time.perf_counter() - t0
        return out

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    record(benchmark, audio, out.shape[0], timing["s"])
    assert out.shape == (mf.num_frames(audio.shape[0]), SIZE["V"], 3) and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_animate_streaming(benchmark, backend):
    require_backend("sample_step", backend)
    require_backend("decode_step", backend)
    model, template, masks, audio = make_inputs()
    benchmark.group = f"animate streaming {SECONDS:g} s V={SIZE['V']} H={SIZE['H']} C={SIZE['C']}"
    timing = {}

    def run():
        t0 = time.perf_counter()
        s = mf.StreamingAnimator(model, template, seed=0, smooth_masks=masks, backend=backend)
        outs = [s.push(audio[i:i + 533]) for i in range(0, audio.shape[0], 533)]
        outs.append(s.close())
        timing["s"] = time.perf_counter() - t0
        return torch.cat(outs)

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    record(benchmark, audio, out.shape[0], timing["s"])
    assert out.shape == (mf.num_frames(audio.shape[0]), SIZE["V"], 3)
