"""ARKit-named blendshape rigs and the built-in articulation curves (``viseme_rig.CHANNELS``).

Two directions:

- ``face_rig_basis(rig, faces)``: a ``FaceRig`` (the procedural face's region deformations) exported
  as linear ARKit-named shapes, ``procedural_arkit_basis(seed)`` for the built-in face. Each shape is
  the rig's displacement at full activation of one channel (split into the subject's left / right
  half, +x, where ARKit has two sides), so ``neutral + arkit_weights(curves) @ deltas`` reproduces
  ``rig.deform(curves)`` up to the rig's non-linearity (the jaw is a rotation; closure holds the lower
  lip against it: ``mouthClose`` is that hold at an open jaw, so it is driven by ``jaw * close``).
- ``ArkitRig(basis)``: a user's ARKit-named rig driven by the same curves, ``deform(curves)`` like a
  ``FaceRig``, so ``SpeechFaceSet(rig=...)`` makes a data set of that rig's meshes. It needs jawOpen,
  eyeBlinkLeft and eyeBlinkRight and reports the channels it could not map.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..ops.blendshapes import ARKIT_NAMES, BlendshapeBasis, arkit_index, load_arkit_mapping
from .base import FaceMasks, derived_masks
from .face_rig import FaceRig
from .viseme_rig import CHANNELS

__all__ = ["ARKIT_FROM_CHANNELS", "NOT_EXPRESSED", "REQUIRED", "arkit_weights", "face_rig_basis",
           "procedural_arkit_basis", "ArkitRig", "load_arkit_rig"]

# ARKit name -> (channel, second channel or None): the weight is the channel's curve (times the second's)
ARKIT_FROM_CHANNELS: Dict[str, Tuple[str, Optional[str]]] = {
    "jawOpen": ("jaw", None), "mouthClose": ("close", "jaw"), "mouthPressLeft": ("close", None),
    "mouthPressRight": ("close", None), "mouthPucker": ("round", None), "mouthStretchLeft": ("spread", None),
    "mouthStretchRight": ("spread", None), "mouthRollLower": ("labiodental", None),
    "eyeBlinkLeft": ("blink", None), "eyeBlinkRight": ("blink", None), "browInnerUp": ("brow", None),
    "browOuterUpLeft": ("brow", None), "browOuterUpRight": ("brow", None)}
# for a user's rig: a channel falls back to these when its own shapes are missing
_FALLBACK = {"mouthPucker": "mouthFunnel", "mouthStretchLeft": "mouthSmileLeft", "mouthStretchRight": "mouthSmileRight"}
REQUIRED = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight")

_WHY = {
    "mouthFunnel": "the rig has one lip-rounding channel, exported as mouthPucker",
    "mouthRollUpper": "no channel moves the upper lip alone",
    "jawForward jawLeft jawRight": "the jaw only opens (rotation about a fixed hinge)",
    "eyeLookDownLeft eyeLookInLeft eyeLookOutLeft eyeLookUpLeft eyeLookDownRight eyeLookInRight eyeLookOutRight "
    "eyeLookUpRight": "the face has no eyeballs",
    "eyeSquintLeft eyeSquintRight eyeWideLeft eyeWideRight": "the lids only close (blink)",
    "mouthLeft mouthRight mouthSmileLeft mouthSmileRight mouthFrownLeft mouthFrownRight mouthDimpleLeft "
    "mouthDimpleRight mouthShrugLower mouthShrugUpper mouthLowerDownLeft mouthLowerDownRight mouthUpperUpLeft "
    "mouthUpperUpRight": "speech articulation only: no expression or sideways channels",
    "browDownLeft browDownRight": "the brows only rise",
    "cheekPuff cheekSquintLeft cheekSquintRight noseSneerLeft noseSneerRight tongueOut": "no cheek, nose or tongue "
    "channels",
}
NOT_EXPRESSED: Dict[str, str] = {n: why for names, why in _WHY.items() for n in names.split()}
assert set(NOT_EXPRESSED) | set(ARKIT_FROM_CHANNELS) == set(ARKIT_NAMES)  # every ARKit name accounted for


def arkit_weights(curves: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``{channel: [T]}`` (``viseme_rig.CHANNELS``; missing ones are 0) -> ``{ARKit name: float64 [T]}``."""
    unknown = set(curves) - set(CHANNELS)
    if unknown:
        raise ValueError(f"curves has unknown channels {sorted(unknown)}; expected some of {list(CHANNELS)}")
    T = {np.asarray(c).shape for c in curves.values()}
    if len(T) != 1 or len(next(iter(T))) != 1:
        raise ValueError(f"curves must all have the same shape [T], got {sorted(T)}")
    T = next(iter(T))[0]
    get = lambda k: np.asarray(curves.get(k, np.zeros(T)), np.float64)  # noqa: E731
    return {name: get(a) * (get(b) if b else 1.0) for name, (a, b) in ARKIT_FROM_CHANNELS.items()}


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def face_rig_basis(rig: FaceRig, faces=None) -> BlendshapeBasis:
    """The linear ARKit shapes of ``rig`` (names in ``ARKIT_FROM_CHANNELS`` order), neutral = the rest pose."""
    def one(**c) -> np.ndarray:  # the rig at one pose (unset channels 0), float64 [V, 3]
        curves = {k: np.array([float(c.get(k, 0.0))]) for k in CHANNELS}
        return rig.deform(curves)[0].double().numpy()

    rest = one()
    shape = {c: one(**{c: 1.0}) - rest for c in CHANNELS}
    x = rig.local[:, 0]
    left = _smoothstep(-0.05 * rig.d, 0.05 * rig.d, x)[:, None]  # the subject's left is +x (facing +z, y up)
    eye_x = float(np.mean([abs(c[0]) for c, _, _ in rig.eyes]))
    inner = (1.0 - _smoothstep(0.45 * eye_x, 0.9 * eye_x, np.abs(x)))[:, None]
    jaw_hold = one(jaw=1.0, close=1.0) - one(jaw=1.0) - shape["close"]  # closure's hold at an open jaw
    deltas = {"jawOpen": shape["jaw"], "mouthClose": jaw_hold,
              "mouthPressLeft": shape["close"] * left, "mouthPressRight": shape["close"] * (1 - left),
              "mouthPucker": shape["round"],
              "mouthStretchLeft": shape["spread"] * left, "mouthStretchRight": shape["spread"] * (1 - left),
              "mouthRollLower": shape["labiodental"],
              "eyeBlinkLeft": shape["blink"] * left, "eyeBlinkRight": shape["blink"] * (1 - left),
              "browInnerUp": shape["brow"] * inner, "browOuterUpLeft": shape["brow"] * (1 - inner) * left,
              "browOuterUpRight": shape["brow"] * (1 - inner) * (1 - left)}
    names = list(ARKIT_FROM_CHANNELS)
    return BlendshapeBasis(names, rest.astype(np.float32), np.stack([deltas[n] for n in names]).astype(np.float32),
                           faces)


