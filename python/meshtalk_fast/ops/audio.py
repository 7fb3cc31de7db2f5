"""Audio front end: loading, the frame clock (one 1 s window per video frame) and log-mel.

``log_mel(backend="torch")`` is the reference: torchaudio's
``MelSpectrogram(sample_rate=16000, n_fft=2048, win_length=800, hop_length=160, n_mels=80)``
followed by ``log(max(mel, 1e-10))``, written with ``torch.stft`` and our own HTK filterbank
(torchaudio has no CPU build here). The tests compare it with librosa on real speech.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Union

import numpy as np
import torch

from ._checks import check_choice, check_finite, check_positive_int, check_regular_file, check_tensor, shape_str
from ._dispatch import register, resolve

__all__ = [
    "SAMPLE_RATE", "N_FFT", "WIN_LENGTH", "HOP_LENGTH", "N_MELS", "WINDOW_SAMPLES",
    "load_audio", "audio_windows", "num_frames", "frame_centres", "stream_positions", "stream_mel_frames", "STREAM_PAD", "hann_window", "mel_filterbank",
    "torch_log_mel", "cpp_log_mel", "log_mel",
]

SAMPLE_RATE = 16000
N_FFT = 2048
WIN_LENGTH = 800
HOP_LENGTH = 160
N_MELS = 80
WINDOW_SAMPLES = 16000  # one audio window per video frame: 1 s centred on the frame
LOG_FLOOR = 1e-10
MAX_CHANNELS = 8  # larger "channel" axes are treated as an ambiguous layout and refused

ArrayLike = Union[np.ndarray, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _to_mono(x: np.ndarray, name: str) -> np.ndarray:
    """(L,), (C, L) or (L, C) with C <= 8 -> (L,). Anything else is an ambiguous layout."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"{name} must be mono [L] or multi-channel [C, L] / [L, C] with C <= "
                         f"{MAX_CHANNELS}, got shape {shape_str(x.shape)}")
    rows, cols = x.shape
    if rows <= MAX_CHANNELS < cols:
        return x.mean(axis=0)
    if cols <= MAX_CHANNELS < rows:
        return x.mean(axis=1)
    raise ValueError(f"{name} has an ambiguous channel layout: expected [C, L] or [L, C] with "
                     f"C <= {MAX_CHANNELS} channels and more samples than channels, got shape "
                     f"{shape_str(x.shape)}")


def _warn_if_cut_short(path: str) -> None:
    """A WAV file whose ``data`` chunk claims more bytes than the file holds (a copy or a recording cut
    short) is read as the shorter signal by libsndfile without a word: say so (``warnings.warn``)."""
    import struct
    import warnings

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
                return
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                if cid == b"data":
                    have = size - pos - 8
                    if n > have and n not in (0, 0xFFFFFFFF):  # 0 / ~0: "length unknown" placeholders
                        warnings.warn(f"audio file {path!r} is cut short: its WAV data chunk declares {n} bytes but "
                                      f"the file holds {have}; reading the {have} bytes present", stacklevel=3)
                    return
                pos += 8 + n + (n & 1)
    except (OSError, struct.error):
        return  # not readable as RIFF here: libsndfile reports what is wrong


def _check_rate(name: str, sample_rate) -> int:
    if isinstance(sample_rate, float) and not math.isfinite(sample_rate):
        raise ValueError(f"{name} must be a positive integer rate in Hz, got {sample_rate!r}")
    return check_positive_int(name, sample_rate, maximum=1_000_000)


def load_audio(source: Union[str, os.PathLike, ArrayLike], sample_rate: Optional[int] = None,
               normalize: bool = True, on_silence: str = "raise") -> torch.Tensor:
    """Load speech as the released model expects it: 16 kHz, mono, loudness-normalised.

    source: a file path (any format libsndfile reads: wav, flac, ogg, ...) or an array/tensor
        ``[L]``, ``[C, L]`` or ``[L, C]`` (C <= 8 channels, averaged to mono).
    sample_rate: the rate of an array ``source`` (required for arrays). For a file it is optional
        and, when given, must equal the file's rate.
    normalize: apply the released normalisation ``0.01 * audio / mean(|audio|)``.
    on_silence: ``"raise"`` (default) refuses an all-zero signal, which cannot be normalised;
        ``"keep"`` returns it unnormalised (all zeros).
    Returns ``Tensor[L]`` float32 at 16 kHz. Resampling uses soxr (VHQ); the release used
    torchaudio's sinc resampler, so resampled audio differs from it by resampler ripple only.
    """
    check_choice("on_silence", on_silence, ("raise", "keep"))
    if isinstance(source, (str, os.PathLike)):
        import soundfile as sf

        path = check_regular_file("audio file", source)
        _warn_if_cut_short(path)
        try:
            data, file_rate = sf.read(path, dtype="float64", always_2d=True)  # [L, C]
        except Exception as exc:  # libsndfile's own message says what is wrong
            raise ValueError(f"audio file {path!r} could not be read: {exc}") from None
        if sample_rate is not None and _check_rate("sample_rate", sample_rate) != file_rate:
            raise ValueError(f"sample_rate={sample_rate} disagrees with the rate of {path!r} "
                             f"({file_rate} Hz); leave sample_rate=None for files")
        name, rate, x = f"audio file {path!r}", int(file_rate), data.mean(axis=1)
    else:
        if sample_rate is None:
            raise ValueError("sample_rate must be given when source is an array, got None")
        rate = _check_rate("sample_rate", sample_rate)
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().double().numpy()
        x = np.asarray(source)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"source must hold real samples, got dtype {x.dtype}")
        name = "source"
        x = _to_mono(x.astype(np.float64, copy=False), name)
    if x.size == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got {int(np.isnan(x).sum())} NaN and "
                         f"{int(np.isinf(x).sum())} inf samples")
    if rate != SAMPLE_RATE:
        import soxr

        x = soxr.resample(x, rate, SAMPLE_RATE, quality="VHQ")
    if normalize:
        level = float(np.mean(np.abs(x)))
        if level == 0.0:
            if on_silence == "raise":
                raise ValueError(f"{name} is silent (all samples are 0) and cannot be loudness-"
                                 "normalised; pass on_silence='keep' to keep it as zeros")
        else:
            x = 0.01 * x / level
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Frame clock
# --------------------------------------------------------------------------------------------
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
    k = torch.arange(n_frames, dtype=torch.int64)
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


