"""Deforming any face template with articulation curves (see ``viseme_rig``).

``FaceRig(vertices, masks)`` finds a face frame from the masks, then precomputes per-vertex region
weights once; ``deform(curves)`` turns ``T`` frames of curves into ``T`` meshes.

Face frame (all estimates can be overridden):
  mouth centre c   weighted centroid of ``masks.mouth ** 4`` (the lip line should pass through it)
  up               from c towards the weighted centroid of ``masks.eye ** 4``
  lateral          main axis of the eye region across the face (the two eyes)
  forward          lateral x up, signed so that the mouth lies in front of the vertex centroid
  d                eye-mouth distance along up: every displacement is a fraction of it
  eyes             per side, the centre and opening height of ``masks.eye_keypoints`` (the lid
                   contours); without keypoints, of the high-weight eye region
Regions: the jaw moves everything below the lip line (the boundary dips laterally beyond the mouth
corners and is sharp at the lips, so the lips part), fading into the neck mask and behind the jaw
hinge; lips are a compact region around c inside the mouth mask; lids are bands above / below each
eye's centre; the brows a band higher up plus the forehead mask.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from ..base.checks import check_tensor, shape_str
from .base import FaceMasks
from .viseme_rig import CHANNELS

__all__ = ["FaceRig"]


def _smoothstep(e0: float, e1, x: np.ndarray) -> np.ndarray:
    """0 at e0, 1 at e1 (either order), cubic in between."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _unit(v: np.ndarray, name: str) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"{name} could not be determined (zero-length vector): check the masks or pass {name}")
    return v / n


