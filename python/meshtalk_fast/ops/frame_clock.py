"""The frame clock: one audio window per video frame (``audio_windows``), the number of frames, their
centre samples, and the streaming framing on the 10 ms mel grid (csrc/core/frame_clock.cpp is the core's).

The window is the model's audio context (``MeshTalkConfig.audio_context_ms``): 1000 ms (released: 16000
samples, 101 mel frames) or 600 ms (the seed's lower-latency context: 9600 samples, 61 mel frames). The
seed writes its per-frame input as a 60 x 80 log-mel; with the released centred framing (hop 160,
``1 + L // 160`` frames) a 600 ms window yields 61 frames, and the receptive field of a stack of odd
kernels is always odd, so the 600 ms model reads 61 x 80 (one frame more than the seed's 60). Centred on
the frame, its look-ahead is 300 ms instead of 500 ms. The frame clock itself (frame count and centres)
does not depend on the context: the released chunking's padding ``(W - spf) // 2`` places the same
centres for every even window W.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..base.checks import check_choice, check_positive_int, check_tensor
from .mel import HOP_LENGTH, SAMPLE_RATE

__all__ = ["WINDOW_SAMPLES", "STREAM_PAD", "AUDIO_CONTEXTS", "context_window", "context_mel_frames",
           "check_audio_context", "num_frames", "frame_centres", "frame_centre", "audio_windows",
           "stream_positions", "stream_mel_frames"]

WINDOW_SAMPLES = 16000  # one audio window per video frame: 1 s centred on the frame (released)

# Audio contexts a model may have (ms) -> the dilations of the AudioEncoder's six kernel-5 blocks, chosen
# so that its receptive field (5 + 4 * sum(dilations) mel frames) is exactly one window's mel frames
# (``context_mel_frames``): 1000 ms is the released 2, 4, 6, 2, 4, 6 (101 frames); 600 ms halves and
# narrows them to 1, 2, 4, 1, 2, 4 (61 frames). The C++ core holds the same table (audio_encoder.cpp).
AUDIO_CONTEXTS = {1000: (2, 4, 6, 2, 4, 6), 600: (1, 2, 4, 1, 2, 4)}


def check_audio_context(audio_context_ms) -> int:
    """``audio_context_ms`` if it is one of ``AUDIO_CONTEXTS`` (1000 or 600), else ValueError."""
    if isinstance(audio_context_ms, bool) or audio_context_ms not in AUDIO_CONTEXTS:
        raise ValueError(f"audio_context_ms must be one of {sorted(AUDIO_CONTEXTS, reverse=True)} (ms of audio per "
                         f"frame: 1000 released, 600 the seed's lower-latency context), got {audio_context_ms!r}")
    return int(audio_context_ms)


def context_window(audio_context_ms: int = 1000) -> int:
    """Samples of one frame's audio window: 16000 for 1000 ms, 9600 for 600 ms."""
    return check_audio_context(audio_context_ms) * SAMPLE_RATE // 1000


def context_mel_frames(audio_context_ms: int = 1000) -> int:
    """Mel frames of one window (``1 + window // 160``), the audio encoder's receptive field: 101 or 61."""
    return 1 + context_window(audio_context_ms) // HOP_LENGTH


def _check_window(window) -> int:
    if window not in [context_window(ms) for ms in AUDIO_CONTEXTS]:
        raise ValueError(f"window must be the samples of an audio context, one of "
                         f"{sorted((context_window(ms) for ms in AUDIO_CONTEXTS), reverse=True)}, got {window!r}")
    return int(window)


