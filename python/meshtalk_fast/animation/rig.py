"""The blendshape outputs of an animation: ``blendshapes.csv`` (Live Link Face take), ``blendshapes.json``
(weights, names, ARKit mapping, per-frame residual) and ``rig_animation.glb`` (the rig's own file, or one
written from the basis, with a weights animation). Used by ``animate --blendshapes`` and the quick start.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict

import numpy as np

from ..ops.blendshapes import blendshape_residual, solve_blendshapes
from ..io.gltf import add_weights_animation, replace_file, write_morph_mesh
from ..streaming.livelink import arkit_frame, write_livelink_csv

__all__ = ["RIG_OUTPUTS", "solve_rig", "rig_outputs", "residual_line"]

RIG_OUTPUTS = ("blendshapes.csv", "blendshapes.json", "rig_animation.glb")


def solve_rig(geom, basis, smoothing: float, backend: str):
    """(weights [T, K], residual share [T]) of meshes ``geom [T, V, 3]`` on the rig."""
    solver_backend = backend if backend in ("torch", "cpp") else "auto"
    weights = solve_blendshapes(geom, basis, smoothing=smoothing, backend=solver_backend)
    return weights, blendshape_residual(geom, basis, weights)


def rig_outputs(rig_path: str, basis, index: Dict[str, int], weights, residual, fps: int, smoothing: float,
                faces=None) -> Dict[str, Callable[[str], None]]:
    """Writers of ``RIG_OUTPUTS`` for ``export.write_animation(extra=...)``."""
    w, r = weights.numpy(), residual.numpy()

    def csv(path: str) -> None:
        write_livelink_csv(path, arkit_frame(w, index), fps)

    def js(path: str) -> None:
        doc = {"rig": os.path.abspath(rig_path), "fps": fps, "frames": int(w.shape[0]), "names": list(basis.names),
               "arkit": {name: basis.names[k] for name, k in index.items()}, "bounds": [0.0, 1.0],
               "smoothing": smoothing, "weights": np.round(w.astype(np.float64), 6).tolist(),
               "residual": np.round(r.astype(np.float64), 6).tolist(),
               "residual_mean": float(r.mean()), "residual_max": float(r.max()),
               "residual_means": "per frame, the share of the mesh motion (squared, over the vertices) the rig "
                                 "cannot express: 0 = all of it expressed"}

        def write(tmp: str) -> None:
            with open(tmp, "w") as fh:
                json.dump(doc, fh)
        replace_file(path, write)

    def glb(path: str) -> None:
        if rig_path.lower().endswith((".glb", ".gltf")):
            add_weights_animation(rig_path, path, w, fps)
        else:
            f = basis.faces.numpy() if basis.faces is not None else (None if faces is None else np.asarray(faces))
            write_morph_mesh(path, basis.names, basis.neutral.numpy(), basis.deltas.numpy(), f, w, fps)
    return {"blendshapes.csv": csv, "blendshapes.json": js, "rig_animation.glb": glb}


def residual_line(residual) -> str:
    r = residual.numpy()
    return (f"rig residual (share of the mesh motion the rig cannot express) mean {r.mean():.4f}, max {r.max():.4f}"
            f" (frame {int(r.argmax())})")
