"""The built-in SpeechFace data set: eSpeak synthesis, the viseme rig, splits, crops, the folder format."""
import json
import logging

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.data import (FaceSequence, SegmentDataset, SpeechFaceSet, Voice, articulation_curves, blink_curve,
                                brow_curve, load_folder_masks, load_folder_template, load_meshtalk_masks, make_dataset,
                                phoneme_targets, procedural_face, read_folder, synthesize)
from meshtalk_fast.data.espeak import EspeakError
from meshtalk_fast.data.face_rig import FaceRig
from meshtalk_fast.data.viseme_rig import CHANNELS, is_pause

VOICE = Voice("en-us", rate=170, pitch=50)
HELD_OUT = Voice("en-gb-x-rp+m2", rate=160, pitch=45)
SMALL = dict(n_sentences=3, voices=[VOICE], held_out_voices=[HELD_OUT])
OPEN_VOWELS = {"a", "a#", "A:", "aa", "aI", "aU", "A@"}
BILABIALS = {"p", "b", "m"}


@pytest.fixture(scope="module")
def meshtalk_face(assets):
    template, faces = mf.load_obj(assets / "face_template.obj")
    return template, faces, load_meshtalk_masks(assets)


@pytest.fixture(scope="module")
def meshtalk_rig(meshtalk_face):
    template, _, masks = meshtalk_face
    return FaceRig(template, masks)


@pytest.fixture(scope="module")
def utterance():
    return synthesize("Papa bought a big map, and Bob had a nap.", VOICE, seed=1)


# ---- eSpeak --------------------------------------------------------------------------------------
def test_espeak_synthesis_is_deterministic(utterance):
    assert utterance.sample_rate == 22050
    assert utterance.samples.dtype == np.int16 and utterance.duration > 1.0
    assert np.abs(utterance.samples.astype(np.float64)).mean() > 100  # real speech, not silence
    synthesize("Something else first, to disturb any state.", Voice("en+m3", rate=200, pitch=30), seed=9)
    again = synthesize(utterance.text, VOICE, seed=1)
    np.testing.assert_array_equal(again.samples, utterance.samples)
    np.testing.assert_array_equal(again.starts, utterance.starts)
    assert again.phonemes == utterance.phonemes
    fresh = synthesize(utterance.text, VOICE, seed=1, isolation="process")  # one new process per utterance
    np.testing.assert_array_equal(fresh.samples, utterance.samples)
    other = synthesize(utterance.text, Voice("en-us", rate=120, pitch=50), seed=1)
    assert other.samples.shape[0] > utterance.samples.shape[0] * 1.2  # slower speech is longer


def test_phoneme_events_are_monotonic_and_inside_the_audio(utterance):
    n = utterance.samples.shape[0]
    starts, ends = utterance.starts, utterance.ends
    assert starts.shape == ends.shape == (len(utterance.phonemes),)
    assert (np.diff(starts) >= 0).all() and (ends >= starts).all()
    assert starts[0] >= 0 and ends[-1] == n
    names = [p.lstrip("',%=") for p in utterance.phonemes]
    assert sum(p in BILABIALS for p in names) >= 6 and any(p in OPEN_VOWELS for p in names)
    # the speech energy lies inside the spoken (non-pause) phonemes
    x = utterance.samples.astype(np.float64) ** 2
    spoken = np.zeros(n, bool)
    for s, e, p in zip(starts, ends, utterance.phonemes):
        spoken[s:e] |= not is_pause(p)
    assert x[spoken].sum() > 0.95 * x.sum()


def test_espeak_rejects_unknown_voice_and_bad_text():
    with pytest.raises(EspeakError, match="no-such-voice"):
        synthesize("Hello.", Voice("no-such-voice"))
    with pytest.raises(EspeakError, match="no voice variant 'zzz'"):
        synthesize("Hello.", Voice("en-us+zzz"))
    with pytest.raises(ValueError, match="text"):
        synthesize("   ", VOICE)
    with pytest.raises(ValueError, match="Voice.rate"):
        Voice("en-us", rate=20)