class FaceRig:
    """Per-vertex region weights for one template.

    vertices: ``[V, 3]``; masks: ``FaceMasks`` with V entries. Optional overrides: ``mouth_centre [3]``,
    ``up [3]``, ``forward [3]``, ``mouth_half_width`` (default 0.38 d), ``jaw_max_deg`` (jaw rotation at
    jaw = 1) and ``lip_split`` (how sharply the lips part around the lip line, as a fraction of d).
    """

    def __init__(self, vertices, masks: FaceMasks, mouth_centre=None, up=None, forward=None,
                 mouth_half_width: Optional[float] = None, jaw_max_deg: float = 12.0, lip_split: float = 0.003):
        v = torch.as_tensor(vertices)
        check_tensor("vertices", v, ndim=2, what="[V, 3]")
        if v.shape[1] != 3:
            raise ValueError(f"vertices must have shape [V, 3], got {shape_str(v.shape)}")
        if masks.n_vertices != v.shape[0]:
            raise ValueError(f"masks must have V={v.shape[0]} entries like vertices, got {masks.n_vertices}")
        self.vertices = v.detach().cpu().double().numpy()
        V = self.vertices
        clean = lambda m: np.where(m.double().numpy() < 1e-3, 0.0, m.double().numpy())  # noqa: E731
        mouth, eye, forehead, neck = clean(masks.mouth), clean(masks.eye), clean(masks.forehead), clean(masks.neck)
        if mouth.sum() <= 0 or eye.sum() <= 0:
            raise ValueError("masks.mouth and masks.eye must each have weights >= 1e-3 somewhere")

        # ---- face frame ------------------------------------------------------------------------
        wm, we = mouth ** 4, eye ** 4
        c = (np.asarray(mouth_centre, np.float64).reshape(3) if mouth_centre is not None
             else (wm[:, None] * V).sum(0) / wm.sum())
        e_mid = (we[:, None] * V).sum(0) / we.sum()
        up0 = _unit(np.asarray(up, np.float64).reshape(3) if up is not None else e_mid - c, "up")
        if forward is not None:
            fwd = _unit(np.asarray(forward, np.float64).reshape(3), "forward")
            fwd = _unit(fwd - (fwd @ up0) * up0, "forward")
        else:
            sel = eye > 0.5 if (eye > 0.5).sum() >= 3 else eye > 0
            X = V[sel] - e_mid
            X = X - np.outer(X @ up0, up0)
            cov = (X * we[sel, None]).T @ X
            lateral = np.linalg.eigh(cov)[1][:, -1]
            fwd = _unit(np.cross(lateral, up0), "forward")
            if (c - V.mean(0)) @ fwd < 0:
                fwd = -fwd
        self.up = up0
        self.forward = fwd
        self.lateral = np.cross(up0, fwd)
        self.axes = np.stack([self.lateral, self.up, self.forward], axis=1)  # [3, 3]: world -> (lat, up, fwd)
        self.centre = c
        P = (V - c) @ self.axes  # [V, 3] local coordinates
        self.local = P
        d = float((e_mid - c) @ up0)
        if d <= 0:
            raise ValueError(f"the eye region must lie above the mouth along up; found eye-mouth distance {d:.4g}")
        self.d = d
        hw = float(mouth_half_width) if mouth_half_width is not None else 0.38 * d
        self.mouth_half_width = hw
        self.jaw_max = np.deg2rad(float(jaw_max_deg))
        self.hinge = np.array([0.0, 0.5 * d, -1.2 * d])  # local coordinates

        # ---- eyes ------------------------------------------------------------------------------
        kp = masks.eye_keypoints.numpy() > 0.5
        use_kp = kp.sum() >= 4
        pts = P[kp] if use_kp else P[eye > 0.9] if (eye > 0.9).sum() >= 4 else P[eye > 0.5]
        e_loc = (e_mid - c) @ self.axes
        self.eyes = []
        for side in (-1.0, 1.0):
            sp = pts[np.sign(pts[:, 0] - e_loc[0]) == side]
            if sp.shape[0] == 0:
                raise ValueError("the eye keypoints / eye mask must cover both eyes (one side is empty)")
            centre = sp.mean(0)
            opening = float(np.ptp(sp[:, 1])) if use_kp else 0.12 * d
            half_width = float(np.ptp(sp[:, 0])) / 2 if use_kp else 0.2 * d
            self.eyes.append((centre, max(opening, 0.04 * d), max(half_width, 0.08 * d)))

        # ---- region weights --------------------------------------------------------------------
        x, y, z = P[:, 0], P[:, 1], P[:, 2]
        ax = np.abs(x)
        excess = np.maximum(ax - hw, 0.0)
        tau = d * (lip_split + 0.10 * _smoothstep(0.8 * hw, 1.6 * hw, ax))
        jaw = _smoothstep(tau, -tau, y + 0.5 * excess)
        jaw *= _smoothstep(self.hinge[2], self.hinge[2] + 0.4 * d, z) * (1.0 - np.clip(neck, 0, 1))
        self.w_jaw = jaw
        front = _smoothstep(-0.35 * d, -0.1 * d, z)
        self.w_lips = (np.clip(mouth, 0, 1) * (1 - _smoothstep(0.5, 1.0, ax / (1.6 * hw)))
                       * (1 - _smoothstep(0.5, 1.0, np.abs(y) / (0.4 * d))) * front)
        self.lower = _smoothstep(lip_split * d, -lip_split * d, y)
        ulid, llid, brow = np.zeros(len(V)), np.zeros(len(V)), np.zeros(len(V))
        gate_eye = np.clip(2.0 * eye, 0, 1)
        self.lid_travel = np.zeros(len(V))
        for k, (centre, o, ehw) in enumerate(self.eyes):
            side = np.sign(x - e_loc[0]) == (-1.0 if k == 0 else 1.0)
            xe, ye = np.abs(x - centre[0]), (y - centre[1]) / o
            gate = side * (1 - _smoothstep(1.0 * ehw, 1.6 * ehw, xe)) * gate_eye
            u = gate * np.interp(ye, [-0.5, 0.5, 0.85, 1.8, 3.0], [0, 1, 1, 0.4, 0], left=0, right=0)
            ulid += u
            llid += gate * np.interp(ye, [-1.8, -0.75, -0.5, 0.5], [0, 1, 1, 0], left=0, right=0)
            self.lid_travel += u * o  # each vertex moves with its own eye's opening height
            band = side * (1 - _smoothstep(1.2 * ehw, 2.0 * ehw, xe)) * np.interp(
                ye, [1.0, 2.5, 4.5, 6.0], [0, 1, 1, 0], left=0, right=0)
            brow = np.maximum(brow, band)
        self.w_ulid, self.w_llid = ulid, llid
        self.lower_lid_travel = llid * np.mean([o for _, o, _ in self.eyes])
        y_eyes = np.mean([centre[1] for centre, _, _ in self.eyes])
        y_brow = np.mean([centre[1] + 2.5 * o for centre, o, _ in self.eyes])
        decay = np.exp(-np.maximum(y - y_brow, 0.0) / (0.8 * d))
        above_eyes = _smoothstep(y_eyes - 0.4 * d, y_eyes - 0.2 * d, y)  # nothing below the cheekbones
        self.w_brow = np.maximum(brow, np.clip(forehead, 0, 1) * decay * above_eyes)

    @property
    def n_vertices(self) -> int:
        return self.vertices.shape[0]

    def deform(self, curves: Dict[str, np.ndarray]) -> torch.Tensor:
        """``curves``: ``{channel: [T]}`` for channels in ``viseme_rig.CHANNELS`` (missing ones are 0)
        -> meshes ``float32 [T, V, 3]``. All-zero curves give the template
        (to float32 rounding)."""
        unknown = set(curves) - set(CHANNELS)
        if unknown:
            raise ValueError(f"curves has unknown channels {sorted(unknown)}; expected some of {list(CHANNELS)}")
        lengths = {k: np.asarray(v).shape for k, v in curves.items()}
        T = {s[0] for s in lengths.values() if len(s) == 1}
        if len(T) != 1 or any(len(s) != 1 for s in lengths.values()):
            raise ValueError(f"curves must all have the same shape [T], got {lengths}")
        T = T.pop()
        get = lambda k: np.asarray(curves.get(k, np.zeros(T)), np.float64)[:, None]  # noqa: E731  [T, 1]
        jaw, rnd, spread, close, labio, blink, brow = (get(k) for k in CHANNELS)
        d, P = self.d, self.local
        x, y, z = P[None, :, 0], P[None, :, 1], P[None, :, 2]
        wl = self.w_lips[None]
        lw, uw = wl * self.lower[None], wl * (1 - self.lower[None])
        # lips: rounding pulls towards the mouth centre and forward, spreading pushes the corners out
        x1 = x * (1 - 0.22 * rnd * wl + 0.12 * spread * wl)
        y1 = y * (1 - 0.15 * rnd * wl)
        z1 = z + d * (0.09 * rnd - 0.02 * spread + 0.01 * close) * wl
        press = 0.008 * d * close  # closure: the lips press together; f/v lift the lower lip
        y1 = y1 - press * uw + np.maximum(press, 0.02 * d * labio) * lw
        z1 = z1 - 0.05 * d * labio * lw
        # jaw: rotation about the hinge; closure and f/v hold the lower lip up against it
        hold = np.minimum(1.0, 2.0 * wl) * self.lower[None]
        angle = jaw * self.jaw_max * self.w_jaw[None] * (1 - np.maximum(0.9 * close, 0.6 * labio) * hold)
        hy, hz = self.hinge[1], self.hinge[2]
        cos, sin = np.cos(angle), np.sin(angle)
        y2 = hy + (y1 - hy) * cos - (z1 - hz) * sin
        z2 = hz + (y1 - hy) * sin + (z1 - hz) * cos
        # eyes and brows
        y3 = y2 - 0.9 * blink * self.lid_travel[None] + 0.1 * blink * self.lower_lid_travel[None] \
            + 0.06 * d * brow * self.w_brow[None]
        z3 = z2 + 0.12 * blink * self.lid_travel[None]
        local = np.stack(np.broadcast_arrays(x1, y3, z3), axis=-1)  # [T, V, 3]
        world = self.centre + local @ self.axes.T
        return torch.from_numpy(world.astype(np.float32))
