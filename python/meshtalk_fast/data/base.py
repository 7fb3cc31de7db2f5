"""The one sample format every data set produces and the trainer consumes.

``FaceSequence``: one recorded (or generated) utterance: a neutral ``template [V, 3]``, the tracked
meshes ``geom [T, V, 3]`` at ``fps`` and the speech ``audio [L]`` at 16 kHz, already loudness-normalised
with the released rule (``meshtalk_fast.load_audio``). Mesh frame k covers ``[k/fps, (k+1)/fps)`` s of
the audio.

``SegmentDataset``: fixed-length training crops of a list of sequences: each item holds the
template, ``segment_frames`` meshes and the matching 1 s audio windows (one per frame, the model's
input), precomputed once per sequence.

``FaceMasks``: the per-vertex weights the losses, the metrics and post-smoothing need.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Iterable, List, Optional

import numpy as np
import torch

from ..base.checks import check_choice, check_mask_weights, check_positive_int, shape_str
from ..ops.audio import SAMPLE_RATE
from ..ops.frame_clock import audio_windows, num_frames
from ..io.mesh import find_mask_file, load_mask

__all__ = ["FaceSequence", "FaceMasks", "load_meshtalk_masks", "load_masks", "SegmentDataset", "align_sequence",
           "resample_fps", "handle_error", "DEFAULT_TOLERANCE"]

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 2  # frames by which mesh and audio lengths may differ before a sequence is refused


def handle_error(on_error: str, exc: Exception) -> None:
    """``on_error="raise"``: raise ``exc``; ``"skip"``: ``warnings.warn`` its message and return."""
    if on_error == "raise":
        raise exc
    warnings.warn(f"skipped: {exc}", stacklevel=3)


@dataclass
class FaceSequence:
    """One utterance.

    name: unique within its data set, e.g. ``"F1_e01"``; subject: the speaker / identity.
    template: ``float32 [V, 3]`` neutral face; geom: ``float32 [T, V, 3]`` meshes at ``fps``;
    audio: ``float32 [L]`` at 16 kHz, normalised to ``mean(|audio|) = 0.01``.
    meta: free-form extras (source path, text, phoneme timings, ...); never needed for training.
    """
    name: str
    subject: str
    template: torch.Tensor
    geom: torch.Tensor
    audio: torch.Tensor
    fps: int = 30
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        where = f"sequence {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"FaceSequence.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.subject, str):
            raise TypeError(f"{where}: subject must be a string, got {type(self.subject).__name__}")
        self.fps = check_positive_int(f"{where}: fps", self.fps, maximum=1000)
        for key, ndim, what in (("template", 2, "[V, 3]"), ("geom", 3, "[T, V, 3]"), ("audio", 1, "[L]")):
            x = getattr(self, key)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{where}: {key} must be a torch.Tensor {what}, got {type(x).__name__}")
            if x.dtype != torch.float32:
                raise TypeError(f"{where}: {key} must be float32, got {x.dtype}")
            if x.dim() != ndim or (key != "audio" and x.shape[-1] != 3):
                raise ValueError(f"{where}: {key} must have shape {what}, got {shape_str(x.shape)}")
        V = self.template.shape[0]
        if self.geom.shape[1] != V:
            raise ValueError(f"{where}: geom must have shape [T, V={V}, 3] (V from the template), "
                             f"got {shape_str(self.geom.shape)}")
        if self.geom.shape[0] == 0 or self.audio.shape[0] == 0:
            raise ValueError(f"{where}: geom and audio must be non-empty, got geom {shape_str(self.geom.shape)} "
                             f"and audio {shape_str(self.audio.shape)}")

    @property
    def n_frames(self) -> int:
        return int(self.geom.shape[0])

    @property
    def duration(self) -> float:
        """Audio duration in seconds."""
        return self.audio.shape[0] / SAMPLE_RATE


def _check_finite_meshes(seq: FaceSequence, where: str) -> None:
    """A NaN / inf vertex in the data would train a NaN model (or break the normalisation): refused here,
    where every reader passes, naming the file. In blocks of frames: a memory-mapped file is read once."""
    if not bool(torch.isfinite(seq.template).all()):
        raise ValueError(f"{where}: the template of subject {seq.subject!r} holds non-finite coordinates")
    for s in range(0, seq.geom.shape[0], 256):
        block = seq.geom[s:s + 256]
        bad = ~torch.isfinite(block).reshape(block.shape[0], -1).all(dim=1)
        if bool(bad.any()):
            t = s + int(bad.nonzero()[0])
            raise ValueError(f"{where}: mesh frame {t} holds non-finite (NaN or inf) coordinates; the data set "
                             "must be finite")


def align_sequence(seq: FaceSequence, tolerance: int = DEFAULT_TOLERANCE, clock: str = "exact",
                   where: Optional[str] = None) -> FaceSequence:
    """Check that mesh and audio lengths agree and trim both to the shorter.

    The audio spans ``num_frames(len(audio), seq.fps, clock)`` frames (``clock="exact"``:
    ``floor(L * fps / 16000)``). A difference of more than ``tolerance`` frames raises ``ValueError``
    naming ``where`` (a path) or the sequence; within it, ``geom`` keeps the first ``T = min`` frames
    and the audio its first ``ceil(T * 16000 / fps)`` samples (never more than it has). Non-finite
    meshes or template are refused (``ValueError`` naming ``where``).
    """
    check_choice("clock", clock, ("released", "exact"))
    _check_finite_meshes(seq, where or f"sequence {seq.name!r}")
    T_mesh, L = seq.geom.shape[0], seq.audio.shape[0]
    T_audio = num_frames(L, seq.fps, clock)
    if abs(T_mesh - T_audio) > tolerance:
        raise ValueError(f"{where or 'sequence ' + repr(seq.name)}: {T_mesh} mesh frames do not match the audio "
                         f"({L} samples = {L / SAMPLE_RATE:.3f} s = {T_audio} frames at {seq.fps} fps, clock "
                         f"{clock!r}); expected a difference of at most {tolerance} frames, found "
                         f"{abs(T_mesh - T_audio)}")
    T = min(T_mesh, T_audio)
    if T == 0:
        raise ValueError(f"{where or 'sequence ' + repr(seq.name)}: the audio is shorter than one frame "
                         f"({L} samples at {seq.fps} fps)")
    n_samples = min(L, -(-T * SAMPLE_RATE // seq.fps))
    if T == T_mesh and n_samples == L:
        return seq
    return FaceSequence(seq.name, seq.subject, seq.template, seq.geom[:T], seq.audio[:n_samples], seq.fps, seq.meta)


def resample_fps(seq: FaceSequence, fps: int) -> FaceSequence:
    """Linear interpolation of ``geom`` in time to a new frame rate (e.g. BIWI's 25 fps -> 30).

    Frame k is taken to sit at ``(k + 1/2) / fps`` s; the result has ``floor(T * fps_new / fps_old)``
    frames; times outside the old frame centres hold the first / last frame."""
    fps = check_positive_int("fps", fps, maximum=1000)
    if fps == seq.fps:
        return seq
    T_old = seq.geom.shape[0]
    T_new = (T_old * fps) // seq.fps
    if T_new == 0:
        raise ValueError(f"sequence {seq.name!r} is too short to resample: {T_old} frames at {seq.fps} fps "
                         f"give 0 frames at {fps} fps")
    pos = ((torch.arange(T_new, dtype=torch.float64) + 0.5) * seq.fps / fps - 0.5).clamp(0, T_old - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=T_old - 1)
    w = (pos - lo).to(torch.float32)[:, None, None]
    geom = seq.geom[lo] * (1 - w) + seq.geom[hi] * w
    return FaceSequence(seq.name, seq.subject, seq.template, geom.contiguous(), seq.audio, fps, dict(seq.meta))


# ------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------
@dataclass
class FaceMasks:
    """Per-vertex weights, each ``float32 [V]``.

    mouth, eye: weights in [0, 1] (the released weighted masks: modality-crossing losses);
    eye_keypoints: 0/1 (landmark loss); forehead, neck: post-smoothing blend weights;
    lips: 0/1 lip vertices (lip vertex error); upper_face: 0/1 (upper-face dynamics deviation).
    """
    mouth: torch.Tensor
    eye: torch.Tensor
    eye_keypoints: torch.Tensor
    forehead: torch.Tensor
    neck: torch.Tensor
    lips: torch.Tensor
    upper_face: torch.Tensor

    def __post_init__(self):
        V = None
        for f in fields(self):
            x = getattr(self, f.name)
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not isinstance(x, torch.Tensor) or x.dim() != 1:
                got = shape_str(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"FaceMasks.{f.name} must be a tensor of shape [V], got {got}")
            x = x.to(torch.float32)
            if V is None:
                V = x.shape[0]
            elif x.shape[0] != V:
                raise ValueError(f"FaceMasks.{f.name} must have shape [V={V}] like FaceMasks.mouth, "
                                 f"got {shape_str(x.shape)}")
            check_mask_weights(f"FaceMasks.{f.name}", x)
            setattr(self, f.name, x)

    @property
    def n_vertices(self) -> int:
        return int(self.mouth.shape[0])

    def save(self, folder) -> None:
        """Write ``<folder>/<field>.txt``, one weight per line (what ``load_masks`` reads)."""
        os.makedirs(folder, exist_ok=True)
        for f in fields(self):
            np.savetxt(os.path.join(folder, f"{f.name}.txt"), getattr(self, f.name).numpy(), fmt="%.8g")


def derived_masks(mouth: torch.Tensor, eye: torch.Tensor, forehead: torch.Tensor, lip_threshold: float = 0.9,
                  upper_threshold: float = 0.5):
    """Defaults for masks a release does not provide: ``lips = mouth > lip_threshold`` and
    ``upper_face = max(eye, forehead) > upper_threshold`` (both 0/1 ``float32 [V]``)."""
    lips = (mouth > lip_threshold).to(torch.float32)
    upper = (torch.maximum(eye, forehead) > upper_threshold).to(torch.float32)
    return lips, upper


_RELEASED_NAMES = {"mouth": "weighted_mouth_mask.txt", "eye": "weighted_eye_mask.txt",
                   "eye_keypoints": "eye_keypoints.txt", "forehead": "forehead_mask.txt", "neck": "neck_mask.txt"}


def load_masks(folder, n_vertices: Optional[int] = None, lip_threshold: float = 0.9) -> FaceMasks:
    """Masks from a folder holding, per field, ``<field>.txt`` (our names: mouth.txt, eye.txt,
    eye_keypoints.txt, forehead.txt, neck.txt, lips.txt, upper_face.txt) or the released file name
    (weighted_mouth_mask.txt, weighted_eye_mask.txt, eye_keypoints.txt, forehead_mask.txt,
    neck_mask.txt). ``lips`` / ``upper_face`` default to ``derived_masks`` when absent."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"mask folder {folder!r} does not exist")
    found = {}
    for key in ("mouth", "eye", "eye_keypoints", "forehead", "neck", "lips", "upper_face"):
        path = find_mask_file(folder, key)
        if path is not None:
            found[key] = load_mask(path, n_vertices)
            n_vertices = found[key].shape[0]
    missing = [k for k in _RELEASED_NAMES if k not in found]
    if missing:
        raise FileNotFoundError(f"mask folder {folder!r} lacks {', '.join(missing)}: expected "
                                + "; ".join(f"{k}.txt or {_RELEASED_NAMES[k]}" for k in missing))
    lips, upper = derived_masks(found["mouth"], found["eye"], found["forehead"], lip_threshold)
    found.setdefault("lips", lips)
    found.setdefault("upper_face", upper)
    return FaceMasks(**found)


def load_meshtalk_masks(folder, n_vertices: Optional[int] = 6172, lip_threshold: float = 0.9) -> FaceMasks:
    """The released MeshTalk masks (weighted_mouth_mask.txt, weighted_eye_mask.txt, eye_keypoints.txt,
    forehead_mask.txt, neck_mask.txt) from ``folder``; ``lips`` are the vertices whose mouth weight
    exceeds ``lip_threshold`` and ``upper_face`` the vertices where the eye or forehead weight exceeds 0.5."""
    folder = os.fspath(folder)
    m = {k: load_mask(os.path.join(folder, name), n_vertices) for k, name in _RELEASED_NAMES.items()}
    lips, upper = derived_masks(m["mouth"], m["eye"], m["forehead"], lip_threshold)
    return FaceMasks(lips=lips, upper_face=upper, **m)


# ------------------------------------------------------------------------------------------------
# Training crops
# ------------------------------------------------------------------------------------------------
class SegmentDataset(torch.utils.data.Dataset):
    """Fixed-length crops of ``sequences`` for training.

    Item i is a dict: ``template [V, 3]``, ``geom [T, V, 3]`` (T = ``segment_frames``),
    ``windows [T, 16000]`` (the audio window of each frame, from
    ``meshtalk_fast.audio_windows(seq.audio, fps, clock)``), ``name``, ``subject`` and ``start`` (the
    crop's first frame). Crops start every ``stride`` frames (default: ``segment_frames``, no overlap).

    Windows are computed once per sequence here, so ``__getitem__`` only slices. With
    ``clock="released"`` they are a strided view of the padded audio (no extra memory); with
    ``clock="exact"`` they are materialised: 64 kB per frame, ~115 MB per minute at 30 fps.

    Each sequence must be at ``fps``; its mesh frame count must match the audio's
    ``num_frames(len(audio), fps, clock)`` within ``tolerance`` frames (both are trimmed to the
    shorter), otherwise ``on_error="raise"`` raises ``ValueError`` naming it and ``"skip"`` skips it
    with a warning. Sequences shorter than one segment are skipped with a logged warning.
    """

    def __init__(self, sequences: Iterable[FaceSequence], segment_frames: int = 32, fps: int = 30,
                 clock: str = "released", stride: Optional[int] = None, tolerance: int = DEFAULT_TOLERANCE,
                 on_error: str = "raise"):
        self.segment_frames = check_positive_int("segment_frames", segment_frames)
        self.fps = check_positive_int("fps", fps, maximum=1000)
        check_choice("clock", clock, ("released", "exact"))
        check_choice("on_error", on_error, ("raise", "skip"))
        self.stride = self.segment_frames if stride is None else check_positive_int("stride", stride)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise ValueError(f"tolerance must be a non-negative integer number of frames, got {tolerance!r}")
        self.clock = clock
        self.sequences: List[FaceSequence] = []
        self.windows: List[torch.Tensor] = []
        self.index: List[tuple] = []
        self.skipped_short: List[str] = []
        for seq in _iterate(sequences):
            if not isinstance(seq, FaceSequence):
                raise TypeError(f"sequences must yield FaceSequence objects, got {type(seq).__name__}")
            where = f"sequence {seq.name!r}" + (f" ({seq.meta['path']})" if "path" in seq.meta else "")
            if seq.fps != self.fps:
                handle_error(on_error, ValueError(f"{where} is at {seq.fps} fps, expected fps={self.fps}; "
                                                  "convert it first with meshtalk_fast.data.resample_fps"))
                continue
            T_mesh = seq.geom.shape[0]
            T_audio = num_frames(seq.audio.shape[0], fps, clock)
            if abs(T_mesh - T_audio) > tolerance:
                handle_error(on_error, ValueError(
                    f"{where}: {T_mesh} mesh frames do not match the {T_audio} audio frames "
                    f"({seq.audio.shape[0]} samples at {fps} fps, clock {clock!r}); expected a difference of at "
                    f"most {tolerance} frames, found {abs(T_mesh - T_audio)}"))
                continue
            T = min(T_mesh, T_audio)
            if T < self.segment_frames:
                log.warning("SegmentDataset: skipping %s: %d frames, shorter than segment_frames=%d",
                            where, T, self.segment_frames)
                self.skipped_short.append(seq.name)
                continue
            k = len(self.sequences)
            self.sequences.append(seq)
            self.windows.append(audio_windows(seq.audio, fps, clock)[:T])
            self.index.extend((k, s) for s in range(0, T - self.segment_frames + 1, self.stride))
        if self.skipped_short:
            warnings.warn(f"SegmentDataset skipped {len(self.skipped_short)} sequence(s) shorter than "
                          f"{self.segment_frames} frames: {', '.join(self.skipped_short[:10])}"
                          + (" ..." if len(self.skipped_short) > 10 else ""), stacklevel=2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        if not -len(self.index) <= i < len(self.index):
            raise IndexError(f"SegmentDataset index {i} out of range for {len(self.index)} crops")
        k, start = self.index[i]
        seq, stop = self.sequences[k], start + self.segment_frames
        return {"template": seq.template, "geom": seq.geom[start:stop], "windows": self.windows[k][start:stop],
                "name": seq.name, "subject": seq.subject, "start": start}


def _iterate(sequences):
    """Iterate a list, a generator or a map-style data set with ``__len__`` / ``__getitem__``."""
    if hasattr(sequences, "__len__") and hasattr(sequences, "__getitem__") and not isinstance(sequences, (list, tuple)):
        return (sequences[i] for i in range(len(sequences)))
    return iter(sequences)
