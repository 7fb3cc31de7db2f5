"""Backend dispatch: ``backend="auto" | "torch" | "triton" | "cpp"`` for every public compute op.

The contract (docs/architecture.md):

- Each backend module (``backends/reference.py`` for "torch", ``backends/triton.py``, ``backends/cpp.py``)
  holds ONE table ``{op: Impl}``; the package root hands the tables to ``install`` once. Nothing registers
  itself as a side effect of being imported.
- An ``Impl`` says when it can run, seen from the inputs (``Inputs``: device, dtype, grad), and which
  options it accepts (``threads``, ``seeds``, ...). ``prefer_not`` names inputs it can run but ``auto``
  should leave to another backend (the C++ log-mel computes float64 input in float32, for example).
- ``resolve`` returns the implementation to call. ``auto`` picks Triton for CUDA inputs and the C++ core
  for CPU inputs when they can run, else the PyTorch reference, and logs its choice at debug level. An
  explicit backend that cannot run raises ``BackendUnavailable`` with the reason; an option the chosen
  backend does not accept raises ``ValueError`` naming op, backend, option and what it accepts. Nothing
  falls back silently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["BACKENDS", "BackendUnavailable", "Inputs", "Impl", "install", "resolve", "available_backends", "ops",
           "options_of", "runs", "status"]

log = logging.getLogger("meshtalk_fast")

BACKENDS = ("auto", "torch", "triton", "cpp")
AUTO_ORDER = {"cuda": ("triton", "torch")}  # any other device type: ("cpp", "torch")


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here (the message says why)."""


@dataclass(frozen=True)
class Inputs:
    """What an availability rule sees: the inputs' device and dtype, and whether a gradient must flow
    (model ops: grad mode is on; tensor ops: grad mode is on and an input requires grad)."""
    device: torch.device
    dtype: Optional[torch.dtype] = None
    grad: bool = False

    @classmethod
    def of(cls, x: torch.Tensor, grad: Optional[bool] = None) -> "Inputs":
        """``x``'s device and dtype; ``grad`` defaults to ``x.requires_grad and torch.is_grad_enabled()``."""
        if grad is None:
            grad = bool(x.requires_grad) and torch.is_grad_enabled()
        return cls(x.device, x.dtype, bool(grad))

    @classmethod
    def model(cls, x: torch.Tensor) -> "Inputs":
        """A model op's inputs: ``x``'s device and dtype; a gradient flows whenever grad mode is on."""
        return cls(x.device, x.dtype, torch.is_grad_enabled())

    def __str__(self) -> str:
        dtype = "" if self.dtype is None else f" {str(self.dtype).replace('torch.', '')}"
        return f"{self.device}{dtype}{' with grad' if self.grad else ''}"


def _always(inputs: Inputs) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Impl:
    """One backend's implementation of one op: ``fn``, the options it accepts, and its rules.

    ``unavailable(inputs)`` returns None when it can run on these inputs, else the reason; ``prefer_not(inputs)``
    returns None, or why ``auto`` should pick another backend although this one can run."""
    fn: Callable
    options: Tuple[str, ...] = ()
    unavailable: Callable[[Inputs], Optional[str]] = _always
    prefer_not: Callable[[Inputs], Optional[str]] = _always


# op -> backend -> Impl; filled once by ``install`` (the package root passes the backend tables)
_TABLES: Dict[str, Dict[str, Impl]] = {}


def install(tables: Mapping[str, Mapping[str, Impl]]) -> None:
    """Install ``{backend: {op: Impl}}``: every backend's one table (replacing what was installed)."""
    ops_by_backend: Dict[str, Dict[str, Impl]] = {}
    for backend, table in tables.items():
        if backend not in BACKENDS[1:]:
            raise ValueError(f"backend must be one of {BACKENDS[1:]}, got {backend!r}")
        for op, impl in table.items():
            if not isinstance(impl, Impl):
                raise TypeError(f"table {backend!r}: op {op!r} must map to an Impl, got {type(impl).__name__}")
            ops_by_backend.setdefault(op, {})[backend] = impl
    _TABLES.clear()
    _TABLES.update(ops_by_backend)


def ops() -> Sequence[str]:
    """The ops of the installed tables, sorted."""
    return sorted(_TABLES)


def options_of(op: str, backend: str) -> Tuple[str, ...]:
    """The options ``backend``'s implementation of ``op`` accepts (``()`` when it has none or none exists)."""
    impl = _TABLES.get(op, {}).get(backend)
    return () if impl is None else impl.options