# ---- viseme rig ----------------------------------------------------------------------------------
def test_phoneme_targets_strip_stress_and_know_pauses():
    assert phoneme_targets("'aI") == phoneme_targets("aI") == phoneme_targets(",aI")
    assert phoneme_targets("p")[3] == 1.0 and phoneme_targets("f")[4] == 1.0
    assert phoneme_targets("A:")[0] > 0.8 > phoneme_targets("m")[0]
    assert is_pause("_:") and is_pause("_") and not is_pause("@")
    assert phoneme_targets("'zz9")[0] > 0 and phoneme_targets("O#")[0] > 0  # unknown -> generic


def _lip_gap(geom, template, masks):
    """Mean height of the upper-lip minus the lower-lip vertices near the midline, per frame: [T]."""
    mouth = masks.mouth.numpy()
    w = mouth ** 4
    centre = (w[:, None] * template.numpy()).sum(0) / w.sum()
    rel = template.numpy() - centre
    near = (np.abs(rel[:, 0]) < 4) & (mouth > 0.99) & (rel[:, 2] > 0)
    upper = near & (rel[:, 1] > 0.5) & (rel[:, 1] < 8)
    lower = near & (rel[:, 1] < -0.5) & (rel[:, 1] > -8)
    assert upper.sum() >= 3 and lower.sum() >= 3
    g = geom.numpy()
    return g[:, upper, 1].mean(1) - g[:, lower, 1].mean(1)


def test_viseme_rig_opens_the_jaw_for_open_vowels_not_bilabials(utterance, meshtalk_face, meshtalk_rig):
    template, _, masks = meshtalk_face
    fps = 30
    audio = mf.load_audio(utterance.samples / 32768.0, sample_rate=utterance.sample_rate)
    T = mf.num_frames(audio.shape[0], fps, "exact")
    starts, ends = utterance.times()
    curves = articulation_curves(starts, ends, utterance.phonemes, T, fps)
    geom = meshtalk_rig.deform(curves)
    assert geom.shape == (T, template.shape[0], 3) and geom.dtype == torch.float32
    gap = _lip_gap(geom, template, masks) - _lip_gap(template[None], template, masks)
    frame = lambda s, e: min(T - 1, int(0.5 * (s + e) * fps))  # noqa: E731  the frame holding the centre
    names = [p.lstrip("',%=") for p in utterance.phonemes]
    open_gap = [gap[frame(s, e)] for s, e, p in zip(starts, ends, names) if p in OPEN_VOWELS]
    closed_gap = [gap[frame(s, e)] for s, e, p in zip(starts, ends, names) if p in BILABIALS]
    assert len(open_gap) >= 3 and len(closed_gap) >= 6
    assert np.mean(open_gap) > 6.0  # mm: the mouth is clearly open on a, aI, ...
    assert max(closed_gap) < 1.0  # and closed (or pressed) on every p, b, m
    assert np.mean(open_gap) > np.mean(closed_gap) + 6.0


def test_rig_rest_pose_is_the_template(meshtalk_face, meshtalk_rig):
    template = meshtalk_face[0]
    rest = meshtalk_rig.deform({k: np.zeros(2) for k in CHANNELS})
    torch.testing.assert_close(rest, template[None].expand(2, -1, -1), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="unknown channels"):
        meshtalk_rig.deform({"smile": np.zeros(2)})


def test_blinks_move_the_eyes_and_not_the_mouth(meshtalk_face, meshtalk_rig):
    template, _, masks = meshtalk_face
    geom = meshtalk_rig.deform({"blink": np.array([0.0, 1.0]), "brow": np.zeros(2)})
    shift = (geom[1] - template).norm(dim=-1)
    keypoints = masks.eye_keypoints > 0
    upper_lid = keypoints & (template[:, 1] > template[keypoints, 1].mean())
    assert shift[upper_lid].mean() > 4.0  # mm: the upper lid comes down over the eye
    assert float(shift[masks.mouth > 0.5].max()) == 0.0
    assert float(shift[masks.neck > 0.5].max()) == 0.0
    brow = meshtalk_rig.deform({"brow": np.array([1.0])})[0] - template
    assert float(brow[masks.forehead > 0.5, 1].mean()) > 1.0 and float(brow[masks.mouth > 0.5].abs().max()) == 0.0
    jaw = meshtalk_rig.deform({"jaw": np.array([1.0])})[0] - template
    assert float(jaw[masks.eye > 0.5].abs().max()) == 0.0 and float(jaw[masks.mouth > 0.5].norm(dim=-1).max()) > 10


