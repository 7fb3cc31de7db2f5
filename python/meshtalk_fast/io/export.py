"""Files a person can open: ``meshes.npz``, an OBJ sequence, an animated glTF binary (``.glb``), and
an all-or-nothing way to put a set of outputs into a folder.

glTF layout (``save_glb``): one node with one mesh whose base ``POSITION`` is the template, triangle
``indices`` (uint16 when V <= 65535, else uint32), K morph targets (``POSITION`` displacements, each
with its min/max as the spec requires) and one animation with a ``weights`` channel on that node:
sampler ``input`` = frame times ``t / fps`` seconds, ``output`` = T x K weights, ``LINEAR``. Two
encodings, chosen by length:

- exact (T <= max_targets): target t is frame t minus the template and frame t's weights are the
  one-hot e_t, so every keyframe reproduces its frame exactly (up to float32).
- PCA (T > max_targets): the displacements ``D [T, 3V]`` are replaced by a rank-K approximation
  (uncentred truncated SVD, K = max_targets, by randomised SVD with 16 extra columns and 3 power
  iterations, seeded): targets are the K right singular vectors scaled to unit max-abs, weights the
  frames' projections on them. The file's root ``extras`` holds the
  reconstruction error (max and RMS per-vertex Euclidean distance, in the template's units), also
  returned to the caller.

The binary chunk is laid out with every bufferView 4-byte aligned.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from ..base.checks import shape_str
from ..base.tempfiles import make_temp, release
from .mesh import obj_face_lines, obj_text

__all__ = ["save_npz", "save_obj_sequence", "save_glb", "morph_basis", "write_outputs", "write_animation",
           "check_output_folder", "parse_formats", "OUTPUTS"]

MAX_TARGETS = 64


def _np(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_sequence(vertices: np.ndarray, faces: np.ndarray) -> None:
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[0] == 0 or vertices.shape[1] == 0:
        raise ValueError(f"vertices must have shape [T > 0, V > 0, 3], got {shape_str(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3] (triangles), got {shape_str(faces.shape)}")
    if faces.size and (faces.min() < 0 or faces.max() >= vertices.shape[1]):
        raise ValueError(f"faces must index vertices in [0, {vertices.shape[1]}), got indices in "
                         f"[{faces.min()}, {faces.max()}]")
    if not np.isfinite(vertices).all():
        raise ValueError("vertices must be finite, got NaN or inf values")


# ------------------------------------------------------------------------------------------------
# npz and OBJ
# ------------------------------------------------------------------------------------------------
def save_npz(path, vertices, faces, fps: int) -> None:
    """``meshes.npz``: ``vertices [T, V, 3]`` float32, ``faces [F, 3]`` int32, ``fps`` (int)."""
    v, f = _np(vertices, np.float32), _np(faces, np.int64)
    _check_sequence(v, f)
    with open(os.fspath(path), "wb") as fh:
        np.savez(fh, vertices=v, faces=f.astype(np.int32), fps=np.int64(fps))


def save_obj_sequence(folder, vertices, faces, progress: bool = False) -> int:
    """One OBJ per frame, ``folder/frame_00000.obj`` ..., with ``v`` lines (9 significant digits:
    float32 values read back exactly) and the ``f`` lines (1-based) in every file. Returns the number written."""
    v, f = _np(vertices, np.float32), _np(faces, np.int64)
    _check_sequence(v, f)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    face_block = obj_face_lines(f, v.shape[1])
    digits = max(5, len(str(v.shape[0] - 1)))
    frames: Iterable[int] = range(v.shape[0])
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc="obj", unit="frame")
    for t in frames:
        with open(os.path.join(folder, f"frame_{t:0{digits}d}.obj"), "w") as fh:
            fh.write(obj_text(v[t], face_block))
    return v.shape[0]


# ------------------------------------------------------------------------------------------------
# glTF
# ------------------------------------------------------------------------------------------------
def morph_basis(displacements: np.ndarray, max_targets: int = MAX_TARGETS) -> Tuple[np.ndarray, np.ndarray, str]:
    """``displacements [T, N]`` -> (targets ``[K, N]`` float32, weights ``[T, K]`` float32, mode).

    mode "exact" (T <= max_targets): targets are the frames, weights the identity. mode "pca": the
    top-K right singular vectors (K = min(max_targets, N)) scaled to max-abs 1, weights the
    projections of the frames on them.
    """
    T, N = displacements.shape
    if T <= max_targets:
        return np.ascontiguousarray(displacements, dtype=np.float32), np.eye(T, dtype=np.float32), "exact"
    K = min(max_targets, N)
    d = torch.from_numpy(np.ascontiguousarray(displacements, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):  # randomised SVD, reproducible, global RNG untouched
        torch.manual_seed(0)
        _, _, v = torch.svd_lowrank(d, q=min(K + 16, N, T), niter=3)
    basis = v[:, :K].T  # [K, N] orthonormal rows spanning the top-K right singular subspace
    scale = basis.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    targets = basis / scale  # unit max-abs targets; the weights carry the size
    weights = (d @ basis.T) * scale.T  # orthogonal projection onto the basis, in target units
    return targets.numpy(), weights.numpy(), "pca"


def _reconstruction_error(vertices: np.ndarray, template: np.ndarray, targets: np.ndarray,
                          weights: np.ndarray) -> Tuple[float, float]:
    """Max and RMS per-vertex distance between the frames and what a glTF viewer shows at each
    keyframe (template + weights @ targets, float32 as stored)."""
    worst, total = 0.0, 0.0
    T, V = vertices.shape[:2]
    for s in range(0, T, 256):  # in chunks of frames, float64
        shown = template[None].astype(np.float64) + (weights[s:s + 256].astype(np.float64)
                                                     @ targets.astype(np.float64)).reshape(-1, V, 3)
        dist = np.linalg.norm(shown - vertices[s:s + 256].astype(np.float64), axis=-1)
        worst, total = max(worst, float(dist.max())), total + float(np.square(dist).sum())
    return worst, float(np.sqrt(total / (T * V)))


class _Blob:
    """Builds the binary chunk: each appended array gets a 4-byte aligned bufferView."""

    def __init__(self):
        self.parts, self.length, self.views = [], 0, []

    def add(self, array: np.ndarray, target: Optional[int]) -> int:
        from pygltflib import BufferView

        data = np.ascontiguousarray(array).tobytes()
        view = BufferView(buffer=0, byteOffset=self.length, byteLength=len(data), target=target)
        pad = (-len(data)) % 4
        self.parts.append(data + b"\0" * pad)
        self.length += len(data) + pad
        self.views.append(view)
        return len(self.views) - 1

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def save_glb(path, vertices, template, faces, fps: int, max_targets: int = MAX_TARGETS,
             name: str = "face") -> Dict[str, object]:
    """Write ``vertices [T, V, 3]`` as a glTF 2.0 binary animating ``template [V, 3]`` (``faces [F, 3]``)
    with morph targets and a weights animation at ``fps``. Returns the ``extras`` written (mode, number
    of targets, frames, fps, max/RMS reconstruction error)."""
    from pygltflib import (ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, FLOAT, GLTF2, SCALAR, UNSIGNED_INT,
                           UNSIGNED_SHORT, VEC3, Accessor, Animation, AnimationChannel,
                           AnimationChannelTarget, AnimationSampler, Asset, Attributes, Buffer, Mesh, Node,
                           Primitive, Scene)

    v, tp, f = _np(vertices, np.float32), _np(template, np.float32), _np(faces, np.int64)
    _check_sequence(v, f)
    if tp.shape != v.shape[1:]:
        raise ValueError(f"template must have shape [V={v.shape[1]}, 3] like the frames, got {shape_str(tp.shape)}")
    if f.shape[0] == 0:
        raise ValueError("faces must hold at least one triangle for a glTF mesh, got 0")
    if not 1 <= max_targets:
        raise ValueError(f"max_targets must be >= 1, got {max_targets}")
    T, V = v.shape[:2]
    targets, weights, mode = morph_basis((v - tp[None]).reshape(T, V * 3), max_targets)  # float32: bounded memory
    K = targets.shape[0]
    worst, rms = _reconstruction_error(v, tp, targets, weights)

    blob, accessors = _Blob(), []

    def accessor(array: np.ndarray, kind: str, component: int, target: Optional[int], minmax: bool) -> int:
        view = blob.add(array, target)
        flat = array.reshape(array.shape[0], -1) if kind == VEC3 else array.reshape(-1, 1)
        acc = Accessor(bufferView=view, byteOffset=0, componentType=component, count=int(flat.shape[0]), type=kind)
        if minmax:
            cast = int if component in (UNSIGNED_INT, UNSIGNED_SHORT) else float
            acc.min = [cast(x) for x in flat.min(axis=0)]
            acc.max = [cast(x) for x in flat.max(axis=0)]
        accessors.append(acc)
        return len(accessors) - 1

    position = accessor(tp, VEC3, FLOAT, ARRAY_BUFFER, True)
    index_type, index_dtype = (UNSIGNED_SHORT, np.uint16) if V <= 65535 else (UNSIGNED_INT, np.uint32)
    indices = accessor(f.reshape(-1).astype(index_dtype), SCALAR, index_type, ELEMENT_ARRAY_BUFFER, True)
    target_ids = [accessor(targets[k].reshape(V, 3), VEC3, FLOAT, ARRAY_BUFFER, True) for k in range(K)]
    times = accessor(np.arange(T, dtype=np.float32) / np.float32(fps), SCALAR, FLOAT, None, True)
    values = accessor(weights.reshape(-1), SCALAR, FLOAT, None, False)

    extras = {"generator": "meshtalk_fast", "mode": mode, "targets": K, "frames": T, "fps": fps,
              "max_vertex_error": worst, "rms_vertex_error": rms,
              "error_units": "the template's units (per-vertex Euclidean distance at the keyframes)"}
    prefix = "frame" if mode == "exact" else "pca"
    gltf = GLTF2(
        asset=Asset(version="2.0", generator="meshtalk_fast"), scene=0, scenes=[Scene(nodes=[0])],
        nodes=[Node(mesh=0, name=name)],
        meshes=[Mesh(name=name, weights=[0.0] * K, extras={"targetNames": [f"{prefix}_{k:05d}" for k in range(K)]},
                     primitives=[Primitive(attributes=Attributes(POSITION=position), indices=indices, mode=4,
                                           targets=[Attributes(POSITION=a) for a in target_ids])])],
        animations=[Animation(name="speech", samplers=[AnimationSampler(input=times, output=values,
                                                                         interpolation="LINEAR")],
                              channels=[AnimationChannel(sampler=0, target=AnimationChannelTarget(node=0,
                                                                                                  path="weights"))])],
        accessors=accessors, bufferViews=blob.views, extras=extras)
    data = blob.bytes()
    gltf.buffers = [Buffer(byteLength=len(data))]
    gltf.set_binary_blob(data)
    gltf.save_binary(os.fspath(path))
    return extras


# ------------------------------------------------------------------------------------------------
# All-or-nothing outputs
# ------------------------------------------------------------------------------------------------
def write_outputs(out_dir, names: Iterable[str], write: Callable[[str], None], force: bool = False,
                  replaces: Iterable[str] = ()) -> None:
    """Create the outputs ``names`` (files or folders directly in ``out_dir``) all or none.

    ``write(tmp)`` writes every name into ``tmp``, a fresh folder beside ``out_dir`` (same file
    system; a temporary of ``_tempfiles``, removed on failure, SIGTERM, or by the next run after a
    kill). Then each is moved into ``out_dir`` (created if needed) with a rename. Existing outputs
    are refused unless ``force``; with ``force`` they are moved aside first and restored if anything
    fails. ``replaces``: other outputs of the same set (e.g. formats not asked for this time): they
    count as existing outputs, and with ``force`` they are removed too, so the folder never mixes an
    old output with new ones. On any failure, whatever was written or moved is removed (and a folder
    ``out_dir`` that this call created is removed again), so no partial output is left.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    names = list(names)
    stale = [n for n in replaces if n not in names]
    parent = os.path.dirname(out_dir)
    check_output_folder(out_dir, names + stale, force)
    try:
        tmp = make_temp(parent, os.path.basename(out_dir), directory=True)
    except OSError as exc:
        raise PermissionError(f"output folder {out_dir!r} is not writable: cannot create a temporary folder "
                              f"in {parent!r} ({exc.strerror or exc})") from None
    created_dir, moved, backups = False, [], []
    try:
        write(tmp)
        missing = [n for n in names if not os.path.lexists(os.path.join(tmp, n))]
        if missing:
            raise RuntimeError(f"internal error: outputs {missing} were not written")
        if not os.path.isdir(out_dir):
            os.mkdir(out_dir)
            created_dir = True
        for n in names:
            dst = os.path.join(out_dir, n)
            if os.path.lexists(dst):
                backup = os.path.join(tmp, ".old-" + n)
                os.rename(dst, backup)
                backups.append((backup, dst))
            os.rename(os.path.join(tmp, n), dst)
            moved.append(dst)
        for n in stale:  # moved aside with the replaced outputs: restored if anything fails before the end
            dst = os.path.join(out_dir, n)
            if os.path.lexists(dst):
                backup = os.path.join(tmp, ".old-" + n)
                os.rename(dst, backup)
                backups.append((backup, dst))
    except BaseException:
        for dst in moved:
            _remove(dst)
        for backup, dst in backups:
            if os.path.lexists(backup) and not os.path.lexists(dst):
                os.rename(backup, dst)
        if created_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        release(tmp)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


