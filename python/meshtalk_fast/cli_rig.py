"""Blendshape rigs on the command line: ``meshtalk-fast make-rig``, and the ``--blendshapes`` options of
``animate`` / ``stream`` (their outputs: ``blendshapes.csv``, ``blendshapes.json``, ``rig_animation.glb``;
``--livelink HOST:PORT``). Registered by ``cli.main``; used by ``cli_animate``.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["add_parsers", "add_rig_arguments", "load_rig", "solve_rig", "rig_outputs", "RIG_OUTPUTS"]

RIG_OUTPUTS = ("blendshapes.csv", "blendshapes.json", "rig_animation.glb")


def add_rig_arguments(p, live: bool = False) -> None:
    p.add_argument("--blendshapes", metavar="RIG", help="a blendshape rig (.glb/.gltf with named morph targets, or "
                                                        ".npz) on the model's topology: also solve its weights per frame")
    p.add_argument("--blendshape-map", metavar="JSON", help="mapping file {\"rig target\": \"ARKit name\"} for rigs "
                                                            "whose targets are not named like ARKit's")
    p.add_argument("--blendshape-smoothing", type=float, default=0.0,
                   help="temporal smoothness weight of the solve (0 = none; causal, so live too)")
    if live:
        p.add_argument("--livelink", metavar="HOST[:PORT]", help="send each frame's weights as a Live Link Face "
                                                                 "UDP packet (default port 11111); needs --blendshapes")


def load_rig(path: str, mapping_path: Optional[str], n_vertices: int, model: str):
    """(basis, ARKit index) of ``--blendshapes``, checked against the model's vertex count."""
    from .blendshapes import BlendshapeBasis, arkit_index, load_arkit_mapping

    basis = BlendshapeBasis.load(path)
    if basis.n_vertices != n_vertices:
        raise ValueError(f"--blendshapes {path!r} has {basis.n_vertices} vertices but model {model!r} animates "
                         f"{n_vertices}: the rig must share the model's topology")
    mapping = load_arkit_mapping(mapping_path) if mapping_path else None
    return basis, arkit_index(basis.names, mapping, f"--blendshapes {path!r}")


def solve_rig(geom, basis, smoothing: float, backend: str):
    """(weights [T, K], residual share [T]) of meshes ``geom [T, V, 3]`` on the rig."""
    from .blendshapes import blendshape_residual, solve_blendshapes

    solver_backend = backend if backend in ("torch", "cpp") else "auto"
    weights = solve_blendshapes(geom, basis, smoothing=smoothing, backend=solver_backend)
    return weights, blendshape_residual(geom, basis, weights)


def rig_outputs(rig_path: str, basis, index: Dict[str, int], weights, residual, fps: int, smoothing: float,
                faces=None) -> Dict[str, Callable[[str], None]]:
    """Writers of ``RIG_OUTPUTS`` for ``export.write_animation(extra=...)``."""
    from .gltf_morph import add_weights_animation, replace_file, write_morph_mesh
    from .livelink import arkit_frame, write_livelink_csv

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


# ------------------------------------------------------------------------------------------------
# make-rig
# ------------------------------------------------------------------------------------------------
def _make_rig(args) -> int:
    from .data.arkit_rig import NOT_EXPRESSED, procedural_arkit_basis

    out = args.out
    if not out.lower().endswith((".glb", ".npz")):
        raise ValueError(f"--out must end in .glb or .npz, got {out!r}")
    if os.path.exists(out) and not args.force:
        raise FileExistsError(f"--out {out!r} already exists; pass --force to overwrite")
    basis = procedural_arkit_basis(args.seed)
    basis.save(out)
    print(f"wrote {out}: the built-in face (subject seed {args.seed}, {basis.n_vertices} vertices) with "
          f"{basis.n_shapes} ARKit blendshapes: {', '.join(basis.names)}")
    why: Dict[str, list] = {}
    for name, reason in NOT_EXPRESSED.items():
        why.setdefault(reason, []).append(name)
    print(f"not expressible as linear shapes of the face's rig ({len(NOT_EXPRESSED)}):")
    for reason, names in why.items():
        print(f"  {', '.join(names)}: {reason}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("make-rig", help="the built-in face as an ARKit-named blendshape rig (.glb or .npz)",
                       description="Export the procedural face's articulation (jaw, lips, lids, brows) as linear "
                                   "morph targets named like ARKit's blendshapes.")
    p.add_argument("--out", required=True, help="face.glb (morph targets, names in mesh.extras.targetNames) or .npz")
    p.add_argument("--seed", type=int, default=0, help="subject seed of the procedural face (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(fn=_make_rig)


def stream_rig(args, n_vertices: int, fps: int) -> Tuple[object, Optional[object]]:
    """(``(basis, index)`` or None, a ``LiveLinkSender`` or None) from ``stream``'s options."""
    from .livelink import LiveLinkSender, parse_target

    if args.livelink and not args.blendshapes:
        raise ValueError("--livelink needs --blendshapes (the rig whose weights to send)")
    rig = load_rig(args.blendshapes, args.blendshape_map, n_vertices, args.model) if args.blendshapes else None
    sender = None
    if args.livelink:
        host, port = parse_target(args.livelink)
        sender = LiveLinkSender(host, port, fps=fps)
    return rig, sender
