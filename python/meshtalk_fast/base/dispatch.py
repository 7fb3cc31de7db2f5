"""Backend dispatch: ``backend="auto" | "torch" | "triton" | "cpp"`` for every public compute op.

Each fast path registers itself here next to its reference. ``auto`` picks Triton for CUDA tensors
and the C++ core for CPU tensors when they implement the op, else the PyTorch reference; the choice
is logged at debug level. An explicit backend that cannot run raises ``BackendUnavailable`` with the
reason; nothing falls back silently.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional, Tuple

import torch

__all__ = ["BACKENDS", "BackendUnavailable", "register", "resolve", "available_backends"]

log = logging.getLogger("meshtalk_fast")

BACKENDS = ("auto", "torch", "triton", "cpp")

# op -> backend -> (implementation, availability check returning None or a reason string)
_REGISTRY: Dict[str, Dict[str, Tuple[Callable, Callable[[torch.device], Optional[str]]]]] = {}


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here (the message says why)."""


def register(op: str, backend: str, fn: Callable,
             unavailable: Callable[[torch.device], Optional[str]] = lambda device: None) -> None:
    """Register ``fn`` as ``op``'s ``backend`` implementation.

    ``unavailable(device)`` returns ``None`` when the backend can run on ``device``, else the reason.
    """
    if backend not in BACKENDS[1:]:
        raise ValueError(f"backend must be one of {BACKENDS[1:]}, got {backend!r}")
    _REGISTRY.setdefault(op, {})[backend] = (fn, unavailable)


def available_backends(op: str, device: torch.device) -> Dict[str, Optional[str]]:
    """``{backend: None if it can run, else the reason}`` for ``op`` on ``device``."""
    out = {}
    for name in BACKENDS[1:]:
        entry = _REGISTRY.get(op, {}).get(name)
        out[name] = f"no {name} implementation of {op} exists" if entry is None else entry[1](device)
    return out


def resolve(op: str, backend: str, device: torch.device) -> Callable:
    """The implementation of ``op`` to run for ``backend`` on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    impls = _REGISTRY.get(op, {})
    if backend == "auto":
        preferred = ("triton", "torch") if device.type == "cuda" else ("cpp", "torch")
        for name in preferred:
            entry = impls.get(name)
            if entry is not None and entry[1](device) is None:
                log.debug("%s: backend='auto' picked %r for device %s", op, name, device)
                return entry[0]
        raise BackendUnavailable(f"{op}: no backend can run on device {device}")
    entry = impls.get(backend)
    if entry is None:
        raise BackendUnavailable(f"{op} has no {backend!r} backend; available: "
                                 + ", ".join(sorted(impls)))
    reason = entry[1](device)
    if reason is not None:
        raise BackendUnavailable(f"{op}: backend {backend!r} cannot run on device {device}: {reason}")
    return entry[0]
