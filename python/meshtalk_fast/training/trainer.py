"""The two-stage MeshTalk trainer (single process, or ``torchrun`` with DistributedDataParallel).

Stage 1: encoders + decoder with the released step-1 terms (``step1_losses`` -> the fused kernel on
CUDA). Stage 2: the prior on frozen argmax codes. See ``batches.py`` for how every random draw is
derived from (seed, step, micro-batch), which makes resumes bit-exact on CPU and makes N processes
compute what one process does with N micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch.autograd.graph import increment_version

from ..base.checks import check_mask_weights
from ..models.meshtalk import MeshTalk
from .batches import Clip, CropSampler, IdentityMix, distinct_templates, step_seed, upper_face_events
from .config import TrainConfig
from .locks import LockWatch, annealed_temperature
from .objectives import Stage1Objective, Stage2Objective, expression_group_spans, frozen_codes
from .state import load_train_state, save_train_state

# The expression heads' relaxed codes (stage1.relaxed_expression) end their warm-up at this temperature,
# where softmax(logprobs / tau) is nearly the one-hot of the argmax, so the switch to hard codes is small.
RELAXED_TAU_END = 0.1

__all__ = ["Trainer", "TrainingMasks"]


class TrainingMasks:
    """Per-vertex weights ``[V]`` the trainer and the evaluation need."""

    def __init__(self, mouth, eye, eye_keypoints, lips, upper_face, forehead=None):
        self.mouth, self.eye, self.eye_keypoints, self.lips, self.upper_face = (
            check_mask_weights(f"training mask {name}", m).float() for name, m in
            (("mouth", mouth), ("eye", eye), ("eye_keypoints", eye_keypoints), ("lips", lips), ("upper_face", upper_face)))
        # brow raises (stage1.event_crops, the brow term)
        self.forehead = None if forehead is None else check_mask_weights("training mask forehead", forehead).float()


# Stage{N}.ema: the averaged weights replace the last ones only if their loss on these training batches (drawn
# as training draws its batches, at step indices no run reaches) is not higher (Trainer._settle_average).
AVERAGE_CHECK_BATCHES = 4
AVERAGE_CHECK_STEP = 10**12


def flush_denormals(config: TrainConfig, device) -> None:
    """``TrainConfig.flush_denormal`` on a CPU: denormal floats flushed to zero from here on, for the process.
    Only the calling thread's mode is set; torch's worker threads inherit it when they are made after this
    call, so the CLI's ``train`` and ``quickstart()`` call it before any torch work (the Trainer calls it too)."""
    if config.flush_denormal and torch.device(device).type == "cpu":
        torch.set_flush_denormal(True)


