"""The released post-processing: temporal Gaussian smoothing blended by per-vertex masks.

Two ops, each with this PyTorch reference and a C++ implementation (``backends/cpp.py``, csrc/core/smoothing.cpp):

- ``"post_smooth"``: a whole sequence ``[T, V, 3]`` (``post_smooth(..., backend=)``; the reference is
  ``torch_post_smooth``);
- ``"smooth_step"``: a stream, ``factory(forehead [V], neck [V], delay)`` with ``.push(frames [k, V, 3])
  -> [j, V, 3]`` (frame t comes out once frame t + delay is in, computed from frames
  ``max(0, t-8) .. t+delay`` as if the sequence ended there) and ``.close() -> [rest, V, 3]``; the
  reference is ``StreamingSmoother``. ``delay`` = 8 equals ``post_smooth`` of the whole sequence; 4 is
  the approximation ``streaming/animator.py`` describes.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F

from ..base.checks import check_mask_weights, check_tensor, shape_str
from ..base.dispatch import Inputs, resolve

__all__ = ["smooth_geom", "post_smooth", "torch_post_smooth", "gaussian_kernel", "StreamingSmoother",
           "SMOOTHING_REACH"]

SMOOTHING_REACH = 8  # frames either side that two chained 9-tap passes read


def gaussian_kernel(size: int = 9, sigma: float = 2.0, dtype=torch.float32) -> torch.Tensor:
    """Normalised Gaussian taps ``exp(-x^2 / (2 sigma^2)) / sum`` for x in [-size//2, size//2]."""
    if size <= 0 or size % 2 != 1:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-0.5 * x.square() / sigma ** 2)
    return (k / k.sum()).to(dtype)


def smooth_geom(geom: torch.Tensor, mask: Optional[torch.Tensor] = None, size: int = 9,
                sigma: float = 2.0) -> torch.Tensor:
    """``geom [T, V, 3]`` smoothed over time (replicate padding), blended as
    ``smoothed * mask + geom * (1 - mask)`` with ``mask [V]`` (all smoothed when None)."""
    check_tensor("geom", geom, ndim=3, what="[T, V, 3]")
    T, V, _ = geom.shape
    if geom.shape[-1] != 3 or T == 0:
        raise ValueError(f"geom must have shape [T > 0, V, 3], got {shape_str(geom.shape)}")
    k = gaussian_kernel(size, sigma, geom.dtype).to(geom.device)
    x = geom.permute(1, 2, 0).reshape(V * 3, 1, T)
    x = F.pad(x, (size // 2, size // 2), mode="replicate")
    smoothed = F.conv1d(x, k.view(1, 1, -1)).view(V, 3, T).permute(2, 0, 1)
    if mask is None:
        return smoothed.contiguous()
    if mask.shape != (V,):
        raise ValueError(f"mask must have shape [V={V}], got {shape_str(mask.shape)}")
    m = mask.to(geom)[None, :, None]
    return smoothed * m + geom * (1 - m)


def torch_post_smooth(geom: torch.Tensor, forehead_mask: torch.Tensor, neck_mask: torch.Tensor) -> torch.Tensor:
    """Released inference post-processing: smooth blended by the forehead mask, then by the neck mask."""
    return smooth_geom(smooth_geom(geom, forehead_mask), neck_mask)


def _check_masks(forehead_mask: torch.Tensor, neck_mask: torch.Tensor, V: int) -> None:
    for name, m in (("forehead_mask", forehead_mask), ("neck_mask", neck_mask)):
        check_tensor(name, m, shape=(V,), what=f"[V={V}]")
        check_mask_weights(name, m)


def post_smooth(geom: torch.Tensor, forehead_mask: torch.Tensor, neck_mask: torch.Tensor,
                backend: str = "auto") -> torch.Tensor:
    """``geom [T, V, 3]`` -> ``[T, V, 3]``: the released post-processing, a 9-tap Gaussian over time
    (sigma 2, replicate padding) blended by ``forehead_mask [V]``, then again by ``neck_mask [V]``.

    backend: "torch" (the reference, differentiable) or "cpp" (the C++ core: float32, no gradients).
    "auto" picks cpp for float32 CPU tensors outside grad mode, else the reference (which keeps
    float64 inputs in float64).
    """
    check_tensor("geom", geom, ndim=3, what="[T, V, 3]")
    T, V, _ = geom.shape
    if geom.shape[-1] != 3 or T == 0:
        raise ValueError(f"geom must have shape [T > 0, V, 3], got {shape_str(geom.shape)}")
    _check_masks(forehead_mask, neck_mask, V)
    return resolve("post_smooth", backend, Inputs.model(geom))(geom, forehead_mask, neck_mask)


class StreamingSmoother:
    """The reference of op ``"smooth_step"``: ``push(frames [k, V, 3]) -> [j, V, 3]``, ``close() -> [rest, V, 3]``.

    Frame t is emitted once frame t + delay has been pushed, as ``torch_post_smooth`` of frames
    ``max(0, t-8) .. t+delay`` (the sequence cut there), taking its frame t; ``close()`` emits the rest
    with the sequence ending at the last frame pushed. Keeps the last 8 + delay frames.
    """

    def __init__(self, forehead_mask: torch.Tensor, neck_mask: torch.Tensor, delay: int = 4):
        check_tensor("forehead_mask", forehead_mask, ndim=1, what="[V]")
        V = forehead_mask.shape[0]
        _check_masks(forehead_mask, neck_mask, V)
        if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= SMOOTHING_REACH:
            raise ValueError(f"delay must be an integer in [0, {SMOOTHING_REACH}] frames, got {delay!r}")
        self.masks, self.delay, self.n_vertices = (forehead_mask, neck_mask), delay, V
        self._raw: List[torch.Tensor] = []  # frames [_raw_start, pushed)
        self._raw_start = 0
        self.pushed = 0
        self.emitted = 0
        self.closed = False

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("push() called after close(): this smoother is finished")
        check_tensor("frames", frames, shape=(None, self.n_vertices, 3), what="[k, V, 3]")
        self._raw.extend(frames.unbind(0))
        self.pushed += frames.shape[0]
        return self._emit(max(self.emitted, self.pushed - self.delay), frames)

    @torch.no_grad()
    def close(self) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("close() called twice: this smoother is already finished")
        self.closed = True
        like = self._raw[0] if self._raw else self.masks[0].new_zeros(self.n_vertices, 3)
        out = self._emit(self.pushed, like[None])
        self._raw = []
        return out

    def _emit(self, ready: int, like: torch.Tensor) -> torch.Tensor:
        frames = []
        for t in range(self.emitted, ready):
            lo = max(0, t - SMOOTHING_REACH)
            hi = min(self.pushed, t + self.delay + 1)
            window = torch.stack(self._raw[lo - self._raw_start:hi - self._raw_start])
            frames.append(torch_post_smooth(window, *self.masks)[t - lo])
        self.emitted = max(self.emitted, ready)
        keep_from = max(0, self.emitted - SMOOTHING_REACH)
        if keep_from > self._raw_start:
            del self._raw[:keep_from - self._raw_start]
            self._raw_start = keep_from
        if not frames:
            return like.new_zeros(0, self.n_vertices, 3)
        return torch.stack(frames)

