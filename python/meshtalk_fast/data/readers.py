"""Readers for the data sets MeshTalk-style models are trained on; each yields ``FaceSequence``s.

- ``read_multiface``: ``<root>/tracked_mesh/<expr>/<frame>.bin`` (raw little-endian float32 xyz,
  7306 vertices) + ``<root>/audio/<expr>.wav`` (48 kHz), 30 fps; an index file selects the template's
  vertices (7306 -> 6172 for MeshTalk).
- ``read_vocaset``: ``data_verts.npy`` (frames x 5023 x 3 at 60 fps, memory-mapped),
  ``raw_audio_fixed.pkl``, ``templates.pkl``, ``subj_seq_to_idx.pkl``; every second frame -> 30 fps.
- ``read_biwi``: ``vertices_npy/<subject>_<sentence>.npy`` (frames x 70110), ``templates.pkl``,
  ``wav/<subject>_<sentence>.wav``, 25 fps (``resample_fps`` converts to 30).
- ``read_folder``: our plain folder format, documented in ``meshtalk_fast.data.folder``.

Pickles are read with a restricted unpickler that builds only numpy arrays / dtypes / scalars and
plain containers (dicts, lists, tuples, ints, floats, strings); any other global is refused, so a
pickle cannot run code. Every file is checked; a bad one is reported with its path and the problem.
``on_error="raise"`` (default) raises ``ValueError`` / ``FileNotFoundError``; ``"skip"`` warns and
goes on with the next sequence. Files the whole set depends on (templates, index files, pickles) raise
either way. Mesh and audio lengths must agree within ``tolerance`` frames (both are trimmed to the
shorter), never silently mis-aligned.
"""
from __future__ import annotations

import codecs
import os
import pickle
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ..base.checks import check_choice
from ..ops.audio import load_audio
from ..io.mesh import load_obj
from .base import DEFAULT_TOLERANCE, FaceSequence, align_sequence, handle_error
from .folder import read_folder

__all__ = ["read_multiface", "read_vocaset", "read_biwi", "read_folder", "load_pickle", "MULTIFACE_VERTICES",
           "VOCASET_VERTICES", "BIWI_VERTICES"]

MULTIFACE_VERTICES = 7306
VOCASET_VERTICES = 5023
BIWI_VERTICES = 23370

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric

_ALLOWED = {}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles store bytes


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays and plain "
                                         "containers are allowed") from None


