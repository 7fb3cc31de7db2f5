"""Morph-target meshes in glTF 2.0 files (``.glb`` / ``.gltf``), numpy in and out (pygltflib underneath).

- ``read_morph_mesh(path)``: the first mesh with morph targets (or the one named / indexed by ``mesh``):
  its base ``POSITION`` ``[V, 3]``, target displacements ``[K, V, 3]``, triangles ``[F, 3]`` and target
  names from ``mesh.extras.targetNames`` (the convention of Blender and three.js). A mesh with several
  primitives is read as one vertex list (the primitives' vertices one after another); every primitive
  must then have the same K targets.
- ``write_morph_mesh(path, ...)``: one node, one mesh, K named targets, optionally a ``weights``
  animation ``[T, K]`` at ``fps``.
- ``add_weights_animation(src, dst, ...)``: a copy of a user's file (materials, skins, everything kept)
  with one more animation driving the weights of the nodes that show the morph mesh.

Every error names the file and what is wrong. Files are written to a temporary name, then renamed.
"""
from __future__ import annotations

import base64
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = ["read_morph_mesh", "write_morph_mesh", "add_weights_animation", "replace_file"]

_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def replace_file(path: str, write) -> None:
    """``write(tmp)`` then rename ``tmp`` onto ``path``: the file is whole or untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path!r}: folder {folder!r} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _load(path: str):
    from pygltflib import GLTF2

    if not os.path.isfile(path):
        raise FileNotFoundError(f"glTF file {path!r} does not exist")
    try:
        return GLTF2().load(path)
    except Exception as exc:  # pygltflib raises a variety of parse errors
        raise ValueError(f"glTF file {path!r} cannot be read as glTF 2.0 ({type(exc).__name__}: {exc})") from None


def _buffer(gltf, index: int, path: str, cache: Dict[int, bytes]) -> bytes:
    if index in cache:
        return cache[index]
    buf = gltf.buffers[index]
    if buf.uri is None:  # the GLB binary chunk
        data = gltf.binary_blob()
        if data is None:
            raise ValueError(f"glTF file {path!r}: buffer {index} has no uri and the file has no binary chunk")
    elif buf.uri.startswith("data:"):
        data = base64.b64decode(buf.uri.split(",", 1)[1])
    else:
        ext = os.path.join(os.path.dirname(os.path.abspath(path)), buf.uri)
        if not os.path.isfile(ext):
            raise FileNotFoundError(f"glTF file {path!r}: buffer {index} refers to {buf.uri!r}, which does not exist")
        with open(ext, "rb") as fh:
            data = fh.read()
    cache[index] = data
    return data


def _positions(gltf, index: int, path: str, cache: Dict[int, bytes], what: str) -> np.ndarray:
    """A float VEC3 accessor (POSITION or a target's displacements) as float32 ``[count, 3]``."""
    acc = gltf.accessors[index]
    if acc.componentType != 5126 or acc.type != "VEC3":
        raise ValueError(f"glTF file {path!r}: {what} must be float VEC3 (quantized meshes are not supported), got "
                         f"componentType {acc.componentType}, type {acc.type}")
    return _accessor(gltf, index, path, cache)


def _accessor(gltf, index: int, path: str, cache: Dict[int, bytes]) -> np.ndarray:
    """Accessor ``index`` as a ``[count, width]`` array (dense; sparse substitutions applied)."""
    acc = gltf.accessors[index]
    dtype = _COMPONENTS.get(acc.componentType)
    if dtype is None or acc.type not in _WIDTH:
        raise ValueError(f"glTF file {path!r}: accessor {index} has an unsupported layout "
                         f"(componentType {acc.componentType}, type {acc.type})")
    width, itemsize = _WIDTH[acc.type], np.dtype(dtype).itemsize
    out = np.zeros((acc.count, width), dtype)
    if acc.bufferView is not None:
        view = gltf.bufferViews[acc.bufferView]
        data = _buffer(gltf, view.buffer, path, cache)
        start = (view.byteOffset or 0) + (acc.byteOffset or 0)
        stride = view.byteStride or width * itemsize
        need = start + (acc.count - 1) * stride + width * itemsize if acc.count else start
        if need > len(data) or need > (view.byteOffset or 0) + view.byteLength:
            raise ValueError(f"glTF file {path!r}: accessor {index} reads past the end of its buffer view")
        if acc.count:
            out[:] = np.ndarray((acc.count, width), dtype, buffer=data, offset=start, strides=(stride, itemsize))
    if acc.sparse is not None and acc.sparse.count:
        s = acc.sparse
        idx_view, val_view = gltf.bufferViews[s.indices.bufferView], gltf.bufferViews[s.values.bufferView]
        idx = np.frombuffer(_buffer(gltf, idx_view.buffer, path, cache), _COMPONENTS[s.indices.componentType],
                            s.count, (idx_view.byteOffset or 0) + (s.indices.byteOffset or 0))
        val = np.frombuffer(_buffer(gltf, val_view.buffer, path, cache), dtype, s.count * width,
                            (val_view.byteOffset or 0) + (s.values.byteOffset or 0)).reshape(s.count, width)
        if idx.size and idx.max() >= acc.count:
            raise ValueError(f"glTF file {path!r}: sparse accessor {index} indexes past its {acc.count} elements")
        out[idx.astype(np.int64)] = val
    return out


def _pick_mesh(gltf, path: str, mesh: Union[None, int, str]) -> int:
    meshes = gltf.meshes or []
    if mesh is None:
        for i, m in enumerate(meshes):
            if any(p.targets for p in m.primitives):
                return i
        raise ValueError(f"glTF file {path!r} has no mesh with morph targets ({len(meshes)} meshes, none with "
                         "primitive targets); export the blendshapes as shape keys / morph targets")
    if isinstance(mesh, int):
        if not 0 <= mesh < len(meshes):
            raise ValueError(f"mesh must index one of the {len(meshes)} meshes of {path!r}, got {mesh}")
        return mesh
    names = [m.name for m in meshes]
    if mesh not in names:
        raise ValueError(f"mesh {mesh!r} is not in glTF file {path!r}; its meshes are {names}")
    return names.index(mesh)


def read_morph_mesh(path, mesh: Union[None, int, str] = None) -> Dict[str, object]:
    """``{"names": [K] str or None, "neutral": float32 [V, 3], "deltas": float32 [K, V, 3],
    "faces": int64 [F, 3], "mesh": index}`` of a glTF file's morph-target mesh."""
    path = os.fspath(path)
    gltf = _load(path)
    index = _pick_mesh(gltf, path, mesh)
    m, cache = gltf.meshes[index], {}
    counts = {len(p.targets or []) for p in m.primitives}
    if counts == {0}:
        raise ValueError(f"glTF file {path!r}: mesh {m.name or index!r} has no morph targets")
    if len(counts) != 1:
        raise ValueError(f"glTF file {path!r}: the primitives of mesh {m.name or index!r} have different numbers "
                         f"of morph targets {sorted(counts)}")
    K = counts.pop()
    neutral, deltas, faces, base = [], [], [], 0
    for p in m.primitives:
        if p.attributes.POSITION is None:
            raise ValueError(f"glTF file {path!r}: a primitive of mesh {m.name or index!r} has no POSITION")
        pos = _positions(gltf, p.attributes.POSITION, path, cache, "POSITION")
        d = []
        for k, t in enumerate(p.targets):
            a = t.get("POSITION") if isinstance(t, dict) else getattr(t, "POSITION", None)
            if a is None:  # a target that moves normals only: no displacement
                d.append(np.zeros_like(pos))
                continue
            d.append(_positions(gltf, a, path, cache, f"morph target {k}"))
            if d[-1].shape != pos.shape:
                raise ValueError(f"glTF file {path!r}: morph target {k} has {d[-1].shape[0]} displacements for "
                                 f"{pos.shape[0]} vertices")
        mode = 4 if p.mode is None else p.mode
        if p.indices is not None:
            idx = _accessor(gltf, p.indices, path, cache).reshape(-1).astype(np.int64)
        else:
            idx = np.arange(pos.shape[0], dtype=np.int64)
        if mode == 4 and idx.size % 3 == 0 and idx.size:  # triangles; other modes carry no faces we can use
            if idx.max() >= pos.shape[0]:
                raise ValueError(f"glTF file {path!r}: triangle indices reach {idx.max()} for {pos.shape[0]} vertices")
            faces.append(idx.reshape(-1, 3) + base)
        neutral.append(pos)
        deltas.append(np.stack(d))
        base += pos.shape[0]
    extras = m.extras if isinstance(m.extras, dict) else {}
    names = extras.get("targetNames")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ValueError(f"glTF file {path!r}: mesh.extras.targetNames must be a list of strings, got {names!r}")
    return {"names": names, "neutral": np.concatenate(neutral), "deltas": np.concatenate(deltas, axis=1),
            "faces": np.concatenate(faces) if faces else np.zeros((0, 3), np.int64), "mesh": index, "targets": K}


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
class _Chunk:
    """Appends arrays to a binary chunk (4-byte aligned views) and makes accessors for them."""

    def __init__(self, gltf, data: bytes = b""):
        self.gltf, self.parts = gltf, [data + b"\0" * ((-len(data)) % 4)]
        self.length = len(self.parts[0])

    def add(self, array: np.ndarray, kind: str, component: int, target: Optional[int] = None,
            minmax: bool = False) -> int:
        from pygltflib import Accessor, BufferView

        raw = np.ascontiguousarray(array).tobytes()
        self.gltf.bufferViews.append(BufferView(buffer=0, byteOffset=self.length, byteLength=len(raw), target=target))
        self.parts.append(raw + b"\0" * ((-len(raw)) % 4))
        self.length += len(self.parts[-1])
        flat = array.reshape(array.shape[0], -1)
        acc = Accessor(bufferView=len(self.gltf.bufferViews) - 1, byteOffset=0, componentType=component,
                       count=int(flat.shape[0]), type=kind)
        if minmax:  # required for POSITION and animation inputs
            cast = float if array.dtype.kind == "f" else int
            acc.min = [cast(x) for x in flat.min(axis=0)]
            acc.max = [cast(x) for x in flat.max(axis=0)]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def finish(self) -> None:
        from pygltflib import Buffer

        data = b"".join(self.parts)
        self.gltf.buffers = [Buffer(byteLength=len(data))]
        self.gltf.set_binary_blob(data)


def _animation(chunk: _Chunk, nodes: Sequence[int], weights: np.ndarray, fps: float, name: str):
    from pygltflib import FLOAT, SCALAR, Animation, AnimationChannel, AnimationChannelTarget, AnimationSampler

    T = weights.shape[0]
    times = chunk.add(np.arange(T, dtype=np.float32) / np.float32(fps), SCALAR, FLOAT, minmax=True)
    values = chunk.add(np.ascontiguousarray(weights, np.float32).reshape(-1), SCALAR, FLOAT)
    return Animation(name=name, samplers=[AnimationSampler(input=times, output=values, interpolation="LINEAR")],
                     channels=[AnimationChannel(sampler=0, target=AnimationChannelTarget(node=n, path="weights"))
                               for n in nodes])


def _check_weights(weights, K: int, fps) -> np.ndarray:
    w = np.asarray(weights, np.float32)
    if w.ndim != 2 or w.shape[1] != K or w.shape[0] == 0:
        raise ValueError(f"weights must have shape [T > 0, K={K}], got {list(w.shape)}")
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite, got NaN or inf values")
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"fps must be a positive finite number, got {fps}")
    return w


