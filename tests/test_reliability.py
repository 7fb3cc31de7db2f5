"""Issue 16: what a hostile or careless user found, one test per case (each failed before its fix).

Grouped by the rule that now owns it: mask weights (``_checks.check_mask_weights``), mesh and data
files, model files (``checkpoint.inspect_model_file``), one-line CLI errors (``cli.main``).
Temporary files are tested in test_tempfiles.py."""
import os

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli


def _fails(argv, capsys, *needles, code=2):
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mf.MeshTalk(40, heads=2, classes=4).eval()


# ------------------------------------------------------------------------------------------------
# mask weights: one rule (finite, in [0, 1]) for animate, stream, post_smooth, training, mask files
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1.0, 2.5, float("nan")])
def test_mask_weights_outside_0_1_are_refused_everywhere(tiny, tmp_path, bad):
    from meshtalk_fast.data import FaceMasks
    from meshtalk_fast.training.trainer import TrainingMasks

    V = 40
    good = torch.full((V,), 0.5)
    wrong = good.clone()
    wrong[7] = bad
    template = torch.randn(V, 3)
    geom = torch.randn(5, V, 3)
    with pytest.raises(ValueError, match=r"forehead_mask must hold weights in \[0, 1\].*index 7"):
        mf.post_smooth(geom, wrong, good)
    with pytest.raises(ValueError, match=r"neck_mask must hold weights in \[0, 1\]"):
        mf.post_smooth(geom, good, wrong, backend="torch")
    with pytest.raises(ValueError, match=r"smooth_masks forehead mask must hold weights in \[0, 1\]"):
        mf.animate(torch.randn(16000), template, tiny, smooth_masks=(wrong, good))
    with pytest.raises(ValueError, match=r"smooth_masks neck mask must hold weights in \[0, 1\]"):
        mf.StreamingAnimator(tiny, template, smooth_masks=(good, wrong))
    with pytest.raises(ValueError, match=r"FaceMasks.eye must hold weights in \[0, 1\]"):
        FaceMasks(good, wrong, good, good, good, good, good)
    with pytest.raises(ValueError, match=r"training mask lips must hold weights in \[0, 1\]"):
        TrainingMasks(good, good, good, wrong, good)
    path = tmp_path / "forehead_mask.txt"
    np.savetxt(path, wrong.numpy())
    with pytest.raises(ValueError, match=r"mask file .*forehead_mask.txt.* must hold weights in \[0, 1\]"):
        mf.load_mask(path, V)


def test_weights_at_the_bounds_are_accepted():
    V = 6
    m = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 1e-12])
    out = mf.post_smooth(torch.randn(3, V, 3), m, m, backend="torch")
    assert out.shape == (3, V, 3)


def test_mask_files_under_both_names(tmp_path, assets):
    """The quick start writes forehead.txt / neck.txt, the release forehead_mask.txt / neck_mask.txt:
    both are read wherever masks are read."""
    from meshtalk_fast.io.mesh import load_smoothing_masks

    ours, released = tmp_path / "ours", tmp_path / "released"
    ours.mkdir()
    released.mkdir()
    for key in ("forehead", "neck"):
        data = (assets / f"{key}_mask.txt").read_text()
        (ours / f"{key}.txt").write_text(data)
        (released / f"{key}_mask.txt").write_text(data)
    a, b = load_smoothing_masks(ours, 6172), load_smoothing_masks(released, 6172)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(FileNotFoundError, match="neck.txt or neck_mask.txt"):
        os.remove(ours / "neck.txt")
        load_smoothing_masks(ours, 6172)


# ------------------------------------------------------------------------------------------------
# mesh files
# ------------------------------------------------------------------------------------------------
def test_obj_with_two_material_groups_keeps_the_v_lines(tmp_path, assets):
    """Faces under two ``usemtl`` groups, with normals and texture coordinates: vertex count and order
    are still the file's ``v`` lines (a general loader duplicated them: 12,344 instead of 6172)."""
    v, f = mf.load_obj(assets / "face_template.obj")
    lines = ["mtllib face.mtl", "o face"] + ["v %.9g %.9g %.9g" % tuple(p) for p in v.tolist()]
    lines += ["vt 0.5 0.5", "vn 0 0 1", "g first", "usemtl skin"]
    half = f.shape[0] // 2
    lines += ["f %d/1/1 %d/1/1 %d/1/1" % tuple(t) for t in (f[:half] + 1).tolist()]
    lines += ["g second", "usemtl lips", "s 1"]
    lines += ["f %d//1 %d//1 %d//1" % tuple(t) for t in (f[half:] + 1).tolist()]
    path = tmp_path / "grouped.obj"
    path.write_text("\n".join(lines) + "\n")
    v2, f2 = mf.load_obj(path)
    assert v2.shape == (6172, 3) and torch.equal(v2, v)
    assert torch.equal(f2, f)