def test_upper_face_curves_are_random_events_of_the_stated_shape():
    fps, T = 30, 30 * 60
    blinks = blink_curve(T, fps, np.random.default_rng(3))
    onsets = np.nonzero((blinks[1:] > 0) & (blinks[:-1] == 0))[0]
    gaps = np.diff(onsets) / fps
    assert 9 <= onsets.size <= 31 and gaps.min() > 1.7 and gaps.max() < 6.3
    assert blinks.max() > 0.7 and blinks.min() == 0.0
    assert np.mean(blinks > 0.05) < 0.15  # eyes are open most of the time
    brows = brow_curve(T, fps, np.random.default_rng(3))
    assert brows.max() > 0.3 and brows.min() == 0.0
    np.testing.assert_array_equal(blinks, blink_curve(T, fps, np.random.default_rng(3)))


# ---- procedural faces ----------------------------------------------------------------------------
def test_procedural_faces_share_topology_and_vary_in_shape():
    v0, f0, m0 = procedural_face(0)
    v1, f1, m1 = procedural_face(1)
    assert 2000 <= v0.shape[0] <= 8000 and v0.shape == v1.shape and torch.equal(f0, f1)
    assert int(f0.min()) == 0 and int(f0.max()) == v0.shape[0] - 1
    assert torch.equal(procedural_face(0)[0], v0)
    assert float((v0 - v1).norm(dim=-1).mean()) > 1.0
    for name in ("mouth", "eye", "forehead", "neck", "lips", "upper_face", "eye_keypoints"):
        w = getattr(m0, name)
        assert w.shape == (v0.shape[0],) and 0 <= float(w.min()) and float(w.max()) == 1.0
    assert 20 <= int(m0.eye_keypoints.sum()) <= 62
    with pytest.raises(ValueError, match="n_subject_seed"):
        procedural_face(-1)


# ---- the data set ---------------------------------------------------------------------------------
def test_held_out_splits_are_disjoint():
    sets = {split: SpeechFaceSet(split=split) for split in ("train", "val", "test")}
    sentences = {k: {s for s, _ in ds.items} for k, ds in sets.items()}
    assert not sentences["train"] & sentences["val"] and not sentences["train"] & sentences["test"]
    assert not sentences["val"] & sentences["test"]
    assert sentences["train"] | sentences["val"] | sentences["test"] == set(range(62))
    held = {v.id for v in sets["train"].held_out_voices}
    subjects = {k: {ds.all_voices[v].id for _, v in ds.items} for k, ds in sets.items()}
    assert held and held <= subjects["test"] and not held & (subjects["train"] | subjects["val"])
    names = [ds.name(i) for ds in sets.values() for i in range(len(ds))]
    assert len(names) == len(set(names))
    texts = {k: {ds.sentences[s] for s in sentences[k]} for k, ds in sets.items()}
    assert not texts["train"] & (texts["val"] | texts["test"])
    other = SpeechFaceSet(split="test", seed=1)
    assert {s for s, _ in other.items} != sentences["test"]  # the split follows the seed


def test_same_seed_gives_identical_audio_and_meshes():
    a = SpeechFaceSet(seed=7, **SMALL)[0]
    SpeechFaceSet(seed=8, **SMALL, split="test")[1]  # something else in between
    b = SpeechFaceSet(seed=7, **SMALL)[0]
    assert isinstance(a, FaceSequence) and a.name == b.name and a.subject == VOICE.id
    assert torch.equal(a.audio, b.audio) and torch.equal(a.geom, b.geom) and torch.equal(a.template, b.template)
    assert abs(float(a.audio.abs().mean()) - 0.01) < 1e-6  # the released loudness normalisation
    assert a.geom.shape[0] == mf.num_frames(a.audio.shape[0], 30, "exact")
    c = SpeechFaceSet(seed=8, **SMALL)[0]
    assert not torch.equal(a.template, c.template)  # another seed: other faces (and other motion)


