"""The released post-processing: temporal Gaussian smoothing blended by per-vertex masks."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_tensor, shape_str

__all__ = ["smooth_geom", "post_smooth", "gaussian_kernel"]


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


def post_smooth(geom: torch.Tensor, forehead_mask: torch.Tensor, neck_mask: torch.Tensor) -> torch.Tensor:
    """Released inference post-processing: smooth blended by the forehead mask, then by the neck mask."""
    return smooth_geom(smooth_geom(geom, forehead_mask), neck_mask)
