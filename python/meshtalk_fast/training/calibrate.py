"""Calibrating the prior's free heads: their sampled class frequencies made those of the training codes.

Why (measured in benchmarks/RESULTS.md, "The prior's free-running drift"): trained by teacher forcing, the
prior's expression heads are calibrated one step at a time -- averaged over the training frames, the
probability it gives each head's most used class equals that class's share of the frames to three digits --,
yet its own samples, fed back step after step, drift away from that share: in one quick start the brow heads
sat on their resting class in 0.73 of the sampled frames against 0.855 of the encoder's codes (brow raises
1.9x too often), in another in 0.86 against 0.77 (0.57x). Small errors in the rare transitions (a raise starts
in ~1 frame in 180) add up over the free run. Teacher forcing cannot see that; the samples can.

What: the free heads (``ContextModel.free_heads``: drawn from their own history only, free of the speech) get
one additive bias per class on their output logits, fitted by a few fixed-point steps on the training clips:
sample every clip from an empty history as ``animate`` does, count each head's classes, and move each class's
bias by ``step * log(target / sampled)`` (clamped to +-``MAX_UPDATE``; the first step whole, the later ones
halved, since the heads of one step read each other and a whole step overshoots). The biases are those the
output layer already has, so the calibrated prior is an ordinary model file that every backend (the C++ core
included) samples unchanged. The other heads depend on the speech; their marginals are not a fixed target, and
they are left alone.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..evaluation.evaluate import argmax_codes
from ..models.meshtalk import MeshTalk
from .batches import Clip

__all__ = ["MAX_UPDATE", "PriorCalibration", "calibrate_free_heads", "free_head_occupancy", "switch_rate"]

MAX_UPDATE = 2.0            # largest change of one bias in one step (log units)
MAX_FRAMES_PER_PASS = 60_000  # frames sampled per step at most (a deterministic subset of the clips beyond)
CHUNK = 256                 # sequences per call of the batched sampler


def _free_heads(model: MeshTalk) -> int:
    k = model.context_model.free_heads
    if k == 0:
        raise ValueError("calibrating the prior needs free heads (model.prior_expression = 'free' with "
                         "model.expression_heads > 0), got a prior whose heads all read the speech")
    return k


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module):
    """``model`` in eval mode inside, every submodule's own mode restored after (stage 2 trains the prior with
    the encoder in eval mode; a plain ``train(True)`` after would switch the encoder's dropout back on)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def _clip_codes(model: MeshTalk, clip: Clip):
    """The clip's argmax code labels ``[T, H]`` from its meshes and speech, and its audio code ``[T, A]``, on
    the CPU (the evaluation's codes, ``evaluate.argmax_codes``)."""
    one_hot, audio_code = argmax_codes(model, clip)
    return one_hot[0].argmax(-1).cpu(), audio_code[0].float().cpu()


def free_head_occupancy(labels: torch.Tensor, heads: int, classes: int) -> torch.Tensor:
    """``labels [N, H]`` (class per frame and head) -> share of the frames on each class ``[heads, classes]``
    of the first ``heads`` heads."""
    if labels.dim() != 2 or labels.shape[1] < heads:
        raise ValueError(f"labels must be [N, H >= {heads}], got {list(labels.shape)}")
    counts = torch.stack([torch.bincount(labels[:, h], minlength=classes)[:classes] for h in range(heads)])
    return counts.double() / max(1, labels.shape[0])