def load_pickle(path):
    """Unpickle ``path`` allowing only numpy arrays / dtypes / scalars and plain containers
    (Python 2 pickles included: byte strings are decoded as latin-1)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path!r} could not be unpickled safely: {exc}") from None


def _check_index(index_file, n_raw: int, n_template: int) -> np.ndarray:
    index_file = os.fspath(index_file)
    if not os.path.isfile(index_file):
        raise FileNotFoundError(f"vertex index file {index_file!r} does not exist")
    try:
        raw = np.loadtxt(index_file, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise ValueError(f"vertex index file {index_file!r} must hold one integer per line: {exc}") from None
    if raw.ndim != 1 or not np.all(raw == np.round(raw)):
        raise ValueError(f"vertex index file {index_file!r} must hold one integer per line")
    index = raw.astype(np.int64)
    if index.size != n_template:
        raise ValueError(f"vertex index file {index_file!r} must hold {n_template} indices (one per template "
                         f"vertex), got {index.size}")
    if index.size and (index.min() < 0 or index.max() >= n_raw):
        raise ValueError(f"vertex index file {index_file!r} must hold indices in [0, {n_raw}), got "
                         f"{index.min()}..{index.max()}")
    if np.unique(index).size != index.size:
        raise ValueError(f"vertex index file {index_file!r} repeats indices")
    return index


# ------------------------------------------------------------------------------------------------
# Multiface
# ------------------------------------------------------------------------------------------------
def read_multiface(root, template_obj, index_file=None, expressions: Optional[Sequence[str]] = None,
                   fps: int = 30, frame_step: int = 1, audio_dir: str = "audio", subject: Optional[str] = None,
                   n_raw_vertices: int = MULTIFACE_VERTICES, tolerance: int = DEFAULT_TOLERANCE,
                   on_error: str = "raise") -> Iterator[FaceSequence]:
    """Multiface sequences of one subject folder ``root``.

    template_obj: the neutral face (OBJ) in the model's topology, V vertices.
    index_file: V raw-vertex indices, one per line (7306 -> 6172 for MeshTalk); None when the
        template has all ``n_raw_vertices`` vertices.
    expressions: folder names under tracked_mesh (default: every ``SEN_*`` folder, the spoken ones).
    Frames are the ``<frame>.bin`` files in frame-number order; the numbers must advance by
    ``frame_step`` (a gap raises: it would shift everything after it). Each .bin must be exactly
    ``n_raw_vertices * 3 * 4`` bytes. Audio is ``<root>/<audio_dir>/<expr>.wav``.
    """
    check_choice("on_error", on_error, ("raise", "skip"))
    root = os.fspath(root)
    mesh_root = os.path.join(root, "tracked_mesh")
    if not os.path.isdir(mesh_root):
        raise FileNotFoundError(f"Multiface folder {root!r} has no tracked_mesh/ folder (expected {mesh_root!r})")
    template = load_obj(template_obj)[0]
    V = template.shape[0]
    if index_file is None:
        if V != n_raw_vertices:
            raise ValueError(f"template {os.fspath(template_obj)!r} has {V} vertices; without index_file it must "
                             f"have all {n_raw_vertices} raw vertices")
        index = None
    else:
        index = _check_index(index_file, n_raw_vertices, V)
    if expressions is None:
        expressions = sorted(d for d in os.listdir(mesh_root)
                             if d.startswith("SEN_") and os.path.isdir(os.path.join(mesh_root, d)))
    frame_bytes = n_raw_vertices * 3 * 4
    for expr in expressions:
        folder = os.path.join(mesh_root, expr)
        try:
            geom = _multiface_meshes(folder, frame_bytes, n_raw_vertices, index, frame_step)
            wav = os.path.join(root, audio_dir, f"{expr}.wav")
            if not os.path.isfile(wav):
                raise FileNotFoundError(f"{wav!r} does not exist: missing audio for {folder!r}")
            seq = FaceSequence(expr, subject or os.path.basename(root.rstrip(os.sep)), template, geom,
                               load_audio(wav), fps, {"path": folder, "audio_path": wav})
            seq = align_sequence(seq, tolerance, where=folder)
        except (ValueError, FileNotFoundError) as exc:
            handle_error(on_error, exc)
            continue
        yield seq


def _multiface_meshes(folder: str, frame_bytes: int, n_raw: int, index, frame_step: int) -> torch.Tensor:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Multiface expression folder {folder!r} does not exist")
    files = [f for f in os.listdir(folder) if f.endswith(".bin")]
    if not files:
        raise ValueError(f"{folder!r} holds no <frame>.bin files")
    try:
        numbered = sorted((int(f[:-4]), f) for f in files)
    except ValueError:
        bad = [f for f in files if not f[:-4].isdigit()]
        raise ValueError(f"{folder!r}: frame files must be named <frame number>.bin, got {bad[:3]}") from None
    numbers = np.array([n for n, _ in numbered])
    gaps = np.nonzero(np.diff(numbers) != frame_step)[0]
    if gaps.size:
        k = gaps[0]
        raise ValueError(f"{folder!r}: frame numbers must advance by {frame_step}; found {numbers[k]} followed by "
                         f"{numbers[k + 1]} (missing or extra frames would mis-align the audio)")
    frames = np.empty((len(numbered), n_raw if index is None else index.size, 3), np.float32)
    for k, (_, name) in enumerate(numbered):
        path = os.path.join(folder, name)
        size = os.path.getsize(path)
        if size != frame_bytes:
            problem = "truncated" if size < frame_bytes else "wrong size"
            raise ValueError(f"{path!r}: {problem}: expected {frame_bytes} bytes ({n_raw} vertices x 3 float32), "
                             f"found {size}")
        xyz = np.fromfile(path, dtype="<f4").reshape(n_raw, 3)
        frames[k] = xyz if index is None else xyz[index]
    return torch.from_numpy(frames)


# ------------------------------------------------------------------------------------------------
# VOCASET
# ------------------------------------------------------------------------------------------------
def read_vocaset(root, subjects: Optional[Sequence[str]] = None, sentences: Optional[Sequence[str]] = None,
                 fps: int = 60, downsample: int = 2, n_vertices: int = VOCASET_VERTICES,
                 tolerance: int = DEFAULT_TOLERANCE, on_error: str = "raise",
                 files=("data_verts.npy", "raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl")
                 ) -> Iterator[FaceSequence]:
    """VOCASET sequences (name ``<subject>_<sentence>``), ``fps // downsample`` fps (30 by default)."""
    check_choice("on_error", on_error, ("raise", "skip"))
    if fps % downsample:
        raise ValueError(f"fps ({fps}) must be divisible by downsample ({downsample})")
    root = os.fspath(root)
    verts_path, audio_path, templates_path, index_path = (os.path.join(root, f) for f in files)
    if not os.path.isfile(verts_path):
        raise FileNotFoundError(f"VOCASET vertices {verts_path!r} do not exist")
    try:
        verts = np.load(verts_path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{verts_path!r} could not be read as a .npy array: {exc}") from None
    if verts.ndim != 3 or verts.shape[1:] != (n_vertices, 3):
        raise ValueError(f"{verts_path!r} must hold an array of shape [frames, {n_vertices}, 3], got "
                         f"{list(verts.shape)}")
    raw_audio, templates, seq_index = (_dict_of_dicts(load_pickle(p), p)
                                       for p in (audio_path, templates_path, index_path))
    for subject in sorted(seq_index):
        if subjects is not None and subject not in subjects:
            continue
        if not isinstance(seq_index[subject], dict):
            raise ValueError(f"{index_path!r} [{subject!r}] must be a dict keyed by sentence, got "
                             f"{type(seq_index[subject]).__name__}")
        for sentence in sorted(seq_index[subject]):
            if sentences is not None and sentence not in sentences:
                continue
            where = f"{index_path!r} [{subject!r}][{sentence!r}]"
            try:
                template = _vertex_array(templates.get(subject), n_vertices, f"{templates_path!r} [{subject!r}]")
                frames = seq_index[subject][sentence]
                if not isinstance(frames, dict) or not frames:
                    raise ValueError(f"{where} must map local frame numbers to global indices, got "
                                     f"{type(frames).__name__}")
                local = sorted(frames)
                if local != list(range(local[0], local[0] + len(local))):
                    raise ValueError(f"{where}: local frame numbers must be consecutive, got gaps in "
                                     f"{local[0]}..{local[-1]} ({len(local)} frames)")
                glob = np.array([frames[k] for k in local], dtype=np.int64)
                if glob.min() < 0 or glob.max() >= verts.shape[0]:
                    raise ValueError(f"{where}: global indices {glob.min()}..{glob.max()} fall outside {verts_path!r} "
                                     f"({verts.shape[0]} frames)")
                by_sentence = raw_audio.get(subject)
                entry = by_sentence.get(sentence) if isinstance(by_sentence, dict) else None
                if not isinstance(entry, dict) or "audio" not in entry or "sample_rate" not in entry:
                    raise FileNotFoundError(f"{audio_path!r} has no audio for [{subject!r}][{sentence!r}] "
                                            "(expected {'audio': array, 'sample_rate': int})")
                try:
                    audio = load_audio(np.asarray(entry["audio"]), sample_rate=int(entry["sample_rate"]))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{audio_path!r} [{subject!r}][{sentence!r}]: {exc}") from None
                geom = torch.from_numpy(np.ascontiguousarray(verts[glob[::downsample]], dtype=np.float32))
                seq = FaceSequence(f"{subject}_{sentence}", subject, template, geom, audio, fps // downsample,
                                   {"path": verts_path, "frames": [int(glob[0]), int(glob[-1])]})
                seq = align_sequence(seq, tolerance, where=where)
            except (ValueError, FileNotFoundError) as exc:
                handle_error(on_error, exc)
                continue
            yield seq


def _dict_of_dicts(obj, path: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} must hold a dict keyed by subject, got {type(obj).__name__}")
    return obj


def _vertex_array(x, n_vertices: int, where: str) -> torch.Tensor:
    if x is None:
        raise ValueError(f"{where}: missing (no template for this subject)")
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{where} must hold numbers, got dtype {a.dtype}")
    if a.shape == (n_vertices * 3,):
        a = a.reshape(n_vertices, 3)
    if a.shape != (n_vertices, 3):
        raise ValueError(f"{where}: vertex count mismatch: expected shape [{n_vertices}, 3] (or flat "
                         f"[{n_vertices * 3}]), got {list(a.shape)}")
    return torch.from_numpy(a.astype(np.float32))


# ------------------------------------------------------------------------------------------------
# BIWI
# ------------------------------------------------------------------------------------------------
def read_biwi(root, subjects: Optional[Sequence[str]] = None, fps: int = 25, n_vertices: int = BIWI_VERTICES,
              tolerance: int = DEFAULT_TOLERANCE, on_error: str = "raise", vertices_dir: str = "vertices_npy",
              wav_dir: str = "wav", templates_file: str = "templates.pkl") -> Iterator[FaceSequence]:
    """BIWI as commonly preprocessed: ``vertices_npy/<subject>_<sentence>.npy`` ([T, 70110] or
    [T, 23370, 3]), ``wav/<subject>_<sentence>.wav``, ``templates.pkl`` ({subject: [23370, 3] or flat})."""
    check_choice("on_error", on_error, ("raise", "skip"))
    root = os.fspath(root)
    vdir = os.path.join(root, vertices_dir)
    if not os.path.isdir(vdir):
        raise FileNotFoundError(f"BIWI folder {root!r} has no {vertices_dir}/ folder (expected {vdir!r})")
    templates_path = os.path.join(root, templates_file)
    templates = _dict_of_dicts(load_pickle(templates_path), templates_path)
    for fname in sorted(f for f in os.listdir(vdir) if f.endswith(".npy")):
        stem = fname[:-4]
        subject = stem.split("_", 1)[0]
        if subjects is not None and subject not in subjects:
            continue
        path = os.path.join(vdir, fname)
        try:
            template = _vertex_array(templates.get(subject), n_vertices, f"{templates_path!r} [{subject!r}]")
            try:
                data = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise ValueError(f"{path!r} could not be read as a .npy array: {exc}") from None
            if data.ndim == 2 and data.shape[1] == n_vertices * 3:
                data = data.reshape(data.shape[0], n_vertices, 3)
            if data.ndim != 3 or data.shape[1:] != (n_vertices, 3):
                raise ValueError(f"{path!r}: vertex count mismatch: expected [T, {n_vertices * 3}] or "
                                 f"[T, {n_vertices}, 3], got {list(data.shape)}")
            if data.shape[0] == 0:
                raise ValueError(f"{path!r} holds no frames")
            wav = os.path.join(root, wav_dir, f"{stem}.wav")
            if not os.path.isfile(wav):
                raise FileNotFoundError(f"{wav!r} does not exist: missing audio for {path!r}")
            geom = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
            seq = FaceSequence(stem, subject, template, geom, load_audio(wav), fps, {"path": path, "audio_path": wav})
            seq = align_sequence(seq, tolerance, where=path)
        except (ValueError, FileNotFoundError) as exc:
            handle_error(on_error, exc)
            continue
        yield seq