def test_obj_polygons_negative_indices_and_errors(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf -4 -3 -2 -1\n")
    v, f = mf.load_obj(path)
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3]]
    path.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="vertex 2 .*non-finite"):
        mf.load_obj(path)
    path.write_text("v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    with pytest.raises(ValueError, match="line 3: face index 9 is outside the 2 vertices"):
        mf.load_obj(path)
    points = tmp_path / "points.obj"
    points.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    v, f = mf.load_obj(points)  # vertices, but no triangles: the caller decides (animate refuses)
    assert v.shape == (3, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="is not a regular file"):
        mf.load_obj(tmp_path)


# ------------------------------------------------------------------------------------------------
# model files: checked before anything is allocated (checkpoint.inspect_model_file)
# ------------------------------------------------------------------------------------------------
def _resave(src, dst, metadata=None, edit=None):
    """Copy a model file with other metadata and/or tensors (safetensors.torch.save_file)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if edit:
        edit(state)
    save_file(state, str(dst), metadata=dict(meta, **(metadata or {})))
    return dst


def test_model_file_config_is_checked_against_the_tensors_before_allocating(tiny, tmp_path, monkeypatch):
    import json

    import meshtalk_fast.models.checkpoint as ck

    good = tmp_path / "tiny.safetensors"
    tiny.save(good)
    config = dict(tiny.config.__dict__)

    def never(*args, **kwargs):
        raise AssertionError("tensors were loaded before the header was checked")

    monkeypatch.setattr("safetensors.torch.load_file", never)
    huge = _resave(good, tmp_path / "huge.safetensors", {"config": json.dumps(dict(config, n_vertices=2_000_000))})
    with pytest.raises(mf.CheckpointError, match=r"huge.safetensors.*has shape .* expects \[2000000, 3\]|"
                                                 r"huge.safetensors.*expects \[1, 1, 2000000, 3\]"):
        mf.MeshTalk.load(huge)
    fast = _resave(good, tmp_path / "fps.safetensors", {"config": json.dumps(dict(config, fps=10 ** 9))})
    with pytest.raises(mf.CheckpointError, match=r"fps must be an integer in \[1, 1000\], got 1000000000"):
        mf.MeshTalk.load(fast)
    twice = tmp_path / "twice.safetensors"
    text = json.dumps(config)
    _resave(good, twice, {"config": text[:-1] + ', "fps": 25}'})
    with pytest.raises(mf.CheckpointError, match="duplicate key 'fps'"):
        mf.MeshTalk.load(twice)
    # a tensor name twice in the header (the JSON object itself)
    raw = good.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    entry = json.dumps(header[name])
    body = json.dumps(header)[:-1] + f', "{name}": {entry}' + "}"
    body += " " * ((8 - len(body) % 8) % 8)
    dup = tmp_path / "dup.safetensors"
    dup.write_bytes(len(body).to_bytes(8, "little") + body.encode() + raw[8 + n:])
    with pytest.raises(mf.CheckpointError, match=f"duplicate key '{name}'"):
        mf.MeshTalk.load(dup)
    monkeypatch.undo()
    assert ck.read_config(good, mf.MeshTalk) == tiny.config and isinstance(mf.MeshTalk.load(good), mf.MeshTalk)


def test_non_finite_weights_are_refused_naming_the_tensor(tiny, tmp_path):
    good = tmp_path / "tiny.safetensors"
    tiny.save(good)

    def poison(state):
        state["vertex_unet.decoder.2.weight"][3, 1] = float("nan")
        state["vertex_unet.decoder.2.weight"][4, 1] = float("inf")

    bad = _resave(good, tmp_path / "nan.safetensors", edit=poison)
    with pytest.raises(mf.CheckpointError, match=r"nan.safetensors: tensor 'vertex_unet.decoder.2.weight' holds "
                                                 r"non-finite weights \(1 NaN, 1 inf"):
        mf.MeshTalk.load(bad)
    released = tmp_path / "released"
    released.mkdir()
    for name in ("encoder", "context_model"):
        torch.save(getattr(tiny, name).state_dict(), released / f"{name}.pkl")
    state = tiny.vertex_unet.state_dict()
    state["vertex_bias"] = state["vertex_bias"].clone()
    state["vertex_bias"][0] = float("nan")
    torch.save(state, released / "vertex_unet.pkl")
    with pytest.raises(mf.CheckpointError, match=r"vertex_unet.pkl: tensor 'vertex_bias' holds non-finite"):
        mf.load_official(released, heads=2, classes=4, n_vertices=40)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero (a character device)")
def test_folders_and_devices_are_not_regular_files(tmp_path):
    for path in ("/dev/zero", tmp_path):
        with pytest.raises(ValueError, match="is not a regular file"):
            mf.MeshTalk.load(path)
        with pytest.raises(ValueError, match="is not a regular file"):
            mf.load_audio(path)


def test_training_checkpoint_without_model_config(tiny, tmp_path):
    from meshtalk_fast.training.state import load_train_state, save_train_state

    opt = torch.optim.Adam(tiny.parameters())
    path = tmp_path / "checkpoint.safetensors"
    save_train_state(str(path), tiny, opt, 1, 3, {"seed": 0})
    assert load_train_state(str(path))["step"] == 3

    def drop(meta_path):
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), framework="pt") as f:
            meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        meta.pop("model_config")
        save_file(state, str(meta_path), metadata=meta)

    drop(tmp_path / "noconfig.safetensors")
    with pytest.raises(mf.CheckpointError, match="metadata lacks 'model_config'"):
        load_train_state(str(tmp_path / "noconfig.safetensors"))


def test_wav_cut_short_warns(tmp_path):
    import soundfile as sf

    path = tmp_path / "speech.wav"
    sf.write(path, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000, subtype="PCM_16")
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        assert mf.load_audio(path).shape == (16000,)  # a whole file: no warning
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:-8000])
    with pytest.warns(UserWarning, match=r"cut.wav' is cut short: its WAV data chunk declares 32000 bytes but the "
                                         r"file holds 24000"):
        assert mf.load_audio(cut).shape == (12000,)


# ------------------------------------------------------------------------------------------------
# the CLI: every error one line, naming the argument or file it is about
# ------------------------------------------------------------------------------------------------
def _animate_argv(files, out, *extra):
    return ["animate", "--model", str(files["model"]), "--template", str(files["template"]),
            "--audio", str(files["wav"]), "--out", str(out), "--formats", "npz", *extra]


def test_cli_bounds_video_size_chunk_and_seed(tiny_cli_files, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(_animate_argv(tiny_cli_files, out, "--video-size", "65536"), capsys, "--video-size", "[16, 4096]", "65536")
    _fails(_animate_argv(tiny_cli_files, out, "--seed", str(2 ** 70)), capsys, "--seed", "2**63 - 1")
    stream = ["stream", "--model", str(tiny_cli_files["model"]), "--template", str(tiny_cli_files["template"]),
              "--audio", str(tiny_cli_files["wav"]), "--out", str(tmp_path / "s.npz")]
    _fails(stream + ["--chunk", str(10 ** 12)], capsys, "--chunk", "[1, 960000]")
    assert not out.exists() and not (tmp_path / "s.npz").exists()


def test_cli_errors_name_the_file_they_are_about(tiny_cli_files, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    nan_obj = tmp_path / "nan.obj"
    lines = tiny_cli_files["template"].read_text().splitlines()
    lines[5] = "v nan 0 0"
    nan_obj.write_text("\n".join(lines) + "\n")
    argv = _animate_argv(tiny_cli_files, out)
    err = _fails(argv[:4] + [str(nan_obj)] + argv[5:], capsys, "nan.obj", "vertex 5", "non-finite")
    assert "speech.wav" not in err
    fast = _resave(tiny_cli_files["model"], tmp_path / "fast.safetensors",
                   {"config": json.dumps(dict(mf.MeshTalk.load(tiny_cli_files["model"]).config.__dict__, fps=10 ** 9))})
    err = _fails(argv[:2] + [str(fast)] + argv[3:], capsys, "fast.safetensors", "fps must be an integer in [1, 1000]")
    assert "speech.wav" not in err
    flat = tmp_path / "flat.obj"
    flat.write_text("\n".join(l for l in lines if l.startswith("v ")).replace("nan", "0") + "\n")
    _fails(argv[:4] + [str(flat)] + argv[5:], capsys, "flat.obj", "has no triangles")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero (a character device)")
def test_cli_folder_or_device_as_audio_or_model(tiny_cli_files, tmp_path, capsys):
    argv = _animate_argv(tiny_cli_files, tmp_path / "out")
    for bad in ("/dev/zero", str(tmp_path)):
        _fails(argv[:6] + [bad] + argv[7:], capsys, bad, "is not a regular file")
    _fails(argv[:2] + ["/dev/zero"] + argv[3:], capsys, "/dev/zero", "is not a regular file")


def test_cli_animate_reads_masks_under_our_names(tiny_cli_files, tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    np.savetxt(masks / "forehead.txt", np.linspace(0, 1, 40))
    np.savetxt(masks / "neck.txt", np.linspace(1, 0, 40))
    assert cli.main(_animate_argv(tiny_cli_files, tmp_path / "out", "--masks", str(masks))) == 0
    assert "smoothing on" in capsys.readouterr().out
    np.savetxt(masks / "neck.txt", np.linspace(1, 0, 40) * 2.5)
    _fails(_animate_argv(tiny_cli_files, tmp_path / "out2", "--masks", str(masks)), capsys, "neck.txt",
           "must hold weights in [0, 1]")


def test_streaming_animator_chunk_frames(tiny):
    with pytest.raises(ValueError, match=r"chunk_frames must be an integer > 0, got 0"):
        mf.StreamingAnimator(tiny, torch.zeros(40, 3), chunk_frames=0)


def test_cli_stream_reports_a_nan_sample_at_once(tiny_cli_files, tmp_path, capsys, monkeypatch):
    import io
    import sys

    samples = (0.1 * np.random.default_rng(1).standard_normal(16000 * 20)).astype("<f4")
    samples[100] = np.nan
    data = samples.tobytes()

    class Stdin:
        def __init__(self):
            self.pos = 0

        def read(self, n):
            assert self.pos == 0, "read past the chunk holding the bad sample"
            self.pos += n
            return data[:n]

    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": Stdin()})())
    monkeypatch.setattr(sys, "stdout", type("O", (), {"buffer": io.BytesIO(), "write": lambda s, x: None,
                                                      "flush": lambda s: None})())
    argv = ["stream", "--model", str(tiny_cli_files["model"]), "--template", str(tiny_cli_files["template"]),
            "--out", "-"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # stream "-" prints its latency on stderr first
    assert err[-1] == "meshtalk-fast stream: error: stdin: sample 100 (at 0.006 s) is nan; the audio must be finite"
    assert sys.stdout.buffer.getvalue() == b""


class _NotAStateDict:
    pass


def test_cli_convert_official_error_is_one_line(tmp_path, capsys):
    import collections

    for name in ("encoder", "vertex_unet", "context_model"):
        torch.save({"weight": torch.zeros(3, 3)}, tmp_path / f"{name}.pkl")
    _fails(["convert-official", str(tmp_path), str(tmp_path / "out.safetensors")], capsys, "encoder.pkl",
           "missing keys")
    # torch.load(weights_only=True) refuses a pickled object with a message of many lines
    torch.save(collections.OrderedDict(weight=_NotAStateDict()), tmp_path / "encoder.pkl")
    _fails(["convert-official", str(tmp_path), str(tmp_path / "out.safetensors")], capsys, "encoder.pkl",
           "not a readable torch state dict")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("speechface") / "data"
    assert cli.main(["make-dataset", "--out", str(out), "--sentences", "3", "--seed", "1"]) == 0
    return out


def test_cli_resume_without_model_config_is_one_line(tiny_cli_files, dataset, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from meshtalk_fast.training.state import save_train_state

    model = mf.MeshTalk.load(tiny_cli_files["model"])
    path = tmp_path / "checkpoint.safetensors"
    save_train_state(str(path), model, torch.optim.Adam(model.parameters()), 1, 3, {"seed": 0})
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    del meta["model_config"]
    save_file(state, str(path), metadata=meta)
    capsys.readouterr()
    _fails(["train", "--data", str(dataset), "--stage", "1", "--out", str(tmp_path / "run"), "--resume", str(path)],
           capsys, "checkpoint.safetensors", "metadata lacks 'model_config'")