class PriorCalibration:
    """The calibration of ``model``'s free heads on ``clips`` (see the module), prepared: the target class shares
    from the clips' argmax codes, and the clips each sampling pass draws (all of them up to
    ``MAX_FRAMES_PER_PASS`` frames; a subset chosen by ``seed`` beyond). ``pass_seconds()`` times one pass (the
    trainer sets that time aside from a stage's budget); ``run(steps)`` calibrates."""

    @torch.no_grad()
    def __init__(self, model: MeshTalk, clips: Sequence[Clip], seed: int = 0):
        if not clips:
            raise ValueError("clips must hold at least one sequence, got none")
        self.model, self.seed = model, seed
        self.heads, self.classes = _free_heads(model), model.context_model.classes
        with _evaluating(model):
            labels, audio = zip(*(_clip_codes(model, c) for c in clips))
        self.target = free_head_occupancy(torch.cat(labels), self.heads, self.classes)  # [K, C]
        self.target_switches = switch_rate([l[:, :self.heads] for l in labels])  # [K]
        order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed)).tolist()
        self.audio, frames = [], 0
        for i in order:  # whole clips, the same ones every pass
            if self.audio and frames + audio[i].shape[0] > MAX_FRAMES_PER_PASS:
                break
            self.audio.append(audio[i])
            frames += audio[i].shape[0]
        if frames == 0:
            raise ValueError("clips must hold at least one frame, got sequences of 0 frames")
        self.eps = 0.5 / frames  # half a frame: the log-ratio of a class sampled or used once stays finite

    def _sampler(self) -> MeshTalk:
        """The model, or a CPU copy of it: the batched sampler is the C++ core's."""
        on_cpu = next(self.model.parameters()).device.type == "cpu"
        return self.model if on_cpu else copy.deepcopy(self.model).cpu()

    def _sample(self, sampler: MeshTalk, p: int):
        """Pass ``p``'s class shares ``[K, C]`` and switch rates ``[K]`` of the free heads."""
        labels = _sampled_labels(sampler, self.audio, self.heads, seed=self.seed + 7919 * (p + 1))
        return free_head_occupancy(torch.cat(labels), self.heads, self.classes), switch_rate(labels)

    @torch.no_grad()
    def pass_seconds(self) -> float:
        """Seconds one sampling pass takes (sampled from the model as it is; the result is not used)."""
        t0 = time.perf_counter()
        self._sample(self._sampler(), -1)
        return time.perf_counter() - t0

    @torch.no_grad()
    def run(self, steps: int, log: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
        """``steps`` fixed-point steps, each after one sampling pass, and one last pass that measures the
        result; the model's output biases change in place. One record per pass: ``total_variation`` per free
        head (half the L1 distance of the sampled and the target class shares: 0 = the same, 1 = disjoint),
        its mean ``total_variation_mean``, ``switch_ratio`` per free head (how often the samples change class
        from one frame to the next over how often the codes do: not fitted, a diagnostic) and ``seconds``;
        ``log`` gets each record as it comes."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        with _evaluating(self.model):
            return self._run(steps, log)

    @torch.no_grad()
    def _run(self, steps: int, log: Optional[Callable[[Dict], None]]) -> List[Dict]:
        model, k, C = self.model, self.heads, self.classes
        sampler = self._sampler()
        local = sampler.context_model.logits.masked_linear.bias.view(-1, C)  # head h's classes in row h
        records = []
        for p in range(steps + 1):
            t0 = time.perf_counter()
            occupancy, switches = self._sample(sampler, p)
            tv = 0.5 * (occupancy - self.target).abs().sum(1)
            record = {"pass": p, "total_variation": [round(float(v), 4) for v in tv],
                      "total_variation_mean": float(tv.mean()),
                      "switch_ratio": [round(float(v), 3) for v in switches / self.target_switches.clamp_min(1e-9)],
                      "seconds": time.perf_counter() - t0}
            records.append(record)
            if log is not None:
                log(record)
            if p == steps:
                break
            step = 1.0 if p == 0 else 0.5
            update = (step * ((self.target + self.eps) / (occupancy + self.eps)).log()).clamp(-MAX_UPDATE, MAX_UPDATE)
            local[:k] += update.to(local.dtype)
        if sampler is not model:
            bias = model.context_model.logits.masked_linear.bias
            bias.copy_(sampler.context_model.logits.masked_linear.bias.to(bias))
        return records


def calibrate_free_heads(model: MeshTalk, clips: Sequence[Clip], steps: int, seed: int = 0,
                         log: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Fit the free heads' output biases of ``model``'s prior in place so that samples of ``clips``' speech use
    each class as often as the argmax codes of ``clips``' meshes do (the module; ``PriorCalibration.run``)."""
    return PriorCalibration(model, clips, seed).run(steps, log)


def _sampled_labels(model: MeshTalk, audio: Sequence[torch.Tensor], heads: int, seed: int) -> List[torch.Tensor]:
    """Sample every sequence of ``audio`` (``[T_i, A]`` each) from an empty history, as ``animate`` does:
    the first ``heads`` heads' labels, ``[T_i, heads]`` per sequence."""
    out = []
    for s in range(0, len(audio), CHUNK):
        part = audio[s:s + CHUNK]
        lengths = torch.tensor([a.shape[0] for a in part])
        batch = torch.zeros(len(part), int(lengths.max()), part[0].shape[1])
        for i, a in enumerate(part):
            batch[i, :a.shape[0]] = a
        one_hot = model.sample(batch, seeds=seed + s, lengths=lengths)
        labels = one_hot[:, :, :heads].argmax(-1)
        out += [labels[i, :n] for i, n in enumerate(lengths.tolist())]
    return out


def switch_rate(labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per head, the share of frame-to-frame steps on which the class changes, over sequences ``[T_i, K]``."""
    changes = sum((l[1:] != l[:-1]).sum(0).double() for l in labels)
    steps = sum(max(0, l.shape[0] - 1) for l in labels)
    return changes / max(1, steps)
