"""The plain folder format: our own on-disk data set layout (``make_dataset`` writes it).

```
root/
  template.obj                 neutral face (OBJ: v and f lines; vertex order = the model's)
  templates/<subject>.obj      optional: a subject's own neutral face (same vertex count),
                               used instead of template.obj for that subject's sequences
  masks/<field>.txt            optional: one weight per vertex per line, field in mouth, eye,
                               eye_keypoints, forehead, neck, lips, upper_face (the released
                               names weighted_mouth_mask.txt, ... are accepted too)
  dataset.json                 optional: how the set was made (make_dataset writes it)
  <split>/<name>/              split is any folder name (train, val, test, ...)
    meshes.npy                 float32 [T, V, 3], frame k covers [k/fps, (k+1)/fps) s of the audio
    audio.wav                  the speech, any rate / channel count libsndfile reads
                               (make_dataset writes 16 kHz mono float32)
    meta.json                  optional: {"subject": str (default "default"), "fps": int (default 30),
                               anything else (text, phonemes, ...) is kept in FaceSequence.meta}
```
Reading checks every file and names the path of a bad one: a missing meshes.npy or audio.wav, a
meshes.npy that cannot be read or is not ``[T, V, 3]``, a vertex count other than the template's, a
frame count more than ``tolerance`` frames away from the audio's ``floor(L * fps / 16000)``.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..base.checks import check_choice
from ..ops.audio import SAMPLE_RATE, load_audio
from ..io.mesh import load_obj, write_obj
from .base import DEFAULT_TOLERANCE, FaceMasks, FaceSequence, align_sequence, handle_error, load_masks

__all__ = ["read_folder", "read_folder_sequence", "folder_templates", "load_folder_template", "load_folder_masks",
           "folder_splits", "write_obj", "write_folder_template", "write_folder_sequence"]


def write_folder_template(root, vertices: torch.Tensor, faces: torch.Tensor, subject: Optional[str] = None) -> str:
    """Write ``root/template.obj`` (subject None) or ``root/templates/<subject>.obj``; returns the path."""
    root = os.fspath(root)
    folder = root if subject is None else os.path.join(root, "templates")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "template.obj" if subject is None else f"{subject}.obj")
    write_obj(path, vertices, faces)
    return path


def write_folder_sequence(root, split: str, seq: FaceSequence) -> str:
    """Write one sequence as ``root/<split>/<name>/{meshes.npy, audio.wav, meta.json}``; returns the folder."""
    import soundfile as sf

    folder = os.path.join(os.fspath(root), split, seq.name)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "meshes.npy"), seq.geom.detach().cpu().numpy().astype(np.float32, copy=False))
    sf.write(os.path.join(folder, "audio.wav"), seq.audio.detach().cpu().numpy(), SAMPLE_RATE, subtype="FLOAT")
    meta = {k: v for k, v in seq.meta.items() if k != "path"}
    meta.update(subject=seq.subject, fps=seq.fps)
    with open(os.path.join(folder, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    return folder


def folder_splits(root) -> list:
    """The split folders under ``root`` (sorted)."""
    root = os.fspath(root)
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  and d not in ("masks", "templates"))


def load_folder_template(root, subject: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(vertices ``[V, 3]``, faces ``[F, 3]``): ``root/templates/<subject>.obj`` if it exists, else
    ``root/template.obj``."""
    root = os.fspath(root)
    if subject is not None:
        own = os.path.join(root, "templates", f"{subject}.obj")
        if os.path.isfile(own):
            return load_obj(own)
    path = os.path.join(root, "template.obj")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data set folder {root!r} has no template.obj (expected {path!r})")
    return load_obj(path)


def load_folder_masks(root, n_vertices: Optional[int] = None) -> Optional[FaceMasks]:
    """``root/masks`` as ``FaceMasks``, or None when the folder has no masks/ folder."""
    folder = os.path.join(os.fspath(root), "masks")
    return load_masks(folder, n_vertices) if os.path.isdir(folder) else None


def _read_meshes(path: str, mmap: bool) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist (every sequence folder needs meshes.npy)")
    try:
        geom = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path!r} could not be read as a .npy array: {exc}") from None
    if geom.ndim != 3 or geom.shape[2] != 3:
        raise ValueError(f"{path!r} must hold an array of shape [T, V, 3], got shape {list(geom.shape)}")
    if geom.dtype != np.float32:
        if geom.dtype not in (np.float16, np.float64):
            raise ValueError(f"{path!r} must hold float32 vertices, got dtype {geom.dtype}")
        geom = geom.astype(np.float32)
    return geom


