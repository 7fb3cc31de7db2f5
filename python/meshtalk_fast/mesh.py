"""Reading template meshes and per-vertex masks (the user gives the paths; nothing is bundled)."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
import torch

__all__ = ["load_obj", "load_mask"]


def load_obj(path) -> Tuple[torch.Tensor, torch.Tensor]:
    """``path`` -> (vertices ``[V, 3]`` float32, faces ``[F, 3]`` int64), vertex order kept as in the file.

    Uses trimesh with ``process=False`` so no vertex is merged or reordered (the model's vertex
    order is the file's)."""
    import trimesh

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mesh file {path!r} does not exist")
    try:
        mesh = trimesh.load(path, process=False, maintain_order=True, force="mesh")
    except Exception as exc:
        raise ValueError(f"mesh file {path!r} could not be read: {exc}") from None
    v = np.asarray(mesh.vertices, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"mesh file {path!r} holds no vertices")
    return torch.from_numpy(v.copy()), torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64).copy())


def load_mask(path, n_vertices: Optional[int] = None) -> torch.Tensor:
    """A per-vertex weight file (one number per line) -> ``Tensor[V]`` float32."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file {path!r} does not exist")
    try:
        m = np.loadtxt(path, dtype=np.float64).reshape(-1)
    except ValueError as exc:
        raise ValueError(f"mask file {path!r} could not be parsed: {exc}") from None
    if n_vertices is not None and m.shape[0] != n_vertices:
        raise ValueError(f"mask file {path!r} must hold {n_vertices} values (one per vertex), got {m.shape[0]}")
    if not np.isfinite(m).all():
        raise ValueError(f"mask file {path!r} holds non-finite values")
    return torch.from_numpy(m.astype(np.float32))
