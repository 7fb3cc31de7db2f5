"""The training commands end to end on a tiny built-in data set: make-dataset, train both stages
with a TOML config, resume, evaluate; and their one-line errors."""
import json
import os

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("speechface")
    # the quick start's data set at 3 sentences: its default 4 faces per voice, so the quick start reuses it
    assert cli.main(["make-dataset", "--out", str(out / "data"), "--sentences", "3", "--seed", "1",
                     "--faces-per-voice", "4"]) == 0
    return out / "data"


QUICK = ["--minutes", "0.05", "--seed", "1", "--sentences", "3"]  # the fixture's data set


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
    # stage 2's validation logs the prior's held-out cross-entropy beside the LVE
    assert all(r["cross_entropy"] > 0 for r in records if r["stage"] == 2 and r["split"] == "val")
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
    # the test split's faces checked against the train split's: the held-out voice is a face never trained on
    assert {"brow_error_ratio_known_faces", "brow_error_ratio_new_faces", "eyelid_error_ratio_new_faces"} <= set(result)
    # and the train split as the rates' second reference (its ground-truth events, counted the same way)
    assert result["blink_events_train"] > 0 and result["blink_rate_train"] > 0
    assert result["blink_rate_ratio_train"] == pytest.approx(result["blink_rate"] / result["blink_rate_train"])
    assert len(result["expression_head_classes"]) == 0  # this config has no expression heads
    assert "squared-max convention" in capsys.readouterr().out
    # the rates over every held-out split by default (as the quick start), post-smoothed; one split on request
    assert result["rate_splits"] == ["test", "val"] and result["post_smoothed"]
    test_only = tmp_path / "test_only.json"
    assert cli.main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(dataset),
                     "--rate-splits", "test", "--no-smoothing", "--out", str(test_only)]) == 0
    one = json.loads(test_only.read_text())
    assert one["rate_splits"] == ["test"] and not one["post_smoothed"]
    assert one["rate_sequences"] < result["rate_sequences"] and one["lve"] == result["lve"]
    assert cli.main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(dataset),
                     "--samples", "0"]) == 2
    assert "--samples must be at least 1" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(dataset),
                     "--rate-splits", "test,holdout"]) == 2
    assert "--rate-splits names split 'holdout'" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(dataset),
                     "--rate-splits", "test,val,test"]) == 2
    assert "--rate-splits must name each split once" in capsys.readouterr().err


def test_quickstart_smoke(dataset, tmp_path, capsys):
    """The README's main job at a few seconds of training (the data set of the fixture is reused):
    every output is written, and the collapse warning is printed exactly when the codes collapsed."""
    import shutil

    from meshtalk_fast.training.quickstart import COLLAPSED

    out = tmp_path / "qs"
    shutil.copytree(dataset, out / "data")
    assert cli.main(["quickstart", "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("lve", "lve_static", "lve_ratio", "lve_l2", "fdd", "disentanglement_expression",
                "disentanglement_audio", "code_sensitivity", "eyelid_error_ratio", "brow_error_ratio",
                "blink_rate_ratio", "brow_rate_ratio", "blink_rate_gt", "blink_rate_train", "blink_rate_ratio_train"):
        assert isinstance(metrics[key], float), key
    assert isinstance(metrics["blink_events_gt"], int) and isinstance(metrics["blink_events_train"], int)
    assert metrics["post_smoothed"] and metrics["rate_sequences"] > 0  # over validation and test
    assert metrics["lve_static"] > 0 and metrics["stage1_steps"] >= 1 and metrics["missing"] == []
    for name in ("model.safetensors", "checkpoint.safetensors", "training_curves.png", "heldout/meshes.npz",
                 "heldout/upper_face.png", "heldout/speech.wav"):
        assert (out / name).is_file(), name
    video = mf.probe_mp4(out / "heldout" / "preview.mp4")  # ground truth | sampled, with the speech
    assert (video["width"], video["height"]) == (768, 384) and video["audio_codec"] == "aac"
    assert "targets: lve_ratio" in printed and "blinks/min" in printed
    assert ("WARNING: the decoded face hardly depends on the codes" in printed) == \
        (metrics["code_sensitivity"] < COLLAPSED)
    # stage 2 ended with the free heads' calibration (stage2.prior_calibration), each pass logged
    log = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["pass"] for r in log if r["split"] == "calibration"] == list(range(6))
    # the lock watch's firings, if any, are in metrics.json as they are in the log (stage1.expression_lock_steps)
    assert metrics["stage1_locks"] == [[r["group"], r["step"]] for r in log if r["split"] == "lock"]
    # and `calibrate` does it again to any model file: only the free heads' output biases change
    again = tmp_path / "calibrated.safetensors"
    assert cli.main(["calibrate", "--model", str(out / "model.safetensors"), "--data", str(out / "data"),
                     "--steps", "2", "--out", str(again)]) == 0
    assert "pass 2: total variation" in capsys.readouterr().out
    before, after = (mf.MeshTalk.load(p).state_dict() for p in (out / "model.safetensors", again))
    assert [k for k in before if not torch.equal(before[k], after[k])] == ["context_model.logits.masked_linear.bias"]


def test_quickstart_with_the_600ms_audio_context(dataset, tmp_path, capsys):
    """``--audio-context-ms 600`` (model.audio_context_ms): the quick start trains, evaluates and animates a
    model reading 600 ms windows, centred (look-ahead 4800 samples), and its file says so."""
    import shutil

    out = tmp_path / "qs600"
    shutil.copytree(dataset, out / "data")
    assert cli.main(["quickstart", "--out", str(out), *QUICK, "--audio-context-ms", "600"]) == 0
    model = mf.MeshTalk.load(out / "model.safetensors", audio_context_ms=600)
    assert (model.config.audio_context_ms, model.config.lookahead) == (600, 4800)
    assert model.encoder.audio_encoder.receptive_field == 61
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stage1_steps"] >= 1 and metrics["lve_static"] > 0
    assert (out / "heldout" / "meshes.npz").is_file()
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--out", str(out), "--audio-context-ms", "500"])
    assert "invalid choice: 500" in capsys.readouterr().err


