"""Real-time factor of the C API's session pipeline (csrc/core/session.cpp, through the pybind11
binding ``_core.Session``), one stream pushed one 533-sample frame period at a time, with the released
post-smoothing (delay 4), for both framings; ``python``: ``StreamingAnimator(backend="cpp")`` pushed the same
pieces, which since issue #15 runs that same session (weights passed from memory), so it measures what the
Python API adds around it; and, for scale, offline ``animate`` on the whole buffer (``python_offline``, all
cores). Save a run as JSON with ``--benchmark-json benchmarks/results/NAME.json``.

``MESHTALK_BENCH_SIZE=full``: 60 s of speech at the released sizes (V=6172, 16 heads x 128 classes,
random weights; the released face template when ../shared/assets/meshtalk holds it); default
"smoke": 1.5 s at small sizes, run once in the normal test suite. Sessions run on one thread
(``threads=1``), as a server would run one per core. Each case stores ``real_time_factor`` (audio
seconds / compute seconds) in extra_info. ``capi_session_2threads``: the same session on both cores
(the issue's "one stream on this 2-core CPU").
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_capi.py --benchmark-enable``.
The C example's per-push latency and batch capacity: ``meshtalk_example ... --timing`` (csrc/examples).
"""
import os
import pathlib
import time

import pytest
import torch

import meshtalk_fast as mf
from bench_animate import speech
from common import load_weights_or_skip

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SECONDS = 60.0 if FULL else 1.5
SIZE = dict(V=6172, H=16, C=128) if FULL else dict(V=300, H=4, C=16)
ASSETS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "assets" / "meshtalk"
FRAMINGS = {"window": {}, "stream": dict(framing="stream", clock="exact")}


def _core():
    try:
        from meshtalk_fast import _core
    except ImportError as e:  # the C++ extension was not built
        pytest.skip(f"the C++ core (meshtalk_fast._core) is not built: {e}")
    return _core


@pytest.fixture(scope="module", params=sorted(FRAMINGS))
def inputs(request, tmp_path_factory):
    """Model (saved to a file for the core), template [V, 3], masks ([V], [V]) and audio [L]."""
    torch.manual_seed(0)
    model = mf.MeshTalk(SIZE["V"], heads=SIZE["H"], classes=SIZE["C"], **FRAMINGS[request.param]).eval()
    path = tmp_path_factory.mktemp("bench_capi") / "model.safetensors"
    model.save(path)
    g = torch.Generator().manual_seed(1)
    if FULL and (ASSETS / "face_template.obj").is_file():
        template = mf.load_obj(ASSETS / "face_template.obj")[0].float()
    else:
        template = 100 * torch.randn(SIZE["V"], 3, generator=g)
    masks = (torch.rand(SIZE["V"], generator=g), torch.rand(SIZE["V"], generator=g))
    return request.param, model, path, template, masks, speech(SECONDS)


def _record(benchmark, audio, frames, elapsed):
    seconds = audio.shape[0] / 16000
    benchmark.extra_info.update(audio_s=seconds, frames=frames, real_time_factor=seconds / elapsed, **SIZE)


@pytest.mark.parametrize("impl", ["python", "capi_session", "capi_session_2threads", "capi_session_2threads_bf16",
                                  "capi_session_2threads_int8", "python_offline"])
def test_session_stream(benchmark, inputs, impl):
    """``capi_session_2threads_bf16`` / ``_int8``: the same two-thread session with reduced-precision weights
    (``mt_model_params.weights``), beside float32 on the same inputs."""
    core = _core()
    framing, model, path, template, masks, audio = inputs
    benchmark.group = f"session {SECONDS:g} s framing={framing} V={SIZE['V']} H={SIZE['H']} C={SIZE['C']}"
    pieces = [audio[i:i + 533] for i in range(0, audio.shape[0], 533)]
    timing = {}
    if impl.startswith("capi_session"):
        threads = 1 if impl == "capi_session" else 2
        weights = impl.rpartition("_")[2] if impl.endswith(("_bf16", "_int8")) else "f32"
        core_model = load_weights_or_skip(lambda: core.CoreModel.from_file(str(path), weights=weights), weights)
        benchmark.extra_info["weights"] = core_model.weights
        masks_np = tuple(m.numpy() for m in masks)

        def run():
            t0 = time.perf_counter()
            s = core.Session(core_model, template.numpy(), seed=0, smooth_masks=masks_np, threads=threads)
            outs = [s.push(p.numpy()) for p in pieces]
            outs.append(s.finish())
            timing["s"] = time.perf_counter() - t0
            return sum(o.shape[0] for o in outs)
    elif impl == "python":
        def run():
            t0 = time.perf_counter()
            with torch.no_grad():
                s = mf.StreamingAnimator(model, template, seed=0, smooth_masks=masks, backend="cpp")
                outs = [s.push(p) for p in pieces]
                outs.append(s.close())
            timing["s"] = time.perf_counter() - t0
            return sum(o.shape[0] for o in outs)
    else:
        def run():
            t0 = time.perf_counter()
            with torch.no_grad():
                out = mf.animate(audio, template, model, seed=0, backend="cpp", smooth_masks=masks, progress=False,
                                 normalize=False)
            timing["s"] = time.perf_counter() - t0
            return out.shape[0]

    frames = benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, audio, frames, timing["s"])
    assert frames == mf.num_frames(audio.shape[0], model.config.fps, model.config.clock)
