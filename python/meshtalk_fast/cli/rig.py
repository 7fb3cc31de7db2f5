"""Blendshape rigs on the command line: ``meshtalk-fast make-rig``, and the ``--blendshapes`` options of
``animate`` / ``stream`` (their outputs: ``blendshapes.csv``, ``blendshapes.json``, ``rig_animation.glb``;
``--livelink HOST:PORT``). Registered by ``cli.command``; used by ``cli.animate``.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from ..animation.rig import RIG_OUTPUTS, residual_line, rig_outputs, solve_rig

__all__ = ["add_parsers", "add_rig_arguments", "load_rig", "stream_rig", "solve_rig", "rig_outputs", "residual_line",
           "RIG_OUTPUTS"]


def add_rig_arguments(p, live: bool = False) -> None:
    p.add_argument("--blendshapes", metavar="RIG", help="a blendshape rig (.glb/.gltf with named morph targets, "
                                                        "or .npz) on the model's topology: also solve its weights "
                                                        "per frame")
    p.add_argument("--blendshape-map", metavar="JSON", help="mapping file {\"rig target\": \"ARKit name\"} for rigs "
                                                            "whose targets are not named like ARKit's")
    p.add_argument("--blendshape-smoothing", type=float, default=0.0,
                   help="temporal smoothness weight of the solve (0 = none; causal, so live too)")
    if live:
        p.add_argument("--livelink", metavar="HOST[:PORT]", help="send each frame's weights as a Live Link Face "
                                                                 "UDP packet (default port 11111); needs --blendshapes")


def load_rig(path: str, mapping_path: Optional[str], n_vertices: int, model: str):
    """(basis, ARKit index) of ``--blendshapes``, checked against the model's vertex count."""
    from ..ops.blendshapes import BlendshapeBasis, arkit_index, load_arkit_mapping

    basis = BlendshapeBasis.load(path)
    if basis.n_vertices != n_vertices:
        raise ValueError(f"--blendshapes {path!r} has {basis.n_vertices} vertices but model {model!r} animates "
                         f"{n_vertices}: the rig must share the model's topology")
    mapping = load_arkit_mapping(mapping_path) if mapping_path else None
    return basis, arkit_index(basis.names, mapping, f"--blendshapes {path!r}")


# ------------------------------------------------------------------------------------------------
# make-rig
# ------------------------------------------------------------------------------------------------
def _make_rig(args) -> int:
    from ..data.arkit_rig import NOT_EXPRESSED, procedural_arkit_basis

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
    from ..streaming.livelink import LiveLinkSender, parse_target

    if args.livelink and not args.blendshapes:
        raise ValueError("--livelink needs --blendshapes (the rig whose weights to send)")
    rig = load_rig(args.blendshapes, args.blendshape_map, n_vertices, args.model) if args.blendshapes else None
    sender = None
    if args.livelink:
        host, port = parse_target(args.livelink)
        sender = LiveLinkSender(host, port, fps=fps)
    return rig, sender