# --------------------------------------------------------------------------------------------
# Log-mel reference
# --------------------------------------------------------------------------------------------
def hann_window(length: int = WIN_LENGTH, dtype=torch.float32) -> torch.Tensor:
    """Periodic Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n / length)``: ``Tensor[length]``."""
    n = torch.arange(length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2.0 * math.pi * n / length)).to(dtype)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE,
                   f_min: float = 0.0, f_max: Optional[float] = None, dtype=torch.float32) -> torch.Tensor:
    """HTK-scale triangular filterbank without area normalisation: ``Tensor[n_freqs, n_mels]``.

    Bin frequencies ``linspace(0, sr/2, n_freqs)``; ``n_mels + 2`` mel points equally spaced between
    ``f_min`` and ``f_max``; triangle k rises from point k to k+1 and falls to k+2.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    hz = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]
    rising = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    return torch.from_numpy(fb).to(dtype)


_CACHE: dict = {}


def _constants(dtype: torch.dtype, device: torch.device):
    key = (dtype, device)
    if key not in _CACHE:
        _CACHE[key] = (hann_window(WIN_LENGTH, dtype).to(device), mel_filterbank(dtype=dtype).to(device))
    return _CACHE[key]


def _check_log_mel_input(x: torch.Tensor) -> torch.Tensor:
    check_tensor("x", x, what="[..., L] (16 kHz samples)")
    if x.dim() == 0:
        raise ValueError("x must have shape [..., L], got a 0-d tensor")
    if x.shape[-1] <= N_FFT // 2:
        raise ValueError(f"x is too short for the log-mel's reflect padding: expected at least "
                         f"{N_FFT // 2 + 1} samples along the last dim, got {x.shape[-1]} "
                         f"(shape {shape_str(x.shape)})")
    check_finite("x", x)
    return x


def torch_log_mel(x: torch.Tensor, window: Optional[torch.Tensor] = None,
                  fb: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference log-mel: ``x [..., L] -> Tensor[..., 80, 1 + L // 160]``.

    float32 and float64 inputs are computed in their own dtype; 16-bit inputs in float32 (and
    returned as float32). ``window [800]`` and ``fb [1025, 80]`` default to the standard ones; the
    AudioEncoder passes its checkpoint buffers.
    """
    _check_log_mel_input(x)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dtype)
    w0, fb0 = _constants(dtype, x.device)
    window = w0 if window is None else window.to(dtype)
    fb = fb0 if fb is None else fb.to(dtype)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)  # [N, 1025, F]
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(fb.transpose(0, 1), power)  # [N, 80, F]
    out = torch.log(torch.clamp(mel, min=LOG_FLOOR))
    return out.reshape(*lead, N_MELS, out.shape[-1])


def cpp_log_mel(x: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """The C++ core's log-mel (csrc/core/mel.cpp): ``x [..., L] -> Tensor[..., 80, 1 + L // 160]``.

    Computed in float32 whatever x's dtype (a float64 x gets float64 results of float32 accuracy;
    16-bit inputs, as in the reference, float32). ``threads``: cores to use, default all. No gradients.
    """
    from . import _cpp

    _check_log_mel_input(x)
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("log_mel: backend 'cpp' computes no gradients and x requires grad; use backend='torch'")
    lead, L = x.shape[:-1], x.shape[-1]
    rows = x.detach().to("cpu", torch.float32).reshape(-1, L).contiguous().numpy()
    out = torch.from_numpy(_cpp._core.log_mel(rows, threads=0 if threads is None else threads))
    out = out.reshape(*lead, N_MELS, out.shape[-1])
    return out.to(torch.float64) if x.dtype == torch.float64 else out


def _cpp_unavailable(device: torch.device) -> Optional[str]:
    from ._cpp import core_unavailable

    return core_unavailable(device)


register("log_mel", "torch", torch_log_mel)
register("log_mel", "cpp", cpp_log_mel, _cpp_unavailable)


def log_mel(x: torch.Tensor, backend: str = "auto", threads: Optional[int] = None) -> torch.Tensor:
    """Log-mel spectrogram with torchaudio semantics: ``x [..., L] -> Tensor[..., 80, 1 + L // 160]``.

    backend: "auto" (the fastest for x's device), "torch" (reference), "triton", "cpp" where built.
    On the CPU ``auto`` picks the C++ core, except for float64 inputs and inputs that need a gradient,
    which stay on the reference (the core computes in float32, without gradients).
    threads: cores for backend "cpp" (default all); ignored when ``auto`` picks another backend.
    """
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    chosen = backend
    if (backend == "auto" and isinstance(x, torch.Tensor) and device.type == "cpu"
            and (x.dtype == torch.float64 or (x.requires_grad and torch.is_grad_enabled()))):
        chosen = "torch"
    fn = resolve("log_mel", chosen, device)
    if threads is None or fn is not cpp_log_mel:
        if threads is not None and backend != "auto":
            raise ValueError(f"threads applies to backend 'cpp' only, got threads={threads} with backend={backend!r}")
        return fn(x)
    return fn(x, threads=threads)
