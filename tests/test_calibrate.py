"""The prior's free-head calibration (``training/calibrate.py``, ``stage2.prior_calibration``): it brings the
class shares of the prior's own samples to those of the training codes, changes nothing but the free heads'
output biases, and runs at the end of stage 2 inside the stage's time budget."""
import json

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training import TrainConfig
from meshtalk_fast.training.calibrate import PriorCalibration, calibrate_free_heads, free_head_occupancy, switch_rate
from meshtalk_fast.training.trainer import Trainer
from helpers import needs_core
from test_training import V, masks, small_config, synthetic_clips

H, C, K = 4, 8, 2


def _free_model(seed=0, **config):
    torch.manual_seed(seed)
    return mf.MeshTalk(V, heads=H, classes=C, expression_heads=K, expression_input="offset",
                       prior_expression="free", prior_head_masks="inclusive", **config)


def _drifted(model, calibration):
    """Push every free head's bias towards the class its codes use least, so its samples drift from them."""
    with torch.no_grad():
        bias = model.context_model.logits.masked_linear.bias.view(H, C)
        for h in range(K):
            bias[h, int(calibration.target[h].argmin())] += 4.0
    return model


def test_shares_and_switch_rates_count_what_they_say():
    labels = torch.tensor([[0, 1, 5], [0, 2, 5], [1, 2, 5], [1, 2, 7]])
    occ = free_head_occupancy(labels, 2, 3)
    assert torch.equal(occ, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]], dtype=torch.float64))
    # head 0 changes once in 3 steps, head 1 once; a second sequence of 2 frames: one change of head 0
    rate = switch_rate([labels[:, :2], torch.tensor([[3, 4], [2, 4]])])
    assert torch.allclose(rate, torch.tensor([2 / 4, 1 / 4], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"labels must be \[N, H >= 3\], got \[4, 2\]"):
        free_head_occupancy(labels[:, :2], 3, 3)


@needs_core
def test_the_calibration_brings_the_sampled_shares_to_the_codes():
    clips = synthetic_clips(n=6, seconds=3.0)
    model = _free_model()
    calibration = PriorCalibration(model, clips, seed=3)
    _drifted(model, calibration)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    records = calibration.run(4)
    assert [r["pass"] for r in records] == [0, 1, 2, 3, 4]
    first, last = records[0]["total_variation_mean"], records[-1]["total_variation_mean"]
    assert first > 0.3, f"the pushed biases should have moved the samples off the codes' shares, got {first}"
    assert last < 0.1 * first, f"total variation {first:.3f} -> {last:.3f}"  # measured: 0.98 -> 0.008
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["context_model.logits.masked_linear.bias"]
    rows = (after[changed[0]] - before[changed[0]]).view(H, C)
    assert rows[:K].abs().max() > 0 and torch.equal(rows[K:], torch.zeros(H - K, C))  # free heads only


@needs_core
def test_a_calibrated_model_file_samples_the_same_in_every_backend(tmp_path):
    clips = synthetic_clips(n=3, seconds=2.0)
    model = _free_model()
    calibrate_free_heads(_drifted(model, PriorCalibration(model, clips)), clips, 2)
    model.save(tmp_path / "m.safetensors")
    again = mf.MeshTalk.load(tmp_path / "m.safetensors")
    audio = torch.randn(2, 9, again.config.audio_dim)
    a = again.sample(audio, argmax=True, backend="cpp")
    b = again.sample(audio, argmax=True, backend="torch")
    assert torch.equal(a, b)
    assert torch.equal(again.context_model.logits.masked_linear.bias, model.context_model.logits.masked_linear.bias)


def test_bad_calls_are_refused():
    clips = synthetic_clips(n=2)
    with pytest.raises(ValueError, match="needs free heads .*prior_expression = 'free'"):
        PriorCalibration(mf.MeshTalk(V, heads=H, classes=C), clips)
    with pytest.raises(ValueError, match="clips must hold at least one sequence, got none"):
        PriorCalibration(_free_model(), [])
    calibration = PriorCalibration(_free_model(), clips)
    for steps in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match=f"steps must be an integer >= 1, got {steps!r}"):
            calibration.run(steps)


def _config(**stage2):
    cfg = small_config()
    cfg.model.expression_heads, cfg.model.expression_input = K, "offset"
    cfg.model.prior_expression, cfg.model.prior_head_masks = "free", "inclusive"
    cfg.model.heads, cfg.model.classes = H, C
    for k, v in stage2.items():
        setattr(cfg.stage2, k, v)
    return cfg.validate()