def _as_inputs(inputs) -> Inputs:
    if isinstance(inputs, Inputs):
        return inputs
    if isinstance(inputs, torch.device):
        return Inputs(inputs)
    raise TypeError(f"inputs must be dispatch.Inputs or a torch.device, got {type(inputs).__name__}")


def _reason(op: str, backend: str, inputs: Inputs) -> Optional[str]:
    impl = _TABLES.get(op, {}).get(backend)
    if impl is None:
        return f"no {backend} implementation of {op} exists"
    return impl.unavailable(inputs)


def available_backends(op: str, device: torch.device, dtype: Optional[torch.dtype] = torch.float32,
                       grad: bool = False) -> Dict[str, Optional[str]]:
    """``{backend: None if it can run, else the reason}`` for ``op`` on inputs of ``device`` / ``dtype``;
    ``grad=False`` asks for inference, ``grad=True`` for training (a gradient must flow)."""
    inputs = Inputs(torch.device(device), dtype, grad)
    return {name: _reason(op, name, inputs) for name in BACKENDS[1:]}


def status(op: str, inputs) -> Dict[str, Tuple[str, Optional[str]]]:
    """``{backend: (state, reason)}`` for ``op`` on ``inputs``: state "yes" (runs, and ``auto`` may pick it),
    "explicit" (runs when named, ``auto`` passes it over: reason says why) or "no" (cannot run: reason)."""
    inputs = _as_inputs(inputs)
    out = {}
    for name in BACKENDS[1:]:
        reason = _reason(op, name, inputs)
        if reason is not None:
            out[name] = ("no", reason)
            continue
        why_not = _TABLES[op][name].prefer_not(inputs)
        out[name] = ("yes", None) if why_not is None else ("explicit", why_not)
    return out


def runs(op: str, backend: str, inputs) -> bool:
    """Whether ``backend`` can run ``op`` on ``inputs`` (an ``Inputs`` or a device)."""
    return _reason(op, backend, _as_inputs(inputs)) is None


def _check_options(op: str, backend: str, impl: Impl, options: Mapping[str, object], how: str) -> None:
    for name, value in options.items():
        if name in impl.options:
            continue
        owners = [b for b in BACKENDS[1:] if name in options_of(op, b)]
        owned = f"backend {' or '.join(repr(b) for b in owners)} only" if owners else "no backend of this op"
        accepts = ", ".join(impl.options) if impl.options else "no options"
        raise ValueError(f"{op}: {name} applies to {owned}, got {name}={value!r} with backend {backend!r}{how} "
                         f"(which accepts {accepts})")


def resolve(op: str, backend: str, inputs, options: Optional[Mapping[str, object]] = None) -> Callable:
    """The implementation of ``op`` to call for ``backend`` on ``inputs`` (an ``Inputs``, or a device).

    ``options``: the backend options the caller will pass (those not None); each must be one the chosen
    backend accepts. Under ``auto`` they are checked against the backend ``auto`` picks."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    inputs = _as_inputs(inputs)
    options = options or {}
    impls = _TABLES.get(op)
    if not impls:
        raise BackendUnavailable(f"{op}: no implementation is installed (known ops: {', '.join(ops()) or 'none'})")
    if backend == "auto":
        passed = []
        for name in AUTO_ORDER.get(inputs.device.type, ("cpp", "torch")):
            impl = impls.get(name)
            if impl is None:
                continue
            why_not = impl.unavailable(inputs) or impl.prefer_not(inputs)
            if why_not is None:
                log.debug("%s: backend='auto' picked %r for %s", op, name, inputs)
                how = f" (picked by 'auto' for {inputs}; " + "; ".join(passed) + ")" if passed else \
                    f" (picked by 'auto' for {inputs})"
                _check_options(op, name, impl, options, how)
                return impl.fn
            passed.append(f"{name}: {why_not}")
        raise BackendUnavailable(f"{op}: no backend can run on {inputs}: " + "; ".join(passed))
    impl = impls.get(backend)
    if impl is None:
        raise BackendUnavailable(f"{op} has no {backend!r} backend; available: " + ", ".join(sorted(impls)))
    reason = impl.unavailable(inputs)
    if reason is not None:
        raise BackendUnavailable(f"{op}: backend {backend!r} cannot run on device {inputs.device}: {reason}")
    _check_options(op, backend, impl, options, "")
    return impl.fn
