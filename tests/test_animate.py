"""`animate` (offline inference) and the `meshtalk-fast animate` command on the real recording and the
MeshTalk template, with random weights: outputs, one command for both model kinds, bad inputs."""
import os

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli
from meshtalk_fast.animation.offline import fit_expression

OUTPUTS = ["animation.glb", "meshes.npz", "obj", "preview.mp4"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Thousands of tiny ops: on a busy 2-core machine two intra-op threads mostly wait."""


@pytest.fixture(scope="module")
def model(face_model):
    """The released sizes (16 heads x 128 classes, V = 6172) with random weights."""
    return face_model(0)


@pytest.fixture(scope="module")
def small(face_model):
    return face_model(1, heads=4, classes=16)


@pytest.fixture(scope="module")
def masks(released_masks):
    return released_masks


@pytest.fixture(scope="module")
def files(model, small, assets, tmp_path_factory):
    """Our model file, a released-layout directory with the same weights (plus template and masks),
    a small model file, and 1 s of the real recording as a 16 kHz wav."""
    import shutil

    import soundfile as sf

    root = tmp_path_factory.mktemp("animate")
    ours = root / "model.safetensors"
    model.save(ours)
    small.save(root / "small.safetensors")
    released = root / "released"
    released.mkdir()
    for name in ("encoder", "vertex_unet", "context_model"):
        torch.save(getattr(model, name).state_dict(), released / f"{name}.pkl")
    for name in ("face_template.obj", "forehead_mask.txt", "neck_mask.txt"):
        shutil.copy(assets / name, released / name)
    wav = root / "speech.wav"
    raw = mf.load_audio(assets / "example_sentence.wav", normalize=False)[:16000]
    sf.write(wav, raw.numpy(), 16000, subtype="PCM_24")
    return dict(ours=ours, small=root / "small.safetensors", released=released, wav=wav, root=root)


# ------------------------------------------------------------------------------------------------
# the API
# ------------------------------------------------------------------------------------------------
def test_animate_is_the_documented_pipeline(small, template, speech, masks):
    audio = speech[:16000]
    got = mf.animate(audio, template, small, seed=5, backend="torch", smooth_masks=masks, progress=False,
                     normalize=False, chunk_frames=7)
    with torch.no_grad():
        code = small.encode_audio(small.config.windows(audio)[None])
        one_hot = small.sample(code, generator=torch.Generator().manual_seed(5), backend="torch")
        ref = mf.post_smooth(small.decode(template, one_hot, backend="torch")[0], *masks)
    assert got.shape == (30, 6172, 3)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    again = mf.animate(audio, template, small, seed=5, backend="torch", smooth_masks=masks, progress=False,
                       normalize=False)
    torch.testing.assert_close(again, got, atol=1e-4, rtol=0)  # chunking the encoder changes nothing
    other = mf.animate(audio, template, small, seed=6, backend="torch", smooth_masks=masks, progress=False,
                       normalize=False)
    assert (other - got).abs().max() > 1e-2


def test_animate_with_reduced_weights_stays_near_float32(small, template, speech):
    """animate(weights="bf16" | "int8"): the C++ sampler and decoder with rounded weights; argmax codes, so the
    meshes differ from float32's only by the rounding (and a rare flipped code): within 2 % of the frames'
    extent. A backend other than cpp is refused, naming the option."""
    audio = speech[:16000]
    exact = mf.animate(audio, template, small, argmax=True, progress=False, normalize=False)
    extent = float(exact.max() - exact.min())
    for weights in ("bf16", "int8"):
        try:
            got = mf.animate(audio, template, small, argmax=True, progress=False, normalize=False, weights=weights)
        except ValueError as e:  # a CPU without AVX2+FMA
            assert "use weights 'f32'" in str(e)
            continue
        assert got.shape == exact.shape
        assert float((got - exact).abs().max()) <= 0.02 * extent
    with pytest.raises(ValueError, match="weights"):
        mf.animate(audio, template, small, backend="torch", progress=False, normalize=False, weights="bf16")


def test_animate_from_a_path_normalises_as_released(small, template, files):
    from_path = mf.animate(files["wav"], template, small, argmax=True, backend="torch", progress=False)
    loaded = mf.load_audio(files["wav"])
    from_tensor = mf.animate(loaded, template, small, argmax=True, backend="torch", progress=False,
                             normalize=False)
    torch.testing.assert_close(from_path, from_tensor, atol=1e-4, rtol=0)
    raw = mf.load_audio(files["wav"], normalize=False)
    renormalised = mf.animate(raw * 7, template, small, argmax=True, backend="torch", progress=False)
    torch.testing.assert_close(renormalised, from_tensor, atol=1e-3, rtol=0)


def test_expression_transfer_fuses_with_this_audio(small, template, speech):
    audio = speech[:16000]
    g = torch.Generator().manual_seed(0)
    expression = template + 2 * torch.randn(12, 6172, 3, generator=g)
    got = mf.animate(audio, template, small, expression=expression, backend="torch", progress=False, normalize=False)
    fitted = fit_expression(expression, 30, 6172)
    with torch.no_grad():
        audio_code = small.encode_audio(small.config.windows(audio)[None])
        logprobs = small.fuse(small.encode_expression(fitted[None]), audio_code)
        ref = small.decode(template, small.quantize(logprobs, argmax=True), backend="torch")[0]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="strict"):
        mf.animate(audio, template, small, expression=expression, strict_expression=True, progress=False)


def test_expression_length_rule():
    seq = torch.arange(4.0).view(4, 1, 1).expand(4, 2, 3)
    looped = fit_expression(seq, 10, 2)[:, 0, 0].tolist()
    assert looped == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]  # back and forth, never a jump
    assert fit_expression(seq, 3, 2)[:, 0, 0].tolist() == [0, 1, 2]
    assert fit_expression(seq[:1], 3, 2).shape == (3, 2, 3)
    with pytest.raises(ValueError, match=r"expression must have shape \[T' > 0, V=5, 3\].*got \[4, 2, 3\]"):
        fit_expression(seq, 10, 5)
    with pytest.raises(ValueError, match="4 frames but the audio gives 10"):
        fit_expression(seq, 10, 2, strict=True)


def test_animate_bad_arguments(small, template, speech):
    with pytest.raises(ValueError, match=r"template must have shape \[V, 3\] with V == 6172.*got \[100, 3\]"):
        mf.animate(speech, template[:100], small, progress=False)
    with pytest.raises(ValueError, match=r"neck mask must have shape \[V=6172\], got \[5\]"):
        mf.animate(speech, template, small, smooth_masks=(torch.ones(6172), torch.ones(5)), progress=False)
    with pytest.raises(ValueError, match="too short for one video frame"):
        mf.animate(speech[:300], template, small, progress=False)
    with pytest.raises(ValueError, match="silent"):
        mf.animate(torch.zeros(16000), template, small, progress=False)


def test_long_inputs_show_a_progress_bar(small, template, speech, monkeypatch, capsys):
    import importlib

    animate_module = importlib.import_module("meshtalk_fast.animation.offline")  # the module (mf.animate is the function)
    monkeypatch.setattr(animate_module, "PROGRESS_MIN_SECONDS", 0.5)
    mf.animate(speech[:12000], template, small, argmax=True, backend="torch", normalize=False)
    assert "frame" in capsys.readouterr().err
    mf.animate(speech[:12000], template, small, argmax=True, backend="torch", normalize=False, progress=False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------------
# the command: all four outputs, both model kinds
# ------------------------------------------------------------------------------------------------
def test_cli_animate_writes_all_outputs_for_both_model_kinds(model, template, assets, files, masks, capsys):
    import trimesh

    out = files["root"] / "out"
    args = ["animate", "--audio", str(files["wav"]), "--seed", "3", "--video-size", "128", "--backend", "torch"]
    assert cli.main(args + ["--model", str(files["ours"]), "--template", str(assets / "face_template.obj"),
                            "--masks", str(assets), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == OUTPUTS
    assert "reconstruction error" in printed

    with np.load(out / "meshes.npz") as z:
        vertices, faces, fps = z["vertices"], z["faces"], int(z["fps"])
    T = mf.num_frames(16000)
    assert vertices.shape == (T, 6172, 3) and vertices.dtype == np.float32 and fps == 30
    assert faces.shape == (12294, 3)
    ref = mf.animate(files["wav"], template, model, seed=3, backend="torch", smooth_masks=masks, progress=False)
    np.testing.assert_allclose(vertices, ref.numpy(), atol=1e-4, rtol=0)

    objs = sorted(os.listdir(out / "obj"))
    assert objs[0] == "frame_00000.obj" and len(objs) == T
    mesh = trimesh.load(out / "obj" / objs[-1], process=False, maintain_order=True)
    assert mesh.faces.shape == (12294, 3)
    np.testing.assert_array_equal(np.asarray(mesh.vertices, np.float32), vertices[-1])

    scene = trimesh.load(out / "animation.glb")
    assert [g.vertices.shape for g in scene.geometry.values()] == [(6172, 3)]
    import pygltflib

    gltf = pygltflib.GLTF2.load_binary(str(out / "animation.glb"))
    assert gltf.accessors[gltf.animations[0].samplers[0].input].count == T

    video = mf.probe_mp4(out / "preview.mp4")
    assert video["frames"] == T and video["fps"] == 30 and (video["width"], video["height"]) == (128, 128)
    assert video["video_codec"] == "h264" and video["audio_codec"] == "aac"
    assert video["audio_seconds"] == pytest.approx(1.0, abs=0.03)

    # the released directory: same weights, template and masks found in it -> the same meshes
    out2 = files["root"] / "out_released"
    assert cli.main(args + ["--model", str(files["released"]), "--formats", "npz", "--out", str(out2)]) == 0
    assert "(released)" in capsys.readouterr().out
    with np.load(out2 / "meshes.npz") as z:
        np.testing.assert_allclose(z["vertices"], vertices, atol=1e-4, rtol=0)
    assert os.listdir(out2) == ["meshes.npz"]


# ------------------------------------------------------------------------------------------------
# bad inputs: one line on stderr naming the file, exit 2, nothing left behind
# ------------------------------------------------------------------------------------------------
def _fails(argv, capsys, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def test_cli_animate_bad_inputs(files, assets, small, tmp_path, capsys):
    tpl = str(assets / "face_template.obj")
    out = tmp_path / "out"
    base = ["animate", "--model", str(files["ours"]), "--template", tpl, "--out", str(out), "--video-size", "64"]
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 3)
    _fails(base + ["--audio", str(garbage)], capsys, "noise.wav", "could not be read")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _fails(base + ["--audio", str(empty)], capsys, "empty.wav", "empty (0 bytes)")
    text = tmp_path / "speech.txt"
    text.write_text("not audio at all\n")
    _fails(base + ["--audio", str(text)], capsys, "speech.txt")
    _fails(base + ["--audio", str(tmp_path / "missing.wav")], capsys, "missing.wav", "does not exist")

    triangle = tmp_path / "triangle.obj"
    triangle.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    _fails(["animate", "--model", str(files["ours"]), "--template", str(triangle), "--audio", str(files["wav"]),
            "--out", str(out)], capsys, "triangle.obj", "3 vertices", "6172")
    _fails(["animate", "--model", str(files["ours"]), "--audio", str(files["wav"]), "--out", str(out)], capsys,
           "--template is required", "model.safetensors", "stores no template")

    other = tmp_path / "v300.safetensors"
    mf.MeshTalk(300, heads=2, classes=4).save(other)
    _fails(["animate", "--model", str(other), "--template", tpl, "--audio", str(files["wav"]), "--out", str(out)],
           capsys, "v300.safetensors", "300 vertices", "another topology")
    released300 = tmp_path / "released300"
    released300.mkdir()
    m300 = mf.MeshTalk(300)
    for name in ("encoder", "vertex_unet", "context_model"):
        torch.save(getattr(m300, name).state_dict(), released300 / f"{name}.pkl")
    _fails(["animate", "--model", str(released300), "--template", tpl, "--audio", str(files["wav"]),
            "--out", str(out)], capsys, "encoder.pkl", "shape")

    bad = tmp_path / "expr.npy"
    np.save(bad, np.zeros((5, 100, 3), np.float32))
    _fails(base + ["--audio", str(files["wav"]), "--expression-from", str(bad)], capsys, "expr.npy", "6172",
           "[5, 100, 3]")
    afile = tmp_path / "a_file"
    afile.write_text("x")
    _fails(base[:-4] + ["--out", str(afile / "out"), "--audio", str(files["wav"])], capsys, "a_file")
    _fails(base + ["--audio", str(files["wav"]), "--formats", "npz,gif"], capsys, "gif")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["a_file", "empty.wav", "expr.npy", "noise.wav", "released300",
                                            "speech.txt", "triangle.obj", "v300.safetensors"]


def test_cli_animate_never_overwrites_and_leaves_nothing_on_failure(files, assets, tmp_path, capsys, monkeypatch):
    import meshtalk_fast.io.render as render

    out = tmp_path / "out"
    argv = ["animate", "--model", str(files["small"]), "--template", str(assets / "face_template.obj"),
            "--audio", str(files["wav"]), "--video-size", "64", "--formats", "npz,glb,mp4", "--argmax",
            "--backend", "torch", "--out", str(out)]
    out.mkdir()
    (out / "meshes.npz").write_bytes(b"old")
    _fails(argv, capsys, "already holds meshes.npz", "--force")

    def broken(*args, **kwargs):
        raise OSError("disk full while encoding preview.mp4")

    monkeypatch.setattr(render, "save_preview_mp4", broken)
    _fails(argv + ["--force"], capsys, "disk full")
    assert os.listdir(out) == ["meshes.npz"] and (out / "meshes.npz").read_bytes() == b"old"  # restored
    assert os.listdir(tmp_path) == ["out"]  # no temporary folder left
    monkeypatch.undo()
    assert cli.main(argv + ["--force"]) == 0
    assert sorted(os.listdir(out)) == ["animation.glb", "meshes.npz", "preview.mp4"]
    with np.load(out / "meshes.npz") as z:
        assert z["vertices"].shape[1:] == (6172, 3)


def test_stream_framing_model_animates_offline(speech, template):
    """A model trained with framing="stream" animates from one log-mel of the utterance (its live
    animation is tested in test_streaming.py)."""
    torch.manual_seed(0)
    model = mf.MeshTalk(6172, heads=4, classes=8, framing="stream", clock="exact").eval()
    audio = speech[:16000]
    geom = mf.animate(audio, template, model, seed=0, backend="torch", normalize=False, progress=False)
    assert geom.shape == (mf.num_frames(16000, 30, "exact"), 6172, 3)
    with torch.no_grad():
        one_hot = model.sample(model.encode_speech(audio), generator=torch.Generator().manual_seed(0), backend="torch")
        expected = model.decode(template, one_hot, backend="torch")[0]
    torch.testing.assert_close(geom, expected)
