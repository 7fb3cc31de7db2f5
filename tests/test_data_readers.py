"""Readers of Multiface, VOCASET, BIWI and the plain folder format, on tiny files written in exactly
each format: good files read back exactly; every malformed file is reported with its path."""
import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

import meshtalk_fast as mf
from meshtalk_fast.data import (FaceSequence, align_sequence, read_biwi, read_folder, read_multiface, read_vocaset,
                                resample_fps, write_folder_sequence, write_obj)
from meshtalk_fast.data.folder import folder_templates, write_folder_template
from meshtalk_fast.data.readers import BIWI_VERTICES, MULTIFACE_VERTICES, VOCASET_VERTICES, load_pickle

RNG = np.random.default_rng(0)


def _speech(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(np.ceil(seconds * rate - 1e-9))) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _obj(path, n_vertices: int) -> torch.Tensor:
    v = torch.from_numpy(RNG.normal(size=(n_vertices, 3)).astype(np.float32))
    write_obj(path, v, torch.tensor([[0, 1, 2]]))
    return v


# ---- Multiface -----------------------------------------------------------------------------------
@pytest.fixture()
def multiface(tmp_path):
    root = tmp_path / "m--20180227--0000--6795937--GHS"
    n_template = 6172
    index = np.sort(RNG.choice(MULTIFACE_VERTICES, n_template, replace=False))
    np.savetxt(tmp_path / "index.txt", index, fmt="%d")
    _obj(tmp_path / "template.obj", n_template)
    raw = {}
    for expr in ("SEN_a_good_morrow", "SEN_youre_boiling_milk"):
        folder = root / "tracked_mesh" / expr
        folder.mkdir(parents=True)
        raw[expr] = RNG.normal(size=(3, MULTIFACE_VERTICES, 3)).astype("<f4")
        for k in range(3):
            raw[expr][k].tofile(folder / f"{102 + k:06d}.bin")
        (root / "audio").mkdir(exist_ok=True)
        sf.write(root / "audio" / f"{expr}.wav", _speech(3 / 30, 48000), 48000, subtype="PCM_24")
    (root / "tracked_mesh" / "E001_Neutral_Eyes_Open").mkdir()  # no audio: not a sentence, not read
    return root, tmp_path / "template.obj", tmp_path / "index.txt", index, raw


def test_multiface_reads_the_tracked_meshes_and_audio(multiface):
    root, template, index_file, index, raw = multiface
    seqs = list(read_multiface(root, template, index_file))
    assert [s.name for s in seqs] == ["SEN_a_good_morrow", "SEN_youre_boiling_milk"]
    seq = seqs[0]
    assert seq.fps == 30 and seq.subject == root.name and seq.template.shape == (6172, 3)
    assert seq.geom.shape == (3, 6172, 3) and torch.equal(seq.geom, torch.from_numpy(raw[seq.name][:, index]))
    assert seq.audio.shape == (1600,) and abs(float(seq.audio.abs().mean()) - 0.01) < 1e-4


@pytest.mark.parametrize("case, error, pattern", [
    ("truncated", ValueError, r"000103\.bin.*truncated: expected 87672 bytes .*found 87600"),
    ("too_long", ValueError, r"000103\.bin.*wrong size: expected 87672 bytes .*found 87684"),
    ("no_audio", FileNotFoundError, r"SEN_a_good_morrow\.wav.*missing audio"),
    ("gap", ValueError, r"SEN_a_good_morrow.*102 followed by 105"),
    ("long_audio", ValueError, r"SEN_a_good_morrow.*3 mesh frames do not match the audio"),
])
def test_multiface_reports_each_malformed_file(multiface, case, error, pattern):
    root, template, index_file, _, _ = multiface
    folder = root / "tracked_mesh" / "SEN_a_good_morrow"
    if case == "truncated":
        (folder / "000103.bin").write_bytes((folder / "000103.bin").read_bytes()[:-72])
    elif case == "too_long":
        (folder / "000103.bin").write_bytes((folder / "000103.bin").read_bytes() + b"\0" * 12)
    elif case == "no_audio":
        os.remove(root / "audio" / "SEN_a_good_morrow.wav")
    elif case == "gap":
        os.rename(folder / "000104.bin", folder / "000105.bin")
        os.remove(folder / "000103.bin")
    elif case == "long_audio":
        sf.write(root / "audio" / "SEN_a_good_morrow.wav", _speech(1.0, 48000), 48000)
    with pytest.raises(error, match=pattern):
        list(read_multiface(root, template, index_file))
    with pytest.warns(UserWarning, match=pattern):
        kept = list(read_multiface(root, template, index_file, on_error="skip"))
    assert [s.name for s in kept] == ["SEN_youre_boiling_milk"]


