"""Averaged weights (``stage{N}.ema``): the stage ends with the exponential moving average of its weights,
validation reads it without changing the training, and a resumed run averages as an uninterrupted one."""
import json

import pytest
import torch

from meshtalk_fast.training.state import load_train_state
from meshtalk_fast.training.trainer import Trainer
from test_training import make_model, masks, small_config, synthetic_clips


def _trajectory(trainer):
    """Record the stage's weights after every optimizer step (the raw weights, before any averaging)."""
    seen = []
    step = trainer._train_step

    def recording(*args, **kwargs):
        out = step(*args, **kwargs)
        seen.append([p.detach().clone() for p in trainer._params()])
        return out

    trainer._train_step = recording
    return seen


def _scores(trainer, last, averaged):
    """The stage-end check sees these losses: first for the last weights, then for the average."""
    calls = []

    def fixed(*args):
        calls.append(1)
        return last if len(calls) == 1 else averaged

    trainer._fixed_objective = fixed
    return calls


@pytest.mark.parametrize("stage", [1, 2])
def test_the_stage_ends_with_the_moving_average_of_its_weights(tmp_path, stage):
    clips = synthetic_clips()
    decay = 0.7
    plain_cfg, cfg = small_config(steps=4), small_config(steps=4, ema=decay)
    plain_cfg.stage2.steps = 4
    cfg.stage2.ema, cfg.stage2.steps = decay, 4
    plain = Trainer(make_model(), clips[:3], masks(), plain_cfg, str(tmp_path / "plain"), val_clips=clips[3:],
                    progress=False)
    averaged = Trainer(make_model(), clips[:3], masks(), cfg, str(tmp_path / "ema"), val_clips=clips[3:],
                       progress=False)
    if stage == 2:
        plain.fit(1)
        averaged.fit(1)
        averaged.model.load_state_dict(plain.model.state_dict())  # the same stage-1 model under both priors
    raw, raw_ema = _trajectory(plain), _trajectory(averaged)
    checked = _scores(averaged, last=1.0, averaged=0.5)
    start = [p.detach().clone() for p in (plain.model.encoder.parameters() if stage == 1 else
                                          plain.model.context_model.parameters())]
    if stage == 1:
        start += [p.detach().clone() for p in plain.model.vertex_unet.parameters()]
    plain.fit(stage)
    averaged.fit(stage)
    # validation every step swapped the averaged weights in and out: the raw weights trained exactly as without
    assert len(raw) == len(raw_ema) == 4 and len(checked) == 2
    for a, b in zip(raw, raw_ema):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    expect = start
    for weights in raw:  # avg <- decay * avg + (1 - decay) * weights, written out
        expect = [decay * e + (1 - decay) * w for e, w in zip(expect, weights)]
    got = averaged._params()
    for e, g, w in zip(expect, got, raw[-1]):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    moved = max(float((g.detach() - w).abs().max()) for g, w in zip(got, raw[-1]))
    assert moved > 1e-4  # the average is not the last weights
    # the saved model is the average
    saved = load_train_state(str(tmp_path / "ema" / "checkpoint.safetensors"))
    for k, v in saved["model"].state_dict().items():
        assert torch.equal(v, averaged.model.state_dict()[k]), k
    # validation read the averaged weights (logged as such)
    vals = [json.loads(line) for line in open(tmp_path / "ema" / "metrics.jsonl")]
    vals = [r for r in vals if r["split"] == "val" and r["stage"] == stage]
    assert len(vals) == 4 and all(r["ema"] for r in vals)
    kept = [r for r in map(json.loads, open(tmp_path / "ema" / "metrics.jsonl")) if r["split"] == "average"]
    assert kept[-1]["kept"] == "average" and kept[-1]["objective_average"] == 0.5
    if stage == 1:  # the last validation ran after the last step, on the weights the stage ended with
        from meshtalk_fast.evaluation.evaluate import evaluate

        m = masks()
        final = evaluate(averaged.model, clips[3:], m.lips, m.upper_face, mode="reconstruct", seed=0)
        assert vals[-1]["lve"] == pytest.approx(final["lve"], rel=1e-6)


def test_the_last_weights_stay_when_their_loss_is_lower(tmp_path):
    clips = synthetic_clips()
    plain = Trainer(make_model(), clips, masks(), small_config(steps=3), str(tmp_path / "a"), progress=False)
    averaged = Trainer(make_model(), clips, masks(), small_config(steps=3, ema=0.5), str(tmp_path / "b"),
                       progress=False)
    _scores(averaged, last=0.5, averaged=1.0)
    plain.fit(1)
    averaged.fit(1)
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, averaged.model.state_dict()[k]), k
    kept = [r for r in map(json.loads, open(tmp_path / "b" / "metrics.jsonl")) if r["split"] == "average"]
    assert kept == [{"stage": 1, "step": 3, "split": "average", "objective_last": 0.5, "objective_average": 1.0,
                     "kept": "last"}]


