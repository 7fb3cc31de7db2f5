"""The two-stage trainer on small synthetic sequences: stages run, resume is bit-exact, checkpoints
are atomic, two processes (gloo) compute what one process does, and configs are validated."""
import json
import math
import os

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training import TrainConfig, align, load_config
from meshtalk_fast.training.trainer import Trainer, TrainingMasks
from helpers import needs_core

V = 40


def synthetic_clips(n=4, seconds=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    template = torch.randn(V, 3, generator=g)
    clips = []
    for i in range(n):
        audio = torch.randn(int(16000 * seconds), generator=g) * 0.01
        T = mf.num_frames(audio.shape[0])
        motion = torch.sin(torch.linspace(0, 6, T) * (i + 1))[:, None, None] * torch.randn(1, V, 3, generator=g) * 0.1
        clips.append(align(f"seq{i}", template, template + motion, audio, 30, "released"))
    return clips


def masks():
    g = torch.Generator().manual_seed(1)
    m = torch.rand(5, V, generator=g)
    return TrainingMasks(m[0], m[1], (m[2] > 0.8).float(), (m[3] > 0.5).float(), (m[4] > 0.5).float())


def small_config(**stage):
    cfg = TrainConfig()
    cfg.stage1.batch_size, cfg.stage1.segment_frames, cfg.stage1.steps, cfg.stage1.lr = 4, 6, 3, 1e-3
    cfg.stage2.batch_size, cfg.stage2.segment_frames, cfg.stage2.steps = 4, 6, 2
    for k, v in stage.items():
        setattr(cfg.stage1, k, v)
    cfg.log_every = cfg.val_every = cfg.checkpoint_every = 1
    return cfg


def make_model():
    torch.manual_seed(0)
    return mf.MeshTalk(V, heads=4, classes=8)


def test_both_stages_write_logs_checkpoints_and_pictures(tmp_path):
    clips = synthetic_clips()
    trainer = Trainer(make_model(), clips[:3], masks(), small_config(), str(tmp_path), val_clips=clips[3:],
                      progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    s1 = trainer.fit(1)
    s2 = trainer.fit(2)
    assert s1["step"] == 3 and s2["step"] == 2 and s2["cross_entropy"] > 0
    after = trainer.model.state_dict()
    assert not torch.equal(before["vertex_unet.fusion.weight"], after["vertex_unet.fusion.weight"])
    assert not torch.equal(before["context_model.logits.masked_linear.weight"],
                           after["context_model.logits.masked_linear.weight"])
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {r["split"] for r in records} == {"train", "val"}
    assert all(k in records[0] for k in ("recon", "landmarks", "mouth", "eye", "frames_per_s", "lr",
                                         "code_entropy", "code_perplexity"))
    assert 0 <= records[0]["code_entropy"] <= math.log(8) + 1e-5 and 1 - 1e-5 <= records[0]["code_perplexity"] <= 8
    val = [r for r in records if r["split"] == "val"]
    assert val[0]["code_sensitivity"] >= 0 and "code_sensitivity" not in val[-1]  # stage 1 only
    assert val[-1]["mode"] == "audio" and val[0]["mode"] == "reconstruct" and val[-1]["lve"] > 0
    loaded = mf.MeshTalk.load(tmp_path / "model.safetensors")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, after[k]), k
    from PIL import Image
    assert Image.open(tmp_path / "training_curves.png").size[0] >= 900  # one panel per stage and group of terms


def test_resume_is_bit_exact(tmp_path):
    clips = synthetic_clips()
    full = Trainer(make_model(), clips, masks(), small_config(steps=4), str(tmp_path / "a"), progress=False)
    full.fit(1)
    half_cfg = small_config(steps=2)
    half = Trainer(make_model(), clips, masks(), half_cfg, str(tmp_path / "b"), progress=False)
    half.fit(1)
    resumed = Trainer(make_model(), clips, masks(), small_config(steps=4), str(tmp_path / "b"), progress=False)
    resumed.resume(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert resumed.step == 2
    resumed.fit(1)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_interrupted_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    trainer = Trainer(make_model(), synthetic_clips(), masks(), small_config(steps=1), str(tmp_path), progress=False)
    trainer.fit(1)
    path = tmp_path / "checkpoint.safetensors"
    good = path.read_bytes()
    import safetensors.torch

    def dying_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".meshtalk-")) == []