def write_morph_mesh(path, names: Sequence[str], neutral: np.ndarray, deltas: np.ndarray,
                     faces: Optional[np.ndarray] = None, weights: Optional[np.ndarray] = None, fps: float = 30.0,
                     mesh_name: str = "face", animation_name: str = "blendshapes") -> None:
    """A ``.glb`` with the mesh ``neutral [V, 3]`` (``faces [F, 3]``, or points without faces), K morph
    targets ``deltas [K, V, 3]`` named ``names``, and with ``weights [T, K]`` an animation at ``fps``."""
    from pygltflib import (ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, FLOAT, GLTF2, SCALAR, UNSIGNED_INT, VEC3, Asset,
                           Attributes, Mesh, Node, Primitive, Scene)

    neutral, deltas = np.asarray(neutral, np.float32), np.asarray(deltas, np.float32)
    K, V = deltas.shape[:2]
    gltf = GLTF2(asset=Asset(version="2.0", generator="meshtalk_fast"), scene=0, scenes=[Scene(nodes=[0])],
                 nodes=[Node(mesh=0, name=mesh_name)], accessors=[], bufferViews=[])
    chunk = _Chunk(gltf)
    position = chunk.add(neutral, VEC3, FLOAT, ARRAY_BUFFER, minmax=True)
    targets = [Attributes(POSITION=chunk.add(deltas[k], VEC3, FLOAT, ARRAY_BUFFER, minmax=True)) for k in range(K)]
    prim = Primitive(attributes=Attributes(POSITION=position), targets=targets, mode=0)
    if faces is not None and len(faces):
        prim.indices = chunk.add(np.asarray(faces, np.uint32).reshape(-1), SCALAR, UNSIGNED_INT, ELEMENT_ARRAY_BUFFER,
                                 minmax=True)
        prim.mode = 4
    gltf.meshes = [Mesh(name=mesh_name, primitives=[prim], weights=[0.0] * K,
                        extras={"targetNames": [str(n) for n in names]})]
    if weights is not None:
        gltf.animations = [_animation(chunk, [0], _check_weights(weights, K, fps), fps, animation_name)]
    chunk.finish()
    replace_file(path, lambda tmp: gltf.save_binary(tmp))