def test_the_check_is_the_same_number_for_the_same_weights(tmp_path):
    clips = synthetic_clips()
    trainer = Trainer(make_model(), clips, masks(), small_config(steps=2, ema=0.5), str(tmp_path), progress=False)
    trainer.fit(1)
    objective, _ = trainer._build(1)
    from meshtalk_fast.training.batches import CropSampler

    mc = trainer.model.config
    sampler = CropSampler(trainer.train_clips, 6, mc.fps, mc.clock, mc.lookahead, 0, mc.framing)
    rng, mode = torch.get_rng_state(), trainer.model.training
    a = trainer._fixed_objective(objective, sampler, 1)
    assert torch.equal(torch.get_rng_state(), rng)  # the check draws nothing from the training's generator
    assert a == trainer._fixed_objective(objective, sampler, 1) and a > 0
    with torch.no_grad():
        trainer.model.vertex_unet.vertex_bias.add_(0.5)
    assert trainer._fixed_objective(objective, sampler, 1) > a
    assert trainer.model.training == mode  # back in the mode it was in


def test_a_resumed_run_averages_as_an_uninterrupted_one(tmp_path):
    clips = synthetic_clips()
    full = Trainer(make_model(), clips, masks(), small_config(steps=4, ema=0.6), str(tmp_path / "a"), progress=False)
    full.fit(1)
    # stop after 2 of 4 steps: the mid-stage checkpoint (checkpoint_every = 1) holds the raw weights and the average
    cfg = small_config(steps=4, ema=0.6)
    cut = Trainer(make_model(), clips, masks(), cfg, str(tmp_path / "c"), progress=False)
    step = cut._train_step
    calls = []

    def stop_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        calls.append(1)
        return step(*args, **kwargs)

    cut._train_step = stop_after_two
    with pytest.raises(KeyboardInterrupt):
        cut.fit(1)
    state = load_train_state(str(tmp_path / "c" / "checkpoint.safetensors"))
    assert state["step"] == 2 and state["ema"] is not None
    resumed = Trainer(make_model(), clips, masks(), cfg, str(tmp_path / "c"), progress=False)
    resumed.resume(str(tmp_path / "c" / "checkpoint.safetensors"))
    resumed.fit(1)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_ema_is_checked(tmp_path):
    for bad in (1.0, -0.1, "0.9"):
        with pytest.raises(ValueError, match=r"stage1.ema must be a number in \[0, 1\)"):
            small_config(ema=bad).validate()


@pytest.mark.parametrize("flush", [True, False])
def test_the_cpu_trainer_flushes_denormals_unless_told_not_to(tmp_path, flush):
    tiny = torch.tensor([1e-39])  # a denormal float32
    assert float(tiny * 1.0) != 0
    cfg = small_config()
    cfg.flush_denormal = flush
    Trainer(make_model(), synthetic_clips(), masks(), cfg, str(tmp_path), progress=False)
    assert (float(tiny * 1.0) == 0) == flush
    cfg.flush_denormal = "yes"
    with pytest.raises(ValueError, match="flush_denormal must be true or false, got 'yes'"):
        cfg.validate()


def test_a_checkpoint_with_broken_averaged_weights_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from meshtalk_fast.models.checkpoint import CheckpointError

    clips = synthetic_clips()
    cfg = small_config(steps=2, ema=0.5)
    Trainer(make_model(), clips, masks(), cfg, str(tmp_path / "a"), progress=False).fit(1)
    path = tmp_path / "a" / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    n = sum(k.startswith("ema.") for k in tensors)
    gap = {k: v for k, v in tensors.items() if k != "ema.1"}  # ema.0, ema.2, ...: one missing
    save_file(gap, str(tmp_path / "gap.safetensors"), meta)
    with pytest.raises(CheckpointError, match=r"tensors ema\.0 \.\. ema\.\d+ expected"):
        load_train_state(str(tmp_path / "gap.safetensors"))
    short = {k: v for k, v in tensors.items() if k != f"ema.{n - 1}"}  # one fewer than the stage's parameters
    save_file(short, str(tmp_path / "short.safetensors"), meta)
    resumed = Trainer(make_model(), clips, masks(), small_config(steps=3, ema=0.5), str(tmp_path / "b"),
                      progress=False)
    resumed.resume(str(tmp_path / "short.safetensors"))
    with pytest.raises(ValueError, match=r"the checkpoint's averaged weights \(ema\) do not match"):
        resumed.fit(1)


def test_the_check_compares_the_fitting_terms_without_the_regularisers(tmp_path):
    """The code-usage term (and the logit-gap penalty) measure the codes' spread, not the fit: the end-of-stage
    check reads the weighted data terms alone, the same number whatever the regulariser's weight."""
    from meshtalk_fast.training.batches import CropSampler

    clips = synthetic_clips()
    checks, totals = [], []
    for weight in (0.0, 50.0):
        trainer = Trainer(make_model(), clips, masks(), small_config(steps=1, diversity=weight, brow_weight=0.0),
                          str(tmp_path / str(weight)), progress=False)
        trainer.fit(1)
        trainer.model.load_state_dict(make_model().state_dict())  # the same weights in both
        objective, _ = trainer._build(1)
        mc = trainer.model.config
        sampler = CropSampler(trainer.train_clips, 6, mc.fps, mc.clock, mc.lookahead, 0, mc.framing)
        checks.append(trainer._fixed_objective(objective, sampler, 1))
        micros = trainer._host_batches(sampler, 1, 10**12)
        with torch.no_grad():
            terms = trainer._forward(objective, micros, 1, 10**12, backward=False)
        totals.append(float(terms["total"]))
        assert float(terms["fitting"]) == pytest.approx(float(terms["recon"] + terms["landmarks"]
                                                              + terms["modality_crossing"]), rel=1e-6)
    assert totals[1] > totals[0] + 1e-3  # the regulariser is in the total ...
    assert checks[0] == pytest.approx(checks[1], rel=1e-6)  # ... and not in the check
