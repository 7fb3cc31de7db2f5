"""OBJ meshes (the one reader and the one writer) and per-vertex mask files (the user gives the paths)."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
import torch

from ..base.checks import check_mask_weights, check_regular_file

__all__ = ["load_obj", "write_obj", "obj_text", "obj_face_lines", "load_mask", "find_mask_file", "load_smoothing_masks",
           "MASK_FILE_NAMES"]

# The names a mask may have in a folder: ours (FaceMasks.save, the quick start) and the released ones.
MASK_FILE_NAMES = {"forehead": ("forehead.txt", "forehead_mask.txt"), "neck": ("neck.txt", "neck_mask.txt"),
                   "mouth": ("mouth.txt", "weighted_mouth_mask.txt"), "eye": ("eye.txt", "weighted_eye_mask.txt"),
                   "eye_keypoints": ("eye_keypoints.txt",), "lips": ("lips.txt",), "upper_face": ("upper_face.txt",)}


def _obj_index(token: str, n_vertices: int, where: str) -> int:
    """One ``f`` entry (``i``, ``i/t``, ``i/t/n`` or ``i//n``; 1-based, negative = from the end) -> 0-based."""
    try:
        i = int(token.split("/", 1)[0])
    except ValueError:
        raise ValueError(f"{where}: face index {token!r} is not an integer") from None
    j = i - 1 if i > 0 else n_vertices + i
    if i == 0 or not 0 <= j < n_vertices:
        raise ValueError(f"{where}: face index {i} is outside the {n_vertices} vertices defined so far")
    return j


def _parse_obj(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Our own OBJ reader: the ``v`` lines in file order (no merging, no splitting by material, group,
    normal or texture coordinate: the model's vertex order is the file's) and the ``f`` lines, polygons
    fanned into triangles. Everything else (vn, vt, g, o, usemtl, s, l, ...) is ignored."""
    vertices, faces = [], []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"mesh file {path!r} line {number}"
            if parts[0] == "v":
                try:
                    vertices.append([float(x) for x in parts[1:4]])
                except ValueError:
                    raise ValueError(f"{where}: vertex coordinates {' '.join(parts[1:4])!r} are not numbers") from None
                if len(vertices[-1]) != 3:
                    raise ValueError(f"{where}: a vertex needs x y z, got {len(vertices[-1])} numbers")
            elif parts[0] == "f":
                if len(parts) < 4:
                    raise ValueError(f"{where}: a face needs at least 3 vertices, got {len(parts) - 1}")
                idx = [_obj_index(t, len(vertices), where) for t in parts[1:]]
                faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    return np.asarray(vertices, dtype=np.float32).reshape(-1, 3), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def load_obj(path) -> Tuple[torch.Tensor, torch.Tensor]:
    """``path`` -> (vertices ``[V, 3]`` float32, faces ``[F, 3]`` int64).

    Vertex order and count are exactly the file's ``v`` lines, whatever its groups, materials, normals
    or texture coordinates (a general mesh loader splits vertices per material; the model's vertex order
    must not change). Polygons are fanned into triangles. A mesh without ``f`` lines gives ``F = 0``.
    Other formats (not ``.obj``) are read with trimesh, ``process=False``."""
    path = check_regular_file("mesh file", path)
    if path.lower().endswith(".obj"):
        try:
            v, f = _parse_obj(path)
        except UnicodeError as exc:
            raise ValueError(f"mesh file {path!r} could not be read: {exc}") from None
    else:
        import trimesh

        try:
            mesh = trimesh.load(path, process=False, maintain_order=True, force="mesh")
        except Exception as exc:
            raise ValueError(f"mesh file {path!r} could not be read: {exc}") from None
        v = np.asarray(mesh.vertices, dtype=np.float32).reshape(-1, 3)
        f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if v.shape[0] == 0:
        raise ValueError(f"mesh file {path!r} holds no vertices (no 'v' lines)")
    if not np.isfinite(v).all():
        bad = int(np.nonzero(~np.isfinite(v).all(axis=1))[0][0])
        raise ValueError(f"mesh file {path!r}: vertex {bad} (0-based) has non-finite coordinates {v[bad].tolist()}")
    return torch.from_numpy(np.ascontiguousarray(v)), torch.from_numpy(np.ascontiguousarray(f))


OBJ_VERTEX = "v %.9g %.9g %.9g\n"  # 9 significant digits: float32 coordinates read back exactly


def obj_face_lines(faces: np.ndarray, n_vertices: int) -> str:
    """``faces [F, 3]`` (0-based) -> the OBJ ``f`` lines (1-based); every index must be a vertex."""
    f = np.asarray(faces).astype(np.int64).reshape(-1, 3)
    if f.size and (f.min() < 0 or f.max() >= n_vertices):
        raise ValueError(f"faces index vertices 0..{n_vertices - 1}, got indices {f.min()}..{f.max()}")
    return "".join("f %d %d %d\n" % tuple(row) for row in (f + 1).tolist())


def obj_text(vertices: np.ndarray, face_lines: str = "") -> str:
    """One OBJ file's text: ``vertices [V, 3]`` float32 as ``v`` lines, then ``face_lines`` (``obj_face_lines``)."""
    v = np.asarray(vertices, dtype=np.float32)
    return (OBJ_VERTEX * v.shape[0]) % tuple(v.reshape(-1).tolist()) + face_lines


def write_obj(path, vertices, faces=None) -> None:
    """``vertices [V, 3]``, ``faces [F, 3]`` (0-based) or None -> an OBJ file that ``load_obj`` reads back exactly."""
    v = torch.as_tensor(vertices).detach().cpu().to(torch.float32).numpy()
    lines = "" if faces is None else obj_face_lines(torch.as_tensor(faces).cpu().numpy(), v.shape[0])
    with open(path, "w") as fh:
        fh.write(obj_text(v, lines))


def load_mask(path, n_vertices: Optional[int] = None) -> torch.Tensor:
    """A per-vertex weight file (one number per line, each in [0, 1]) -> ``Tensor[V]`` float32."""
    path = check_regular_file("mask file", path)
    try:
        m = np.loadtxt(path, dtype=np.float64).reshape(-1)
    except ValueError as exc:
        raise ValueError(f"mask file {path!r} could not be parsed: {exc}") from None
    if n_vertices is not None and m.shape[0] != n_vertices:
        raise ValueError(f"mask file {path!r} must hold {n_vertices} values (one per vertex), got {m.shape[0]}")
    return check_mask_weights(f"mask file {path!r}", torch.from_numpy(m.astype(np.float32)))


def find_mask_file(folder, key: str) -> Optional[str]:
    """The file of mask ``key`` in ``folder`` under any of its names (``MASK_FILE_NAMES``), or None."""
    for name in MASK_FILE_NAMES[key]:
        path = os.path.join(os.fspath(folder), name)
        if os.path.isfile(path):
            return path
    return None


def load_smoothing_masks(folder, n_vertices: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(forehead ``[V]``, neck ``[V]``) from ``folder``: ``forehead.txt`` / ``neck.txt`` (what the project
    writes) or the released ``forehead_mask.txt`` / ``neck_mask.txt``."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"mask folder {folder!r} is not a folder")
    out = []
    for key in ("forehead", "neck"):
        path = find_mask_file(folder, key)
        if path is None:
            raise FileNotFoundError(f"mask folder {folder!r} holds no {key} mask (expected "
                                    f"{' or '.join(MASK_FILE_NAMES[key])})")
        out.append(load_mask(path, n_vertices))
    return out[0], out[1]
