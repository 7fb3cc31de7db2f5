"""Streaming log-mel: push audio as it arrives, get each mel frame as soon as its samples are in.

The concatenation of everything ``push`` and ``close`` return equals ``log_mel(whole_signal)`` with the
same backend (the streaming framing: one utterance framed once on the 10 ms grid).

Frame t covers, with ``center=True`` reflect padding, the original samples ``[160 t - 400, 160 t + 400)``
(the 800 non-zero taps of the 2048-point window); indices below 0 reflect to ``x[1..400]`` and indices
at or past the end L reflect to ``x[2(L-1) - i]``. So frame t is final once sample ``160 t + 399`` has
arrived, except that the last frames (``160 t + 400 > L``) need the right edge and only come out of
``close``. Every batch of ready frames is computed by ``log_mel`` on a short segment of the stream that
starts on the 160-sample grid at least 3 frames (480 samples) before the first frame wanted, or at
sample 0, so the wanted frames never see the segment's own reflected edge; at ``close`` the segment
ends at the stream's end, so its right reflection is the stream's. Segments hold at least 1025 samples
(``log_mel``'s minimum), hence the first frames come out once 1025 samples (64 ms) are in; a stream
closed with fewer raises ``log_mel``'s too-short error. The buffer keeps only what later frames need:
at most 1185 samples after a push that completes a frame (plus, until then, the samples pushed since),
never the whole stream.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..base.checks import check_choice, check_finite, check_tensor
from ..base.dispatch import BACKENDS
from ..ops.mel import HOP_LENGTH, N_FFT, N_MELS, WIN_LENGTH, log_mel

__all__ = ["StreamingLogMel"]

_MIN_SAMPLES = N_FFT // 2 + 1  # 1025: log_mel's reflect padding needs more than 1024 samples
_HALF = WIN_LENGTH // 2         # 400
_GUARD = 3                      # frames j >= 3 of a segment never touch its left reflection (3*160 >= 400)


class StreamingLogMel:
    """``push(samples [n]) -> Tensor[80, F_new]`` as frames complete; ``close() -> Tensor[80, F_rest]``.

    backend: as for ``log_mel`` ("auto", "torch", "triton", "cpp"), resolved on each call for the
    samples' device. Output dtype: float64 for float64 samples, else float32 (the first chunk's dtype
    fixes the stream's dtype; later chunks are converted to it). Chunks may have any length, 0 included.
    """

    def __init__(self, backend: str = "auto"):
        check_choice("backend", backend, BACKENDS)
        self.backend = backend
        self._buf: Optional[torch.Tensor] = None  # samples [_start, _n) of the stream
        self._start = 0
        self._n = 0
        self._next = 0  # first frame not yet returned
        self._closed = False

    @property
    def samples_seen(self) -> int:
        """Total samples pushed so far."""
        return self._n

    @property
    def buffered_samples(self) -> int:
        """Samples currently held (bounded: see the module docstring)."""
        return 0 if self._buf is None else self._buf.shape[0]

    @property
    def frames_emitted(self) -> int:
        """Total mel frames returned so far."""
        return self._next

    def _empty(self) -> torch.Tensor:
        dtype = torch.float64 if self._buf is not None and self._buf.dtype == torch.float64 else torch.float32
        device = self._buf.device if self._buf is not None else torch.device("cpu")
        return torch.empty(N_MELS, 0, dtype=dtype, device=device)

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Append ``samples [n]`` (16 kHz mono) and return the frames that became complete: ``[80, F_new]``."""
        if self._closed:
            raise RuntimeError("push() called after close(): this StreamingLogMel is finished; start a new one")
        check_tensor("samples", samples, ndim=1, what="[n] (mono, 16 kHz)")
        check_finite("samples", samples)
        if self._buf is None:
            self._buf = samples.detach().clone()
        else:
            if samples.device != self._buf.device:
                raise ValueError(f"samples must be on the stream's device {self._buf.device}, got {samples.device}")
            self._buf = torch.cat([self._buf, samples.detach().to(self._buf.dtype)])
        self._n += samples.shape[0]
        if self._n < _MIN_SAMPLES:
            return self._empty()
        ready = (self._n - _HALF) // HOP_LENGTH + 1  # frames t with 160 t + 400 <= n
        if ready <= self._next:
            return self._empty()
        out = self._frames(self._next, ready, at_end=False)
        self._next = ready
        self._trim()
        return out

    def close(self) -> torch.Tensor:
        """Reflect-pad the right edge and return the remaining frames ``[80, F_rest]``."""
        if self._closed:
            raise RuntimeError("close() called twice: this StreamingLogMel is already finished")
        self._closed = True
        if self._n < _MIN_SAMPLES:
            # the same too-short error as log_mel on the whole (short) stream, which the buffer still holds
            whole = self._buf if self._buf is not None else torch.zeros(0)
            return log_mel(whole, backend=self.backend)
        out = self._frames(self._next, self._n // HOP_LENGTH + 1, at_end=True)
        self._next = self._n // HOP_LENGTH + 1
        self._buf = None
        return out

    def _segment_start(self, first: int):
        """(segment start sample s, index j0 of global frame ``first`` within the segment)."""
        lead = max(_GUARD, -(-(_MIN_SAMPLES - (self._n - HOP_LENGTH * first)) // HOP_LENGTH))
        if first <= lead:
            return 0, first  # a segment from sample 0 has exactly the stream's left reflection
        return HOP_LENGTH * (first - lead), lead

    def _frames(self, first: int, stop: int, at_end: bool) -> torch.Tensor:
        start, j0 = self._segment_start(first)
        end = self._n if at_end else max(start + _MIN_SAMPLES, HOP_LENGTH * (stop - 1) + _HALF)
        mel = log_mel(self._buf[start - self._start:end - self._start], backend=self.backend)
        return mel[:, j0:j0 + stop - first]

    def _trim(self) -> None:
        keep_from, _ = self._segment_start(self._next)  # later calls have more samples: they start no earlier
        if keep_from > self._start:
            self._buf = self._buf[keep_from - self._start:].clone()
            self._start = keep_from
