"""The fast paths, one table per backend (``reference`` = torch, ``triton``, ``cpp``), and the C API
install folders (``capi``)."""
from typing import Dict, Mapping

from ..base.dispatch import Impl
from . import cpp, reference, triton

__all__ = ["tables"]


def tables() -> Dict[str, Mapping[str, Impl]]:
    """``{backend: its one table}``: what the package root installs in ``base.dispatch``."""
    return {"torch": reference.TABLE, "triton": triton.TABLE, "cpp": cpp.TABLE}
