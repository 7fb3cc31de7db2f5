"""Argument checks shared by the public API.

Every error names the argument, what was expected and what was found, e.g.
``"template must have shape [V, 3] with V == 6172, got [5023, 3]"``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

__all__ = ["shape_str", "check_tensor", "check_finite", "check_positive_int", "check_choice", "check_mask_weights", "check_template",
           "check_regular_file"]


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_tensor(name: str, x, ndim: Union[int, Sequence[int], None] = None,
                 shape: Optional[Sequence[Optional[int]]] = None, floating: bool = True,
                 what: str = "") -> torch.Tensor:
    """Check that ``x`` is a tensor of the given rank/shape; ``None`` in ``shape`` matches any size.

    ``what`` describes the expected layout in the error, e.g. ``"[B, T, 16000]"``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {what}".rstrip() + f", got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            dims = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {dims} dimensions {what}".rstrip()
                             + f", got shape {shape_str(x.shape)}")
    if shape is not None:
        if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            exp = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name} must have shape {exp} {what}".rstrip()
                             + f", got {shape_str(x.shape)}")
    return x


def check_template(template, n_vertices: int) -> None:
    """``template`` must be a finite ``[V, 3]`` tensor with V == ``n_vertices`` (the model's vertex count)."""
    check_tensor("template", template, what=f"[V, 3] with V == {n_vertices}")
    if tuple(template.shape) != (n_vertices, 3):
        raise ValueError(f"template must have shape [V, 3] with V == {n_vertices} (the model's vertex count), "
                         f"got {shape_str(template.shape)}")
    check_finite("template", template)


def check_finite(name: str, x: torch.Tensor) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} must be finite, got {n_nan} NaN and {n_inf} inf values "
                         f"in a tensor of shape {shape_str(x.shape)}")


def check_positive_int(name: str, value, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            isinstance(value, float) and math.isfinite(value) and value == int(value)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value <= 0 or (maximum is not None and value > maximum):
        rng = f"in [1, {maximum}]" if maximum is not None else "> 0"
        raise ValueError(f"{name} must be an integer {rng}, got {value}")
    return value


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def check_mask_weights(name: str, mask) -> torch.Tensor:
    """The one rule for per-vertex mask weights (smoothing blends, training masks, mask files): every
    weight finite and in [0, 1], as the C core's ``mt_session_create`` requires. A weight outside it would
    make a blend ``smoothed * m + x * (1 - m)`` extrapolate. ``name`` is the argument or file to blame.
    Returns ``mask`` as a float tensor."""
    m = torch.as_tensor(mask)
    if not m.is_floating_point():
        m = m.to(torch.float32)
    bad = ~((m >= 0) & (m <= 1))  # NaN compares false: caught here too
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0])
        raise ValueError(f"{name} must hold weights in [0, 1] (finite), got {float(m.reshape(-1)[i])!r} at index {i} "
                         f"({int(bad.sum())} of {m.numel()} weights out of range)")
    return m


def check_regular_file(name: str, path) -> str:
    """``path`` must be an existing regular file (not a folder, not a device such as /dev/zero)."""
    import os
    import stat

    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} {path!r} does not exist") from None
    except OSError as exc:
        raise OSError(f"{name} {path!r} cannot be opened ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device or special file"
        raise ValueError(f"{name} {path!r} is not a regular file (it is {kind})")
    return path
