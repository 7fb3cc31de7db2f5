"""SpeechFace: a built-in speech-to-face data set that needs no download.

Speech: eSpeak NG (``espeak.synthesize``) speaks ``SENTENCES`` with several voices; each voice
(an eSpeak voice + variant, a rate and a pitch) is one subject. Audio is resampled from 22050 Hz to
16 kHz and normalised with the released rule (``meshtalk_fast.load_audio``).
Mouth: eSpeak's phoneme events drive a viseme rig (``viseme_rig.articulation_curves``) that deforms
the template (``face_rig.FaceRig``): jaw, rounding, spreading, bilabial closure, labiodentals.
Upper face: blinks and brow raises drawn from their own seeded random stream, independent of the
speech: exactly the part of the motion that audio cannot predict.
Templates: by default every subject gets its own procedural face (``procedural_face``); or pass
any template with its masks (e.g. the MeshTalk template and its released masks). With procedural faces,
``faces_per_voice = k > 1`` gives each voice k faces: sentence s is spoken with face ``s % k``, and each
(voice, face) pair is a subject of its own (``<voice id>_face<f>``). The amount of data stays the same; the
number of faces a model learns from grows k-fold, so it can generalise to the held-out voice's new face
(the quick start uses it: benchmarks/RESULTS.md, "More faces"). k = 1 is the data set as it always was.

Splits: sentences are shuffled with the seed; 10 % go to "val", 10 % to "test" (at least one each),
the rest to "train". "train" and "val" use the training voices; "test" uses them plus the held-out
voices, which appear nowhere else. Everything is a function of the arguments: the same seed gives
identical audio and meshes (for a given espeakng-loader release, recorded in dataset.json).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..base.checks import check_choice, check_positive_int
from ..ops.audio import SAMPLE_RATE, load_audio
from ..ops.frame_clock import num_frames
from ..io.mesh import load_obj
from .base import FaceMasks, FaceSequence, align_sequence, load_masks
from .espeak import Voice, synthesize
from .face_rig import FaceRig
from .folder import load_folder_template, read_folder_sequence, write_folder_sequence, write_folder_template
from .procedural_face import canonical_face, procedural_face, procedural_face_rig
from .viseme_rig import Style, articulation_curves, blink_curve, brow_curve

__all__ = ["SENTENCES", "DEFAULT_VOICES", "HELD_OUT_VOICES", "SPLITS", "SpeechFaceSet", "make_dataset",
           "folder_differences"]

SPLITS = ("train", "val", "test")
FORMAT = "meshtalk_fast.speechface/1"

SENTENCES = (
    "The big brown bear ate a bowl of berries by the river.",
    "Please pass me the map before the meeting begins.",
    "We watched the waves wash over the warm white sand.",
    "My father found five violins in the old barn.",
    "She sells fresh fish at the market every Monday morning.",
    "How many apples did you buy at the farm yesterday?",
    "The quiet mouse moved under the wooden bench.",
    "Open the window and let the cool evening air inside.",
    "A pair of purple boots stood beside the door.",
    "Few people knew about the secret path through the forest.",
    "Bob baked a batch of bread for the whole neighbourhood.",
    "Would you like tea or coffee with your breakfast?",
    "The children laughed loudly at the silly puppet show.",
    "Every morning I walk my dog along the river bank.",
    "Thick fog covered the valley until almost noon.",
    "Maybe we should meet at the museum on Thursday.",
    "The pilot announced a short delay because of the weather.",
    "Blue balloons floated above the crowded city square.",
    "I have never seen such a beautiful sunset over the ocean.",
    "The old clock in the hall stopped at midnight.",
    "Fifty five fast foxes fled from the farmer's field.",
    "Put the books back on the top shelf, please.",
    "Our team won the final match by a single point.",
    "The baby smiled when her mother hummed a gentle tune.",
    "Turn left at the bakery and walk two more blocks.",
    "Music filled the room as the band began to play.",
    "Who moved my umbrella from the hook by the door?",
    "Several sailors waved from the deck of the ship.",
    "The museum opens at nine and closes at five.",
    "Warm soup is perfect on a cold and windy afternoon.",
    "A bright moon rose slowly above the mountains.",
    "Please remember to buy milk, butter and bananas.",
    "The farmer moved his sheep to the upper meadow.",
    "Which way is the quickest route to the airport?",
    "Heavy rain flooded the streets of the small village.",
    "My brother plays the piano better than anyone I know.",
    "The lamp on the table flickered and went out.",
    "We found a map hidden inside an old wooden box.",
    "Jump over the puddle before your shoes get wet.",
    "The painter mixed blue and yellow to make green.",
    "Many birds fly south when the autumn leaves fall.",
    "Could you open the blinds and let the sunshine in?",
    "The wolf howled at the full moon all night long.",
    "Peter bought a pound of peaches at the market.",
    "Our neighbours planted roses along the garden fence.",
    "Who wants to hear a story about a brave knight?",
    "The soup was too hot, so we waited a moment.",
    "A few boats bobbed gently in the harbour.",
    "Nobody expected the movie to be so funny.",
    "Move the boxes into the van before it gets dark.",
    "The library was quiet except for the ticking clock.",
    "Oh, what a wonderful surprise to see you here!",
    "I usually wake up early and go for a run.",
    "The bus was full, so we walked all the way home.",
    "Mom made pancakes with maple syrup for breakfast.",
    "Be careful when you cross the busy road.",
    "Two owls watched us from the branch of an oak.",
    "The volcano erupted with a loud booming sound.",
    "Who put the empty bottles back in the fridge?",
    "We will visit our grandparents in the summer.",
    "Bring your umbrella, the sky looks very grey.",
    "A smooth blue pebble lay at the bottom of the pool.",
)

DEFAULT_VOICES = (
    Voice("en-us", rate=165, pitch=45),
    Voice("en-gb-x-rp+f2", rate=150, pitch=62),
    Voice("en-gb-scotland+m3", rate=175, pitch=40),
    Voice("en-029+f4", rate=160, pitch=58),
    Voice("en+m1", rate=185, pitch=48),
    Voice("en-us-nyc+f3", rate=170, pitch=66),
)
HELD_OUT_VOICES = (Voice("en-gb-x-gbclan+m2", rate=158, pitch=52),)


def _split_sentences(n: int, seed: int) -> Dict[str, List[int]]:
    if n < 3:
        raise ValueError(f"n_sentences must be at least 3 (one each for train, val and test), got {n}")
    n_hold = max(1, int(round(0.1 * n)))
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5B117])).permutation(n)
    return {"test": sorted(perm[:n_hold].tolist()), "val": sorted(perm[n_hold:2 * n_hold].tolist()),
            "train": sorted(perm[2 * n_hold:].tolist())}


def _voices(voices, name: str) -> tuple:
    voices = tuple(voices)
    for v in voices:
        if not isinstance(v, Voice):
            raise TypeError(f"{name} must hold Voice objects, got {type(v).__name__}")
    ids = [v.id for v in voices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} must be distinct voices, got ids {ids}")
    return voices


class SpeechFaceSet(torch.utils.data.Dataset):
    """The built-in data set as a sequence of ``FaceSequence`` (generated on access, deterministic).

    root: None (generate in memory on each access) or a folder: the set is written there once in the
        plain folder format (``make_dataset``) and read back (memory-mapped) afterwards.
    n_sentences: use the first n of ``sentences`` (default ``SENTENCES``, 62); voices /
        held_out_voices: training and test-only subjects (default ``DEFAULT_VOICES`` /
        ``HELD_OUT_VOICES``).
    template: None (a procedural face per subject), an OBJ path or a ``[V, 3]`` tensor; then masks
        (``FaceMasks`` or a folder of mask files) is required and faces (``[F, 3]``) optional.
    split: "train", "val" or "test"; fps: mesh frame rate.
    rig: instead of a template, a blendshape rig driven by the curves (``arkit_rig.ArkitRig``: its
        neutral and triangles are the template, its shapes make the meshes); masks then default to
        ``rig.masks()`` (derived from its shapes).
    faces_per_voice: procedural faces per voice (module docstring); 1 with a template or a rig (one face).
    """

    def __init__(self, root=None, n_sentences: Optional[int] = None, voices: Optional[Sequence[Voice]] = None,
                 held_out_voices: Optional[Sequence[Voice]] = None, seed: int = 0, template=None, masks=None,
                 faces=None, split: str = "train", fps: int = 30, sentences: Optional[Sequence[str]] = None,
                 isolation: Optional[str] = None, rig=None, faces_per_voice: int = 1):
        check_choice("split", split, SPLITS)
        self.faces_per_voice = check_positive_int("faces_per_voice", faces_per_voice, maximum=1000)
        if self.faces_per_voice > 1 and (template is not None or rig is not None):
            raise ValueError(f"faces_per_voice must be 1 with a {'rig' if rig is not None else 'template'} (it is "
                             f"one face), got {faces_per_voice}; more faces per voice need the procedural faces")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed, self.split, self.isolation = seed, split, isolation
        self.fps = check_positive_int("fps", fps, maximum=1000)
        all_sentences = tuple(SENTENCES if sentences is None else sentences)
        if any(not isinstance(s, str) or not s.strip() for s in all_sentences):
            raise ValueError("sentences must be non-empty strings")
        if len(set(all_sentences)) != len(all_sentences):
            raise ValueError("sentences must be distinct (a repeated sentence could fall into two splits)")
        n = len(all_sentences) if n_sentences is None else check_positive_int("n_sentences", n_sentences)
        if n > len(all_sentences):
            raise ValueError(f"n_sentences must be at most {len(all_sentences)} (the sentences given), got {n}")
        self.sentences = all_sentences[:n]
        self.splits = _split_sentences(n, seed)
        self.voices = _voices(DEFAULT_VOICES if voices is None else voices, "voices")
        self.held_out_voices = _voices(HELD_OUT_VOICES if held_out_voices is None else held_out_voices,
                                       "held_out_voices")
        if not self.voices:
            raise ValueError("voices must hold at least one training voice")
        if {v.id for v in self.voices} & {v.id for v in self.held_out_voices}:
            raise ValueError("a held-out voice must not also be a training voice")
        self.all_voices = self.voices + self.held_out_voices
        n_voices = len(self.voices) + (len(self.held_out_voices) if split == "test" else 0)
        self.items = [(s, v) for s in self.splits[split] for v in range(n_voices)]
        self._user = self._user_template(template, masks, faces) if rig is None else \
            self._rig_template(rig, template, masks, faces)
        self._subjects: Dict[tuple, tuple] = {}
        self._templates: Dict[str, torch.Tensor] = {}
        self.root = None
        if root is not None:
            self.root = os.fspath(root)
            _ensure_folder(self)

    # -- templates -------------------------------------------------------------------------------
    @staticmethod
    def _user_template(template, masks, faces):
        if template is None:
            if masks is not None or faces is not None:
                raise ValueError("masks / faces are only used with a template; the procedural faces bring their own")
            return None
        if isinstance(template, (str, os.PathLike)):
            vertices, obj_faces = load_obj(template)
            faces = obj_faces if faces is None else faces
        else:
            vertices = torch.as_tensor(template, dtype=torch.float32)
        if vertices.dim() != 2 or vertices.shape[1] != 3:
            raise ValueError(f"template must have shape [V, 3], got {list(vertices.shape)}")
        if masks is None:
            raise ValueError("masks must be given with a template (FaceMasks or a folder of mask files, e.g. "
                             "the MeshTalk release's weighted_mouth_mask.txt, ...)")
        if not isinstance(masks, FaceMasks):
            masks = load_masks(masks, vertices.shape[0])
        if masks.n_vertices != vertices.shape[0]:
            raise ValueError(f"masks must have V={vertices.shape[0]} entries like the template, got {masks.n_vertices}")
        return vertices.contiguous(), faces, masks, FaceRig(vertices, masks)

    @staticmethod
    def _rig_template(rig, template, masks, faces):
        if template is not None or faces is not None:
            raise ValueError("template / faces are not used with a rig: the rig's neutral mesh and triangles are "
                             "the template")
        if rig.basis.faces is None:
            raise ValueError(f"{rig.source} has no triangles; the data set stores its template as an OBJ mesh")
        if masks is None:
            masks = rig.masks()
        elif not isinstance(masks, FaceMasks):
            masks = load_masks(masks, rig.n_vertices)
        if masks.n_vertices != rig.n_vertices:
            raise ValueError(f"masks must have V={rig.n_vertices} entries like the rig, got {masks.n_vertices}")
        return rig.vertices.contiguous(), rig.basis.faces, masks, rig

    def face_index(self, sentence_index: int) -> int:
        """Which of its voice's faces speaks sentence ``sentence_index`` (0 with one face per voice)."""
        return sentence_index % self.faces_per_voice

    def subject_id(self, sentence_index: int, voice_index: int) -> str:
        """The subject of a (sentence, voice) pair: the voice's id, or ``<id>_face<f>`` with several faces."""
        voice = self.all_voices[voice_index].id
        return voice if self.faces_per_voice == 1 else f"{voice}_face{self.face_index(sentence_index)}"

    def subject(self, voice_index: int, face_index: int = 0) -> tuple:
        """(vertices ``[V, 3]``, faces ``[F, 3]`` or None, ``FaceMasks``, ``FaceRig``) of a subject: the voice's
        face ``face_index`` (face 0 is the one a voice had before ``faces_per_voice``)."""
        if not 0 <= face_index < self.faces_per_voice:
            raise ValueError(f"face_index must be in [0, {self.faces_per_voice}) (faces_per_voice), got {face_index}")
        key = (voice_index, face_index)
        if key not in self._subjects:
            if self._user is not None:
                self._subjects[key] = self._user
            else:
                entropy = [self.seed, 0xFACE, voice_index] + ([face_index] if face_index else [])
                state = np.random.SeedSequence(entropy).generate_state(1)[0]
                vertices, faces, masks = procedural_face(int(state))
                self._subjects[key] = (vertices, faces, masks, procedural_face_rig(vertices, masks))
        return self._subjects[key]

    @property
    def faces(self) -> Optional[torch.Tensor]:
        """Triangles ``[F, 3]`` shared by every subject (None for a user template given without faces)."""
        return self._user[1] if self._user is not None else torch.from_numpy(canonical_face()[1].copy())

    @property
    def masks(self) -> FaceMasks:
        return self._user[2] if self._user is not None else canonical_face()[2]

    def for_split(self, split: str) -> "SpeechFaceSet":
        """The same set (same templates, voices, sentences, seed) restricted to another split."""
        check_choice("split", split, SPLITS)
        other = copy.copy(self)
        n_voices = len(self.voices) + (len(self.held_out_voices) if split == "test" else 0)
        other.split = split
        other.items = [(s, v) for s in self.splits[split] for v in range(n_voices)]
        return other

    def style(self, voice_index: int) -> Style:
        return Style.random(np.random.default_rng(np.random.SeedSequence([self.seed, 0x57, voice_index])))

    def name(self, i: int) -> str:
        s, v = self.items[i]
        return f"{self.all_voices[v].id}__s{s:03d}"

    # -- sequences -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> FaceSequence:
        if not -len(self.items) <= i < len(self.items):
            raise IndexError(f"SpeechFaceSet index {i} out of range for {len(self.items)} sequences")
        if self.root is not None:
            subject = self.subject_id(*self.items[i])
            if subject not in self._templates:
                self._templates[subject] = load_folder_template(self.root, subject)[0]
            return read_folder_sequence(os.path.join(self.root, self.split, self.name(i)), self._templates[subject])
        return self.generate(*self.items[i])

    def generate(self, sentence_index: int, voice_index: int) -> FaceSequence:
        """Synthesise and animate one (sentence, voice) pair."""
        voice, text = self.all_voices[voice_index], self.sentences[sentence_index]
        speech_seed, motion_seed = np.random.SeedSequence(
            [self.seed, 0x5EC, sentence_index, voice_index]).generate_state(2)
        utt = synthesize(text, voice, seed=int(speech_seed % 2 ** 31), isolation=self.isolation)
        raw = load_audio(utt.samples.astype(np.float64) / 32768.0, sample_rate=utt.sample_rate, normalize=False)
        T = num_frames(raw.shape[0], self.fps, "exact")
        # keep whole frames only, then normalise what is kept (so a written file reads back the same)
        audio = load_audio(raw[:-(-T * SAMPLE_RATE // self.fps)], sample_rate=SAMPLE_RATE)
        style = self.style(voice_index)
        starts, ends = utt.times()
        curves = articulation_curves(starts, ends, utt.phonemes, T, self.fps, style)
        rng = np.random.default_rng(motion_seed)  # upper face: its own stream, blind to the speech
        curves["blink"] = blink_curve(T, self.fps, rng, style)
        curves["brow"] = brow_curve(T, self.fps, rng, style)
        vertices, _, _, rig = self.subject(voice_index, self.face_index(sentence_index))
        meta = {"text": text, "sentence_index": sentence_index, "split": self.split,
                "voice": {"name": voice.name, "rate": voice.rate, "pitch": voice.pitch, "range": voice.range},
                "held_out_voice": voice_index >= len(self.voices),
                "phonemes": [[round(float(a), 5), round(float(b), 5), p]
                             for a, b, p in zip(starts, ends, utt.phonemes)]}
        subject = self.subject_id(sentence_index, voice_index)
        seq = FaceSequence(f"{voice.id}__s{sentence_index:03d}", subject, vertices, rig.deform(curves), audio,
                           self.fps, meta)
        return align_sequence(seq, 0)  # a no-op here: states that mesh and audio agree

    def config(self) -> dict:
        """What identifies the generated data (stored as dataset.json by ``make_dataset``)."""
        if self._user is None:
            template = "procedural"
        else:
            digest = hashlib.sha1(self._user[0].numpy().tobytes())
            for f in ("mouth", "eye", "eye_keypoints", "forehead", "neck"):
                digest.update(getattr(self._user[2], f).numpy().tobytes())
            rig = self._user[3]
            if not isinstance(rig, FaceRig):  # a blendshape rig: its shapes and mapping identify the data too
                digest.update(rig.basis.deltas.numpy().tobytes())
                digest.update(json.dumps(rig.used, sort_keys=True).encode())
            template = {"n_vertices": int(self._user[0].shape[0]), "sha1": digest.hexdigest()}
            if not isinstance(rig, FaceRig):
                template["rig"] = {"arkit": rig.used, "unmapped": rig.unmapped}
        config = {"format": FORMAT, "espeak": _espeak_version(), "seed": self.seed, "fps": self.fps,
                  "sentences": list(self.sentences),
                  "voices": [[v.name, v.rate, v.pitch, v.range] for v in self.voices],
                  "held_out_voices": [[v.name, v.rate, v.pitch, v.range] for v in self.held_out_voices],
                  "template": template}
        if self.faces_per_voice > 1:  # absent when 1, so folders written before the option still match
            config["faces_per_voice"] = self.faces_per_voice
        return config


def _espeak_version() -> str:
    """The espeakng-loader release (its library and voice data decide the exact audio)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("espeakng-loader")
    except PackageNotFoundError:
        return "unknown"


def _differences(stored: dict, mine: dict) -> List[str]:
    return sorted(k for k in (set(mine) | set(stored)) - {"splits"} if stored.get(k) != mine.get(k))


def folder_differences(root, **kwargs) -> List[str]:
    """The settings (``dataset.json`` keys: seed, sentences, voices, template, faces_per_voice, ...) in which the
    data set written in ``root`` differs from the one ``make_dataset(root, **kwargs)`` would write; [] when it
    is the same. ``root`` must hold a dataset.json."""
    with open(os.path.join(os.fspath(root), "dataset.json")) as fh:
        stored = json.load(fh)
    return _differences(stored, SpeechFaceSet(None, **kwargs).config())


def _ensure_folder(ds: SpeechFaceSet) -> None:
    path = os.path.join(ds.root, "dataset.json")
    if os.path.isfile(path):
        with open(path) as fh:
            stored = json.load(fh)
        diff = _differences(stored, ds.config())
        if diff:
            raise ValueError(f"{path!r} was made with different settings ({', '.join(diff)} differ); pass a new "
                             "root or call make_dataset(root, ..., overwrite=True)")
        if ds.split not in stored.get("splits", {}):
            raise ValueError(f"{path!r} holds no split {ds.split!r} (it has {sorted(stored.get('splits', {}))})")
        return
    _make(ds, ds.root, SPLITS, overwrite=False)


def make_dataset(out_dir, splits: Sequence[str] = SPLITS, overwrite: bool = False, progress: bool = False,
                 **kwargs) -> dict:
    """Write the SpeechFace set in the plain folder format (see ``meshtalk_fast.data.folder``).

    kwargs: as ``SpeechFaceSet`` (n_sentences, voices, held_out_voices, seed, template, masks, faces,
    fps, sentences). Writes template.obj (procedural: the canonical face, and templates/<subject>.obj
    per subject), masks/, dataset.json (written last) and ``<split>/<name>/`` per sequence.
    overwrite: replace a folder that ``make_dataset`` made before; any other non-empty folder is refused.
    Returns the dataset.json content (with ``splits: {split: [names]}``).
    """
    for split in splits:
        check_choice("splits", split, SPLITS)
    ds = SpeechFaceSet(None, split="train", **kwargs)
    return _make(ds, os.fspath(out_dir), tuple(splits), overwrite, progress)


def _make(ds: SpeechFaceSet, out_dir: str, splits, overwrite: bool, progress: bool = False) -> dict:
    if ds._user is not None and ds._user[1] is None:
        raise ValueError("faces ([F, 3] triangles) must be given with a tensor template: the folder format stores "
                         "the template as template.obj")
    config_path = os.path.join(out_dir, "dataset.json")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.isfile(config_path):
            raise FileExistsError(f"{out_dir!r} is not empty and has no dataset.json (make_dataset did not write "
                                  "it); pass an empty or new folder")
        if not overwrite:
            raise FileExistsError(f"{out_dir!r} already holds a data set ({config_path!r}); pass overwrite=True "
                                  "to replace it or choose a new folder")
        with open(config_path) as fh:
            old = json.load(fh)
        os.remove(config_path)
        for name in list(old.get("splits", {})) + ["masks", "templates"]:
            if os.path.isdir(os.path.join(out_dir, name)):
                shutil.rmtree(os.path.join(out_dir, name))
    os.makedirs(out_dir, exist_ok=True)
    vertices, faces, masks = (ds._user[:3] if ds._user is not None else
                              (torch.from_numpy(canonical_face()[0].astype(np.float32)),
                               torch.from_numpy(canonical_face()[1].copy()), canonical_face()[2]))
    write_folder_template(out_dir, vertices, faces)
    masks.save(os.path.join(out_dir, "masks"))
    config = ds.config()
    config["splits"] = {}
    for split in splits:
        part = ds.for_split(split)
        part.root = None  # generate, never read back what is being written
        names = []
        for i in range(len(part)):
            seq = part[i]
            if ds._user is None:
                s, v = part.items[i]
                if not os.path.isfile(os.path.join(out_dir, "templates", f"{seq.subject}.obj")):
                    write_folder_template(out_dir, seq.template, part.subject(v, part.face_index(s))[1],
                                          subject=seq.subject)
            write_folder_sequence(out_dir, split, seq)
            names.append(seq.name)
            if progress:
                print(f"{split} {i + 1}/{len(part)} {seq.name}", flush=True)
        config["splits"][split] = names
    with open(config_path, "w") as fh:
        json.dump(config, fh, indent=1)
    return config