def add_weights_animation(src, dst, weights: np.ndarray, fps: float, mesh: Union[None, int, str] = None,
                          animation_name: str = "speech") -> List[int]:
    """Write ``dst`` (.glb): the glTF file ``src`` with one more animation driving the morph weights
    ``[T, K]`` (in the mesh's target order) of every node that shows the morph mesh. Returns those nodes."""
    src = os.fspath(src)
    gltf = _load(src)
    index = _pick_mesh(gltf, src, mesh)
    K = len(gltf.meshes[index].primitives[0].targets or [])
    w = _check_weights(weights, K, fps)
    nodes = [i for i, n in enumerate(gltf.nodes or []) if n.mesh == index]
    if not nodes:
        raise ValueError(f"glTF file {src!r}: no node shows mesh {index}, so there is nothing to animate")
    # everything moves into one GLB binary chunk (buffer 0): the old buffers one after another
    cache: Dict[int, bytes] = {}
    offsets, data = [], b""
    for i in range(len(gltf.buffers or [])):
        data += b"\0" * ((-len(data)) % 4)
        offsets.append(len(data))
        data += _buffer(gltf, i, src, cache)
    for view in gltf.bufferViews or []:
        view.byteOffset, view.buffer = (view.byteOffset or 0) + offsets[view.buffer], 0
    for img in gltf.images or []:
        if img.uri is not None and not img.uri.startswith("data:"):
            raise ValueError(f"glTF file {src!r} refers to the external image {img.uri!r}; a .glb copy would "
                             "lose it (export the rig as .glb first)")
    gltf.bufferViews = gltf.bufferViews or []
    gltf.accessors = gltf.accessors or []
    chunk = _Chunk(gltf, data)
    gltf.animations = (gltf.animations or []) + [_animation(chunk, nodes, w, fps, animation_name)]
    chunk.finish()
    replace_file(dst, lambda tmp: gltf.save_binary(tmp))
    return nodes