# ------------------------------------------------------------------------------------------------
# The four outputs of `meshtalk-fast animate`
# ------------------------------------------------------------------------------------------------
OUTPUTS = {"npz": "meshes.npz", "obj": "obj", "glb": "animation.glb", "mp4": "preview.mp4"}


def parse_formats(text: str) -> list:
    """``"npz,obj,glb,mp4"`` -> ``["npz", "obj", "glb", "mp4"]`` (checked, duplicates dropped)."""
    formats = []
    for part in str(text).split(","):
        name = part.strip().lower()
        if name not in OUTPUTS:
            raise ValueError(f"formats must be a comma-separated subset of {','.join(OUTPUTS)}, got {part.strip()!r} "
                             f"in {text!r}")
        if name not in formats:
            formats.append(name)
    return formats


def check_output_folder(out_dir, names: Iterable[str], force: bool) -> None:
    """Fail early (before any compute) if ``write_outputs`` could not put ``names`` into ``out_dir``."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"output folder {out_dir!r} exists and is not a folder")
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"output folder {out_dir!r} cannot be created: its parent {parent!r} "
                                "is not an existing folder")
    existing = [n for n in names if os.path.lexists(os.path.join(out_dir, n))]
    if existing and not force:
        raise FileExistsError(f"output folder {out_dir!r} already holds {', '.join(existing)}; "
                              "pass --force (force=True) to overwrite")
    for folder in (parent, out_dir) if os.path.isdir(out_dir) else (parent,):
        try:
            release(make_temp(folder, "probe", directory=True))
        except OSError as exc:
            raise PermissionError(f"output folder {out_dir!r} is not writable: cannot create files in "
                                  f"{folder!r} ({exc.strerror or exc})") from None


def write_animation(out_dir, formats: Iterable[str], vertices, template, faces, fps: int,
                    audio: Optional[torch.Tensor] = None, sample_rate: int = 16000, force: bool = False,
                    video_size: int = 512, progress: bool = False,
                    extra: Optional[Dict[str, Callable[[str], None]]] = None) -> Dict[str, object]:
    """Write the chosen outputs of ``vertices [T, V, 3]`` into ``out_dir``, all or none (``write_outputs``):
    ``meshes.npz``, ``obj/frame_*.obj``, ``animation.glb`` (template ``[V, 3]`` + morph targets) and
    ``preview.mp4`` (``video_size`` square, ``audio [L]`` at ``sample_rate`` as its AAC track), plus
    ``extra`` outputs ``{file name: write(path)}`` (e.g. the blendshape files), in the same all-or-none step.
    Returns ``{"paths": {format or extra name: path}, "glb": save_glb's extras (when written)}``."""
    formats = parse_formats(",".join(formats))
    extra = dict(extra or {})
    names = [OUTPUTS[f] for f in formats] + list(extra)
    info: Dict[str, object] = {"paths": {f: os.path.join(os.path.abspath(os.fspath(out_dir)), OUTPUTS[f])
                                         for f in formats}}
    info["paths"].update({n: os.path.join(os.path.abspath(os.fspath(out_dir)), n) for n in extra})

    def write(tmp: str) -> None:
        if "npz" in formats:
            save_npz(os.path.join(tmp, OUTPUTS["npz"]), vertices, faces, fps)
        if "obj" in formats:
            save_obj_sequence(os.path.join(tmp, OUTPUTS["obj"]), vertices, faces, progress=progress)
        if "glb" in formats:
            info["glb"] = save_glb(os.path.join(tmp, OUTPUTS["glb"]), vertices, template, faces, fps)
        if "mp4" in formats:
            from .render import save_preview_mp4

            save_preview_mp4(os.path.join(tmp, OUTPUTS["mp4"]), vertices, faces, fps, audio, sample_rate,
                             (video_size, video_size), progress=progress)
        for name, fn in extra.items():
            fn(os.path.join(tmp, name))

    write_outputs(out_dir, names, write, force, replaces=OUTPUTS.values())
    return info
