"""Audio loading: files or arrays -> float32 mono at 16 kHz, loudness-normalised as the released model
expects (the frame clock is in frame_clock.py, the log-mel in mel.py).
"""
from __future__ import annotations

import math
import os
from typing import Optional, Union

import numpy as np
import torch

from ..base.checks import check_choice, check_positive_int, check_regular_file, shape_str
from .mel import SAMPLE_RATE

__all__ = ["SAMPLE_RATE", "MAX_CHANNELS", "load_audio"]

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
