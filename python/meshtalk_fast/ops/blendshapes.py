"""Blendshape weights: a rig's morph targets as a basis, and meshes turned into weights (op
``"solve_blendshapes"``; this PyTorch reference and the C++ core's ``cpp`` backend in ``backends/cpp.py``).

Objective, per frame t, with ``r_t = meshes[t] - neutral``, ``m = weights_mask`` (all ones when None)
and ``S = sum(m)``::

    E_t(w) = (1/S) sum_v m_v || sum_k w_k deltas[k, v] - r_t[v] ||^2 + smoothing || w - w_{t-1} ||^2

minimised subject to ``lo <= w_k <= hi``; frame 0 has no smoothing term. The solve is causal (frame t
sees frames <= t only), so it runs live. It is a box-constrained convex QP in K unknowns: with the
weighted Gram matrix ``G = D^T M D / S`` and ``b_t = D^T M r_t / S`` (``D`` the deltas as ``[3V, K]``)
it reads ``min w^T (G + s I) w - 2 w^T (b_t + s w_{t-1})``. The reference solves it exactly in float64
with a primal active-set method (``_box_qp``), warm-started from the previous frame. Linearly dependent
shapes (condition number of G above ``DEPENDENT_CONDITION``) make the optimum non-unique: there, and only
there, a ridge of ``max eig(G) / DEPENDENT_CONDITION`` picks one (``_Solver``) and a warning is issued.

``ARKIT_NAMES``: Apple's 52 ``ARFaceAnchor.BlendShapeLocation`` names, in the order of Unreal's
``EARFaceBlendShape`` (the order of the Live Link Face app's packets and CSV takes).
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..base.checks import check_finite, check_tensor, shape_str
from ..base.dispatch import Inputs, resolve
from ..io.gltf import read_morph_mesh, replace_file, write_morph_mesh

__all__ = ["ARKIT_NAMES", "BlendshapeBasis", "solve_blendshapes", "torch_solve_blendshapes", "blendshape_residual",
           "DEPENDENT_CONDITION", "condition_number",
           "arkit_index", "load_arkit_mapping", "BlendshapeStream"]

ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut")

# A weighted Gram matrix with a condition number above this is treated as linearly dependent shapes:
# the solve still runs (the residual is still minimal) but the weights are not unique, so we warn.
DEPENDENT_CONDITION = 1e10


class BlendshapeBasis:
    """A blendshape rig: ``names`` (K distinct strings), ``neutral [V, 3]``, ``deltas [K, V, 3]`` (each
    target minus the neutral), optional ``faces [F, 3]`` (kept for glTF output). Stored float32 / int64."""

    def __init__(self, names: Sequence[str], neutral, deltas, faces=None, source: str = "the basis"):
        where = f"{source}: " if source != "the basis" else ""
        neutral = torch.as_tensor(np.asarray(neutral) if not isinstance(neutral, torch.Tensor) else neutral)
        deltas = torch.as_tensor(np.asarray(deltas) if not isinstance(deltas, torch.Tensor) else deltas)
        try:
            check_tensor("neutral", neutral, ndim=2, what="[V, 3]")
            check_tensor("deltas", deltas, ndim=3, what="[K, V, 3]")
            if neutral.shape[1] != 3 or neutral.shape[0] == 0:
                raise ValueError(f"neutral must have shape [V > 0, 3], got {shape_str(neutral.shape)}")
            if deltas.shape[1:] != neutral.shape or deltas.shape[0] == 0:
                raise ValueError(f"deltas must have shape [K > 0, V={neutral.shape[0]}, 3] like neutral, got "
                                 f"{shape_str(deltas.shape)}")
            check_finite("neutral", neutral)
            check_finite("deltas", deltas)
        except (TypeError, ValueError) as exc:
            raise type(exc)(where + str(exc)) from None
        K = deltas.shape[0]
        if names is None:
            raise ValueError(f"{where}names are missing: a basis needs one name per shape ({K})")
        names = [n for n in names]
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{where}names must be non-empty strings, got {names!r}")
        if len(names) != K:
            raise ValueError(f"{where}names must hold K={K} names (one per shape), got {len(names)}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{where}names must be distinct, got duplicates {dup}")
        self.names: Tuple[str, ...] = tuple(names)
        self.neutral = neutral.detach().to("cpu", torch.float32).contiguous()
        self.deltas = deltas.detach().to("cpu", torch.float32).contiguous()
        self.faces = None
        if faces is not None:
            f = torch.as_tensor(np.asarray(faces)).to(torch.int64)
            if f.dim() != 2 or f.shape[1] != 3 or (f.numel() and (f.min() < 0 or f.max() >= self.n_vertices)):
                raise ValueError(f"{where}faces must have shape [F, 3] with indices in [0, {self.n_vertices}), "
                                 f"got shape {shape_str(f.shape)}")
            self.faces = f if f.numel() else None

    @property
    def n_shapes(self) -> int:
        return self.deltas.shape[0]

    @property
    def n_vertices(self) -> int:
        return self.neutral.shape[0]

    def __repr__(self) -> str:
        return f"BlendshapeBasis(K={self.n_shapes}, V={self.n_vertices}, names={list(self.names[:4])}...)"

    def check_vertices(self, n_vertices: int, what: str = "the model") -> None:
        """Refuse a basis whose vertex count is not ``n_vertices`` (the model's / the meshes')."""
        if self.n_vertices != n_vertices:
            raise ValueError(f"the blendshape basis has V={self.n_vertices} vertices but {what} has {n_vertices}; "
                             "the rig must share the model's topology")

    def reconstruct(self, weights: torch.Tensor) -> torch.Tensor:
        """``weights [T, K]`` -> meshes ``[T, V, 3]`` = neutral + sum_k w_k deltas[k] (float32)."""
        check_tensor("weights", weights, shape=(None, self.n_shapes), what="[T, K]")
        check_finite("weights", weights)
        w = weights.detach().to("cpu", torch.float64)
        d = self.deltas.double().reshape(self.n_shapes, -1)
        return (self.neutral.double().reshape(1, -1) + w @ d).reshape(-1, self.n_vertices, 3).float()

    # ---- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path, mesh=None) -> "BlendshapeBasis":
        """From an ``.npz`` (``names [K]`` str, ``neutral [V, 3]``, ``deltas [K, V, 3]``, optional
        ``faces [F, 3]``) or a glTF ``.glb`` / ``.gltf`` (morph targets of ``mesh``, default the first
        mesh that has them; names from ``mesh.extras.targetNames``)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"blendshape file {path!r} does not exist")
        where = f"blendshape file {path!r}"
        if path.lower().endswith(".npz"):
            try:
                with np.load(path, allow_pickle=False) as z:
                    missing = [k for k in ("names", "neutral", "deltas") if k not in z.files]
                    if missing:
                        raise ValueError(f"{where} lacks the arrays {missing} (found {z.files})")
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as exc:
                raise ValueError(str(exc) if where in str(exc) else f"{where}: {exc}") from None
            if arrays["names"].dtype.kind not in "US":
                raise ValueError(f"{where}: names must be an array of strings, got dtype {arrays['names'].dtype}")
            return cls([str(n) for n in arrays["names"].reshape(-1)], arrays["neutral"], arrays["deltas"],
                       arrays.get("faces"), source=where)
        if path.lower().endswith((".glb", ".gltf")):
            m = read_morph_mesh(path, mesh)
            if m["names"] is None:
                raise ValueError(f"{where}: the mesh's {m['targets']} morph targets have no names "
                                 "(mesh.extras.targetNames is missing)")
            return cls(m["names"], m["neutral"], m["deltas"], m["faces"], source=where)
        raise ValueError(f"{where}: expected a .npz, .glb or .gltf file")

    def save(self, path) -> None:
        """To ``.npz`` or ``.glb`` (by the extension), written to a temporary file, then renamed."""
        path = os.fspath(path)
        faces = self.faces.numpy() if self.faces is not None else None
        if path.lower().endswith(".npz"):
            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    extra = {} if faces is None else {"faces": faces.astype(np.int32)}
                    np.savez(fh, names=np.array(self.names), neutral=self.neutral.numpy(),
                             deltas=self.deltas.numpy(), **extra)
            replace_file(path, write)
        elif path.lower().endswith(".glb"):
            write_morph_mesh(path, self.names, self.neutral.numpy(), self.deltas.numpy(), faces)
        else:
            raise ValueError(f"path must end in .npz or .glb, got {path!r}")