def test_segment_dataset_shapes_and_checks(caplog):
    seq = SpeechFaceSet(seed=3, **SMALL)[0]
    T, V = seq.geom.shape[:2]
    ds = SegmentDataset([seq], segment_frames=32)
    assert len(ds) == (T - 32) // 32 + 1
    item = ds[len(ds) - 1]
    assert item["geom"].shape == (32, V, 3) and item["windows"].shape == (32, 16000)
    assert item["template"].shape == (V, 3) and item["name"] == seq.name
    start = item["start"]
    torch.testing.assert_close(item["windows"], mf.audio_windows(seq.audio)[start:start + 32], atol=0, rtol=0)
    assert torch.equal(item["geom"], seq.geom[start:start + 32])
    T_released = min(T, mf.num_frames(seq.audio.shape[0]))
    assert len(SegmentDataset([seq], segment_frames=16, stride=4)) == (T_released - 16) // 4 + 1
    exact = SegmentDataset([seq], segment_frames=8, clock="exact")[2]
    assert torch.equal(exact["windows"], mf.audio_windows(seq.audio, clock="exact")[16:24])
    batch = next(iter(torch.utils.data.DataLoader(SegmentDataset([seq, seq], segment_frames=16), batch_size=3)))
    assert batch["geom"].shape == (3, 16, V, 3) and batch["windows"].shape == (3, 16, 16000)
    # too short: skipped with a logged warning naming it
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match=seq.name):
        assert len(SegmentDataset([seq], segment_frames=T + 5)) == 0
    assert seq.name in caplog.text
    # mesh and audio lengths disagree: refused (or skipped), never mis-aligned
    bad = FaceSequence("bad_one", "s", seq.template, seq.geom[:-6], seq.audio, 30)
    with pytest.raises(ValueError, match="bad_one.*at most 2 frames"):
        SegmentDataset([bad], segment_frames=8)
    with pytest.warns(UserWarning, match="bad_one"):
        assert len(SegmentDataset([bad, seq], segment_frames=8, on_error="skip").sequences) == 1
    within = FaceSequence("close_one", "s", seq.template, seq.geom[:-1], seq.audio, 30)
    assert len(SegmentDataset([within], segment_frames=8).sequences) == 1
    with pytest.raises(ValueError, match="25 fps"):
        SegmentDataset([FaceSequence("slow", "s", seq.template, seq.geom, seq.audio, 25)])


def test_make_dataset_round_trips_through_the_folder_reader(tmp_path, monkeypatch):
    root = tmp_path / "speechface"
    config = make_dataset(root, seed=2, **SMALL)
    assert {k: len(v) for k, v in config["splits"].items()} == {"train": 1, "val": 1, "test": 2}
    stored = json.loads((root / "dataset.json").read_text())
    assert stored["splits"] == config["splits"] and stored["template"] == "procedural"
    template, faces = load_folder_template(root)
    assert template.shape[0] == procedural_face(0)[0].shape[0] and faces.shape[1] == 3
    masks = load_folder_masks(root)
    assert torch.equal(masks.mouth, procedural_face(0)[2].mouth)
    for split in ("train", "val", "test"):
        generated = SpeechFaceSet(seed=2, split=split, **SMALL)
        read = list(read_folder(root, split))
        assert [s.name for s in read] == sorted(generated.name(i) for i in range(len(generated)))
        by_name = {generated.name(i): generated[i] for i in range(len(generated))}
        for seq in read:
            ref = by_name[seq.name]
            assert seq.subject == ref.subject and seq.fps == 30 and seq.meta["text"] == ref.meta["text"]
            assert torch.equal(seq.template, ref.template) and torch.equal(seq.geom, ref.geom)
            torch.testing.assert_close(seq.audio, ref.audio, atol=1e-6, rtol=1e-5)
    # a root folder is reused without synthesising again
    monkeypatch.setattr("meshtalk_fast.data.speechface.synthesize", lambda *a, **k: pytest.fail("re-synthesised"))
    cached = SpeechFaceSet(root=root, seed=2, split="test", **SMALL)
    assert len(cached) == 2 and torch.equal(cached[1].geom, by_name[cached.name(1)].geom)
    with pytest.raises(ValueError, match="seed"):
        SpeechFaceSet(root=root, seed=3, **SMALL)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_dataset(root, seed=2, **SMALL)


