"""Evaluation: LVE and FDD on held-out sequences, and the disentanglement check.

``mode="audio"`` animates from speech alone (codes sampled from the prior, the released inference);
``mode="reconstruct"`` encodes the ground-truth meshes with the audio (stage-1 quality).
"""
from __future__ import annotations

import dataclasses
import itertools
import statistics
from typing import Dict, List, Optional, Sequence

import torch

from ..ops.smoothing import post_smooth
from ..ops.vertex_losses import lip_vertex_error
from ..models.meshtalk import MeshTalk
from .metrics import (BROW_EVENT_LEVEL, EYE_EVENT_LEVEL, event_signals, event_spans, lip_vertex_error_l2,
                      region_error, upper_face_dynamics_deviation)
from ..training.batches import Clip

__all__ = ["animate_clip", "reconstruct_clip", "evaluate", "disentanglement", "mean_disentanglement",
           "expression_head_classes", "argmax_codes",
           "code_sensitivity", "upper_face", "report", "format_report", "on_model_device"]


def on_model_device(model: MeshTalk, clip: Clip) -> Clip:
    """``clip`` with its tensors on the model's device (the clip itself when they are there already):
    evaluation runs where the model is, e.g. the trainer's validation of a model training on CUDA
    while the clips stay in host memory."""
    device = next(model.parameters()).device
    if clip.geom.device == device:
        return clip
    return dataclasses.replace(clip, template=clip.template.to(device), geom=clip.geom.to(device),
                               audio=clip.audio.to(device))


@torch.no_grad()
def _codes(model: MeshTalk, clip: Clip):
    clip = on_model_device(model, clip)
    audio_code = model.encode_speech(clip.audio)[:, :clip.frames]
    expression_code = model.encode_expression(clip.geom[None], clip.template)
    return expression_code, audio_code


@torch.no_grad()
def argmax_codes(model: MeshTalk, clip: Clip):
    """The clip's argmax codes from its true meshes and speech ``one_hot [1, T, H, C]``, and its audio codes."""
    expression_code, audio_code = _codes(model, clip)
    return model.quantize(model.fuse(expression_code, audio_code), argmax=True), audio_code


