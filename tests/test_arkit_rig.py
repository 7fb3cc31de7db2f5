"""ARKit rigs and the articulation curves (data/arkit_rig.py): the built-in face's linear ARKit shapes
against its own rig, a user's rig driven by the curves (name matching, mapping files, what it lacks),
and `make-dataset --rig` / the data set it writes being that rig's meshes."""
import json

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli
from meshtalk_fast.data import Voice, make_dataset, procedural_face, procedural_face_rig, read_folder
from meshtalk_fast.data.arkit_rig import (ARKIT_FROM_CHANNELS, ArkitRig, arkit_weights, face_rig_basis,
                                          load_arkit_rig)
from meshtalk_fast.data.viseme_rig import CHANNELS, articulation_curves, blink_curve, brow_curve

SMALL = dict(n_sentences=3, voices=[Voice("en-us", rate=170, pitch=50)],
             held_out_voices=[Voice("en-gb-x-rp+m2", rate=160, pitch=45)])


@pytest.fixture(scope="module")
def face():
    v, f, m = procedural_face(0)
    rig = procedural_face_rig(v, m)
    return rig, face_rig_basis(rig, f)


def _speech_curves(T=90):
    """Curves of a made-up phoneme timeline (no speech synthesis needed) plus blinks and brow raises."""
    phonemes = ["_", "h", "@", "l", "oU", "m", "aI", "f", "r", "E", "n", "d", "_", "p", "i:", "s"]
    edges = np.linspace(0.0, T / 30, len(phonemes) + 1)
    curves = articulation_curves(edges[:-1], edges[1:], phonemes, T, 30)
    rng = np.random.default_rng(0)
    curves["blink"] = blink_curve(T, 30, rng)
    curves["brow"] = brow_curve(T, 30, rng)
    return curves


def test_single_channels_are_exact(face):
    rig, basis = face
    T = 1
    for channel in CHANNELS:
        curves = {c: np.full(T, 1.0 if c == channel else 0.0) for c in CHANNELS}
        w = arkit_weights(curves)
        W = torch.tensor([[w[n][0] for n in basis.names]], dtype=torch.float64)
        err = (basis.reconstruct(W) - rig.deform(curves)).abs().max().item()
        assert err < 1e-3, (channel, err)  # mm, float32 rounding of coordinates ~100 mm


def test_speech_is_expressed_by_the_linear_shapes(face):
    rig, basis = face
    curves = _speech_curves()
    meshes = rig.deform(curves)
    w = arkit_weights(curves)
    W = torch.tensor(np.stack([w[n] for n in basis.names], axis=1))
    share = mf.blendshape_residual(meshes, basis, W)
    assert share.mean().item() < 0.02  # the jaw's rotation is the non-linear rest
    solved = mf.solve_blendshapes(meshes, basis, backend="torch")
    assert mf.blendshape_residual(meshes, basis, solved).mean().item() <= share.mean().item() + 1e-6
    jaw = basis.names.index("jawOpen")
    assert np.corrcoef(solved[:, jaw].numpy(), curves["jaw"])[0, 1] > 0.99


def test_arkit_weights_table():
    w = arkit_weights({"jaw": np.array([0.5, 1.0]), "close": np.array([1.0, 0.5]), "blink": np.array([0.2, 0.0])})
    assert w["jawOpen"].tolist() == [0.5, 1.0] and w["mouthClose"].tolist() == [0.5, 0.5]
    assert w["mouthPressLeft"].tolist() == [1.0, 0.5] and w["eyeBlinkRight"].tolist() == [0.2, 0.0]
    assert w["mouthPucker"].tolist() == [0.0, 0.0] and set(w) == set(ARKIT_FROM_CHANNELS)
    with pytest.raises(ValueError, match="unknown channels \\['smile'\\]"):
        arkit_weights({"smile": np.zeros(2)})


def test_a_user_rig_with_other_names_and_a_mapping(face, tmp_path):
    _, basis = face
    # a rig named in another convention, lacking the brows and the lip press
    keep = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthPucker", "mouthClose"]
    names = ["Face.JawOpen", "eyeBlink_L", "eyeBlink_R", "lipsRound", "mouth_close"]
    user = mf.BlendshapeBasis(names, basis.neutral, torch.stack([basis.deltas[basis.names.index(n)] for n in keep]),
                              basis.faces)
    rig = ArkitRig(user, {"lipsRound": "mouthPucker"})
    assert rig.used == {"jawOpen": "Face.JawOpen", "mouthClose": "mouth_close", "mouthPucker": "lipsRound",
                        "eyeBlinkLeft": "eyeBlink_L", "eyeBlinkRight": "eyeBlink_R"}
    assert "browInnerUp" in rig.unmapped and "mouthPressLeft" in rig.unmapped
    assert set(rig.unmapped_channels) == {"spread", "labiodental", "brow"}
    assert "not mapped (the rig lacks them)" in rig.report()
    curves = _speech_curves(30)
    w = arkit_weights(curves)
    expected = user.reconstruct(torch.tensor(np.stack([w[n] for n in keep], axis=1)))
    assert torch.allclose(rig.deform(curves), expected, atol=1e-5)
    masks = rig.masks()
    assert masks.n_vertices == user.n_vertices and masks.eye_keypoints.sum() > 0 and masks.forehead.sum() == 0
    assert 0 < masks.lips.sum() < masks.mouth.gt(0).sum()

    user.save(tmp_path / "user.glb")
    (tmp_path / "map.json").write_text(json.dumps({"lipsRound": "mouthPucker"}))
    assert load_arkit_rig(tmp_path / "user.glb", tmp_path / "map.json").used["mouthPucker"] == "lipsRound"
    (tmp_path / "bad.json").write_text(json.dumps({"lipsRound": "mouthpuckr"}))
    with pytest.raises(ValueError, match="bad.json.*'mouthpuckr' \\(for rig target 'lipsRound'\\) is not an ARKit"):
        load_arkit_rig(tmp_path / "user.glb", tmp_path / "bad.json")
    (tmp_path / "ghost.json").write_text(json.dumps({"lips": "mouthPucker"}))
    with pytest.raises(ValueError, match="names targets \\['lips'\\] that rig .*user.glb' does not have"):
        load_arkit_rig(tmp_path / "user.glb", tmp_path / "ghost.json")


