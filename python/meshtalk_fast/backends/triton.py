"""The Triton backend: its one table (``TABLE``) of fast paths, loaded without importing triton up front.

The kernels live in the top-level ``kernels/`` folder of the repository, one file per fused op, and are
installed as the package ``meshtalk_fast.kernels`` (CMake copies them there). ``kernel_module(name)``
returns ``meshtalk_fast.kernels.<name>`` in both layouts:

* installed: ``meshtalk_fast.kernels`` is a real subpackage and is imported normally;
* source checkout (``PYTHONPATH=python``): there is no ``python/meshtalk_fast/kernels``, so the
  checkout's ``kernels/`` folder (``python/meshtalk_fast/../../kernels, three folders above this file``) is loaded *under the same
  name* ``meshtalk_fast.kernels``. Nothing else on ``sys.path`` is consulted, so an unrelated
  top-level ``kernels`` package can never be picked up by mistake.

Kernel modules are imported on first use, because ``triton.jit`` decides at decoration time whether a
kernel is compiled for the GPU or run by the interpreter (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Optional

import torch

from ..base.dispatch import Impl, Inputs

__all__ = ["kernel_module", "triton_unavailable", "triton_log_mel", "triton_masked_vertex_losses",
           "triton_lip_vertex_error"]

_PACKAGE = "meshtalk_fast.kernels"
_state: dict = {}


def _import_triton() -> Optional[ModuleType]:
    if "triton" not in _state:
        try:
            import triton
        except ImportError:
            triton = None
        _state["triton"] = triton
    return _state["triton"]


def _interpreting() -> bool:
    triton = _import_triton()
    return triton is not None and bool(triton.knobs.runtime.interpret)


def triton_unavailable(device: torch.device) -> Optional[str]:
    """``None`` when the Triton kernels can run on ``device``, else the reason."""
    if _import_triton() is None:
        return "triton is not installed (pip install 'meshtalk_fast[gpu]', or pip install triton)"
    device = torch.device(device)
    loaded_interpreted = _state.get("loaded_interpreted")
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if not _interpreting():
            return ("tensor is on cpu and TRITON_INTERPRET is not set (the Triton kernels run on CUDA GPUs; "
                    "set TRITON_INTERPRET=1 before importing triton to run them on the CPU through the "
                    "interpreter, for tests)")
        if loaded_interpreted is False:
            return ("the Triton kernels were loaded for the GPU before TRITON_INTERPRET=1 was set; set it "
                    "before the first Triton call to run them on the CPU")
        return None
    return f"the Triton kernels run on CUDA devices (or the CPU under TRITON_INTERPRET=1), got device {device}"


def _load_kernels_package() -> ModuleType:
    try:
        return importlib.import_module(_PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name != _PACKAGE:
            raise
    source = pathlib.Path(__file__).resolve().parents[3] / "kernels" / "__init__.py"
    if not source.is_file():
        raise ModuleNotFoundError(f"{_PACKAGE} is not installed and no source checkout's kernels/ folder "
                                  f"exists at {source.parent}", name=_PACKAGE)
    spec = importlib.util.spec_from_file_location(_PACKAGE, source,
                                                  submodule_search_locations=[str(source.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PACKAGE]
        raise
    setattr(sys.modules["meshtalk_fast"], "kernels", module)
    return module


def kernel_module(name: str) -> ModuleType:
    """``meshtalk_fast.kernels.<name>`` (e.g. ``"mel"``), installed or from a source checkout."""
    _load_kernels_package()
    module = importlib.import_module(f"{_PACKAGE}.{name}")
    _state.setdefault("loaded_interpreted", _interpreting())
    return module


def triton_log_mel(x: torch.Tensor) -> torch.Tensor:
    """Fused Triton log-mel: ``x [..., L] -> Tensor[..., 80, 1 + L // 160]`` (see ``kernels/mel.py``)."""
    return kernel_module("mel").triton_log_mel(x)


def triton_masked_vertex_losses(preds, target: torch.Tensor, masks: torch.Tensor, pred_index=None,
                                distance: str = "squared") -> torch.Tensor:
    """Fused Triton vertex losses: ``Tensor[K]`` (see ``kernels/vertex_losses.py``)."""
    return kernel_module("vertex_losses").triton_masked_vertex_losses(preds, target, masks, pred_index, distance)


def triton_lip_vertex_error(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
    """Fused Triton lip vertex error: a scalar (see ``kernels/vertex_losses.py``)."""
    return kernel_module("vertex_losses").triton_lip_vertex_error(pred, target, lip_mask)


def _triton_rule(inputs: Inputs) -> Optional[str]:
    return triton_unavailable(inputs.device)


# The one table of the triton backend: op -> Impl(function, options it accepts, when it can run).
TABLE = {
    "log_mel": Impl(triton_log_mel, (), _triton_rule),
    "masked_vertex_losses": Impl(triton_masked_vertex_losses, (), _triton_rule),
    "lip_vertex_error": Impl(triton_lip_vertex_error, (), _triton_rule),
}