@torch.no_grad()
def animate_clip(model: MeshTalk, clip: Clip, seed: int = 0, argmax: bool = False,
                 smooth_masks: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """Speech -> meshes ``[T, V, 3]`` on the model's device, with codes sampled from the prior (Gumbel,
    seeded; the generator lives on the model's device, so CUDA and CPU draw different noise).
    ``smooth_masks``: ``(forehead [V], neck [V])`` applies the released post-processing (``post_smooth``),
    as ``animate(smooth_masks=...)`` does: the animation a user gets."""
    clip = on_model_device(model, clip)
    one_hot = model.sample(model.encode_speech(clip.audio)[:, :clip.frames], argmax=argmax,
                           generator=torch.Generator(device=clip.audio.device).manual_seed(seed))
    geom = model.decode(clip.template, one_hot)[0]
    if smooth_masks is None:
        return geom
    forehead, neck = (m.to(geom) for m in smooth_masks)
    return post_smooth(geom, forehead, neck)


@torch.no_grad()
def reconstruct_clip(model: MeshTalk, clip: Clip) -> torch.Tensor:
    """Ground-truth meshes + speech -> argmax codes -> meshes ``[T, V, 3]`` on the model's device."""
    clip = on_model_device(model, clip)
    one_hot, _ = argmax_codes(model, clip)
    return model.decode(clip.template, one_hot)[0]


@torch.no_grad()
def evaluate(model: MeshTalk, clips: Sequence[Clip], lips: torch.Tensor, upper_face: torch.Tensor,
             mode: str = "audio", seed: int = 0) -> Dict[str, float]:
    """Frame-weighted LVE, LVE of the unmoving template, and FDD over ``clips``. ``lve``: the squared-maximum
    convention (FaceFormer, CodeTalker, torchmetrics); ``lve_l2``: the MeshTalk paper's L2 maximum."""
    if not clips:
        raise ValueError("clips must hold at least one sequence to evaluate, got none")
    was_training = model.training
    model.eval()
    totals = {"lve": 0.0, "lve_static": 0.0, "lve_l2": 0.0, "lve_l2_static": 0.0, "fdd": 0.0}
    frames = 0
    for i, clip in enumerate(clips):
        clip = on_model_device(model, clip)
        lips, upper_face = lips.to(clip.geom.device), upper_face.to(clip.geom.device)
        pred = animate_clip(model, clip, seed + i) if mode == "audio" else reconstruct_clip(model, clip)
        static = clip.template.expand_as(clip.geom)
        n = clip.frames
        totals["lve"] += float(lip_vertex_error(pred, clip.geom, lips, backend="torch")) * n
        totals["lve_static"] += float(lip_vertex_error(static, clip.geom, lips, backend="torch")) * n
        totals["lve_l2"] += float(lip_vertex_error_l2(pred, clip.geom, lips)) * n
        totals["lve_l2_static"] += float(lip_vertex_error_l2(static, clip.geom, lips)) * n
        totals["fdd"] += float(upper_face_dynamics_deviation(pred, clip.geom, clip.template, upper_face)) * n
        frames += n
    model.train(was_training)
    out = {k: v / frames for k, v in totals.items()}
    out["frames"] = frames
    return out


@torch.no_grad()
def disentanglement(model: MeshTalk, a: Clip, b: Clip, mouth: torch.Tensor, upper_face: torch.Tensor) -> Dict[str, float]:
    """Swap codes between sequences ``a`` and ``b`` and measure where the face changes.

    expression_ratio = upper-face change / mouth change when a's expression code is replaced by b's
    (> 1: expression drives the upper face); audio_ratio = mouth change / upper-face change when a's
    audio is replaced by b's (> 1: audio drives the mouth). Changes are mask-weighted mean vertex
    distances over all frames.
    """
    was_training = model.training
    model.eval()
    a, b = on_model_device(model, a), on_model_device(model, b)
    T = min(a.frames, b.frames)
    ea, aa = (x[:, :T] for x in _codes(model, a))
    eb, ab = (x[:, :T] for x in _codes(model, b))

    def decode(expression_code, audio_code):
        one_hot = model.quantize(model.fuse(expression_code, audio_code), argmax=True)
        return model.decode(a.template, one_hot)[0]

    base = decode(ea, aa)

    def change(other, mask):
        d = (other - base).norm(dim=-1)  # [T, V]
        w = mask.to(d)
        return float((d * w).sum() / (w.sum() * d.shape[0]))

    swap_e, swap_a = decode(eb, aa), decode(ea, ab)
    out = {"expression_swap_upper": change(swap_e, upper_face), "expression_swap_mouth": change(swap_e, mouth),
           "audio_swap_mouth": change(swap_a, mouth), "audio_swap_upper": change(swap_a, upper_face)}
    eps = 1e-12
    out["expression_ratio"] = out["expression_swap_upper"] / (out["expression_swap_mouth"] + eps)
    out["audio_ratio"] = out["audio_swap_mouth"] / (out["audio_swap_upper"] + eps)
    model.train(was_training)
    return out


@torch.no_grad()
def prior_cross_entropy(model: MeshTalk, clips: Sequence[Clip]) -> Dict[str, Optional[float]]:
    """The prior's cross-entropy (nats per head and frame, frame-weighted over ``clips``) on the codes the
    encoders give each whole clip (argmax), teacher-forced: what stage 2 minimises, on held-out clips.
    ``cross_entropy``: all heads; ``cross_entropy_expression`` / ``cross_entropy_audio``: the expression
    heads (``config.expression_heads``, the first ones) and the rest apart (None for a group without heads).
    Stage 2 trains on crops, whose codes can differ near a crop's start (the expression encoder's LSTM)."""
    if not clips:
        raise ValueError("clips must hold at least one sequence, got none")
    was_training = model.training
    model.eval()
    E, H = model.config.expression_heads, model.config.heads
    total, frames = torch.zeros(H, dtype=torch.float64), 0
    for clip in clips:
        one_hot, audio_code = argmax_codes(model, clip)
        logprobs = model.context_model(one_hot, audio_code)
        total += -(logprobs.double() * one_hot.double()).sum(-1)[0].sum(0).cpu()  # [H]
        frames += one_hot.shape[1]
    model.train(was_training)
    per_head = total / frames
    return {"cross_entropy": float(per_head.mean()),
            "cross_entropy_expression": float(per_head[:E].mean()) if E > 0 else None,
            "cross_entropy_audio": float(per_head[E:].mean()) if E < H else None}


@torch.no_grad()
def code_sensitivity(model: MeshTalk, clips: Sequence[Clip]) -> float:
    """Does the decoded face depend on the codes? Each clip is decoded from its own argmax codes and
    from the same codes rotated by half its length in time (so every frame gets another frame's
    codes); the mean vertex distance between the two, over the mean distance between the true meshes
    under the same rotation. About 1: the face moves with the codes as much as the real face moves;
    0: the decoder ignores the codes or every frame has the same codes (collapsed training, whose LVE
    gain over the unmoving template is only a mean pose)."""
    if not clips:
        raise ValueError("clips must hold at least one sequence, got none")
    was_training = model.training
    model.eval()
    moved = real = 0.0
    for clip in clips:
        if clip.frames < 2:
            raise ValueError(f"sequence {clip.name!r} must have at least 2 frames to rotate, got {clip.frames}")
        shift = clip.frames // 2
        clip = on_model_device(model, clip)
        one_hot, _ = argmax_codes(model, clip)
        own = model.decode(clip.template, one_hot)[0]
        other = model.decode(clip.template, one_hot.roll(shift, 1))[0]
        moved += float((own - other).norm(dim=-1).mean()) * clip.frames
        real += float((clip.geom - clip.geom.roll(shift, 0)).norm(dim=-1).mean()) * clip.frames
    model.train(was_training)
    if real == 0.0:
        raise ValueError("the sequences' meshes never move, so code sensitivity is undefined")
    return moved / real


@torch.no_grad()
def expression_head_classes(model: MeshTalk, clips: Sequence[Clip]) -> List[int]:
    """How many classes each expression head (``model.config.expression_heads``) uses over ``clips``: the
    distinct argmax codes from the clips' own meshes. 1: the head gives every frame the same code, so what
    its group reads (blinks, brow raises) cannot reach the face; the quick start warns. Seen when the head's
    softmax saturated early in training (RESULTS.md, "A new face, and bounded logits"). Empty without
    expression heads."""
    if not clips:
        raise ValueError("clips must hold at least one sequence, got none")
    k = model.config.expression_heads
    if not k:
        return []
    was_training = model.training
    model.eval()
    used: List[set] = [set() for _ in range(k)]
    for clip in clips:
        expression_code, audio_code = _codes(model, on_model_device(model, clip))
        labels = model.fuse(expression_code, audio_code)[0, :, :k].argmax(-1)   # [T, k]
        for h in range(k):
            used[h].update(labels[:, h].tolist())
    model.train(was_training)
    return [len(u) for u in used]


@torch.no_grad()
def mean_disentanglement(model: MeshTalk, clips: Sequence[Clip], mouth: torch.Tensor, upper_face: torch.Tensor,
                         pairs: int = 8) -> Dict[str, float]:
    """``disentanglement`` averaged over up to ``pairs`` pairs of distinct sequences (clip i with clip i + 1
    of another name): the changes are averaged first, then the ratios are taken (one lucky pair cannot
    make the ratio)."""
    usable = [(a, b) for a, b in zip(clips, clips[1:]) if a.name != b.name][:pairs]
    if not usable:
        raise ValueError("clips must hold at least two distinct sequences to swap codes between, got "
                         f"{len(clips)}")
    parts = [disentanglement(model, a, b, mouth, upper_face) for a, b in usable]
    out = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0] if not k.endswith("ratio")}
    eps = 1e-12
    out["expression_ratio"] = out["expression_swap_upper"] / (out["expression_swap_mouth"] + eps)
    out["audio_ratio"] = out["audio_swap_mouth"] / (out["audio_swap_upper"] + eps)
    out["pairs"] = len(parts)
    return out