@needs_core
def test_stage_two_ends_with_the_calibration_and_logs_it(tmp_path):
    clips = synthetic_clips()
    trainer = Trainer(_free_model(), clips[:3], masks(), _config(prior_calibration=2), str(tmp_path),
                      progress=False)
    trainer.fit(1)
    trainer.fit(2)
    log = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    passes = [r for r in log if r["split"] == "calibration"]
    assert [r["pass"] for r in passes] == [0, 1, 2] and all(r["stage"] == 2 and r["step"] == 2 for r in passes)
    assert all(len(r["total_variation"]) == K and len(r["switch_ratio"]) == K for r in passes)
    saved = mf.MeshTalk.load(tmp_path / "model.safetensors")  # the file holds the calibrated biases
    assert torch.equal(saved.context_model.logits.masked_linear.bias,
                       trainer.model.context_model.logits.masked_linear.bias)


@needs_core
def test_the_calibration_comes_out_of_the_stage_budget(tmp_path, monkeypatch):
    """Under a time budget the passes are set aside first: a pass said to take longer than the budget leaves
    no time for training steps, and the calibration still runs."""
    clips = synthetic_clips()
    trainer = Trainer(_free_model(), clips[:3], masks(), _config(prior_calibration=1, steps=1000), str(tmp_path),
                      progress=False)
    trainer.fit(1)
    monkeypatch.setattr(PriorCalibration, "pass_seconds", lambda self: 60.0)
    trainer.fit(2, max_seconds=30.0)
    assert trainer.step == 0
    log = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["pass"] for r in log if r["split"] == "calibration"] == [0, 1]


@pytest.mark.parametrize("value, message", [
    (-1, "stage2.prior_calibration must be an integer >= 0 (0: off), got -1"),
    (True, "stage2.prior_calibration must be an integer >= 0 (0: off), got True"),
    (2.0, "stage2.prior_calibration must be an integer >= 0 (0: off), got 2.0"),
])
def test_the_config_checks_prior_calibration(value, message):
    cfg = TrainConfig()
    cfg.stage2.prior_calibration = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg.validate()


def test_prior_calibration_needs_free_heads():
    cfg = TrainConfig()
    cfg.stage2.prior_calibration = 3
    with pytest.raises(ValueError, match="stage2.prior_calibration > 0 needs a prior with free heads .*"
                                         "expression_heads=0, prior_expression='audio'"):
        cfg.validate()
    _config(prior_calibration=3)  # with free heads it validates


@needs_core
def test_each_module_keeps_its_own_mode():
    """Stage 2 trains the prior with the encoder in eval mode (no dropout); calibrating must leave it so."""
    clips = synthetic_clips(n=2)
    model = _free_model().train()
    model.encoder.eval()
    PriorCalibration(model, clips).run(1)
    assert model.training and model.context_model.training and not model.encoder.training
    assert not any(m.training for m in model.encoder.modules())


def _ddp_calibration_worker(rank, world, init_file, out_dir, result_dir):
    import datetime
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    trainer = Trainer(_free_model(), synthetic_clips()[:3], masks(), _config(prior_calibration=1, steps=10**6),
                      os.path.join(out_dir, str(rank)), progress=False)
    trainer.fit(1)
    trainer.fit(2, max_seconds=3.0)
    torch.save({"step": trainer.step, "bias": trainer.model.context_model.logits.masked_linear.bias.detach().clone()},
               os.path.join(result_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@needs_core
def test_two_processes_calibrate_once_and_agree(tmp_path):
    """With two processes rank 0 calibrates (its passes logged once), both stop their stage-2 steps at the same step
    (rank 0's time reserve), and both end with rank 0's biases."""
    import os

    import torch.multiprocessing as mp

    os.makedirs(tmp_path / "res")
    mp.spawn(_ddp_calibration_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out"), str(tmp_path / "res")),
             nprocs=2, join=True)
    a, b = (torch.load(tmp_path / "res" / f"{r}.pt") for r in (0, 1))
    assert a["step"] == b["step"] and torch.equal(a["bias"], b["bias"])
    log = [json.loads(line) for line in open(tmp_path / "out" / "0" / "metrics.jsonl")]
    assert [r["pass"] for r in log if r["split"] == "calibration"] == [0, 1]
    assert not (tmp_path / "out" / "1" / "metrics.jsonl").exists() or \
        not any(json.loads(line)["split"] == "calibration" for line in open(tmp_path / "out" / "1" / "metrics.jsonl"))
