"""Data sets for training MeshTalk, all producing one sample format (``FaceSequence``).

- ``base``: ``FaceSequence``, ``FaceMasks`` (+ ``load_meshtalk_masks``), ``SegmentDataset`` (training crops).
- ``speechface``: a built-in speech-to-face set that needs no download (eSpeak NG speech, a viseme
  rig, random blinks and brow raises, procedural or user templates): ``SpeechFaceSet``, ``make_dataset``.
- ``readers``: Multiface, VOCASET, BIWI and our plain folder format (``folder``).
"""
from .base import (DEFAULT_TOLERANCE, FaceMasks, FaceSequence, SegmentDataset, align_sequence, load_masks,
                   load_meshtalk_masks, resample_fps)
from .espeak import EspeakError, Utterance, Voice, synthesize
from .face_rig import FaceRig
from .folder import load_folder_masks, load_folder_template, read_folder, write_folder_sequence, write_obj
from .procedural_face import procedural_face, procedural_face_rig
from .readers import read_biwi, read_multiface, read_vocaset
from .speechface import DEFAULT_VOICES, HELD_OUT_VOICES, SENTENCES, SpeechFaceSet, make_dataset
from .viseme_rig import CHANNELS, Style, articulation_curves, blink_curve, brow_curve, phoneme_targets

__all__ = [
    "DEFAULT_TOLERANCE", "FaceMasks", "FaceSequence", "SegmentDataset", "align_sequence", "load_masks",
    "load_meshtalk_masks", "resample_fps", "EspeakError", "Utterance", "Voice", "synthesize", "FaceRig",
    "load_folder_masks", "load_folder_template", "read_folder", "write_folder_sequence", "write_obj",
    "procedural_face", "procedural_face_rig", "read_biwi", "read_multiface", "read_vocaset", "DEFAULT_VOICES",
    "HELD_OUT_VOICES", "SENTENCES", "SpeechFaceSet", "make_dataset", "CHANNELS", "Style", "articulation_curves",
    "blink_curve", "brow_curve", "phoneme_targets",
]
