"""AudioEncoder benchmarks: speech -> audio codes, log-mel included. The PyTorch reference and the C++
core ("cpp") in the same groups on the same inputs.

- ``encode_audio``: the window framing on windows [B, T, 16000] (one 1 s window per video frame).
- ``encode_speech``: one utterance [1, L] -> codes, per framing: the batched reference and core, and the
  core's streaming encoder (``cpp-streaming``: PCM pushed in 533-sample chunks, one video frame at
  30 fps, one thread) -- extra_info["audio_s"] over the time is its real-time factor.
``MESHTALK_BENCH_SIZE=full``: B=8, T=32 (a training batch) and B=1, T=90 (3 s of inference) windows,
and 10 s of speech; default "smoke" is tiny.
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_audio_encoder.py --benchmark-enable``.
"""
import os

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from common import require_backend

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SHAPES = [(8, 32), (1, 90)] if FULL else [(1, 2)]
SPEECH_SECONDS = 10 if FULL else 1
CHUNK = 533  # samples per push of the streaming encoder: one video frame at 30 fps



def make_model(framing: str = "window") -> mf.MeshTalk:
    torch.manual_seed(0)
    return mf.MeshTalk(50, heads=4, classes=8, framing=framing).eval()  # the audio encoder does not depend on V, H, C


def encoder_inputs(B: int, T: int):
    """One setup for every backend: a model and real-looking windows [B, T, 16000]."""
    return make_model(), 0.01 * torch.randn(B, T, 16000, generator=torch.Generator().manual_seed(B * T))


def speech_inputs(framing: str):
    """One setup for every backend: a model with the framing and one utterance [1, L]."""
    return make_model(framing), 0.01 * torch.randn(1, SPEECH_SECONDS * 16000, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("B,T", SHAPES)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_encode_audio(benchmark, backend, B, T):
    model, windows = encoder_inputs(B, T)
    benchmark.group = f"encode_audio B={B} T={T}"
    benchmark.extra_info["frames"] = B * T
    with torch.no_grad():  # the cpp backend computes no gradients: it runs outside grad mode
        require_backend("encode_audio", backend)
        run = lambda: model.encode_audio(windows, backend=backend)  # noqa: E731
        run()  # warm-up: the cpp backend lays out (and caches) the weights on its first call
        out = benchmark(run)
    assert out.shape == (B, T, 128)


def streaming_codes(model, audio: torch.Tensor) -> np.ndarray:
    """The core's AudioStreamEncoder fed ``audio [1, L]`` in CHUNK-sample pushes: codes [1, T, A]."""
    from meshtalk_fast import _core
    from meshtalk_fast.backends import cpp as _cpp

    c = model.config
    enc = _core.AudioStreamEncoder(_cpp.audio_encoder_weights(model), 1, c.fps, c.clock, c.lookahead, c.framing,
                                   threads=1)
    x = audio.numpy()
    outs = [enc.push(x[:, i:i + CHUNK]) for i in range(0, x.shape[1], CHUNK)]
    outs.append(enc.close())
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("framing", ["window", "stream"])
@pytest.mark.parametrize("backend", ["torch", "cpp", "cpp-streaming"])
def test_encode_speech(benchmark, backend, framing):
    model, audio = speech_inputs(framing)
    benchmark.group = f"encode_speech {framing} framing {SPEECH_SECONDS} s"
    benchmark.extra_info["audio_s"] = SPEECH_SECONDS
    T = mf.num_frames(audio.shape[1])
    with torch.no_grad():
        require_backend("encode_audio" if framing == "window" else "encode_stream", backend.split("-")[0])
        if backend == "cpp-streaming":
            run = lambda: streaming_codes(model, audio)  # noqa: E731
        else:
            run = lambda: model.encode_speech(audio, backend=backend)  # noqa: E731
        run()  # warm-up, as above
        out = benchmark(run)
    assert tuple(out.shape) == (1, T, 128)
