"""The setup shared by ``meshtalk-fast train`` / ``evaluate`` and the quick start: a plain-folder data set
-> aligned clips and masks, and the options of the built-in data set (``make_dataset``) with their rules."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

from ..data import FaceMasks, load_folder_masks, load_masks, read_folder
from .batches import Clip, align
from .trainer import TrainingMasks

__all__ = ["folder_clips", "folder_masks", "training_masks", "dataset_options", "has_split"]


def folder_clips(data: str, split: str, model_config, required: bool = True) -> List[Clip]:
    """The sequences of ``data/<split>`` aligned to ``model_config``'s fps and clock (a ``MeshTalkConfig``,
    or a ``TrainConfig`` whose ``model`` is one). ``required``: an empty split is an error."""
    mc = model_config.model if hasattr(model_config, "model") else model_config
    clips = [align(s.name, s.template, s.geom, s.audio, mc.fps, mc.clock) for s in read_folder(data, split, mmap=False)]
    if required and not clips:
        raise ValueError(f"data set {data!r} has no sequences in split {split!r}")
    return clips


def folder_masks(data: str) -> FaceMasks:
    """``data/masks`` (mouth, eye, eye_keypoints, forehead, neck, ...); an error when the folder is missing."""
    fm = load_folder_masks(data)
    if fm is None:
        raise FileNotFoundError(f"data set {data!r} has no masks/ folder (mouth, eye, eye_keypoints, forehead, neck)")
    return fm


def training_masks(fm: FaceMasks) -> TrainingMasks:
    """The weights the trainer needs, from a data set's masks."""
    return TrainingMasks(fm.mouth, fm.eye, fm.eye_keypoints, fm.lips, fm.upper_face, fm.forehead)


def dataset_options(seed: int = 0, n_sentences: Optional[int] = None, template: Optional[str] = None,
                    masks: Optional[str] = None, rig: Optional[str] = None, rig_map: Optional[str] = None,
                    report: Callable[[str], None] = print,
                    faces_per_voice: Optional[int] = None) -> Tuple[Dict[str, object], object]:
    """``make_dataset``'s keyword arguments for the built-in data set on the procedural face, a user template
    (``template`` + its ``masks`` folder) or an ARKit rig (``rig``, optional ``rig_map`` and ``masks``), with
    the rules between them checked. ``faces_per_voice``: procedural faces per voice (None: 1; more than 1 with a
    template or rig is an error). Returns (kwargs, the loaded rig or None); the rig's report goes to ``report``."""
    if rig_map and not rig:
        raise ValueError("--rig-map needs --rig (the rig it maps)")
    if faces_per_voice not in (None, 1) and (rig or template):
        raise ValueError(f"--faces-per-voice must be 1 with --{'rig' if rig else 'template'} (one face), got "
                         f"{faces_per_voice}; more faces per voice need the procedural faces")
    kwargs: Dict[str, object] = dict(seed=seed, n_sentences=n_sentences)
    if faces_per_voice is not None:
        kwargs["faces_per_voice"] = faces_per_voice
    if rig:
        from ..data.arkit_rig import load_arkit_rig

        if template:
            raise ValueError("--rig and --template exclude each other: the rig's neutral mesh is the template")
        arkit_rig = load_arkit_rig(rig, rig_map)
        report(arkit_rig.report())
        kwargs.update(rig=arkit_rig, masks=load_masks(masks, arkit_rig.n_vertices) if masks else None)
        return kwargs, arkit_rig
    if (template is None) != (masks is None):
        raise ValueError("--template and --masks go together: a user template needs its mask folder")
    if template:
        kwargs.update(template=template, masks=load_masks(masks))
    return kwargs, None


def has_split(data: str, split: str) -> bool:
    return os.path.isdir(os.path.join(data, split))