# ------------------------------------------------------------------------------------------------
# rig target names -> ARKit names
# ------------------------------------------------------------------------------------------------
def _name_key(name: str) -> str:
    """What a rig's target name means, as a lower-case key: the part after the last '.' or ':' (Blender and
    Maya prefixes such as ``blendShape1.``), ``_L`` / ``_R`` suffixes (ARKit's raw strings) read as
    Left / Right, separators dropped: ``"Face.JawOpen"``, ``"jaw_open"``, ``"eyeBlink_L"`` all match."""
    base = re.split(r"[.:|]", name)[-1]
    base = re.sub(r"[_\-. ]R$", "Right", re.sub(r"[_\-. ]L$", "Left", base))
    return re.sub(r"[^0-9a-z]", "", base.lower())


_ARKIT_KEYS = {n.lower(): n for n in ARKIT_NAMES}


def load_arkit_mapping(path) -> Dict[str, str]:
    """A mapping file: JSON object ``{"rig target name": "ARKit name", ...}``; every value must be one of
    ``ARKIT_NAMES`` (the error names the file and the unknown name)."""
    path = os.fspath(path)
    where = f"mapping file {path!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where} does not exist")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{where} must hold a JSON object of strings {{\"rig target\": \"ARKit name\"}}")
    for rig_name, arkit in data.items():
        if arkit not in ARKIT_NAMES:
            close = [n for n in ARKIT_NAMES if n.lower() == arkit.lower() or _name_key(arkit) == n.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: {arkit!r} (for rig target {rig_name!r}) is not an ARKit blendshape "
                             f"name{hint}; expected one of ARKIT_NAMES")
    return data


def arkit_index(names: Sequence[str], mapping: Optional[Mapping[str, str]] = None,
                source: str = "the rig") -> Dict[str, int]:
    """``{ARKit name: index into names}`` for a rig's target ``names``: through ``mapping`` (rig name ->
    ARKit name) where given, else by matching the names (``_name_key``). Names matching nothing are left
    out; two targets claiming one ARKit name are an error (resolve it with a mapping)."""
    out: Dict[str, int] = {}
    if mapping is not None:
        unknown = [k for k in mapping if k not in names]
        if unknown:
            raise ValueError(f"the mapping names targets {unknown} that {source} does not have; its targets are "
                             f"{list(names)}")
    for i, name in enumerate(names):
        arkit = mapping.get(name) if mapping is not None and name in mapping else _ARKIT_KEYS.get(_name_key(name))
        if arkit is None:
            continue
        if arkit in out:
            raise ValueError(f"{source}: targets {names[out[arkit]]!r} and {name!r} both map to the ARKit name "
                             f"{arkit!r}; pass a mapping file to choose")
        out[arkit] = i
    return out


# ------------------------------------------------------------------------------------------------
# the solver
# ------------------------------------------------------------------------------------------------
def _solve_free(H: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``H x = rhs`` for a symmetric PSD ``H``: Cholesky, else the minimum-norm least-squares solution
    (singular H: linearly dependent shapes without smoothing)."""
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        return torch.cholesky_solve(rhs[:, None], L)[:, 0]
    return torch.linalg.lstsq(H, rhs[:, None], driver="gelsd").solution[:, 0]


def _box_qp(H: torch.Tensor, c: torch.Tensor, lo: float, hi: float, w0: torch.Tensor) -> torch.Tensor:
    """argmin ``1/2 w^T H w - c^T w`` s.t. ``lo <= w <= hi`` (float64), by the primal active-set method from
    the feasible start ``w0``: solve for the free variables with the bound ones fixed; if that leaves the box,
    step to the first bound and fix the variable there; else free the bound variable whose multiplier has
    the wrong sign (the largest), until none has."""
    K = c.shape[0]
    w = w0.clamp(lo, hi).clone()
    if lo == hi:
        return w
    at_lo, at_hi = w <= lo, w >= hi
    scale = max(float(H.abs().max()), float(c.abs().max()), 1e-300)
    tol = 1e-11 * scale * max(1.0, abs(lo), abs(hi))
    for _ in range(20 * K + 100):
        free = ~(at_lo | at_hi)
        if bool(free.any()):
            f = free.nonzero()[:, 0]
            rhs = c[f] - H[f][:, ~free] @ w[~free]
            target = _solve_free(H[f][:, f], rhs)
            step = target - w[f]
            with torch.no_grad():
                ratio = torch.full_like(step, math.inf)
                down, up = step < 0, step > 0
                ratio[down] = (lo - w[f][down]) / step[down]
                ratio[up] = (hi - w[f][up]) / step[up]
            alpha = float(ratio.min())
            if alpha < 1.0:  # blocked: walk to the first bound, fix the variables that reach one
                w[f] = w[f] + max(alpha, 0.0) * step
                hit = ratio <= alpha + 1e-12
                at_lo[f[hit & down]] = True
                at_hi[f[hit & up]] = True
                w[at_lo] = lo
                w[at_hi] = hi
                continue
            w[f] = target
        grad = H @ w - c  # multipliers: >= 0 at lo, <= 0 at hi at the optimum
        viol = torch.where(at_lo, -grad, torch.where(at_hi, grad, torch.zeros_like(grad)))
        k = int(viol.argmax())
        if float(viol[k]) <= tol:
            return w
        at_lo[k] = at_hi[k] = False
    raise RuntimeError(f"solve_blendshapes: the active-set method did not converge in {20 * K + 100} iterations")


def _gram(neutral, deltas, weights_mask):
    """(G [K, K], D [K, 3V], m3 [3V], S) in float64."""
    K = deltas.shape[0]
    d = deltas.detach().to("cpu", torch.float64).reshape(K, -1)
    m = torch.ones(deltas.shape[1], dtype=torch.float64) if weights_mask is None else \
        weights_mask.detach().to("cpu", torch.float64)
    m3 = m.repeat_interleave(3)
    S = float(m.sum())
    return (d * m3) @ d.T / S, d, m3, S


class _Solver:
    """The reference's state: the weighted Gram matrix (once per basis and mask) and the previous frame's
    weights; ``step(meshes [k, V, 3]) -> float64 [k, K]`` continues the causal solve."""

    def __init__(self, neutral, deltas, weights_mask, lo: float, hi: float, smoothing: float):
        self.G, self.d, self.m3, self.S = _gram(neutral, deltas, weights_mask)
        ev = torch.linalg.eigvalsh(self.G)
        if float(ev[0]) * DEPENDENT_CONDITION < float(ev[-1]):
            # Linearly dependent shapes: the optimum is not unique and the active-set method can cycle
            # between equally good faces of the box. A ridge of 1/DEPENDENT_CONDITION of the largest
            # eigenvalue makes it unique (the smallest weights among the near-optimal ones); the fit it
            # gives up is below 1e-10 relative. Independent shapes are solved without it, exactly.
            self.G = self.G + float(ev[-1]) / DEPENDENT_CONDITION * torch.eye(self.G.shape[0], dtype=torch.float64)
        self.neutral = neutral.detach().to("cpu", torch.float64).reshape(-1)
        self.lo, self.hi, self.smoothing = lo, hi, smoothing
        self.eye = torch.eye(self.G.shape[0], dtype=torch.float64)
        self.prev: Optional[torch.Tensor] = None

    def step(self, meshes: torch.Tensor) -> torch.Tensor:
        T = meshes.shape[0]
        r = meshes.detach().to("cpu", torch.float64).reshape(T, -1) - self.neutral
        b = (r * self.m3) @ self.d.T / self.S  # [T, K]
        out = torch.empty(T, self.G.shape[0], dtype=torch.float64)
        for t in range(T):
            if self.prev is None:  # start from the clipped unconstrained fit
                self.prev = _box_qp(self.G, b[t], self.lo, self.hi, _solve_free(self.G, b[t]))
            elif self.smoothing == 0.0:
                self.prev = _box_qp(self.G, b[t], self.lo, self.hi, self.prev)
            else:
                s = self.smoothing
                self.prev = _box_qp(self.G + s * self.eye, b[t] + s * self.prev, self.lo, self.hi, self.prev)
            out[t] = self.prev
        return out


def torch_solve_blendshapes(meshes: torch.Tensor, neutral: torch.Tensor, deltas: torch.Tensor,
                            weights_mask: Optional[torch.Tensor], lo: float, hi: float,
                            smoothing: float) -> torch.Tensor:
    """The reference: ``meshes [T, V, 3]``, ``neutral [V, 3]``, ``deltas [K, V, 3]``, ``weights_mask [V]``
    or None -> weights ``[T, K]`` float32, each frame's box QP solved exactly in float64 (module docstring)."""
    return _Solver(neutral, deltas, weights_mask, lo, hi, smoothing).step(meshes).float()




def _check_mask(weights_mask, V: int) -> Optional[torch.Tensor]:
    if weights_mask is None:
        return None
    m = torch.as_tensor(weights_mask)
    check_tensor("weights_mask", m, shape=(V,), what="[V] (one weight per vertex)")
    check_finite("weights_mask", m)
    if bool((m < 0).any()) or float(m.sum()) <= 0:
        raise ValueError("weights_mask must be >= 0 everywhere with a positive sum, got "
                         f"min {float(m.min()):.4g} and sum {float(m.sum()):.4g}")
    return m.to(torch.float32)


def _check_bounds(bounds) -> Tuple[float, float]:
    try:
        lo, hi = (float(x) for x in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"bounds must be finite numbers, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"bounds must have lo <= hi, got lo={lo} > hi={hi}")
    return lo, hi


def condition_number(basis: BlendshapeBasis, weights_mask=None) -> float:
    """The condition number of the basis's (weighted) Gram matrix: inf for linearly dependent shapes."""
    m = _check_mask(weights_mask, basis.n_vertices)
    G = _gram(basis.neutral, basis.deltas, m)[0]
    ev = torch.linalg.eigvalsh(G)
    return math.inf if float(ev[0]) <= 0 else float(ev[-1] / ev[0])


def _check_smoothing(smoothing) -> float:
    try:
        smoothing = float(smoothing)
    except (TypeError, ValueError):
        raise ValueError(f"smoothing must be a number >= 0, got {smoothing!r}") from None
    if not (smoothing >= 0 and math.isfinite(smoothing)):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    return smoothing


def _warn_if_dependent(basis: BlendshapeBasis, mask, stacklevel: int = 3) -> None:
    cond = condition_number(basis, mask)
    if cond > DEPENDENT_CONDITION:
        warnings.warn(f"the blendshape basis is (nearly) linearly dependent: condition number {cond:.3g} of its "
                      f"weighted Gram matrix (> {DEPENDENT_CONDITION:.0e}); solving anyway, but the weights are "
                      "not unique", RuntimeWarning, stacklevel=stacklevel)


def solve_blendshapes(meshes: torch.Tensor, basis: BlendshapeBasis, weights_mask=None,
                      bounds: Tuple[float, float] = (0.0, 1.0), smoothing: float = 0.0,
                      backend: str = "auto") -> torch.Tensor:
    """Weights ``[T, K]`` (float32, CPU) that make ``basis`` reproduce ``meshes [T, V, 3]`` best, frame by
    frame (the module docstring's objective), with ``weights_mask [V]`` weighting the vertices and
    ``bounds = (lo, hi)`` on every weight. Linearly dependent shapes are solved anyway (the fit is
    still optimal, the weights not unique) with a warning naming the condition number."""
    if not isinstance(basis, BlendshapeBasis):
        raise TypeError(f"basis must be a BlendshapeBasis, got {type(basis).__name__}")
    check_tensor("meshes", meshes, ndim=3, what="[T, V, 3]")
    if meshes.shape[2] != 3 or meshes.shape[0] == 0:
        raise ValueError(f"meshes must have shape [T > 0, V, 3], got {shape_str(meshes.shape)}")
    basis.check_vertices(meshes.shape[1], "meshes")
    check_finite("meshes", meshes)
    mask = _check_mask(weights_mask, basis.n_vertices)
    lo, hi = _check_bounds(bounds)
    smoothing = _check_smoothing(smoothing)
    _warn_if_dependent(basis, mask, stacklevel=3)
    meshes_cpu = meshes.detach().to("cpu", torch.float32).contiguous()
    impl = resolve("solve_blendshapes", backend, Inputs(meshes_cpu.device, meshes_cpu.dtype))
    return impl(meshes_cpu, basis.neutral, basis.deltas, mask, lo, hi, smoothing)


def blendshape_residual(meshes: torch.Tensor, basis: BlendshapeBasis, weights: torch.Tensor,
                        weights_mask=None) -> torch.Tensor:
    """Per frame, the share of the weighted mesh motion the rig cannot express: ``float32 [T]``,
    ``sum_v m_v ||reconstruct(w_t)[v] - meshes[t, v]||^2 / sum_v m_v ||meshes[t, v] - neutral[v]||^2``
    (0 = expressed exactly, 1 = none of it; a frame without motion counts 0 when the rig also rests
    there, else 1)."""
    check_tensor("meshes", meshes, ndim=3, what="[T, V, 3]")
    basis.check_vertices(meshes.shape[1], "meshes")
    check_tensor("weights", weights, shape=(meshes.shape[0], basis.n_shapes), what="[T, K]")
    m = _check_mask(weights_mask, basis.n_vertices)
    m = torch.ones(basis.n_vertices, dtype=torch.float64) if m is None else m.double()
    x = meshes.detach().to("cpu", torch.float64)
    err = ((basis.reconstruct(weights).double() - x).square().sum(-1) * m).sum(-1)
    motion = ((x - basis.neutral.double()).square().sum(-1) * m).sum(-1)
    share = torch.where(motion > 0, err / motion.clamp_min(1e-300), (err > 0).double())
    return share.float()


class BlendshapeStream:
    """The causal solve frame by frame, for live use: ``push(meshes [k, V, 3]) -> weights [k, K]`` (float32),
    carrying the previous frame's weights across pushes, so any chunking gives ``solve_blendshapes`` of the
    whole sequence (the reference's arithmetic, float64 inside). Arguments as ``solve_blendshapes``."""

    def __init__(self, basis: BlendshapeBasis, weights_mask=None, bounds: Tuple[float, float] = (0.0, 1.0),
                 smoothing: float = 0.0):
        if not isinstance(basis, BlendshapeBasis):
            raise TypeError(f"basis must be a BlendshapeBasis, got {type(basis).__name__}")
        mask = _check_mask(weights_mask, basis.n_vertices)
        lo, hi = _check_bounds(bounds)
        smoothing = _check_smoothing(smoothing)
        _warn_if_dependent(basis, mask)
        self.basis = basis
        self._solver = _Solver(basis.neutral, basis.deltas, mask, lo, hi, smoothing)

    def push(self, meshes: torch.Tensor) -> torch.Tensor:
        check_tensor("meshes", meshes, ndim=3, what="[k, V, 3]")
        self.basis.check_vertices(meshes.shape[1], "meshes")
        check_finite("meshes", meshes)
        if meshes.shape[0] == 0:
            return torch.zeros(0, self.basis.n_shapes)
        return self._solver.step(meshes).float()
