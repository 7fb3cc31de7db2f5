"""Fused log-mel: raw 16 kHz samples -> ``log(max(mel, 1e-10))`` in one kernel, one tile of frames per program.

Semantics are those of ``meshtalk_fast.ops.mel.torch_log_mel`` (torchaudio's ``MelSpectrogram(16000,
n_fft=2048, win_length=800, hop_length=160, n_mels=80)``, center=True, reflect padding, power 2, HTK
filterbank, no normalisation). Only the 800 non-zero window taps are computed: frame t's power at bin k
is ``|sum_{m<800} w[m] x[t*160 - 400 + m] e^{-2 pi i k m / 2048}|^2`` (the zero padding of the window
to 2048 only multiplies by a phase). Per program:

* a tile of ``BLOCK_T`` frames is gathered straight from the signal: reflect padding at the edges is
  index arithmetic (``i < 0 -> -i``, ``i >= L -> 2(L-1) - i``); no padded copy or frame matrix exists;
* for each tile of ``BLOCK_K`` bins: ``re, im [BLOCK_T, BLOCK_K] = sum over BLOCK_M-tap tiles of
  tl.dot(frames [BLOCK_T, BLOCK_M], cos/sin basis [BLOCK_M, BLOCK_K])`` (window folded into the basis);
* ``power = re^2 + im^2`` is immediately multiplied into the filterbank: ``mel [BLOCK_T, 128] +=
  tl.dot(power, fb [BLOCK_K, 128])`` (80 bands zero-padded to 128), so the 1025-bin spectrum never
  reaches memory; finally ``log(max(mel, 1e-10))`` is stored as ``[signal, band, frame]``.

Framings: rows of the flattened ``[N, L]`` input are independent signals, each with its own reflect
padding, and the frame axis of all N signals is flattened so tiles never waste rows at a signal's end.
Per-window (the released model, ``[B, T, 16000]`` -> 101 frames per window) and streaming (one
utterance ``[L]``, framed once on the 10 ms grid) are the same kernel; ``[..., L]`` windows that are
strided views of one utterance (``audio_windows``) are read in place when their leading dims merge.

Precision: fp32 everywhere (16-bit inputs are widened on load; float64 inputs are computed in fp32 and
returned as float64, like the reference's dtype contract). On CUDA both matrix products use
``input_precision="tf32x3"`` (error-compensated TF32: hi*hi + hi*lo + lo*hi, ~fp32 accuracy on tensor
cores); ``precision="ieee"`` selects plain fp32 FMA. Measured against the float64
reference on the real sentence (``example_sentence.wav``: the whole 4.2 s utterance streamed, and
2 x 3 per-window signals): max |error| on the log scale 1.2e-5 (streamed) / 2.0e-5 (windows) with
exact fp32 products (the Triton interpreter, whose tl.dot is an fp32 matmul; torch's own fp32 STFT
path is at 7.7e-5), and 2.9e-5 / 3.2e-5 for the tf32x3 algorithm emulated in float64 with TF32
rounding of every product operand (no GPU was available to measure it on tensor cores). Plain TF32
(emulated) is off by 0.1, which is why it is not offered.

Module-level imports are triton/torch/math only; ``triton_log_mel`` reads the reference window and
filterbank from ``meshtalk_fast.ops.mel`` (imported when first called) so both paths share one definition.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ["triton_log_mel", "log_mel_2d", "dft_basis", "default_tiles"]

N_FFT, WIN_LENGTH, HOP, N_MELS, N_BINS = 2048, 800, 160, 80, 1025
MEL_PAD = 128  # tl.dot needs power-of-two tiles: the 80 bands are padded with zero filters
# A global read inside a kernel must be a tl.constexpr for the compiler (the interpreter accepts a plain
# float: the GPU compile check, benchmarks/gpu_compile.py, found this).
LOG_FLOOR = tl.constexpr(1e-10)


@triton.jit
def _log_mel_kernel(x_ptr, basis_ptr, fb_ptr, out_ptr,
                    n_rows, n_frames, sig_len, sig_stride,
                    TAPS_PAD: tl.constexpr, BINS_PAD: tl.constexpr, N_OUT: tl.constexpr,
                    MELS: tl.constexpr, HOP_: tl.constexpr, HALF_WIN: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                    PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)          # flattened (signal, frame) rows
    row_ok = rows < n_rows
    sig = rows // n_frames
    frame = rows - sig * n_frames
    sig_base = sig.to(tl.int64) * sig_stride
    first = frame * HOP_ - HALF_WIN                        # sample under tap 0 of each frame
    taps = tl.arange(0, BLOCK_M)
    bins = tl.arange(0, BLOCK_K)
    mels = tl.arange(0, MELS)
    mel = tl.zeros([BLOCK_T, MELS], dtype=tl.float32)
    for k0 in range(0, BINS_PAD, BLOCK_K):
        re = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
        im = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
        for m0 in range(0, TAPS_PAD, BLOCK_M):
            idx = first[:, None] + (m0 + taps)[None, :]
            idx = tl.where(idx < 0, -idx, idx)                        # left reflection
            idx = tl.where(idx >= sig_len, 2 * (sig_len - 1) - idx, idx)  # right reflection
            idx = tl.minimum(tl.maximum(idx, 0), sig_len - 1)          # padded taps (zero basis rows)
            frames = tl.load(x_ptr + (sig_base[:, None] + idx), mask=row_ok[:, None], other=0.0)
            frames = frames.to(tl.float32)
            b_off = (m0 + taps)[:, None] * (2 * BINS_PAD) + (k0 + bins)[None, :]
            cos = tl.load(basis_ptr + b_off)
            sin = tl.load(basis_ptr + b_off + BINS_PAD)
            re = tl.dot(frames, cos, re, input_precision=PRECISION)
            im = tl.dot(frames, sin, im, input_precision=PRECISION)
        power = re * re + im * im
        fb = tl.load(fb_ptr + (k0 + bins)[:, None] * MELS + mels[None, :])
        mel = tl.dot(power, fb, mel, input_precision=PRECISION)
    out = tl.log(tl.maximum(mel, LOG_FLOOR))
    out_off = sig.to(tl.int64)[:, None] * (N_OUT * n_frames) + mels[None, :] * n_frames + frame[:, None]
    tl.store(out_ptr + out_off, out, mask=row_ok[:, None] & (mels[None, :] < N_OUT))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def default_tiles(device: torch.device) -> Tuple[int, int, int]:
    """``(BLOCK_T, BLOCK_M, BLOCK_K)``: GPU-sized tiles on CUDA; large ones on the CPU, where the
    interpreter's cost is per operation, not per element. The CUDA tiles are sized for the register
    and shared-memory budget, not yet tuned on hardware (no GPU was available when they were chosen)."""
    return (64, 32, 64) if device.type == "cuda" else (128, 128, 512)


_CONSTANTS: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}


def dft_basis(window: torch.Tensor, taps_pad: int, bins_pad: int) -> torch.Tensor:
    """Windowed DFT basis ``[taps_pad, 2 * bins_pad]`` float64: ``[:, :bins_pad]`` is ``w[m] cos(2 pi k m /
    2048)`` and ``[:, bins_pad:]`` is ``w[m] sin(...)``; rows >= 800 and columns >= 1025 are zero."""
    m = torch.arange(WIN_LENGTH, dtype=torch.int64)[:, None]
    k = torch.arange(N_BINS, dtype=torch.int64)[None, :]
    angle = (2.0 * math.pi / N_FFT) * ((m * k) % N_FFT).to(torch.float64)  # exact phase reduction
    w = window.to(torch.float64)[:, None]
    basis = torch.zeros(taps_pad, 2 * bins_pad, dtype=torch.float64)
    basis[:WIN_LENGTH, :N_BINS] = w * torch.cos(angle)
    basis[:WIN_LENGTH, bins_pad:bins_pad + N_BINS] = w * torch.sin(angle)
    return basis


def _constants(device: torch.device, taps_pad: int, bins_pad: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fp32 basis and the ``[bins_pad, 128]`` filterbank, built once per (device, dtype, padding)."""
    key = (device, torch.float32, taps_pad, bins_pad)
    if key not in _CONSTANTS:
        from meshtalk_fast.ops.mel import hann_window, mel_filterbank

        basis = dft_basis(hann_window(WIN_LENGTH, torch.float64), taps_pad, bins_pad)
        fb = torch.zeros(bins_pad, MEL_PAD, dtype=torch.float64)
        fb[:N_BINS, :N_MELS] = mel_filterbank(dtype=torch.float64)
        _CONSTANTS[key] = (basis.to(device=device, dtype=torch.float32).contiguous(),
                           fb.to(device=device, dtype=torch.float32).contiguous())
    return _CONSTANTS[key]


