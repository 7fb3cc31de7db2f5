"""A face mesh the package generates itself (no download), with its masks and per-subject shapes.

The face is the front of a head: a grid over height y (neck to crown) and azimuth phi (ear to ear),
each row an ellipse arc ``x = a(y) sin(phi)``, ``z = zb(y) + (f(y) - zb(y)) cos(phi)`` with smooth
width / depth profiles, plus smooth bumps (nose, brows, cheekbones, lips, chin) and dents (eye
sockets, a recessed eye opening, the mouth crease). The lips are cut along the mouth line: between
the mouth corners the row carries two vertices per column (upper and lower lip, 0.4 mm apart at
rest), so the mouth can open. Units are mm, x lateral, y up, z forward (like the MeshTalk template).

All subjects share one topology and one set of masks (computed on the canonical face); a subject's
seed only moves vertices by smooth scalings (width, height, jaw width and length, depth, nose size,
lip fullness, eye spacing).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .base import FaceMasks, derived_masks
from .face_rig import FaceRig

__all__ = ["procedural_face", "procedural_face_rig", "canonical_face"]

Y_MOUTH = -33.0
MOUTH_HALF_WIDTH = 24.0
EYE_CENTRE = (32.0, 34.5)
EYE_HALF_SIZE = (13.0, 4.5)  # half width, half height of the eye opening
LIP_GAP = 0.2  # each lip copy sits this far from the mouth line at rest (mm)
_PHI_MAX = 0.58 * np.pi
_N_COLS = 64

# (y, half-width a, front depth f, side depth zb) control points of the canonical head (mm)
_PROFILE = np.array([
    (-150, 52, 30, -25), (-110, 50, 34, -25), (-88, 52, 40, -25), (-75, 50, 55, -22), (-62, 52, 68, -20),
    (-45, 60, 74, -17), (-33, 64, 78, -15), (-10, 70, 80, -11), (15, 74, 78, -9), (35, 74, 72, -8),
    (60, 71, 76, -10), (85, 64, 68, -13), (100, 52, 55, -18), (115, 35, 35, -25)], dtype=np.float64)


def _rows() -> np.ndarray:
    """Row heights: 3 mm apart over the face (one row exactly on the mouth line), 6 mm beyond."""
    up = list(Y_MOUTH + 3.0 * np.arange(1, 37))  # up to 75
    up += list(up[-1] + 6.0 * np.arange(1, 7))  # up to 111
    down = list(Y_MOUTH - 3.0 * np.arange(1, 15))  # down to -75
    down += list(down[-1] - 6.0 * np.arange(1, 13))  # down to -147
    return np.array(sorted(down) + [Y_MOUTH] + up)


def _profile(y: np.ndarray, column: int) -> np.ndarray:
    """Smooth interpolation of one profile column at heights y (Gaussian-smoothed linear)."""
    fine = np.arange(-170.0, 135.0, 0.5)
    vals = np.interp(fine, _PROFILE[:, 0], _PROFILE[:, column])
    sigma = 16.0  # samples (8 mm)
    k = np.exp(-0.5 * (np.arange(-48, 49) / sigma) ** 2)
    vals = np.convolve(np.pad(vals, 48, mode="edge"), k / k.sum(), mode="valid")
    return np.interp(y, fine, vals)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def canonical_face():
    """Canonical vertices, faces, masks and landmark indices (cached)."""
    if _CACHE:
        return _CACHE["value"]
    ys = _rows()
    phis = np.linspace(-_PHI_MAX, _PHI_MAX, _N_COLS)
    R, C = ys.shape[0], phis.shape[0]
    Y, PHI = np.meshgrid(ys, phis, indexing="ij")  # [R, C]
    a, f, zb = (_profile(ys, k)[:, None] for k in (1, 2, 3))
    X = a * np.sin(PHI)
    Z = zb + (f - zb) * np.cos(PHI)
    ax = np.abs(X)
    ex, ey = EYE_CENTRE
    feat = (18 * _gauss(X, Y, 0, 12, 7, 22) + 10 * _gauss(X, Y, 0, -6, 9, 9) + 4 * _gauss(ax, Y, 13, -8, 6, 6)
            - 8 * _gauss(ax, Y, ex, ey + 1.5, 15, 11) + 5 * _gauss(ax, Y, 30, 50, 16, 5)
            + 1.5 * _gauss(ax, Y, ex, ey + 7, 12, 3) + 6 * _gauss(ax, Y, 42, 12, 14, 12)
            + 5 * _gauss(X, Y, 0, -62, 11, 8) - 3 * np.exp(-(X / 22) ** 2) * np.exp(-((Y - Y_MOUTH) / 1.8) ** 2))
    r_eye = np.sqrt(((ax - ex) / EYE_HALF_SIZE[0]) ** 2 + ((Y - ey) / EYE_HALF_SIZE[1]) ** 2)
    feat -= 2.0 * (1 - _smoothstep(0.7, 1.0, r_eye))
    lips = 5 * _gauss(X, Y, 0, -27, 15, 5) + 5 * _gauss(X, Y, 0, -39, 13, 5)
    front = np.clip(np.cos(PHI), 0, 1)
    Z = Z + (feat + lips) * front
    grid = np.stack([X, Y, Z], axis=-1).reshape(-1, 3)
    lip_layer = (lips * front).reshape(-1)  # where lip fullness acts

    # the mouth slit: interior columns of the mouth row get a second (lower-lip) vertex
    rm = int(np.argmin(np.abs(ys - Y_MOUTH)))
    inside = np.where(np.abs(X[rm]) < MOUTH_HALF_WIDTH)[0]
    corners = (int(inside[0]) - 1, int(inside[-1]) + 1)
    index = np.arange(R * C).reshape(R, C)
    lower_index = index.copy()
    lower_index[rm, inside] = R * C + np.arange(inside.size)
    upper = index[rm, inside]
    verts = np.concatenate([grid, grid[upper]])
    verts[upper, 1] += LIP_GAP
    verts[R * C:, 1] -= LIP_GAP
    lip_layer = np.concatenate([lip_layer, lip_layer[upper]])
    faces = []
    for r in range(R - 1):
        bottom = index[r]
        top = lower_index[r + 1]  # row rm seen from below is the lower lip
        a0, b0, c0, d0 = bottom[:-1], bottom[1:], top[1:], top[:-1]
        faces.append(np.stack([a0, b0, c0], 1))
        faces.append(np.stack([a0, c0, d0], 1))
    faces = np.concatenate(faces).astype(np.int64)
    masks = _masks(verts, np.concatenate([PHI.reshape(-1), PHI.reshape(-1)[upper]]))
    value = (verts, faces, masks, lip_layer, (index[rm, corners[0]], index[rm, corners[1]]))
    _CACHE["value"] = value
    return value


_CACHE: dict = {}


def _masks(verts: np.ndarray, phi: np.ndarray) -> FaceMasks:
    X, Y, Z = verts.T
    ax = np.abs(X)
    front = _smoothstep(0.15, 0.5, np.cos(phi))
    ex, ey = EYE_CENTRE
    r_m = np.sqrt((X / 40.0) ** 2 + ((Y - Y_MOUTH) / 28.0) ** 2)
    mouth = (1 - _smoothstep(0.7, 1.2, r_m)) * front
    r_e = np.sqrt(((ax - ex) / 24.0) ** 2 + ((Y - ey) / 17.0) ** 2)
    eye = (1 - _smoothstep(0.6, 1.0, r_e)) * front
    forehead = _smoothstep(45.0, 65.0, Y)
    neck = _smoothstep(-66.0, -100.0, Y)
    keypoints = np.zeros(len(verts))
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for side in (-1, 1):
        for px, py in zip(side * (ex + EYE_HALF_SIZE[0] * np.cos(t)), ey + EYE_HALF_SIZE[1] * np.sin(t)):
            dist = (X - px) ** 2 + (Y - py) ** 2 + 1e6 * (front < 0.5)
            keypoints[int(np.argmin(dist))] = 1.0
    t_mouth, t_eye, t_fore = (torch.from_numpy(m.astype(np.float32)) for m in (mouth, eye, forehead))
    lips, upper = derived_masks(t_mouth, t_eye, t_fore)
    return FaceMasks(mouth=t_mouth, eye=t_eye, eye_keypoints=torch.from_numpy(keypoints.astype(np.float32)),
                     forehead=t_fore, neck=torch.from_numpy(neck.astype(np.float32)), lips=lips, upper_face=upper)


def procedural_face(n_subject_seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, FaceMasks]:
    """The built-in face of subject ``n_subject_seed``: (vertices ``float32 [V, 3]`` in mm,
    faces ``int64 [F, 3]``, ``FaceMasks``). V and the faces / masks are the same for every seed;
    seed 0 ... 2**32-1 varies the shape smoothly, deterministically."""
    if isinstance(n_subject_seed, bool) or not isinstance(n_subject_seed, int) or not 0 <= n_subject_seed < 2 ** 32:
        raise ValueError(f"n_subject_seed must be an integer in [0, 2**32), got {n_subject_seed!r}")
    verts, faces, masks, lip_layer, _ = canonical_face()
    rng = np.random.default_rng(np.random.SeedSequence([0x7ACE, n_subject_seed]))
    sw, sh, sj, sjl, sd = rng.uniform([0.9, 0.93, 0.88, 0.9, 0.93], [1.1, 1.07, 1.12, 1.1, 1.07])
    sn, sl, se = rng.uniform([0.8, 0.7, 0.92], [1.25, 1.3, 1.08])
    X, Y, Z = verts.T.copy()
    lowerness = _smoothstep(-10.0, -60.0, Y)
    eye_band = np.exp(-(((Y - EYE_CENTRE[1]) / 25.0) ** 2))
    nose = 18 * _gauss(X, Y, 0, 12, 7, 22) + 10 * _gauss(X, Y, 0, -6, 9, 9)
    Z = (Z + (sn - 1) * nose + (sl - 1) * lip_layer) * sd
    X = X * sw * (1 + (sj - 1) * lowerness) * (1 + (se - 1) * eye_band)
    scale_y = sh * (1 + (sjl - 1) * _smoothstep(Y_MOUTH, Y_MOUTH - 20.0, Y))
    Y = Y_MOUTH + (Y - Y_MOUTH) * scale_y
    out = np.stack([X, Y, Z], axis=1).astype(np.float32)
    return torch.from_numpy(out), torch.from_numpy(faces.copy()), masks


def procedural_face_rig(vertices: torch.Tensor, masks: FaceMasks, **kwargs) -> FaceRig:
    """A ``FaceRig`` for a procedural face with its exact mouth line (the mouth corners), axes and
    mouth width instead of the estimates from the masks."""
    _, _, _, _, (left, right) = canonical_face()
    v = torch.as_tensor(vertices).double().numpy()
    centre = 0.5 * (v[left] + v[right])
    half_width = 0.5 * float(np.linalg.norm(v[right] - v[left]))
    return FaceRig(vertices, masks, mouth_centre=centre, up=(0, 1, 0), forward=(0, 0, 1),
                   mouth_half_width=half_width, **kwargs)