def _events(signals: Sequence[torch.Tensor], threshold: float) -> List[list]:
    return [event_spans(s, threshold) for s in signals]


def _lift(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> Optional[float]:
    """P(a and b) / (P(a) P(b)) over frames of paired boolean sequences: 1 when a and b are independent,
    large when they happen together (None when either never happens)."""
    x, y = torch.cat(list(a)).float(), torch.cat(list(b)).float()
    pa, pb = float(x.mean()), float(y.mean())
    if pa == 0 or pb == 0:
        return None
    return float((x * y).mean()) / (pa * pb)


def _inside(spans, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    for s, e in spans:
        m[s:e] = True
    return m


@torch.no_grad()
def upper_face(model: MeshTalk, clips: Sequence[Clip], eye_keypoints: Optional[torch.Tensor],
               forehead: Optional[torch.Tensor], seeds: Sequence[int] = (0, 1, 2),
               known_faces: Optional[Sequence[torch.Tensor]] = None,
               rate_clips: Optional[Sequence[Clip]] = None,
               smooth_masks: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, object]:
    """Does the model reconstruct and sample the upper face? Blinks are read from the eye keypoints
    (``region_motion`` "max": the lids' largest displacement), brow raises from the forehead mask
    (``region_motion`` "mean"), each measured from its sequence's resting level (``above_rest``: a model's
    constant offset is not an event); an event is a run above ``EYE_EVENT_LEVEL`` / ``BROW_EVENT_LEVEL``
    of the ground truth's ``event_scale``.

    - ``eyelid_error_ratio`` / ``brow_error_ratio``: reconstruction (codes from the true meshes) error
      inside the true events of ``clips`` (per frame the largest vertex distance over the region), over the
      unmoving template's error on the same frames (0 = perfect, 1 = no better than never blinking);
    - ``blink_rate`` / ``brow_rate`` (events per minute) of speech-only animations of ``rate_clips``
      (default ``clips``; codes sampled from the prior, one animation per seed), their ratios to the ground
      truth's in the same clips (``*_rate_gt``); ``*_events_gt`` and ``*_events`` (all seeds) are the counts
      behind them (a rate from ~15 events is uncertain by ~25 %: the quick start counts over all its held-out
      clips, validation and test);
    - ``blink_closure_ratio``: the median peak of sampled blinks over the ground truth's median peak;
    - ``blink_timing_lift``: how much more often two seeds blink at the same frame than chance (1: blink
      timing does not follow the speech, as in the data; large: it does); ``blink_gt_lift`` the same
      between sampled and true blinks.
    ``smooth_masks`` ``(forehead [V], neck [V])``: the speech-only animations go through the released
    post-processing first (``animate_clip``), as every animation ``animate`` writes does; ``post_smoothed``
    says whether they did, ``rate_sequences`` and ``rate_minutes`` what the rates count. The released model smooths the forehead because sampled codes make it flicker:
    unsmoothed, a flicker across the threshold counts as two brow raises.
    A missing or empty mask, or data without such events, gives None for its numbers and names the
    reason in ``missing``: a rate is never computed from nothing.

    ``known_faces`` (the training data's templates ``[V, 3]``): the two error ratios also over the clips
    whose template is one of them (``*_error_ratio_known_faces``: held-out sentences of the training faces)
    and over the others (``*_error_ratio_new_faces``: faces the model never saw), on the same events; None
    where a group has no clip or no event frame.
    """
    if not clips:
        raise ValueError("clips must hold at least one sequence, got none")
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got none")
    same_clips = rate_clips is None
    rate_clips = list(clips) if same_clips else list(rate_clips)
    if not rate_clips:
        raise ValueError("rate_clips must hold at least one sequence (or be None: clips), got none")
    was_training = model.training
    model.eval()
    fps = model.config.fps
    minutes = sum(c.frames for c in rate_clips) / fps / 60.0
    out: Dict[str, object] = {"missing": [], "post_smoothed": smooth_masks is not None,
                              "rate_sequences": len(rate_clips), "rate_minutes": minutes}
    regions = {"blink": (eye_keypoints, "max", EYE_EVENT_LEVEL, "eyelid"),
               "brow": (forehead, "mean", BROW_EVENT_LEVEL, "brow")}
    usable = {}
    for name, (mask, reduce, level, err) in regions.items():
        keys = [f"{err}_error_ratio", f"{name}_rate", f"{name}_rate_gt", f"{name}_rate_ratio", f"{name}_events_gt",
                f"{name}_events"]
        keys += ["blink_closure_ratio", "blink_timing_lift", "blink_gt_lift"] if name == "blink" else []
        keys += [f"{err}_error_ratio_known_faces", f"{err}_error_ratio_new_faces"] if known_faces is not None else []
        mask_name = "eye_keypoints" if name == "blink" else "forehead"
        if mask is None or not bool((mask > 0).any()):
            out["missing"].append(f"{mask_name} mask is missing or empty: no {name} numbers")
            out.update({k: None for k in keys})
            continue
        truth = _true_events(clips, mask, reduce, level)
        rate_truth = truth if same_clips else _true_events(rate_clips, mask, reduce, level)
        if truth is None or rate_truth is None:
            out["missing"].append(f"the ground truth has no {name} events (its {mask_name} region never moves)")
            out.update({k: None for k in keys})
            continue
        usable[name] = (mask, reduce, err, truth, rate_truth)
    recon = [reconstruct_clip(model, c) for c in clips] if usable else []
    # one speech-only animation per (seed, clip), shared by the blink and brow numbers
    animations = {s: [animate_clip(model, c, seed=s + 1000 * i, smooth_masks=smooth_masks)
                      for i, c in enumerate(rate_clips)]
                  for s in (seeds if usable else ())}
    for name, (mask, reduce, err, (_, _, err_events), (gt, threshold, gt_events)) in usable.items():
        inside = [_inside(ev, c.frames) for ev, c in zip(err_events, clips)]
        model_err = [float(region_error(r, c.geom, mask)[m].sum()) for r, c, m in zip(recon, clips, inside)]
        static_err = [float(region_error(c.template.expand_as(c.geom), c.geom, mask)[m].sum())
                      for c, m in zip(clips, inside)]
        out[f"{err}_error_ratio"] = _ratio(model_err, static_err, [True] * len(clips))
        if known_faces is not None:
            known = [any(t.shape == c.template.shape and torch.equal(t.to(c.template), c.template)
                         for t in known_faces) for c in clips]
            out[f"{err}_error_ratio_known_faces"] = _ratio(model_err, static_err, known)
            out[f"{err}_error_ratio_new_faces"] = _ratio(model_err, static_err, [not k for k in known])
        n_gt = sum(len(e) for e in gt_events)
        out[f"{name}_rate_gt"] = n_gt / minutes
        out[f"{name}_events_gt"] = n_gt  # the held-out rate's sample size (a Poisson count: +-1/sqrt(n))
        sampled = {s: event_signals([(g, c.template) for g, c in zip(animations[s], rate_clips)], mask, reduce)[0]
                   for s in seeds}
        events = {s: _events(sig, threshold) for s, sig in sampled.items()}
        n_sampled = sum(len(e) for ev in events.values() for e in ev)
        rate = n_sampled / (minutes * len(seeds))
        out[f"{name}_rate"] = rate
        out[f"{name}_events"] = n_sampled  # over all seeds
        out[f"{name}_rate_ratio"] = rate / out[f"{name}_rate_gt"] if n_gt else None
        if name == "blink":
            peaks = [float(sig[a:b].max()) for s in seeds for sig, ev in zip(sampled[s], events[s]) for a, b in ev]
            gt_peaks = [float(sig[a:b].max()) for sig, ev in zip(gt, gt_events) for a, b in ev]
            out["blink_closure_ratio"] = (statistics.median(peaks) / statistics.median(gt_peaks)
                                          if peaks and gt_peaks else None)
            masks = {s: [_inside(e, c.frames) for e, c in zip(events[s], rate_clips)] for s in seeds}
            lifts = [_lift(masks[a], masks[b]) for a, b in itertools.combinations(seeds, 2)]
            lifts = [v for v in lifts if v is not None]
            out["blink_timing_lift"] = sum(lifts) / len(lifts) if lifts else None
            true_inside = [_inside(ev, c.frames) for ev, c in zip(gt_events, rate_clips)]
            gt_lifts = [v for v in (_lift(masks[s], true_inside) for s in seeds) if v is not None]
            out["blink_gt_lift"] = sum(gt_lifts) / len(gt_lifts) if gt_lifts else None
    model.train(was_training)
    return out


def _true_events(clips: Sequence[Clip], mask: torch.Tensor, reduce: str, level: float):
    """The clips' true event signals, the threshold (``level`` of their ``event_scale``) and the events above
    it per clip; None when the region never moves."""
    signals, scale = event_signals([(c.geom, c.template) for c in clips], mask, reduce)
    if scale is None:
        return None
    threshold = level * scale
    return signals, threshold, _events(signals, threshold)


@torch.no_grad()
def event_rates(clips: Sequence[Clip], eye_keypoints: Optional[torch.Tensor], forehead: Optional[torch.Tensor],
                fps: float) -> Dict[str, Optional[float]]:
    """The ground truth's blinks and brow raises per minute in ``clips`` at ``fps``, counted as ``upper_face``
    counts them (each region's threshold from these clips' own ``event_scale``): ``blink_rate``,
    ``blink_events``, ``brow_rate``, ``brow_events`` (None for a missing or empty mask, or a region that never
    moves)."""
    if not clips:
        raise ValueError("clips must hold at least one sequence, got none")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    minutes = sum(c.frames for c in clips) / fps / 60.0
    out: Dict[str, Optional[float]] = {}
    for name, mask, reduce, level in (("blink", eye_keypoints, "max", EYE_EVENT_LEVEL),
                                      ("brow", forehead, "mean", BROW_EVENT_LEVEL)):
        out[f"{name}_rate"] = out[f"{name}_events"] = None
        truth = _true_events(clips, mask, reduce, level) if mask is not None and bool((mask > 0).any()) else None
        if truth is None:
            continue
        n = sum(len(e) for e in truth[2])
        out[f"{name}_events"] = n
        out[f"{name}_rate"] = n / minutes
    return out


def _ratio(model_err: Sequence[float], static_err: Sequence[float], chosen: Sequence[bool]) -> Optional[float]:
    """Summed model error over summed static error of the chosen clips; None without static error (no event
    frame among them)."""
    static = sum(s for s, c in zip(static_err, chosen) if c)
    return sum(m for m, c in zip(model_err, chosen) if c) / static if static > 0 else None


@torch.no_grad()
def report(model: MeshTalk, clips: Sequence[Clip], masks, mode: str = "audio", seed: int = 0,
           seeds: Sequence[int] = (0, 1, 2), pairs: int = 8,
           known_faces: Optional[Sequence[torch.Tensor]] = None,
           reference_clips: Optional[Sequence[Clip]] = None, rate_clips: Optional[Sequence[Clip]] = None,
           post_smoothed: bool = True) -> Dict[str, object]:
    """Every number the quick start and ``meshtalk-fast evaluate`` print, from one place: LVE in both
    conventions with the unmoving template's and their ratio, FDD, the disentanglement ratios (averaged
    over ``pairs`` pairs), code sensitivity and the upper-face numbers (``upper_face``). ``masks``: a
    ``data.FaceMasks`` (mouth, eye_keypoints, forehead, lips, upper_face are read). ``known_faces``: the
    training templates, for the upper-face errors on known and new faces apart (``upper_face``).

    ``reference_clips`` (the training split): the sampled rates also over that split's ground-truth rates
    (``blink_rate_ratio_train``, ``brow_rate_ratio_train``, with ``*_rate_train`` and ``*_events_train``).
    Blinks and brow raises are drawn independently of the speech, so every split has the same expected
    rate, and a few minutes of held-out clips hold only ~15 blinks: the held-out rate (the issue's
    reference, ``*_rate_ratio``) is itself uncertain by ~25 %, the training split's (~130) by ~9 %.

    ``rate_clips``: the held-out clips the sampled and true rates are counted over (default ``clips``); the
    quick start and ``meshtalk-fast evaluate`` pass validation and test together, twice the events of the
    test split alone. ``post_smoothed``: the speech-only animations of the rates go through the released
    post-processing with ``masks.forehead`` and ``masks.neck`` (``upper_face``), as ``animate`` does."""
    result: Dict[str, object] = dict(evaluate(model, clips, masks.lips, masks.upper_face, mode=mode, seed=seed))
    result["lve_ratio"] = result["lve"] / result["lve_static"]
    result["lve_l2_ratio"] = result["lve_l2"] / result["lve_l2_static"]
    if len({c.name for c in clips}) > 1:
        swap = mean_disentanglement(model, clips, masks.mouth, masks.upper_face, pairs=pairs)
        result["disentanglement_expression"] = swap["expression_ratio"]
        result["disentanglement_audio"] = swap["audio_ratio"]
        result.update({f"swap_{k}": v for k, v in swap.items() if not k.endswith("ratio")})
    else:
        result["disentanglement_expression"] = result["disentanglement_audio"] = None
    result["code_sensitivity"] = code_sensitivity(model, clips)
    result["expression_head_classes"] = expression_head_classes(model, clips)
    smooth = (masks.forehead, masks.neck) if post_smoothed else None
    result.update(upper_face(model, clips, masks.eye_keypoints, masks.forehead, seeds=seeds,
                             known_faces=known_faces, rate_clips=rate_clips, smooth_masks=smooth))
    if reference_clips is not None:
        ref = event_rates(reference_clips, masks.eye_keypoints, masks.forehead, model.config.fps)
        for name in ("blink", "brow"):
            rate, train = result.get(f"{name}_rate"), ref[f"{name}_rate"]
            result[f"{name}_rate_train"] = train
            result[f"{name}_events_train"] = ref[f"{name}_events"]
            result[f"{name}_rate_ratio_train"] = rate / train if rate is not None and train else None
    return result


def format_report(r: Dict[str, object]) -> str:
    """The report as the few lines a person reads (the JSON has everything)."""
    def f(key, spec=".3g"):
        v = r.get(key)
        return "n/a" if v is None else format(v, spec)

    lines = [
        f"lip-sync: LVE {f('lve')} vs {f('lve_static')} for the unmoving template (ratio {f('lve_ratio', '.3f')}; "
        f"squared-max convention of FaceFormer/CodeTalker); MeshTalk's L2-max LVE {f('lve_l2')} vs "
        f"{f('lve_l2_static')}; FDD {f('fdd')}",
        f"disentanglement: swapping expression codes changes the upper face {f('disentanglement_expression', '.2f')}x "
        f"more than the mouth; swapping audio changes the mouth {f('disentanglement_audio', '.2f')}x more than the "
        f"upper face",
        f"upper face, reconstructed: eyelid error in blinks {f('eyelid_error_ratio', '.2f')}, brow error in raises "
        f"{f('brow_error_ratio', '.2f')} of the unmoving template's",
        f"upper face, sampled from speech: {f('blink_rate', '.1f')} blinks/min (data {f('blink_rate_gt', '.1f')}, "
        f"ratio {f('blink_rate_ratio', '.2f')}), closing to {f('blink_closure_ratio', '.2f')} of the data's; "
        f"{f('brow_rate', '.1f')} brow raises/min (data {f('brow_rate_gt', '.1f')}, ratio {f('brow_rate_ratio', '.2f')});"
        f" blink timing vs another seed {f('blink_timing_lift', '.2f')}x chance",
    ]
    if r.get("blink_events_gt") is not None or r.get("brow_events_gt") is not None:
        line = (f"  events counted over {f('rate_sequences', 'd')} held-out sequences ({f('rate_minutes', '.1f')} min"
                f"{', post-smoothed' if r.get('post_smoothed') else ''}): data {f('blink_events_gt', 'd')} blinks, "
                f"{f('brow_events_gt', 'd')} brow raises; sampled {f('blink_events', 'd')} and {f('brow_events', 'd')} "
                f"over all seeds")
        if "blink_rate_ratio_train" in r:
            line += (f"; against the training split's {f('blink_rate_train', '.1f')} blinks/min "
                     f"({f('blink_events_train', 'd')} blinks) and {f('brow_rate_train', '.1f')} brow raises/min "
                     f"({f('brow_events_train', 'd')}): ratios {f('blink_rate_ratio_train', '.2f')} and "
                     f"{f('brow_rate_ratio_train', '.2f')}")
        lines.append(line)
    if "brow_error_ratio_known_faces" in r:
        lines.append(f"  of which on the training faces' held-out sentences: eyelid "
                     f"{f('eyelid_error_ratio_known_faces', '.2f')}, brow {f('brow_error_ratio_known_faces', '.2f')}; "
                     f"on faces new to the model: eyelid {f('eyelid_error_ratio_new_faces', '.2f')}, brow "
                     f"{f('brow_error_ratio_new_faces', '.2f')}")
    lines += [f"not measured: {m}" for m in r.get("missing", [])]
    return "\n".join(lines)