def test_quickstart_refuses_a_data_set_made_with_other_arguments(dataset, tmp_path, capsys):
    """DIR/data is reused only if it is the data set the quick start's arguments make: another --seed or
    --faces-per-voice is refused naming what differs, before any training (nothing is written)."""
    import shutil

    out = tmp_path / "other"
    shutil.copytree(dataset, out / "data")
    assert cli.main(["quickstart", "--out", str(out), "--minutes", "0.05", "--seed", "2", "--sentences", "3"]) == 2
    assert "made with other arguments than this quick start's (seed differ)" in capsys.readouterr().err
    assert cli.main(["quickstart", "--out", str(out), *QUICK, "--faces-per-voice", "1"]) == 2
    assert "(faces_per_voice differ)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["data"]
    assert cli.main(["quickstart", "--out", str(tmp_path / "q"), *QUICK, "--template", "t.obj", "--masks", "m",
                     "--faces-per-voice", "2"]) == 2
    assert "--faces-per-voice must be 1 with --template" in capsys.readouterr().err


def test_train_errors(dataset, tmp_path, capsys):
    assert cli.main(["train", "--data", str(dataset), "--stage", "2", "--out", str(tmp_path)]) == 2
    assert "--stage 2 needs --model" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path / "nowhere"), "--stage", "1", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nlr = -1\n")
    assert cli.main(["train", "--data", str(dataset), "--stage", "1", "--out", str(tmp_path), "--config", str(bad)]) == 2
    assert "stage1.lr must be > 0" in capsys.readouterr().err
    released = tmp_path / "released.safetensors"  # a prior whose heads all read the speech has nothing to calibrate
    mf.MeshTalk(30, heads=4, classes=8).save(released)
    assert cli.main(["calibrate", "--model", str(released), "--data", str(dataset), "--out",
                     str(tmp_path / "c.safetensors")]) == 2
    assert "calibrating the prior needs free heads" in capsys.readouterr().err
    assert cli.main(["calibrate", "--model", str(released), "--data", str(dataset), "--steps", "0", "--out",
                     str(tmp_path / "c.safetensors")]) == 2
    assert "--steps must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()


TINY = ("log_every = 1\nval_every = 100\ncheckpoint_every = 100\nseed = {seed}\n"
        "[model]\nheads = 2\nclasses = 4\nclock = \"exact\"\nframing = \"stream\"\n"
        "[stage1]\nbatch_size = 4\nsegment_frames = 4\nsteps = {steps}\naccumulate = {accumulate}\n")


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_train_is_reproducible_from_the_config_seed(dataset, tmp_path):
    """Two identical runs give identical weights (the initial weights are drawn from the config's seed)."""
    import torch

    config = tmp_path / "tiny.toml"
    runs = []
    for i in range(2):
        config.write_text(TINY.format(seed=3, accumulate=1, steps=1))
        out = tmp_path / f"run{i}"
        assert cli.main(["train", "--data", str(dataset), "--stage", "1", "--out", str(out), "--config",
                         str(config)]) == 0
        runs.append(_weights(out / "model.safetensors"))
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_torchrun_two_processes_equal_one(dataset, tmp_path):
    """The README's command, ``torchrun --nproc_per_node 2 -m meshtalk_fast.cli train ...``, with the gloo
    backend on the CPU: 2 processes x 1 micro-batch compute what 1 process computes with 2."""
    import os
    import subprocess
    import sys

    import torch

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text(TINY.format(seed=5, accumulate=2, steps=2))
    two.write_text(TINY.format(seed=5, accumulate=1, steps=2))
    assert cli.main(["train", "--data", str(dataset), "--stage", "1", "--out", str(tmp_path / "single"),
                     "--config", str(one)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([os.path.join(root, "python"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "meshtalk_fast.cli", "train", "--data", str(dataset), "--stage", "1",
                           "--out", str(tmp_path / "ddp"), "--config", str(two)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = _weights(tmp_path / "single" / "model.safetensors"), _weights(tmp_path / "ddp" / "model.safetensors")
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6)
    losses = [[json.loads(line)["total"] for line in open(tmp_path / run / "metrics.jsonl")] for run in ("single", "ddp")]
    assert len(losses[0]) == 2 and torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5)


def test_nan_meshes_are_refused_naming_the_file(dataset, tmp_path, capsys):
    import shutil

    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    name = sorted(os.listdir(data / "train"))[1]
    path = data / "train" / name / "meshes.npy"
    geom = np.load(path)
    geom[3, 17, 1] = np.nan
    np.save(path, geom)
    assert cli.main(["train", "--data", str(data), "--stage", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "mesh frame 3 holds non-finite" in err[0], err


def test_train_error_is_not_printed_inside_the_progress_bar(dataset, tmp_path, capsys, monkeypatch):
    from meshtalk_fast.training.trainer import Trainer

    def broken(self, *args, **kwargs):
        raise RuntimeError("the step failed")

    monkeypatch.setattr(Trainer, "_train_step", broken)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(seed=0, accumulate=1, steps=2))
    assert cli.main(["train", "--data", str(dataset), "--stage", "1", "--out", str(tmp_path / "run"),
                     "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.endswith("\nmeshtalk-fast train: error: the step failed\n"), err[-300:]