def test_rigs_that_cannot_be_driven(face):
    _, basis = face
    no_blinks = mf.BlendshapeBasis(["jawOpen"], basis.neutral, basis.deltas[:1])
    with pytest.raises(ValueError, match="lacks the blendshapes \\['eyeBlinkLeft', 'eyeBlinkRight'\\]"):
        ArkitRig(no_blinks)
    twice = mf.BlendshapeBasis(["jawOpen", "JawOpen", "eyeBlinkLeft", "eyeBlinkRight"], basis.neutral,
                               basis.deltas[:4])
    with pytest.raises(ValueError, match="targets 'jawOpen' and 'JawOpen' both map to the ARKit name 'jawOpen'"):
        ArkitRig(twice)


def test_make_dataset_with_a_rig_is_that_rigs_meshes(face, tmp_path):
    _, basis = face
    rig = ArkitRig(basis)
    info = make_dataset(tmp_path / "data", rig=rig, seed=1, **SMALL)
    assert info["template"]["rig"]["unmapped"] == []
    seqs = list(read_folder(tmp_path / "data", "train", mmap=False))
    assert len(seqs) >= 1
    for seq in seqs:
        assert torch.allclose(seq.template, basis.neutral, atol=1e-5)
        w = mf.solve_blendshapes(seq.geom, basis, bounds=(-1, 2), backend="torch")
        assert mf.blendshape_residual(seq.geom, basis, w).max().item() < 1e-6  # exactly in the rig's span
        assert w[:, basis.names.index("jawOpen")].max().item() > 0.3  # and it speaks
    with pytest.raises(ValueError, match="template / faces are not used with a rig"):
        make_dataset(tmp_path / "x", rig=rig, template=basis.neutral, **SMALL)
    pointless = mf.BlendshapeBasis(basis.names, basis.neutral, basis.deltas)  # no triangles
    with pytest.raises(ValueError, match="has no triangles"):
        make_dataset(tmp_path / "y", rig=ArkitRig(pointless), **SMALL)


def test_cli_make_dataset_rig_errors(rig_files, tmp_path, capsys):
    assert cli.main(["make-dataset", "--out", str(tmp_path / "d"), "--rig-map", str(tmp_path / "m.json")]) == 2
    assert "--rig-map needs --rig" in capsys.readouterr().err
    assert cli.main(["make-dataset", "--out", str(tmp_path / "d"), "--rig", str(rig_files / "face.glb"),
                     "--template", str(rig_files / "face.obj")]) == 2
    assert "--rig and --template exclude each other" in capsys.readouterr().err
    (tmp_path / "m.json").write_text(json.dumps({"jawOpen": "JawDrop"}))
    assert cli.main(["make-dataset", "--out", str(tmp_path / "d"), "--rig", str(rig_files / "face.glb"),
                     "--rig-map", str(tmp_path / "m.json")]) == 2
    assert "'JawDrop' (for rig target 'jawOpen') is not an ARKit blendshape name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_cli_make_dataset_and_quickstart_with_the_make_rig_output(rig_files, tmp_path, capsys):
    """The issue's path at smoke size: make-rig's face.glb -> make-dataset --rig (3 sentences) -> quickstart
    --rig for a few seconds -> the held-out animation as that rig's weights."""
    out = tmp_path / "qs"
    rig = str(rig_files / "face.glb")
    assert cli.main(["make-dataset", "--out", str(out / "data"), "--sentences", "3", "--rig", rig]) == 0
    printed = capsys.readouterr().out
    assert "driving jawOpen, mouthClose" in printed and "not mapped" not in printed
    basis = mf.BlendshapeBasis.load(rig)
    seq = next(iter(read_folder(out / "data", "train", mmap=False)))
    w = mf.solve_blendshapes(seq.geom, basis, bounds=(-1, 2), backend="torch")
    assert mf.blendshape_residual(seq.geom, basis, w).max().item() < 1e-6
    assert cli.main(["quickstart", "--out", str(out), "--minutes", "0.05", "--sentences", "3", "--rig", rig]) == 0
    printed = capsys.readouterr().out
    assert "heldout/ blendshapes.csv, blendshapes.json, rig_animation.glb: rig residual" in printed
    doc = json.loads((out / "heldout" / "blendshapes.json").read_text())
    with np.load(out / "heldout" / "meshes.npz") as z:
        geom = torch.from_numpy(z["vertices"])
    assert doc["names"] == list(basis.names) and np.array(doc["weights"]).shape == (geom.shape[0], basis.n_shapes)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rig_residual_mean"] == pytest.approx(float(np.mean(doc["residual"])), abs=1e-5)
    assert mf.BlendshapeBasis.load(out / "heldout" / "rig_animation.glb").names == basis.names