def _ddp_worker(rank, world, init_file, out_dir, result_file, stage=1, stage1_state=None):
    """Train ``stage`` (stage 2 from the weights in ``stage1_state``) in one of ``world`` processes."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = make_model()
    if stage1_state is not None:
        model.load_state_dict(torch.load(stage1_state))
    trainer = Trainer(model, synthetic_clips(), masks(), small_config(steps=3), out_dir, progress=False)
    trainer.fit(stage)
    if rank == 0:
        losses = [json.loads(line)["total"] for line in open(os.path.join(out_dir, "metrics.jsonl"))]
        torch.save({"losses": losses, "state": trainer.model.state_dict()}, result_file)
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    single = Trainer(make_model(), synthetic_clips(), masks(), small_config(steps=3, accumulate=2),
                     str(tmp_path / "single"), progress=False)
    single.fit(1)
    single_losses = [json.loads(line)["total"] for line in open(tmp_path / "single" / "metrics.jsonl")]
    os.makedirs(tmp_path / "ddp")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), str(tmp_path / "r.pt")),
             nprocs=2, join=True)
    result = torch.load(tmp_path / "r.pt")
    assert len(result["losses"]) == len(single_losses) == 3
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(single_losses), rtol=1e-5, atol=1e-7)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(result["state"][k], v, rtol=1e-4, atol=1e-6)


def test_two_processes_match_one_in_stage_2(tmp_path):
    """Stage 2 under two processes: the prior's embedding and logits layers have audio weights that get no
    gradient (as released), which DDP must be told about; then 2 processes x 1 micro-batch = 1 process x 2."""
    import torch.multiprocessing as mp

    cfg = small_config(steps=3)
    cfg.stage2.accumulate = 2
    single = Trainer(make_model(), synthetic_clips(), masks(), cfg, str(tmp_path / "single"), progress=False)
    single.fit(1)
    torch.save(single.model.state_dict(), tmp_path / "stage1.pt")
    single.fit(2)
    single_losses = [json.loads(line)["total"] for line in open(tmp_path / "single" / "metrics.jsonl")
                     if json.loads(line)["stage"] == 2]
    os.makedirs(tmp_path / "ddp")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), str(tmp_path / "r.pt"), 2,
                                str(tmp_path / "stage1.pt")), nprocs=2, join=True)
    result = torch.load(tmp_path / "r.pt")
    assert len(result["losses"]) == len(single_losses) == 2
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(single_losses), rtol=1e-5, atol=1e-7)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(result["state"][k], v, rtol=1e-4, atol=1e-6)


def _ddp_budget_worker(rank, world, init_file, out_dir, result_dir):
    import datetime
    import itertools
    import time

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    if rank == 1:  # this process's clock runs fast: alone it would stop first and leave rank 0 waiting
        real, ticks = time.perf_counter, itertools.count()
        time.perf_counter = lambda: real() + 0.05 * next(ticks)
    trainer = Trainer(make_model(), synthetic_clips(), masks(), small_config(steps=10**6, schedule="cosine"),
                      os.path.join(out_dir, str(rank)), progress=False)
    trainer.fit(1, max_seconds=2.0)
    torch.save({"step": trainer.step, "lr": trainer.optimizer.param_groups[0]["lr"]},
               os.path.join(result_dir, f"{rank}.pt"))
    dist.destroy_process_group()  # Trainer.fit ends with a barrier in a process group: no rank leaves early


def test_two_processes_stop_a_time_budget_together(tmp_path):
    """Under --minutes every process stops at the same step and uses the same lr, even when their
    clocks disagree (the elapsed time is the maximum over the processes)."""
    import torch.multiprocessing as mp

    os.makedirs(tmp_path / "res")
    mp.spawn(_ddp_budget_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out"), str(tmp_path / "res")),
             nprocs=2, join=True)
    a, b = (torch.load(tmp_path / "res" / f"{r}.pt") for r in (0, 1))
    assert a["step"] == b["step"] >= 1 and a["lr"] == b["lr"]


def test_stream_framing_crops_match_the_whole_utterance(tmp_path):
    from meshtalk_fast.training import CropSampler

    clips = synthetic_clips(n=2, seconds=2.5)
    model = mf.MeshTalk(V, heads=4, classes=8, framing="stream", clock="exact", lookahead=3000).eval()
    sampler = CropSampler(clips, 9, 30, "exact", 3000, seed=0, framing="stream")
    items = sampler.batch(0, 3)
    batch = sampler.collate(items)
    assert batch["positions"].shape == (3, 9) and batch["mel"].shape[:2] == (3, 80)
    with torch.no_grad():
        crops = model.encoder.audio_encoder.encode_stream(batch["mel"], batch["positions"])
        for b, (i, s) in enumerate(items):
            whole = model.encode_speech(sampler.clips[i].audio)[0, s:s + 9]
            torch.testing.assert_close(crops[b], whole, rtol=1e-5, atol=1e-6)
    cfg = small_config(steps=2)
    cfg.model.framing = "stream"
    trainer = Trainer(mf.MeshTalk(V, heads=4, classes=8, framing="stream"), clips, masks(), cfg, str(tmp_path),
                      progress=False)
    assert trainer.fit(1)["total"] > 0 and trainer.fit(2)["cross_entropy"] > 0


def test_argmax_codes_and_offset_input(tmp_path):
    """stage1.codes = "argmax" feeds the decoder the same codes whatever the Gumbel generator (the
    released "gumbel" does not), and a model with the offset expression input trains both stages and
    encodes with its template (evaluation, frozen stage-2 codes)."""
    from meshtalk_fast.training.objectives import Stage1Objective

    clips = synthetic_clips()
    torch.manual_seed(0)
    model = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset")
    m = masks()
    batch = torch.stack([c.geom[:5] for c in clips[:3]]), torch.stack([c.template for c in clips[:3]])
    windows = torch.stack([mf.audio_windows(c.audio)[:5] for c in clips[:3]])
    totals = {}
    for codes in ("gumbel", "argmax"):
        objective = Stage1Objective(model.encoder, model.vertex_unet, m.eye_keypoints, m.mouth, m.eye, codes=codes)
        objective.eval()  # no dropout: only the Gumbel noise may differ
        with torch.no_grad():
            totals[codes] = [float(objective(batch[1], batch[0], torch.Generator().manual_seed(s),
                                             windows=windows)["recon"]) for s in (1, 2)]
    assert totals["argmax"][0] == totals["argmax"][1] and totals["gumbel"][0] != totals["gumbel"][1]
    with pytest.raises(ValueError, match="template is required"):
        model.encode_expression(batch[0])
    per_clip = model.encode_expression(batch[0], batch[1])
    shared = model.encode_expression(batch[0][:1], clips[0].template)  # [V, 3] broadcasts
    torch.testing.assert_close(shared, per_clip[:1])
    trainer = Trainer(model, clips[:3], m, small_config(codes="argmax"), str(tmp_path), val_clips=clips[3:],
                      progress=False)
    assert trainer.fit(1)["total"] > 0 and trainer.fit(2)["cross_entropy"] > 0
    assert mf.MeshTalk.load(tmp_path / "model.safetensors").config.expression_input == "offset"
    with pytest.raises(ValueError, match="stage1.codes must be one of"):
        small_config(codes="sample").validate()


@needs_core
def test_the_cpp_backend_sees_every_training_step(tmp_path):
    """The trainer's fused Adam writes the weights without bumping their version counters; the cpp
    backend's weight cache keys on them. After training, decoding through the core (what validation and
    the quick start's evaluation run under no_grad) equals the torch decoder with the trained weights, not
    the weights cached before (a defect found in the quick start: validation frozen at its first value)."""
    clips = synthetic_clips()
    model = make_model()
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 8, (1, 5, 4)), 8).float()
    with torch.no_grad():
        before = model.decode(clips[0].template, one_hot, backend="cpp")  # fills the cache
    Trainer(model, clips[:3], masks(), small_config(codes="argmax"), str(tmp_path), progress=False).fit(1)
    with torch.no_grad():
        after_cpp = model.decode(clips[0].template, one_hot, backend="cpp")
        after_torch = model.decode(clips[0].template, one_hot, backend="torch")
    assert not torch.allclose(after_torch, before, atol=1e-4)  # the training moved the decoder
    torch.testing.assert_close(after_cpp, after_torch, rtol=1e-4, atol=1e-4)


def test_cosine_schedule_follows_a_time_budget(tmp_path):
    """schedule = "cosine" decays over stage{N}.steps, or over the seconds of a time budget when that
    ends first (the quick start trains to a budget with steps = 10**6)."""
    cfg = small_config(schedule="cosine", steps=1000)
    trainer = Trainer(make_model(), synthetic_clips(), masks(), cfg, str(tmp_path), progress=False)
    assert trainer._lr(1, 0) == pytest.approx(1e-3) and trainer._lr(1, 500) == pytest.approx(0.55e-3)
    assert trainer._lr(1, 1000) == pytest.approx(1e-4) and trainer._lr(1, 5000) == pytest.approx(1e-4)
    trainer._budget_frac = 0.5  # half of the budget gone at step 0
    assert trainer._lr(1, 0) == pytest.approx(0.55e-3)
    assert trainer._lr(1, 900) < 0.55e-3  # the steps, further along, win
    trainer._budget_frac = 2.0
    assert trainer._lr(1, 0) == pytest.approx(1e-4)
    trainer._budget_frac = None
    cfg.stage1.steps = 10**6
    trainer.fit(1, max_seconds=3.0)
    lrs = [r["lr"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
    assert lrs[0] > lrs[-1] and lrs[-1] < 0.9e-3  # decayed with the clock, not with the 10**6 steps


def test_config_file(tmp_path):
    p = tmp_path / "train.toml"
    p.write_text('seed = 3\n[model]\nheads = 8\nlookahead = 4000\n[stage1]\nlr = 1e-3\nschedule = "cosine"\n')
    cfg = load_config(str(p))
    assert cfg.seed == 3 and cfg.model.heads == 8 and cfg.stage1.lr == 1e-3 and cfg.stage2.segment_frames == 64
    assert load_config(None).stage1.weight_decay == 1e-3
    p.write_text("[stage1]\nbatchsize = 4\n")
    with pytest.raises(ValueError, match=r"unknown keys in \[stage1\]: \['batchsize'\]"):
        load_config(str(p))
    p.write_text("[stage1]\nbatch_size = 0\n")
    with pytest.raises(ValueError, match="stage1.batch_size must be an integer"):
        load_config(str(p))
    p.write_text("[stage1\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(str(p))
    with pytest.raises(ValueError, match="divisible by accumulate"):
        Trainer(make_model(), synthetic_clips(), masks(), small_config(batch_size=3, accumulate=2),
                str(tmp_path / "x"), progress=False).fit(1)


def _train_losses(log_path):
    return [{k: v for k, v in r.items() if k != "frames_per_s"}
            for r in map(json.loads, open(log_path)) if r["split"] == "train"]


def test_prefetched_batches_give_the_same_losses(tmp_path):
    """The background batch builder (on by default for CUDA) changes when a batch is built, not what
    is in it: the logged losses are identical with and without it."""
    logs = []
    for prefetch in (False, True):
        out = tmp_path / f"prefetch_{prefetch}"
        trainer = Trainer(make_model(), synthetic_clips(), masks(), small_config(), str(out), progress=False,
                          prefetch=prefetch)
        assert trainer.prefetch is prefetch
        trainer.fit(1)
        trainer.fit(2)
        logs.append(_train_losses(out / "metrics.jsonl"))
    assert len(logs[0]) == 5 and logs[0] == logs[1]
    assert Trainer(make_model(), synthetic_clips(), masks(), small_config(), str(tmp_path / "d"),
                   progress=False).prefetch is False  # default on the CPU: no thread competing for the cores


@pytest.mark.parametrize("backend", ["torch"])
def test_losses_stay_float32_under_bf16_autocast(backend):
    """Under the trainer's bf16 autocast the encoders and decoder may run in bf16, but every loss term
    is computed in float32 (run here with the CPU's autocast; the trainer uses CUDA's)."""
    from meshtalk_fast.training.objectives import Stage1Objective, Stage2Objective, frozen_codes

    clips = synthetic_clips()
    model = make_model()
    m = masks()
    geom = torch.stack([c.geom[:5] for c in clips[:3]])
    template = torch.stack([c.template for c in clips[:3]])
    windows = torch.stack([mf.audio_windows(c.audio)[:5] for c in clips[:3]])
    objective = Stage1Objective(model.encoder, model.vertex_unet, m.eye_keypoints, m.mouth, m.eye,
                                loss_backend=backend, codes="argmax", diversity=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        audio_code = model.encoder.audio_encoder(windows)
        terms = objective(template, geom, torch.Generator().manual_seed(0), windows=windows)
        one_hot, frozen_audio = frozen_codes(model.encoder, geom, windows=windows)
        terms2 = Stage2Objective(model.context_model)(one_hot, frozen_audio)
    assert model.encoder.audio_encoder(windows).dtype == torch.float32  # outside autocast
    assert audio_code.dtype == torch.bfloat16  # inside it, the encoders really ran in bf16
    for name, value in {**terms, **terms2}.items():
        assert value.dtype == torch.float32, f"{name} is {value.dtype}"
        assert torch.isfinite(value), name
    terms["total"].backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the trainer's CUDA path: bf16 "
                    "autocast, the fused Triton losses, pinned prefetched batches, validation on the GPU)")
def test_cuda_training_with_autocast_and_validation(tmp_path):
    from meshtalk_fast.base.dispatch import resolve
    from meshtalk_fast.ops.vertex_losses import torch_masked_vertex_losses

    assert resolve("masked_vertex_losses", "auto", torch.device("cuda")) is not torch_masked_vertex_losses
    cfg = small_config(codes="argmax", diversity=1.0)
    assert cfg.amp
    clips = synthetic_clips()
    trainer = Trainer(make_model(), clips[:3], masks(), cfg, str(tmp_path), val_clips=clips[3:], device="cuda",
                      progress=False)
    assert trainer.prefetch
    first = trainer.fit(1)
    second = trainer.fit(2)
    assert all(math.isfinite(v) for v in first.values() if isinstance(v, float))
    assert math.isfinite(second["cross_entropy"])
    records = list(map(json.loads, open(tmp_path / "metrics.jsonl")))
    assert {(r["stage"], r["split"]) for r in records} >= {(1, "train"), (1, "val"), (2, "train"), (2, "val")}