def test_faces_per_voice_gives_each_voice_several_faces(tmp_path):
    one = SpeechFaceSet(seed=2, split="test", n_sentences=6, voices=[VOICE], held_out_voices=[HELD_OUT])
    two = SpeechFaceSet(seed=2, split="test", n_sentences=6, voices=[VOICE], held_out_voices=[HELD_OUT],
                        faces_per_voice=2)
    assert one.items == two.items and [one.name(i) for i in range(len(one))] == [two.name(i) for i in range(len(two))]
    # face 0 of each voice is the face the voice had before; face 1 is another one
    assert torch.equal(two.subject(0, 0)[0], one.subject(0)[0])
    assert float((two.subject(0, 1)[0] - two.subject(0, 0)[0]).norm(dim=-1).mean()) > 1.0
    assert not torch.equal(two.subject(1, 1)[0], two.subject(0, 1)[0])  # every voice's faces are its own
    for s, v in two.items:
        assert two.subject_id(s, v) == f"{two.all_voices[v].id}_face{s % 2}"
        assert one.subject_id(s, v) == one.all_voices[v].id
    s, v = two.items[0]
    seq_one, seq_two = one[0], two[0]
    assert seq_two.subject == two.subject_id(s, v)
    assert torch.equal(seq_two.template, two.subject(v, s % 2)[0])
    # the same speech; the same meshes on face 0, another face's when s is odd
    assert torch.equal(seq_one.audio, seq_two.audio)
    assert torch.equal(seq_one.geom, seq_two.geom) == (s % 2 == 0)
    assert torch.equal(seq_one.template, seq_two.template) == (s % 2 == 0)
    # the folder holds one template per (voice, face) and reads back the same sequences
    root = tmp_path / "two"
    config = make_dataset(root, seed=2, n_sentences=6, voices=[VOICE], held_out_voices=[HELD_OUT], faces_per_voice=2)
    assert config["faces_per_voice"] == 2 and "faces_per_voice" not in one.config()
    read = {q.name: q for q in read_folder(root, "test")}
    subjects = {q.subject for q in read.values()}
    assert len(subjects) == len({two.subject_id(s, v) for s, v in two.items}) > 1
    back = read[seq_two.name]
    assert torch.equal(back.template, seq_two.template) and torch.equal(back.geom, seq_two.geom)
    assert {p.stem for p in (root / "templates").iterdir()} >= subjects
    cached = SpeechFaceSet(root=root, seed=2, split="test", n_sentences=6, voices=[VOICE], held_out_voices=[HELD_OUT],
                           faces_per_voice=2)
    assert torch.equal(cached[0].template, seq_two.template)
    with pytest.raises(ValueError, match="faces_per_voice"):  # the folder was made with 2
        SpeechFaceSet(root=root, seed=2, n_sentences=6, voices=[VOICE], held_out_voices=[HELD_OUT])
    # bad values name the argument
    with pytest.raises(ValueError, match="faces_per_voice"):
        SpeechFaceSet(faces_per_voice=0)
    with pytest.raises(ValueError, match="face_index must be in \\[0, 2\\)"):
        two.subject(0, 2)


def test_faces_per_voice_needs_the_procedural_faces(assets):
    with pytest.raises(ValueError, match="faces_per_voice must be 1 with a template"):
        SpeechFaceSet(template=assets / "face_template.obj", masks=assets, faces_per_voice=3, **SMALL)
    from meshtalk_fast.training.setup import dataset_options

    with pytest.raises(ValueError, match="--faces-per-voice must be 1 with --template"):
        dataset_options(template=str(assets / "face_template.obj"), masks=str(assets), faces_per_voice=2)
    kwargs, _ = dataset_options(seed=1, faces_per_voice=3)
    assert kwargs["faces_per_voice"] == 3
    assert "faces_per_voice" not in dataset_options(seed=1)[0]


def test_speechface_on_the_meshtalk_template(tmp_path, meshtalk_face, assets):
    template, faces, masks = meshtalk_face
    ds = SpeechFaceSet(template=assets / "face_template.obj", masks=assets, split="val", seed=4, **SMALL)
    seq = ds[0]
    assert torch.equal(seq.template, template) and seq.geom.shape[1:] == (6172, 3)
    moved = (seq.geom - template).norm(dim=-1).amax(0)
    assert float(moved[masks.mouth > 0.9].mean()) > 2.0  # the mouth talks
    with pytest.raises(ValueError, match="masks must be given"):
        SpeechFaceSet(template=template, **SMALL)
    with pytest.raises(ValueError, match="faces"):
        make_dataset(tmp_path / "x", template=template, masks=masks, **SMALL)