def test_multiface_checks_the_index_and_the_template(multiface, tmp_path):
    root, template, index_file, index, _ = multiface
    with pytest.raises(ValueError, match="6172 vertices; without index_file it must have all 7306"):
        list(read_multiface(root, template))
    np.savetxt(tmp_path / "short.txt", index[:-1], fmt="%d")
    with pytest.raises(ValueError, match=r"short\.txt.*must hold 6172 indices.*got 6171"):
        list(read_multiface(root, template, tmp_path / "short.txt"))
    bad = index.copy()
    bad[0] = MULTIFACE_VERTICES
    np.savetxt(tmp_path / "big.txt", bad, fmt="%d")
    with pytest.raises(ValueError, match=r"big\.txt.*\[0, 7306\)"):
        list(read_multiface(root, template, tmp_path / "big.txt"))
    full = _obj(tmp_path / "full.obj", MULTIFACE_VERTICES)
    seq = next(read_multiface(root, tmp_path / "full.obj", expressions=["SEN_youre_boiling_milk"]))
    assert seq.geom.shape == (3, MULTIFACE_VERTICES, 3) and torch.equal(seq.template, full)


# ---- VOCASET -------------------------------------------------------------------------------------
def _vocaset(root, protocol=pickle.HIGHEST_PROTOCOL):
    root.mkdir(exist_ok=True)
    verts = RNG.normal(size=(17, VOCASET_VERTICES, 3)).astype(np.float32)
    np.save(root / "data_verts.npy", verts)
    subjects = {"FaceTalk_170725_00137_TA": ["sentence01", "sentence02"], "FaceTalk_170728_03272_TA": ["sentence01"]}
    index, audio, templates, start = {}, {}, {}, 0
    for subject, sentences in subjects.items():
        templates[subject] = RNG.normal(size=(VOCASET_VERTICES, 3))
        index[subject], audio[subject] = {}, {}
        for sentence in sentences:
            index[subject][sentence] = {k: start + k for k in range(6)}  # 6 frames at 60 fps = 0.1 s
            start += 5 if sentence == "sentence01" else 6
            pcm = (_speech(0.1, 22000) * 32767).astype(np.int16)
            audio[subject][sentence] = {"audio": pcm, "sample_rate": 22000}
    for name, obj in (("raw_audio_fixed.pkl", audio), ("templates.pkl", templates), ("subj_seq_to_idx.pkl", index)):
        with open(root / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
    return verts, index, templates


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_vocaset_reads_60fps_as_30fps(tmp_path, protocol):
    verts, index, templates = _vocaset(tmp_path / "vocaset", protocol)
    seqs = list(read_vocaset(tmp_path / "vocaset"))
    assert [s.name for s in seqs] == ["FaceTalk_170725_00137_TA_sentence01", "FaceTalk_170725_00137_TA_sentence02",
                                      "FaceTalk_170728_03272_TA_sentence01"]
    seq = seqs[1]
    glob = [index["FaceTalk_170725_00137_TA"]["sentence02"][k] for k in range(6)]
    assert seq.fps == 30 and seq.geom.shape == (3, VOCASET_VERTICES, 3)
    assert torch.equal(seq.geom, torch.from_numpy(verts[glob[::2]]))
    assert torch.equal(seq.template, torch.from_numpy(templates[seq.subject].astype(np.float32)))
    assert seq.audio.shape == (1600,)
    only = list(read_vocaset(tmp_path / "vocaset", subjects=["FaceTalk_170728_03272_TA"]))
    assert [s.subject for s in only] == ["FaceTalk_170728_03272_TA"]


def _edit_pickle(path, edit):
    obj = load_pickle(path)
    edit(obj)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


@pytest.mark.parametrize("case, error, pattern", [
    ("no_audio", FileNotFoundError,
     r"raw_audio_fixed\.pkl.*no audio for \['FaceTalk_170725_00137_TA'\]\['sentence01'\]"),
    ("index_range", ValueError, r"subj_seq_to_idx\.pkl.*global indices 0\.\.99 fall outside .*data_verts\.npy"),
    ("gap", ValueError, r"subj_seq_to_idx\.pkl.*local frame numbers must be consecutive"),
    ("template", ValueError, r"templates\.pkl.*vertex count mismatch: expected shape \[5023, 3\].*\[5000, 3\]"),
    ("long_audio", ValueError, r"sentence01.*3 mesh frames do not match the audio"),
])
def test_vocaset_reports_each_malformed_entry(tmp_path, case, error, pattern):
    root = tmp_path / "vocaset"
    _vocaset(root)
    subject = "FaceTalk_170725_00137_TA"
    if case == "no_audio":
        _edit_pickle(root / "raw_audio_fixed.pkl", lambda a: a[subject].pop("sentence01"))
    elif case == "index_range":
        _edit_pickle(root / "subj_seq_to_idx.pkl", lambda i: i[subject]["sentence01"].update({5: 99}))
    elif case == "gap":
        _edit_pickle(root / "subj_seq_to_idx.pkl", lambda i: i[subject]["sentence01"].pop(3))
    elif case == "template":
        _edit_pickle(root / "templates.pkl", lambda t: t.update({subject: np.zeros((5000, 3))}))
    elif case == "long_audio":
        _edit_pickle(root / "raw_audio_fixed.pkl", lambda a: a[subject]["sentence01"].update(audio=_speech(1.0, 22000)))
    with pytest.raises(error, match=pattern):
        list(read_vocaset(root))
    with pytest.warns(UserWarning, match=pattern):
        kept = list(read_vocaset(root, on_error="skip"))
    assert len(kept) == (1 if case == "template" else 2)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_are_restricted_to_numpy_and_containers(tmp_path):
    root = tmp_path / "vocaset"
    _vocaset(root)
    with open(root / "templates.pkl", "wb") as fh:
        pickle.dump({"FaceTalk_170725_00137_TA": _Boom()}, fh)
    with pytest.raises(ValueError, match=r"templates\.pkl.*refusing to load global (posix|os|nt)\.system"):
        list(read_vocaset(root))
    with pytest.raises(ValueError, match=r"refusing.*builtins\.eval"):
        path = tmp_path / "eval.pkl"
        path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
        load_pickle(path)
    with open(tmp_path / "ok.pkl", "wb") as fh:
        pickle.dump({"a": [1, 2.5, "x", np.float32(3), np.arange(4, dtype=np.int16)]}, fh, protocol=2)
    ok = load_pickle(tmp_path / "ok.pkl")
    assert ok["a"][:4] == [1, 2.5, "x", 3.0] and ok["a"][4].dtype == np.int16


# ---- BIWI ----------------------------------------------------------------------------------------
@pytest.fixture()
def biwi(tmp_path):
    root = tmp_path / "BIWI"
    (root / "vertices_npy").mkdir(parents=True)
    (root / "wav").mkdir()
    data = {}
    for stem in ("F1_e01", "M3_e02"):
        data[stem] = RNG.normal(size=(3, BIWI_VERTICES * 3))
        np.save(root / "vertices_npy" / f"{stem}.npy", data[stem])
        sf.write(root / "wav" / f"{stem}.wav", _speech(3 / 25, 16000), 16000)
    templates = {"F1": RNG.normal(size=(BIWI_VERTICES, 3)), "M3": RNG.normal(size=BIWI_VERTICES * 3)}  # flat too
    with open(root / "templates.pkl", "wb") as fh:
        pickle.dump(templates, fh)
    return root, data, templates


def test_biwi_reads_flat_vertices_at_25fps(biwi):
    root, data, templates = biwi
    seqs = list(read_biwi(root))
    assert [(s.name, s.subject, s.fps) for s in seqs] == [("F1_e01", "F1", 25), ("M3_e02", "M3", 25)]
    assert seqs[1].geom.shape == (3, BIWI_VERTICES, 3)
    assert torch.equal(seqs[1].geom, torch.from_numpy(data["M3_e02"].reshape(3, -1, 3).astype(np.float32)))
    assert torch.equal(seqs[1].template, torch.from_numpy(templates["M3"].reshape(-1, 3).astype(np.float32)))
    at30 = resample_fps(seqs[0], 30)
    assert at30.fps == 30 and at30.geom.shape[0] == 3 and torch.equal(at30.audio, seqs[0].audio)


@pytest.mark.parametrize("case, error, pattern", [
    ("vertices", ValueError, r"F1_e01\.npy.*vertex count mismatch.*\[3, 69999\]"),
    ("truncated", ValueError, r"F1_e01\.npy.*could not be read"),
    ("no_audio", FileNotFoundError, r"F1_e01\.wav.*missing audio"),
    ("no_template", ValueError, r"templates\.pkl.*'F1'.*missing"),
])
def test_biwi_reports_each_malformed_file(biwi, case, error, pattern):
    root, data, templates = biwi
    path = root / "vertices_npy" / "F1_e01.npy"
    if case == "vertices":
        np.save(path, np.zeros((3, 69999)))
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    elif case == "no_audio":
        os.remove(root / "wav" / "F1_e01.wav")
    elif case == "no_template":
        with open(root / "templates.pkl", "wb") as fh:
            pickle.dump({"M3": templates["M3"]}, fh)
    with pytest.raises(error, match=pattern):
        list(read_biwi(root))
    with pytest.warns(UserWarning, match=pattern):
        assert [s.name for s in read_biwi(root, on_error="skip")] == ["M3_e02"]


# ---- plain folder --------------------------------------------------------------------------------
@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    template = _obj(root / "template.obj", 300)
    seqs = []
    for name, T in (("a_first", 7), ("b_second", 5)):
        geom = torch.from_numpy(RNG.normal(size=(T, 300, 3)).astype(np.float32))
        audio = mf.load_audio(_speech(T / 30, 16000), sample_rate=16000)
        seqs.append(FaceSequence(name, "spk", template, geom, audio, 30, {"text": "hi"}))
        write_folder_sequence(root, "train", seqs[-1])
    return root, template, seqs


def test_folder_round_trip(folder):
    root, template, seqs = folder
    read = list(read_folder(root, "train"))
    assert [s.name for s in read] == ["a_first", "b_second"]
    for got, ref in zip(read, seqs):
        assert got.subject == "spk" and got.fps == 30 and got.meta["text"] == "hi"
        assert torch.equal(got.template, template) and torch.equal(got.geom, ref.geom)
        torch.testing.assert_close(got.audio, ref.audio, atol=1e-6, rtol=1e-5)
    assert [s.name for s in read_folder(root, "train", names=["b_second"])] == ["b_second"]
    os.remove(root / "train" / "a_first" / "meta.json")  # optional: defaults apply
    assert next(read_folder(root, "train")).subject == "default"


@pytest.mark.parametrize("case, error, pattern", [
    ("no_meshes", FileNotFoundError, r"a_first.meshes\.npy' does not exist"),
    ("no_audio", FileNotFoundError, r"a_first.audio\.wav' does not exist: missing audio"),
    ("vertices", ValueError,
     r"a_first.meshes\.npy.*vertex count mismatch: the template has 300 vertices, the meshes have 299"),
    ("truncated", ValueError, r"a_first.meshes\.npy.*could not be read"),
    ("frames", ValueError, r"a_first.meshes\.npy.*12 mesh frames do not match the audio.*7 frames"),
    ("meta", ValueError, r"a_first.meta\.json.*not valid JSON"),
])
def test_folder_reports_each_malformed_file(folder, case, error, pattern):
    root, _, _ = folder
    seq_dir = root / "train" / "a_first"
    if case == "no_meshes":
        os.remove(seq_dir / "meshes.npy")
    elif case == "no_audio":
        os.remove(seq_dir / "audio.wav")
    elif case == "vertices":
        np.save(seq_dir / "meshes.npy", np.zeros((7, 299, 3), np.float32))
    elif case == "truncated":
        (seq_dir / "meshes.npy").write_bytes((seq_dir / "meshes.npy").read_bytes()[:-400])
    elif case == "frames":
        np.save(seq_dir / "meshes.npy", np.zeros((12, 300, 3), np.float32))
    elif case == "meta":
        (seq_dir / "meta.json").write_text("{not json")
    with pytest.raises(error, match=pattern):
        list(read_folder(root, "train"))
    with pytest.warns(UserWarning, match=pattern):
        assert [s.name for s in read_folder(root, "train", on_error="skip")] == ["b_second"]


def test_folder_needs_the_split_and_the_template(folder):
    root, _, _ = folder
    for read in (lambda split: list(read_folder(root, split)), lambda split: folder_templates(root, split)):
        with pytest.raises(FileNotFoundError, match=r"no split 'val'.*\['train'\]"):
            read("val")
    os.remove(root / "template.obj")
    with pytest.raises(FileNotFoundError, match="template.obj"):
        list(read_folder(root, "train"))
    with pytest.raises(FileNotFoundError, match="template.obj"):
        folder_templates(root, "train")


def test_folder_templates_are_the_subjects_faces_read_without_meshes_or_audio(folder):
    root, template, seqs = folder
    other = template + 1.0
    write_folder_template(root, other, torch.tensor([[0, 1, 2]]), subject="spk2")
    write_folder_sequence(root, "train", FaceSequence("c_third", "spk2", other, seqs[0].geom, seqs[0].audio, 30, {}))
    expected = [s.template for s in read_folder(root, "train")]
    faces = folder_templates(root, "train")
    assert len(faces) == 2 and torch.equal(faces[0], template)
    torch.testing.assert_close(faces[1], other)
    assert torch.equal(expected[0], faces[0]) and torch.equal(expected[2], faces[1])
    for name in ("a_first", "c_third"):  # what read_folder would need, folder_templates never opens
        os.remove(root / "train" / name / "audio.wav")
        os.remove(root / "train" / name / "meshes.npy")
    assert [f.shape for f in folder_templates(root, "train")] == [(300, 3), (300, 3)]


def test_align_sequence_trims_within_tolerance_and_refuses_beyond(folder):
    _, template, seqs = folder
    seq = seqs[0]  # 7 frames, 7/30 s of audio
    longer = FaceSequence("x", "s", template, torch.cat([seq.geom, seq.geom[:2]]), seq.audio, 30)
    trimmed = align_sequence(longer, tolerance=2)
    assert trimmed.geom.shape[0] == 7 and trimmed.audio.shape == seq.audio.shape
    shorter = FaceSequence("x", "s", template, seq.geom[:5], seq.audio, 30)
    cut = align_sequence(shorter)
    assert cut.geom.shape[0] == 5 and cut.audio.shape[0] == -(-5 * 16000 // 30)
    assert mf.num_frames(cut.audio.shape[0], 30, "exact") == 5
    with pytest.raises(ValueError, match="expected a difference of at most 1 frames, found 2"):
        align_sequence(shorter, tolerance=1)
    json.dumps(cut.meta)  # meta stays plain data
