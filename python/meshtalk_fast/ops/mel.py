"""Log-mel spectrogram (op ``log_mel``): the reference and the public dispatching function.

``log_mel(backend="torch")`` is the reference: torchaudio's
``MelSpectrogram(sample_rate=16000, n_fft=2048, win_length=800, hop_length=160, n_mels=80)``
followed by ``log(max(mel, 1e-10))``, written with ``torch.stft`` and our own HTK filterbank
(torchaudio has no CPU build here). The tests compare it with librosa on real speech. The fast paths
are kernels/mel.py (Triton) and csrc/core/mel.cpp (the C++ core), registered in backends/.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..base.checks import check_finite, check_tensor, shape_str
from ..base.dispatch import Inputs, resolve

__all__ = ["SAMPLE_RATE", "N_FFT", "WIN_LENGTH", "HOP_LENGTH", "N_MELS", "LOG_FLOOR", "hann_window",
           "mel_filterbank", "check_log_mel_input", "torch_log_mel", "log_mel"]

SAMPLE_RATE = 16000
N_FFT = 2048
WIN_LENGTH = 800
HOP_LENGTH = 160
N_MELS = 80
LOG_FLOOR = 1e-10


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




def check_log_mel_input(x: torch.Tensor) -> torch.Tensor:
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
    check_log_mel_input(x)
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



def log_mel(x: torch.Tensor, backend: str = "auto", threads: Optional[int] = None) -> torch.Tensor:
    """Log-mel spectrogram with torchaudio semantics: ``x [..., L] -> Tensor[..., 80, 1 + L // 160]``.

    backend: "auto" (the fastest for x's device), "torch" (reference), "triton", "cpp" where built.
    On the CPU ``auto`` picks the C++ core, except for float64 inputs and inputs that need a gradient,
    which stay on the reference (the core computes in float32, without gradients).
    threads: cores for backend "cpp" (default all); an option of "cpp" only, refused with another
    backend (under ``auto`` too, when it picks another one: see ``base.dispatch.resolve``).
    """
    inputs = Inputs.of(x) if isinstance(x, torch.Tensor) else Inputs(torch.device("cpu"))
    options = {} if threads is None else {"threads": threads}
    return resolve("log_mel", backend, inputs, options)(x, **options)