def _world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """``Trainer(model, train_clips, masks, config, out_dir, val_clips=None, device="cpu")``;
    ``fit(stage, max_seconds=None)`` trains one stage; ``resume(path)`` continues a checkpoint.

    ``prefetch`` (default: on for CUDA): one background thread builds the next step's batches (crops,
    audio windows or mel spans, pinned host memory) while the GPU runs this step, and the copies to
    the device are asynchronous. The batches depend only on (seed, step), so the losses are the same
    with and without it."""

    def __init__(self, model: MeshTalk, train_clips: Sequence[Clip], masks: TrainingMasks, config: TrainConfig,
                 out_dir: str, val_clips: Sequence[Clip] = (), device: str = "cpu", progress: bool = True,
                 prefetch: Optional[bool] = None):
        self.model, self.masks, self.config = model.to(device), masks, config.validate()
        self.train_clips, self.val_clips = list(train_clips), list(val_clips)
        self.out_dir, self.device, self.progress = out_dir, torch.device(device), progress
        self.prefetch = self.device.type == "cuda" if prefetch is None else bool(prefetch)
        self.rank, self.world = _world()
        flush_denormals(self.config, self.device)
        self.step = 0
        self.stage = 1
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._resume_state: Optional[dict] = None
        self._resume_ema: Optional[List[torch.Tensor]] = None
        self._ema: Optional[List[torch.Tensor]] = None  # the averaged weights of stage{N}.ema, while a stage runs
        self._budget_frac: Optional[float] = None  # fraction of the time budget used, while fit runs under one
        self._identity_mix: Optional[IdentityMix] = None  # the stage's identity augmentation (stage{N}.identity_mix)
        self._locks: Optional[LockWatch] = None  # stage 1's lock watch (stage1.expression_lock_steps), while it runs
        self._resume_locks: Optional[dict] = None
        os.makedirs(out_dir, exist_ok=True)
        self.log_path = os.path.join(out_dir, "metrics.jsonl")
        self._tb = None
        if self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:
                self._tb = None

    # ------------------------------------------------------------------ setup
    def _stage_cfg(self, stage: int):
        return self.config.stage1 if stage == 1 else self.config.stage2

    def _build(self, stage: int):
        cfg, m, dev = self._stage_cfg(stage), self.model, self.device
        if stage == 1:
            objective = Stage1Objective(m.encoder, m.vertex_unet, self.masks.eye_keypoints, self.masks.mouth,
                                        self.masks.eye, cfg.distance, codes=cfg.codes,
                                        diversity=cfg.diversity,
                                        expression_diversity=None if cfg.expression_diversity == -1
                                        else cfg.expression_diversity,
                                        weights={"recon": cfg.recon_weight, "landmarks": cfg.landmarks_weight,
                                                 "mouth": cfg.mouth_weight, "eye": cfg.eye_weight,
                                                 "brow": cfg.brow_weight},
                                        forehead=self.masks.forehead,
                                        upper_face_codes=cfg.upper_face_codes,
                                        logit_gap=(cfg.logit_gap_limit, cfg.logit_gap_weight),
                                        expression_st_temperature=cfg.expression_st_temperature).to(dev)
            groups = [{"params": list(m.encoder.parameters()), "weight_decay": 0.0},
                      {"params": list(m.vertex_unet.parameters()), "weight_decay": cfg.weight_decay}]
        else:
            objective = Stage2Objective(m.context_model).to(dev)
            groups = [{"params": list(m.context_model.parameters()), "weight_decay": cfg.weight_decay}]
        # fused: one pass over each tensor instead of ~10 (the quick start's Adam step 114 -> 13 ms on the CPU,
        # ~10 % of a stage-1 step; the same update up to rounding)
        optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, cfg.adam_beta2),
                                     fused=torch.device(dev).type in ("cpu", "cuda"))
        if self.world > 1:
            # stage 2: the prior's embedding and logits layers hold audio weights (unmasked_linear) that the released
            # model has and never uses (only the context layers read the audio), so they get no gradient; DDP must be
            # told, or it stops at the second step waiting for their reduction (found by the calibration's
            # two-process test: stage 2 had never run under torchrun)
            objective = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=stage == 2)
        return objective, optimizer

    def _progress(self, stage: int, step: int) -> float:
        """How far the stage is after its lr warm-up, in [0, 1]: by steps, or under a time budget by
        whichever ends first."""
        cfg = self._stage_cfg(stage)
        frac = min(1.0, max(0, step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        if self._budget_frac is not None:
            frac = max(frac, min(1.0, self._budget_frac))
        return frac

    def _lr(self, stage: int, step: int) -> float:
        cfg = self._stage_cfg(stage)
        scale = 1.0
        if cfg.warmup_steps and step < cfg.warmup_steps:
            scale = (step + 1) / cfg.warmup_steps
        elif cfg.schedule == "cosine":
            scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * self._progress(stage, step)))
        return cfg.lr * scale

    def _expression_tau(self, step: int):
        """Temperature of the expression heads' relaxed codes at ``step`` of stage 1: from 1 down to
        ``RELAXED_TAU_END`` (geometric) over the first ``stage1.relaxed_expression`` of the stage, then None
        (hard codes)."""
        share = self.config.stage1.relaxed_expression
        frac = self._progress(1, step)
        if share <= 0 or frac >= share:
            return None
        return RELAXED_TAU_END ** (frac / share)

    def _expression_st_temperature(self, step: int) -> Union[float, Tuple[float, ...]]:
        """``stage1.expression_st_temperature`` at ``step``: constant, or with ``stage1.expression_st_anneal = s``
        falling geometrically to 1 over the first s of the stage (as ``_progress`` counts it), 1 after. With
        ``stage1.expression_lock_steps`` one temperature per expression group (training/locks.py)."""
        cfg = self.config.stage1
        start, share = float(cfg.expression_st_temperature), cfg.expression_st_anneal
        if share <= 0 or start == 1.0:
            return start
        frac = self._progress(1, step)
        if self._locks is not None:  # one per group: a locked group's own re-anneal where it is above the schedule
            return self._locks.temperatures(frac)
        return annealed_temperature(start, frac / share)

    def _elapsed(self, start: float) -> float:
        """Seconds since ``start``; with several processes the largest over them, so that every process
        stops at the same step (one stopping alone would leave the others waiting in all_reduce) and
        uses the same lr."""
        elapsed = time.perf_counter() - start
        if self.world > 1:
            t = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed = float(t)
        return elapsed

    # ------------------------------------------------------------------ state
    def save_checkpoint(self) -> str:
        path = os.path.join(self.out_dir, "checkpoint.safetensors")
        if self.rank == 0:
            save_train_state(path, self.model, self.optimizer, self.stage, self.step, self.config.to_dict(),
                             ema=self._ema, extra={"locks": self._locks.state_dict()} if self._locks else None)
        return path

    def resume(self, path: str) -> None:
        """Continue from a checkpoint written by this trainer (model, optimizer, stage, step, RNG)."""
        state = load_train_state(path)
        if state["model"].config != self.model.config:
            raise ValueError(f"checkpoint {path!r} holds a model with config {state['model'].config}, "
                             f"but the trainer's model has {self.model.config}")
        self.model.load_state_dict(state["model"].state_dict())
        self.stage, self.step = state["stage"], state["step"]
        torch.set_rng_state(state["rng_state"])
        self._resume_state = state["optimizer_state"]
        self._resume_ema = state["ema"]
        self._resume_locks = state["extra"].get("locks")

    # ------------------------------------------------------------------ one step
    def _micro_batches(self, sampler: CropSampler, stage: int, step: int):
        cfg = self._stage_cfg(stage)
        M = cfg.accumulate * self.world
        if cfg.batch_size % M:
            raise ValueError(f"stage{stage}.batch_size={cfg.batch_size} must be divisible by accumulate x processes "
                             f"= {cfg.accumulate} x {self.world}")
        items = sampler.batch(step, cfg.batch_size)
        size = cfg.batch_size // M
        for m in range(self.rank, M, self.world):
            batch = sampler.collate(items[m * size:(m + 1) * size])
            yield m, M, batch if self._identity_mix is None else self._identity_mix(batch, step, m)

    def _host_batches(self, sampler: CropSampler, stage: int, step: int) -> list:
        """This process's micro-batches of ``step`` in host memory (pinned when training on CUDA, so the
        copies to the device run asynchronously)."""
        pin = self.device.type == "cuda"
        return [(m, M, {k: v.pin_memory() if pin else v for k, v in batch.items()})
                for m, M, batch in self._micro_batches(sampler, stage, step)]

    def _forward(self, objective, micros: list, stage: int, step: int, backward: bool) -> Dict[str, torch.Tensor]:
        """The stage's terms over this process's micro-batches (each / M: summed over all processes they are
        the batch means), with the dropout and Gumbel draws of ``step``; gradients when ``backward``."""
        use_amp = self.config.amp and self.device.type == "cuda"
        sums: Dict[str, torch.Tensor] = {}
        for i, (m, M, batch) in enumerate(micros):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            torch.manual_seed(step_seed(self.config.seed, "dropout", step, m))
            gen = torch.Generator(device=self.device).manual_seed(step_seed(self.config.seed, "gumbel", step, m))
            last = i == len(micros) - 1
            sync = contextlib.nullcontext() if (last or self.world == 1 or not backward) else objective.no_sync()
            audio = {k: batch[k] for k in ("windows", "mel", "positions") if k in batch}
            with sync, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                if stage == 1:
                    inner = getattr(objective, "module", objective)
                    inner.expression_tau = self._expression_tau(step)
                    inner.expression_st_temperature = self._expression_st_temperature(step)
                    terms = objective(batch["template"], batch["geom"], gen, **audio)
                else:
                    one_hot, audio_code = frozen_codes(self.model.encoder, batch["geom"], template=batch["template"],
                                                           **audio)
                    terms = objective(one_hot, audio_code)
                if backward:
                    (terms["total"] * (self.world / M)).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / M
        return sums

    def _train_step(self, objective, optimizer, micros: list, stage: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = self._lr(stage, self.step)
        sums = self._forward(objective, micros, stage, self.step, backward=True)
        cfg, params = self._stage_cfg(stage), self._params()
        if cfg.clip_grad_norm > 0:  # the norm before clipping, logged as grad_norm
            sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm).detach().float() \
                / (self.world if self.world > 1 else 1)
        optimizer.step()
        # The fused Adam writes the parameters without bumping their version counters, which is how the cpp
        # backend's weight cache (backends/cpp.py) sees a change: bump them, or validation and the quick
        # start's evaluation decode with the weights of the first time they ran (measured: a validation LVE
        # frozen at 0.53 while the model's own was 0.16).
        increment_version(params)
        if self._ema is not None:
            with torch.no_grad():
                for avg, p in zip(self._ema, params):
                    avg.lerp_(p.detach(), 1.0 - cfg.ema)
        optimizer.zero_grad(set_to_none=True)
        keys = sorted(sums)
        vec = torch.stack([sums[k] for k in keys])
        if self.world > 1:
            dist.all_reduce(vec)
        return {k: float(v) for k, v in zip(keys, vec)}

    # ------------------------------------------------------------------ logging
    def _log(self, record: Dict) -> None:
        if self.rank != 0:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "stage"):
                    self._tb.add_scalar(f"stage{record['stage']}/{record.get('split', 'train')}/{k}", v, record["step"])

    def validate(self, stage: int) -> Optional[Dict[str, float]]:
        """Numbers on the validation clips (rank 0), from the averaged weights when ``stage{N}.ema`` is on."""
        if self.rank != 0 or not self.val_clips:
            return None
        mode = "reconstruct" if stage == 1 else "audio"
        with self._averaged_weights():
            return self._validate(stage, mode)

    def _validate(self, stage: int, mode: str) -> Dict[str, float]:
        from ..evaluation.evaluate import code_sensitivity, evaluate, prior_cross_entropy

        result = evaluate(self.model, self.val_clips, self.masks.lips, self.masks.upper_face, mode=mode,
                          seed=self.config.seed)
        if stage == 1:  # 0 = the decoder ignores the codes (collapse); see evaluate.code_sensitivity
            result["code_sensitivity"] = code_sensitivity(self.model, self.val_clips)
        else:  # the prior's loss on held-out clips, beside the training loss: overfitting shows here first
            result.update({k: v for k, v in prior_cross_entropy(self.model, self.val_clips).items() if v is not None})
        self._log({"stage": stage, "step": self.step, "split": "val", "mode": mode, "ema": self._ema is not None,
                   **result})
        return result

    # ------------------------------------------------------------------ averaged weights (stage{N}.ema)
    def _params(self) -> List[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _start_ema(self, decay: float, saved: Optional[List[torch.Tensor]]) -> None:
        """The averaged weights: ``saved`` (those of the checkpoint being resumed) when given, else the weights now."""
        params = self._params()
        if decay <= 0:
            self._ema = None
            return
        if saved is not None and [t.shape for t in saved] != [p.shape for p in params]:
            raise ValueError(f"the checkpoint's averaged weights (ema) do not match this stage's parameters: "
                             f"{len(saved)} tensors {[tuple(t.shape) for t in saved[:3]]}..., expected {len(params)} "
                             f"{[tuple(p.shape) for p in params[:3]]}...")
        source = params if saved is None else saved
        self._ema = [t.detach().to(device=p.device, dtype=p.dtype).clone() for t, p in zip(source, params)]

    def _fixed_objective(self, objective, sampler: CropSampler, stage: int) -> float:
        """The stage's fitting terms (``"fitting"``: the weighted data terms, without the code-usage and
        logit-gap regularisers) on ``AVERAGE_CHECK_BATCHES`` training batches that no run draws (steps from
        ``AVERAGE_CHECK_STEP``), in eval mode with fixed draws: the same number for the same weights. The
        regularisers stay out because they measure the codes' spread, not the fit: with the logit-gap
        penalty on, the total rejected the average of a quick start (RESULTS.md, "Stuck brow groups: ...")."""
        modes = [m.training for m in self.model.modules()]
        self.model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        total = torch.zeros((), device=self.device)
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                for i in range(AVERAGE_CHECK_BATCHES):
                    micros = self._host_batches(sampler, stage, AVERAGE_CHECK_STEP + i)
                    total += self._forward(objective, micros, stage, AVERAGE_CHECK_STEP + i, backward=False)["fitting"]
        finally:
            for m, mode in zip(self.model.modules(), modes):
                m.training = mode
        if self.world > 1:
            dist.all_reduce(total)
        return float(total) / AVERAGE_CHECK_BATCHES

    def _settle_average(self, objective, sampler: CropSampler, stage: int) -> None:
        """End the stage with the averaged weights, unless the last ones fit fixed training batches better
        (``_fixed_objective``): the average lags the weights, and where the codes still changed late in a stage it
        mixes two meanings of a code (seen once, in a quick start on a busy machine: eyelid error 0.14 with the last
        weights, 0.57 with their average). Logged as split "average"."""
        last = self._fixed_objective(objective, sampler, stage)
        own = [p.detach().clone() for p in self._params()]
        self._load_weights(self._ema)
        averaged = self._fixed_objective(objective, sampler, stage)
        kept = "average" if averaged <= last else "last"
        if kept == "last":
            self._load_weights(own)
        self._log({"stage": stage, "step": self.step, "split": "average", "objective_last": last,
                   "objective_average": averaged, "kept": kept})

    @contextlib.contextmanager
    def _averaged_weights(self):
        """The model holds the averaged weights inside (when ``stage{N}.ema`` is on), its own again after."""
        if self._ema is None:
            yield
            return
        params = self._params()
        own = [p.detach().clone() for p in params]
        self._load_weights(self._ema)
        try:
            yield
        finally:
            self._load_weights(own)

    def _load_weights(self, values: Sequence[torch.Tensor]) -> None:
        params = self._params()
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        increment_version(params)  # the cpp backend's weight cache keys on the version counters (_train_step)

    # ------------------------------------------------------------------ the loop
    def fit(self, stage: int, max_seconds: Optional[float] = None) -> Dict[str, float]:
        """Train ``stage`` until ``stage{N}.steps`` or ``max_seconds``; returns the last logged losses."""
        from tqdm import tqdm

        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        cfg, mc = self._stage_cfg(stage), self.model.config
        resuming = self._resume_state is not None and self.stage == stage
        if not resuming:
            self.step = 0
        self.stage = stage
        events = None
        if cfg.event_crops > 0:
            events = upper_face_events(self.train_clips, self.masks.eye_keypoints, self.masks.forehead)
        sampler = CropSampler(self.train_clips, cfg.segment_frames, mc.fps, mc.clock, mc.lookahead, self.config.seed,
                              mc.framing, events=events, event_share=cfg.event_crops, window=mc.window_samples)
        self._identity_mix = (IdentityMix(distinct_templates(self.train_clips), cfg.identity_mix, self.config.seed,
                                          f"stage{stage}.identity_mix")
                              if cfg.identity_mix > 0 else None)
        objective, self.optimizer = self._build(stage)
        if resuming:
            self.optimizer.load_state_dict(self._resume_state)
        self._resume_state = None
        self._start_ema(cfg.ema, self._resume_ema if resuming else None)
        self._resume_ema = None
        self._locks = self._lock_watch(stage, cfg, self._resume_locks if resuming else None)
        self._resume_locks = None
        self.model.train()
        if stage == 2:
            self.model.encoder.eval()
        calibration, max_seconds = self._prepare_calibration(stage, cfg, max_seconds)
        start, last = time.perf_counter(), {}
        # under a time budget the step count is not the limit: the bar counts steps and shows the seconds left
        bar = tqdm(total=None if max_seconds is not None else cfg.steps, initial=self.step, desc=f"stage {stage}",
                   unit="step", disable=not self.progress or self.rank != 0)
        frames_per_step = cfg.batch_size * cfg.segment_frames
        # the sampler's per-clip mel cache is only ever touched by one thread: the worker when prefetching
        pool = ThreadPoolExecutor(1, thread_name_prefix="batches") if self.prefetch else None
        pending = pool.submit(self._host_batches, sampler, stage, self.step) if pool else None
        try:
            last = self._loop(stage, cfg, objective, sampler, start, max_seconds, bar, frames_per_step, pool, pending)
        finally:  # an error or Ctrl-C closes the bar first, so the message is not printed inside it
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            self._budget_frac = None
        if last and self.step % self.config.log_every:
            self._log(last)
        if self._ema is not None:  # the stage ends with the averaged weights (stage{N}.ema), or the last ones
            self._settle_average(objective, sampler, stage)
        if stage == 2 and cfg.prior_calibration > 0:
            self._calibrate_prior(calibration, cfg.prior_calibration)
        self.save_checkpoint()
        if self.rank == 0:
            self.model.save(os.path.join(self.out_dir, "model.safetensors"))
            from ..evaluation.plots import plot_training_curves

            plot_training_curves(self.log_path, os.path.join(self.out_dir, "training_curves.png"))
        if self.world > 1:
            # every rank leaves fit() together, after rank 0 has written the model: a rank that went on to
            # tear its process group down while another still had a collective in flight died with
            # "terminate called without an active exception" (SIGABRT) in this project's test suites
            dist.barrier()
        return last

    def _lock_watch(self, stage: int, cfg, saved: Optional[dict]) -> Optional[LockWatch]:
        """Stage 1's lock watch when ``stage1.expression_lock_steps`` is on (``saved``: the checkpoint's), else None."""
        if stage != 1 or not cfg.expression_lock_steps:
            return None
        watch = LockWatch(len(expression_group_spans(self.model.encoder.fusion_model)), cfg.expression_lock_steps,
                          cfg.expression_st_temperature, cfg.expression_st_anneal)
        if saved is not None:
            watch.load_state_dict(saved)
        return watch

    def _watch_locks(self, losses: Dict[str, float]) -> None:
        """After a stage-1 step: count the locked groups (every process sees the same all-reduced terms, so all
        decide alike) and log each new lock (split "lock")."""
        for g in self._locks.observe(losses, self._progress(1, self.step)):
            self._log({"stage": 1, "step": self.step, "split": "lock", "group": g,
                       "temperature": self._locks.start})

    def _prepare_calibration(self, stage: int, cfg, max_seconds: Optional[float]):
        """Stage 2 with ``stage2.prior_calibration``: the calibration prepared on rank 0 (its targets come from
        the stage-1 codes, which stage 2 does not change) and, under a time budget, the budget left for the
        training steps: the preparation and the calibration's passes (one timed here, +10 %) come out of it, so
        the stage still ends on time. Otherwise ``(None, max_seconds)``."""
        if stage != 2 or cfg.prior_calibration <= 0:
            return None, max_seconds
        from .calibrate import PriorCalibration

        t0 = time.perf_counter()
        calibration = PriorCalibration(self.model, self.train_clips, self.config.seed) if self.rank == 0 else None
        if max_seconds is None:
            return calibration, None
        reserve = 0.0
        if calibration is not None:
            passes = cfg.prior_calibration + 1
            reserve = (time.perf_counter() - t0) + 1.1 * passes * calibration.pass_seconds()
        if self.world > 1:  # every rank stops its steps at the same time (rank 0's reserve)
            t = torch.tensor([reserve], dtype=torch.float64, device=self.device)
            dist.broadcast(t, 0)
            reserve = float(t)
        return calibration, max(0.0, max_seconds - reserve)

    def _calibrate_prior(self, calibration, steps: int) -> None:
        """``stage2.prior_calibration`` steps of the free heads' calibration (training/calibrate.py) on rank 0,
        each pass logged (split "calibration"); the other ranks receive the calibrated output biases."""
        if calibration is not None:
            if self.progress:
                print(f"calibrating the prior's free heads ({steps} steps) ...", flush=True)
            calibration.run(steps, log=lambda r: self._log({"stage": 2, "step": self.step, "split": "calibration",
                                                            **r}))
        if self.world > 1:
            dist.broadcast(self.model.context_model.logits.masked_linear.bias.data, 0)

    def _loop(self, stage, cfg, objective, sampler, start, max_seconds, bar, frames_per_step, pool, pending):
        last: Dict = {}
        while self.step < cfg.steps:
            if max_seconds is not None:
                # under a time budget the cosine schedule also follows the clock: not reproducible step for
                # step, as a budget never is (it ends at whatever step the clock allows)
                elapsed = self._elapsed(start)
                if elapsed >= max_seconds:
                    break
                self._budget_frac = elapsed / max_seconds
            t0 = time.perf_counter()
            if pool is not None:
                micros = pending.result()
                pending = pool.submit(self._host_batches, sampler, stage, self.step + 1)
            else:
                micros = self._host_batches(sampler, stage, self.step)
            losses = self._train_step(objective, self.optimizer, micros, stage)
            dt = time.perf_counter() - t0
            self.step += 1
            if self._locks is not None:
                self._watch_locks(losses)
            last = {"stage": stage, "step": self.step, "split": "train", **losses,
                    "lr": self.optimizer.param_groups[0]["lr"], "frames_per_s": frames_per_step / dt}
            if self.step % self.config.log_every == 0 or self.step == 1:
                self._log(last)
            post = {"loss": f"{losses['total']:.4g}", "fps": f"{frames_per_step / dt:.0f}"}
            if max_seconds is not None:
                post["left"] = f"{max(0.0, max_seconds - (time.perf_counter() - start)):.0f}s"
            bar.set_postfix(post)
            bar.update()
            if self.step % self.config.val_every == 0:
                self.validate(stage)
            if self.step % self.config.checkpoint_every == 0:
                self.save_checkpoint()
        return last