def log_mel_2d(x: torch.Tensor, block_t: Optional[int] = None, block_m: Optional[int] = None,
               block_k: Optional[int] = None, precision: Optional[str] = None) -> torch.Tensor:
    """Launch on ``x [N, L]`` (last-dim stride 1, any row stride, L >= 1025, finite; not checked
    here) -> ``Tensor[N, 80, 1 + L // 160]`` float32.

    Tiles default to ``default_tiles(x.device)``; each must be a power of two >= 16. ``precision``:
    ``"tf32x3"`` (default on CUDA) or ``"ieee"``.
    """
    n_sig, sig_len = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    tiles = default_tiles(x.device)
    block_t, block_m, block_k = (block_t or tiles[0]), (block_m or tiles[1]), (block_k or tiles[2])
    for name, value in (("block_t", block_t), ("block_m", block_m), ("block_k", block_k)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {value}")
    if precision is None:
        precision = "tf32x3" if x.device.type == "cuda" else "ieee"
    if precision not in ("tf32x3", "ieee"):
        raise ValueError(f"precision must be 'tf32x3' or 'ieee', got {precision!r}")
    taps_pad, bins_pad = _round_up(WIN_LENGTH, block_m), _round_up(N_BINS, block_k)
    basis, fb = _constants(x.device, taps_pad, bins_pad)
    n_frames = 1 + sig_len // HOP
    out = torch.empty(n_sig, N_MELS, n_frames, dtype=torch.float32, device=x.device)
    n_rows = n_sig * n_frames
    grid = (triton.cdiv(n_rows, block_t),)
    _log_mel_kernel[grid](x, basis, fb, out, n_rows, n_frames, sig_len, x.stride(0),
                          TAPS_PAD=taps_pad, BINS_PAD=bins_pad, N_OUT=N_MELS, MELS=MEL_PAD,
                          HOP_=HOP, HALF_WIN=WIN_LENGTH // 2, BLOCK_T=block_t, BLOCK_M=block_m,
                          BLOCK_K=block_k, PRECISION=precision, num_warps=8)
    return out


def triton_log_mel(x: torch.Tensor, **launch) -> torch.Tensor:
    """Fused log-mel with the reference's contract: ``x [..., L] -> Tensor[..., 80, 1 + L // 160]``.

    Same checks and errors as ``torch_log_mel`` (L >= 1025, finite, floating point). Output float32,
    or float64 for float64 input (computed in fp32). ``launch`` forwards tile sizes / precision to
    ``log_mel_2d``.
    """
    from meshtalk_fast.ops.mel import check_log_mel_input

    check_log_mel_input(x)
    lead, sig_len = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, sig_len)
    if flat.dtype == torch.float64:
        flat = flat.to(torch.float32)
    out = log_mel_2d(flat, **launch)
    out = out.reshape(*lead, N_MELS, out.shape[-1])
    return out.to(torch.float64) if x.dtype == torch.float64 else out
