"""`meshtalk-fast make-rig` and `animate --blendshapes`: the built-in face as an ARKit rig, a small model on its
topology, the solved weights in the three outputs (Live Link CSV, JSON, the rig's own glb animated), the
residual, and bad input (rig of another topology, unknown ARKit name in a mapping file) leaving nothing."""
import json
import os

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli
from meshtalk_fast.streaming.livelink import LIVELINK_CURVES, read_livelink_csv


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Small ops on a busy 2-core machine."""


@pytest.fixture(scope="module")
def setup(rig_files):
    return rig_files


def test_make_rig_writes_arkit_named_targets(setup, capsys, tmp_path):
    basis = mf.BlendshapeBasis.load(setup / "face.glb")
    assert basis.n_vertices == 4430 and basis.faces is not None
    assert set(basis.names) <= set(mf.ARKIT_NAMES)
    assert {"jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthPucker", "browInnerUp"} <= set(basis.names)
    assert cli.main(["make-rig", "--out", str(tmp_path / "face.npz"), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "not expressible" in out and "mouthFunnel" in out and "tongueOut" in out
    other = mf.BlendshapeBasis.load(tmp_path / "face.npz")
    assert other.names == basis.names and not torch.equal(other.neutral, basis.neutral)  # another subject
    assert cli.main(["make-rig", "--out", str(tmp_path / "face.npz")]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert cli.main(["make-rig", "--out", str(tmp_path / "face.fbx")]) == 2
    assert "--out must end in .glb or .npz" in capsys.readouterr().err


def test_animate_with_blendshapes(setup, capsys):
    from pygltflib import GLTF2

    out = setup / "out"
    argv = ["animate", "--model", str(setup / "small.safetensors"), "--template", str(setup / "face.obj"),
            "--audio", str(setup / "speech.wav"), "--formats", "npz", "--seed", "1", "--out", str(out),
            "--blendshapes", str(setup / "face.glb"), "--blendshape-smoothing", "0.01"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "rig residual (share of the mesh motion the rig cannot express) mean" in printed
    assert sorted(os.listdir(out)) == ["blendshapes.csv", "blendshapes.json", "meshes.npz", "rig_animation.glb"]
    basis = mf.BlendshapeBasis.load(setup / "face.glb")
    with np.load(out / "meshes.npz") as z:
        meshes = torch.from_numpy(z["vertices"])
    T = meshes.shape[0]
    expected = mf.solve_blendshapes(meshes, basis, smoothing=0.01, backend="torch")
    doc = json.loads((out / "blendshapes.json").read_text())
    assert doc["names"] == list(basis.names) and doc["fps"] == 30 and doc["frames"] == T
    np.testing.assert_allclose(np.array(doc["weights"]), expected.numpy(), atol=1e-4)
    residual = mf.blendshape_residual(meshes, basis, expected)
    np.testing.assert_allclose(np.array(doc["residual"]), residual.numpy(), atol=1e-4)
    assert f"mean {residual.mean().item():.4f}" in printed

    header, values = read_livelink_csv(out / "blendshapes.csv")
    assert header[:2] == ["Timecode", "BlendShapeCount"] and tuple(header[2:]) == LIVELINK_CURVES
    assert values.shape == (T, 61)
    rows = (out / "blendshapes.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows[:2]] == [["00:00:00:00.000", "61"], ["00:00:00:01.000", "61"]]
    for k, name in enumerate(basis.names):
        np.testing.assert_allclose(values[:, mf.ARKIT_NAMES.index(name)], expected[:, k].numpy(), atol=1e-5)
    lacking = [i for i in range(61) if i >= 52 or mf.ARKIT_NAMES[i] not in basis.names]
    assert (values[:, lacking] == 0).all()

    g = GLTF2().load(str(out / "rig_animation.glb"))
    assert g.meshes[0].extras["targetNames"] == list(basis.names)
    anim = g.animations[-1]
    acc = g.accessors[anim.samplers[0].output]
    blob = g.binary_blob()
    view = g.bufferViews[acc.bufferView]
    got = np.frombuffer(blob, np.float32, acc.count, view.byteOffset + (acc.byteOffset or 0)).reshape(T, -1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    assert mf.BlendshapeBasis.load(out / "rig_animation.glb").names == basis.names  # still the same rig


def test_animate_bad_rigs_leave_nothing(setup, tmp_path, capsys):
    base = ["animate", "--model", str(setup / "small.safetensors"), "--template", str(setup / "face.obj"),
            "--audio", str(setup / "speech.wav"), "--formats", "npz"]
    g = torch.Generator().manual_seed(0)
    mf.BlendshapeBasis(["jawOpen"], torch.zeros(50, 3), torch.randn(1, 50, 3, generator=g)).save(tmp_path / "o.npz")
    assert cli.main(base + ["--out", str(tmp_path / "a"), "--blendshapes", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "has 50 vertices but model" in err and "animates 4430" in err
    (tmp_path / "map.json").write_text(json.dumps({"jawOpen": "jawOpen", "mouthClose": "mouthShut"}))
    assert cli.main(base + ["--out", str(tmp_path / "b"), "--blendshapes", str(setup / "face.glb"),
                            "--blendshape-map", str(tmp_path / "map.json")]) == 2
    err = capsys.readouterr().err
    assert "map.json" in err and "'mouthShut' (for rig target 'mouthClose') is not an ARKit blendshape name" in err
    assert cli.main(base + ["--out", str(tmp_path / "c"), "--blendshapes", str(tmp_path / "none.glb")]) == 2
    assert "none.glb' does not exist" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["map.json", "o.npz"]  # no output folder, no temporary files
