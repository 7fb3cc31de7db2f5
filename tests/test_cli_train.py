"""The training commands end to end on a tiny built-in data set: make-dataset, train both stages
with a TOML config, resume, evaluate; and their one-line errors."""
import json

import pytest

import meshtalk_fast as mf
from meshtalk_fast import cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("speechface")
    assert cli.main(["make-dataset", "--out", str(out / "data"), "--sentences", "3", "--seed", "1"]) == 0
    return out / "data"


def test_train_evaluate(dataset, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text("log_every = 1\nval_every = 2\ncheckpoint_every = 2\n"
                      "[model]\nheads = 4\nclasses = 8\nclock = \"exact\"\nframing = \"stream\"\n"
                      "[stage1]\nbatch_size = 2\nsegment_frames = 8\nsteps = 2\n"
                      "[stage2]\nbatch_size = 2\nsegment_frames = 8\nsteps = 2\n")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(dataset), "--stage", "1", "--out", str(run), "--config", str(config)]) == 0
    assert cli.main(["train", "--data", str(dataset), "--stage", "2", "--out", str(run), "--config", str(config),
                     "--model", str(run / "model.safetensors")]) == 0
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert {(r["stage"], r["split"]) for r in records} >= {(1, "train"), (1, "val"), (2, "train"), (2, "val")}
    # --resume of the finished stage-2 checkpoint with more steps continues from step 2
    config.write_text(config.read_text().replace("[stage2]\nbatch_size = 2\nsegment_frames = 8\nsteps = 2",
                                                 "[stage2]\nbatch_size = 2\nsegment_frames = 8\nsteps = 3"))
    assert cli.main(["train", "--data", str(dataset), "--stage", "2", "--out", str(run), "--config", str(config),
                     "--resume", str(run / "checkpoint.safetensors")]) == 0
    assert "step 3" in capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(dataset),
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["lve"] > 0 and result["lve_static"] > 0 and "disentanglement_audio" in result
    assert result["lve_l2"] > 0 and result["lve_l2_static"] > 0  # both LVE conventions, named apart
    assert result["code_sensitivity"] >= 0 and "blink_rate_ratio" in result and "brow_error_ratio" in result
    assert "squared-max convention" in capsys.readouterr().out
    assert cli.main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(dataset),
                     "--samples", "0"]) == 2
    assert "--samples must be at least 1" in capsys.readouterr().err


def test_quickstart_smoke(dataset, tmp_path, capsys):
    """The README's main job at a few seconds of training (the data set of the fixture is reused):
    every output is written, and the collapse warning is printed exactly when the codes collapsed."""
    import shutil

    from meshtalk_fast.quickstart import COLLAPSED

    out = tmp_path / "qs"
    shutil.copytree(dataset, out / "data")
    assert cli.main(["quickstart", "--out", str(out), "--minutes", "0.05"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("lve", "lve_static", "lve_ratio", "lve_l2", "fdd", "disentanglement_expression",
                "disentanglement_audio", "code_sensitivity", "eyelid_error_ratio", "brow_error_ratio",
                "blink_rate_ratio", "brow_rate_ratio", "blink_rate_gt"):
        assert isinstance(metrics[key], float), key
    assert metrics["lve_static"] > 0 and metrics["stage1_steps"] >= 1 and metrics["missing"] == []
    for name in ("model.safetensors", "checkpoint.safetensors", "training_curves.png", "heldout/meshes.npz",
                 "heldout/upper_face.png", "heldout/speech.wav"):
        assert (out / name).is_file(), name
    video = mf.probe_mp4(out / "heldout" / "preview.mp4")  # ground truth | sampled, with the speech
    assert (video["width"], video["height"]) == (768, 384) and video["audio_codec"] == "aac"
    assert "targets: lve_ratio" in printed and "blinks/min" in printed
    assert ("WARNING: the decoded face hardly depends on the codes" in printed) == \
        (metrics["code_sensitivity"] < COLLAPSED)


def test_train_errors(dataset, tmp_path, capsys):
    assert cli.main(["train", "--data", str(dataset), "--stage", "2", "--out", str(tmp_path)]) == 2
    assert "--stage 2 needs --model" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path / "nowhere"), "--stage", "1", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nlr = -1\n")
    assert cli.main(["train", "--data", str(dataset), "--stage", "1", "--out", str(tmp_path), "--config", str(bad)]) == 2
    assert "stage1.lr must be > 0" in capsys.readouterr().err