def num_frames(n_samples: int, fps: int = 30, clock: str = "released") -> int:
    """Number of video frames ``audio_windows`` yields for ``n_samples`` samples at 16 kHz."""
    if clock == "released":
        spf = SAMPLE_RATE // fps
        pad = (WINDOW_SAMPLES - spf) // 2
        span = n_samples + 2 * pad - WINDOW_SAMPLES  # window starts lie in [0, span)
        return max(0, -(-span // spf))
    return (n_samples * fps) // SAMPLE_RATE


def frame_centres(n_frames: int, fps: int = 30, clock: str = "released") -> torch.Tensor:
    """Sample index (in the unpadded signal) at the centre of each video frame: ``Tensor[T]`` int64."""
    return frame_centre(torch.arange(n_frames, dtype=torch.int64), fps, clock)


def frame_centre(k, fps: int, clock: str):
    """Sample index at the centre of video frame ``k``: an int for an int, ``Tensor[T]`` for an int64 tensor
    (the one formula of the clock; ``frame_centres`` and the streaming front ends use it)."""
    if clock == "released":
        spf = SAMPLE_RATE // fps
        return WINDOW_SAMPLES // 2 - (WINDOW_SAMPLES - spf) // 2 + k * spf
    return ((2 * k + 1) * SAMPLE_RATE + fps) // (2 * fps)


def audio_windows(audio: torch.Tensor, fps: int = 30, clock: str = "released",
                  lookahead: Optional[int] = None, window: int = WINDOW_SAMPLES) -> torch.Tensor:
    """One audio window per video frame: ``audio [L] -> Tensor[T, window]`` (``window``: 16000 samples, the
    released 1 s, or 9600 for a 600 ms context; ``context_window``).

    clock="released": the released chunking. ``spf = 16000 // fps`` samples per frame, zero padding
        of ``(16000 - spf) // 2`` on both sides, window k centred at padded sample ``8000 + k*spf``.
        Because spf is rounded, this clock drifts by ``16000/fps - spf`` samples per frame (1/3 at
        30 fps, ~37 ms per minute). Keep it for released checkpoints.
    clock="exact": drift-free. Frame k covers ``[k/fps, (k+1)/fps)`` s; its window is centred on the
        frame's middle sample ``round((k + 1/2) * 16000 / fps)`` (halves round up, so the first
        windows coincide with the released clock) and zero-padded outside the signal;
        ``T = floor(L * fps / 16000)``.
    lookahead: samples of the window after the frame centre, in [0, window]. None (default): centred,
        ``window // 2`` (8000: the released 0.5 s of look-ahead; 4800 = 0.3 s for 600 ms); a smaller value
        trains a model for live use with less latency (the window then covers more of the past).
    """
    check_tensor("audio", audio, ndim=1, what="[L] (mono, 16 kHz)")
    fps = check_positive_int("fps", fps, maximum=SAMPLE_RATE // 2)
    check_choice("clock", clock, ("released", "exact"))
    W = _check_window(window)
    lookahead = W // 2 if lookahead is None else lookahead
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or not 0 <= lookahead <= W:
        raise ValueError(f"lookahead must be an integer number of samples in [0, {W}], got {lookahead!r}")
    n = audio.shape[0]
    T = num_frames(n, fps, clock)
    if T == 0:
        raise ValueError(f"audio is too short for one video frame at fps={fps} with clock={clock!r}: "
                         f"got {n} samples")
    starts = frame_centres(T, fps, clock) + lookahead - W
    padded = torch.nn.functional.pad(audio, (W, W))
    if clock == "released":  # regular steps: a strided view, no copy
        spf = SAMPLE_RATE // fps
        first = int(starts[0]) + W
        return padded[first:].unfold(0, W, spf)[:T]
    index = (starts + W)[:, None] + torch.arange(W, dtype=torch.int64)[None, :]
    return padded[index.to(audio.device)]


STREAM_PAD = WINDOW_SAMPLES  # zeros on both sides of an utterance before its streaming log-mel


def stream_positions(n_frames: int, fps: int = 30, clock: str = "released",
                     lookahead: Optional[int] = None, window: int = WINDOW_SAMPLES) -> torch.Tensor:
    """Streaming framing: for each video frame, the first of the ``R = 1 + window // 160`` mel frames (101
    for the released 1 s window, 61 for 600 ms) of ``log_mel(pad(audio, 16000, 16000))``, the utterance
    framed once on the 10 ms grid, that stand in for its window: ``Tensor[T]`` int64. The window
    ``[c + lookahead - W, c + lookahead)`` of frame centre c is centred on sample ``w = c + lookahead - W/2``;
    mel frame ``m`` of the padded signal is centred on sample ``160 m - 16000``, so the window's middle mel
    frame is ``round((w + 16000) / 160)`` and its first ``(R - 1) / 2`` (50 or 30) before. Compared with
    per-window framing this shifts each window by at most 80 samples (5 ms), and the signal edges see zeros,
    not reflections. ``lookahead`` None: centred (``window // 2``). The padding is 16000 for every context."""
    W = _check_window(window)
    lookahead = W // 2 if lookahead is None else lookahead
    w = frame_centres(n_frames, fps, clock) + lookahead - W // 2
    return torch.div(w + STREAM_PAD + HOP_LENGTH // 2, HOP_LENGTH, rounding_mode="floor") - W // HOP_LENGTH // 2


def stream_mel_frames(n_samples: int) -> int:
    """Mel frames of the padded utterance: ``1 + (n + 32000) // 160``."""
    return 1 + (n_samples + 2 * STREAM_PAD) // HOP_LENGTH