def procedural_arkit_basis(seed: int = 0) -> BlendshapeBasis:
    """The built-in face of subject ``seed`` as an ARKit-named rig (with its triangles)."""
    from .procedural_face import procedural_face, procedural_face_rig

    vertices, faces, masks = procedural_face(seed)
    return face_rig_basis(procedural_face_rig(vertices, masks), faces)


def _region(deltas: List[np.ndarray]) -> np.ndarray:
    """A [0, 1] weight per vertex from how far the given shapes move it (1 from 40 % of the largest)."""
    mag = np.max([np.linalg.norm(d, axis=-1) for d in deltas], axis=0)
    top = float(mag.max())
    return np.clip(mag / (0.4 * top), 0.0, 1.0) if top > 0 else np.zeros_like(mag)


class ArkitRig:
    """A user's blendshape rig driven by the articulation curves.

    basis: a ``BlendshapeBasis`` whose target names match ARKit names (``blendshapes.arkit_index``; or
    through ``mapping``, rig name -> ARKit name). ``deform(curves) -> float32 [T, V, 3]`` like
    ``FaceRig.deform``. ``used``: ARKit name -> the rig target that plays it; ``unmapped``: the
    ARKit names of ``ARKIT_FROM_CHANNELS`` the rig lacks; ``unmapped_channels``: channels with no shape
    at all. ``masks()``: ``FaceMasks`` derived from the shapes (mouth from the jaw and mouth shapes, eye
    and eye_keypoints from the blinks, forehead from the brows, no neck) for a rig without mask files.
    """

    def __init__(self, basis: BlendshapeBasis, mapping: Optional[Mapping[str, str]] = None, source: str = "the rig"):
        index = arkit_index(basis.names, mapping, source)
        missing = [n for n in REQUIRED if n not in index]
        if missing:
            raise ValueError(f"{source} lacks the blendshapes {missing} (needed to drive it with speech and blinks; "
                             f"it has {list(basis.names)[:12]}{' ...' if basis.n_shapes > 12 else ''}); name them "
                             "like ARKit or pass a mapping file")
        self.basis, self.source, self.index = basis, source, index  # index: ARKit name -> basis column
        self.used: Dict[str, str] = {}
        self._rows: List[Tuple[int, str]] = []  # (basis index, ARKit name whose weight drives it)
        for name, (a, b) in ARKIT_FROM_CHANNELS.items():
            target = name if name in index else _FALLBACK.get(name) if _FALLBACK.get(name) in index else None
            if target is not None:
                self.used[name] = basis.names[index[target]]
                self._rows.append((index[target], name))
        self.unmapped = [n for n in ARKIT_FROM_CHANNELS if n not in self.used]
        self.unmapped_channels = [c for c in CHANNELS if all(ARKIT_FROM_CHANNELS[n][0] != c for n in self.used)]

    @property
    def vertices(self) -> torch.Tensor:
        return self.basis.neutral

    @property
    def n_vertices(self) -> int:
        return self.basis.n_vertices

    def deform(self, curves: Mapping[str, np.ndarray]) -> torch.Tensor:
        weights = arkit_weights(curves)  # checks the channels and lengths
        T = next(iter(weights.values())).shape[0]
        w = torch.zeros(T, self.basis.n_shapes, dtype=torch.float64)
        for k, name in self._rows:
            w[:, k] += torch.from_numpy(weights[name])
        return self.basis.reconstruct(w)

    def masks(self) -> FaceMasks:
        d = self.basis.deltas.double().numpy()
        pick = lambda names: [d[self.basis.names.index(self.used[n])] for n in names if n in self.used]  # noqa: E731
        mouth = _region(pick([n for n in ARKIT_FROM_CHANNELS if n.startswith(("jaw", "mouth"))]))
        eye = _region(pick(["eyeBlinkLeft", "eyeBlinkRight"]))
        brow = pick(["browInnerUp", "browOuterUpLeft", "browOuterUpRight"])
        forehead = _region(brow) if brow else np.zeros_like(eye)
        blink = np.max([np.linalg.norm(x, axis=-1) for x in pick(["eyeBlinkLeft", "eyeBlinkRight"])], axis=0)
        keypoints = (blink >= 0.5 * blink.max()).astype(np.float32) if blink.max() > 0 else np.zeros_like(blink)
        t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
        lips, upper = derived_masks(t(mouth), t(eye), t(forehead))
        return FaceMasks(mouth=t(mouth), eye=t(eye), eye_keypoints=t(keypoints), forehead=t(forehead),
                         neck=torch.zeros(self.n_vertices), lips=lips, upper_face=upper)

    def report(self) -> str:
        """One line: which rig target plays each ARKit shape, and what could not be mapped."""
        used = ", ".join(f"{a}={t}" if a != t else a for a, t in self.used.items())
        text = f"{self.source}: {self.basis.n_shapes} shapes, {self.n_vertices} vertices; driving {used}"
        if self.unmapped:
            text += f"; not mapped (the rig lacks them): {', '.join(self.unmapped)}"
        if self.unmapped_channels:
            text += f"; curves left unused: {', '.join(self.unmapped_channels)}"
        return text


def load_arkit_rig(path, mapping_path=None) -> ArkitRig:
    """An ``ArkitRig`` from a rig file (``BlendshapeBasis.load``) and an optional mapping file
    (``blendshapes.load_arkit_mapping``)."""
    basis = BlendshapeBasis.load(path)
    mapping = load_arkit_mapping(mapping_path) if mapping_path else None
    return ArkitRig(basis, mapping, source=f"rig {str(path)!r}")
