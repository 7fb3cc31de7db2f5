"""The frame clock: one 1 s audio window per video frame (``audio_windows``), the number of frames, their
centre samples, and the streaming framing on the 10 ms mel grid (csrc/core/frame_clock.cpp is the core's).
"""
from __future__ import annotations

import torch

from ..base.checks import check_choice, check_positive_int, check_tensor
from .mel import HOP_LENGTH, SAMPLE_RATE

__all__ = ["WINDOW_SAMPLES", "STREAM_PAD", "num_frames", "frame_centres", "frame_centre", "audio_windows",
           "stream_positions", "stream_mel_frames"]

WINDOW_SAMPLES = 16000  # one audio window per video frame: 1 s centred on the frame


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
                  lookahead: int = WINDOW_SAMPLES // 2) -> torch.Tensor:
    """One 1 s audio window per video frame: ``audio [L] -> Tensor[T, 16000]``.

    clock="released": the released chunking. ``spf = 16000 // fps`` samples per frame, zero padding
        of ``(16000 - spf) // 2`` on both sides, window k centred at padded sample ``8000 + k*spf``.
        Because spf is rounded, this clock drifts by ``16000/fps - spf`` samples per frame (1/3 at
        30 fps, ~37 ms per minute). Keep it for released checkpoints.
    clock="exact": drift-free. Frame k covers ``[k/fps, (k+1)/fps)`` s; its window is centred on the
        frame's middle sample ``round((k + 1/2) * 16000 / fps)`` (halves round up, so the first
        windows coincide with the released clock) and zero-padded outside the signal;
        ``T = floor(L * fps / 16000)``.
    lookahead: samples of the window after the frame centre, in [0, 16000]. 8000 (default) is the
        released centred window (0.5 s of look-ahead); a smaller value trains a model for live use
        with less latency (the window then covers more of the past).
    """
    check_tensor("audio", audio, ndim=1, what="[L] (mono, 16 kHz)")
    fps = check_positive_int("fps", fps, maximum=SAMPLE_RATE // 2)
    check_choice("clock", clock, ("released", "exact"))
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or not 0 <= lookahead <= WINDOW_SAMPLES:
        raise ValueError(f"lookahead must be an integer number of samples in [0, {WINDOW_SAMPLES}], got {lookahead!r}")
    n = audio.shape[0]
    T = num_frames(n, fps, clock)
    if T == 0:
        raise ValueError(f"audio is too short for one video frame at fps={fps} with clock={clock!r}: "
                         f"got {n} samples")
    starts = frame_centres(T, fps, clock) + lookahead - WINDOW_SAMPLES
    padded = torch.nn.functional.pad(audio, (WINDOW_SAMPLES, WINDOW_SAMPLES))
    if clock == "released":  # regular steps: a strided view, no copy
        spf = SAMPLE_RATE // fps
        first = int(starts[0]) + WINDOW_SAMPLES
        return padded[first:].unfold(0, WINDOW_SAMPLES, spf)[:T]
    index = (starts + WINDOW_SAMPLES)[:, None] + torch.arange(WINDOW_SAMPLES, dtype=torch.int64)[None, :]
    return padded[index.to(audio.device)]


STREAM_PAD = WINDOW_SAMPLES  # zeros on both sides of an utterance before its streaming log-mel


def stream_positions(n_frames: int, fps: int = 30, clock: str = "released",
                     lookahead: int = WINDOW_SAMPLES // 2) -> torch.Tensor:
    """Streaming framing: for each video frame, the first of the 101 mel frames (of
    ``log_mel(pad(audio, 16000, 16000))``, the utterance framed once on the 10 ms grid) that stand in
    for its 1 s window: ``Tensor[T]`` int64. The window ``[c + lookahead - 16000, c + lookahead)`` of
    frame centre c is centred on sample ``w = c + lookahead - 8000``; mel frame ``m`` of the padded
    signal is centred on sample ``160 m - 16000``, so the window's middle mel frame is
    ``round((w + 16000) / 160)`` and its first ``50`` before. Compared with per-window framing this
    shifts each window by at most 80 samples (5 ms), and the signal edges see zeros, not reflections."""
    w = frame_centres(n_frames, fps, clock) + lookahead - WINDOW_SAMPLES // 2
    return torch.div(w + STREAM_PAD + HOP_LENGTH // 2, HOP_LENGTH, rounding_mode="floor") - 50


def stream_mel_frames(n_samples: int) -> int:
    """Mel frames of the padded utterance: ``1 + (n + 32000) // 160``."""
    return 1 + (n_samples + 2 * STREAM_PAD) // HOP_LENGTH