def read_folder_sequence(folder, template: torch.Tensor, tolerance: int = DEFAULT_TOLERANCE,
                         mmap: bool = True, meta: Optional[dict] = None) -> FaceSequence:
    """One ``<split>/<name>/`` folder -> ``FaceSequence`` (raises naming the bad file)."""
    folder = os.fspath(folder)
    if meta is None:
        meta = _read_meta(folder)
    fps = meta.get("fps", 30)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"{os.path.join(folder, 'meta.json')!r}: fps must be a positive integer, got {fps!r}")
    mesh_path = os.path.join(folder, "meshes.npy")
    geom = _read_meshes(mesh_path, mmap)
    V = template.shape[0]
    if geom.shape[1] != V:
        raise ValueError(f"{mesh_path!r}: vertex count mismatch: the template has {V} vertices, the meshes have "
                         f"{geom.shape[1]} (shape {list(geom.shape)})")
    if geom.shape[0] == 0:
        raise ValueError(f"{mesh_path!r} holds no frames (shape {list(geom.shape)})")
    audio_path = os.path.join(folder, "audio.wav")
    if not os.path.isfile(audio_path):
        raise FileNotFoundError(f"{audio_path!r} does not exist: missing audio for {mesh_path!r}")
    audio = load_audio(audio_path)
    extra = {k: v for k, v in meta.items() if k not in ("subject", "fps")}
    extra["path"] = folder
    seq = FaceSequence(os.path.basename(folder.rstrip(os.sep)), str(meta.get("subject", "default")), template,
                       torch.from_numpy(geom), audio, fps, extra)
    return align_sequence(seq, tolerance, where=mesh_path)


def folder_templates(root, split: str = "train") -> List[torch.Tensor]:
    """The templates ``[V, 3]`` of the subjects of ``root/<split>/``, one per subject in order of first
    appearance (sequence folders in name order): the faces a model trained on that split has seen. Reads each
    sequence's meta.json and the subjects' templates only, no meshes or audio."""
    root = os.fspath(root)
    split_dir = _split_dir(root, split)
    templates: Dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(split_dir)):
        folder = os.path.join(split_dir, name)
        if os.path.isdir(folder):
            _subject_template(root, _read_meta(folder), templates)
    return list(templates.values())


def _subject_template(root: str, meta: dict, cache: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The template of a sequence's subject (``meta["subject"]``, "default" when absent), read once per
    subject into ``cache``."""
    subject = str(meta.get("subject", "default"))
    if subject not in cache:
        cache[subject] = load_folder_template(root, subject)[0]
    return cache[subject]


def _split_dir(root: str, split: str) -> str:
    """``root/<split>``, checked: the data set folder, the split and ``template.obj`` exist."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data set folder {root!r} does not exist")
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"data set folder {root!r} has no split {split!r} (expected the folder "
                                f"{split_dir!r}; found {folder_splits(root)})")
    if not os.path.isfile(os.path.join(root, "template.obj")):
        raise FileNotFoundError(f"data set folder {root!r} has no template.obj (expected "
                                f"{os.path.join(root, 'template.obj')!r})")
    return split_dir


def _read_meta(folder: str) -> dict:
    path = os.path.join(folder, "meta.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path!r} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path!r} must hold a JSON object, got {type(meta).__name__}")
    return meta


def read_folder(root, split: str = "train", tolerance: int = DEFAULT_TOLERANCE, on_error: str = "raise",
                mmap: bool = True, names=None) -> Iterator[FaceSequence]:
    """Yield the ``FaceSequence``s of ``root/<split>/`` in name order.

    mmap: memory-map meshes.npy (copy-on-write), so only the frames a crop touches are read.
    names: only these sequence names (default: all). on_error: ``"raise"`` or ``"skip"`` (warn and go on).
    """
    check_choice("on_error", on_error, ("raise", "skip"))
    root = os.fspath(root)
    split_dir = _split_dir(root, split)
    templates = {}
    wanted = None if names is None else set(names)
    for name in sorted(os.listdir(split_dir)):
        folder = os.path.join(split_dir, name)
        if not os.path.isdir(folder) or (wanted is not None and name not in wanted):
            continue
        try:
            meta = _read_meta(folder)
            seq = read_folder_sequence(folder, _subject_template(root, meta, templates), tolerance, mmap, meta)
        except (ValueError, FileNotFoundError) as exc:
            handle_error(on_error, exc)
            continue
        yield seq
