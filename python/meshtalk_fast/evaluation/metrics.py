"""Evaluation metrics used in the field (definitions: docs/meshtalk-model.md, "Evaluation")."""
from __future__ import annotations

import torch

from typing import List, Optional, Sequence, Tuple

from ..base.checks import check_tensor, shape_str
from ..ops.vertex_losses import lip_vertex_error

__all__ = ["lip_vertex_error", "upper_face_dynamics_deviation", "lip_vertex_error_l2", "region_motion",
           "region_error", "event_spans", "event_scale", "above_rest", "event_signals", "EYE_EVENT_LEVEL",
           "BROW_EVENT_LEVEL"]

# An upper-face event is a run of frames whose signal (region_motion) exceeds this share of the data's
# event scale (event_scale: the 99.5th percentile of the ground truth's signal): half the full closure
# for blinks; for brow raises, whose amplitude varies (0.3..1 of the full raise on the built-in data),
# 30 %.
EYE_EVENT_LEVEL = 0.5
BROW_EVENT_LEVEL = 0.3
# Below this many event frames in 1000 the data has no such events to measure against: rates are None.
MIN_EVENT_SHARE = 1e-3


def upper_face_dynamics_deviation(pred: torch.Tensor, target: torch.Tensor, template: torch.Tensor,
                                  upper_mask: torch.Tensor) -> torch.Tensor:
    """FDD: ``mean_v std_t ||target - template||^2  -  mean_v std_t ||pred - template||^2`` over the
    upper-face vertices (population std over frames). ``pred, target [T, V, 3]``, ``template [V, 3]``,
    ``upper_mask [V]`` (non-zero = upper face) -> scalar (signed: > 0 means too little motion)."""
    check_tensor("pred", pred, ndim=3, what="[T, V, 3]")
    check_tensor("target", target, ndim=3, what="[T, V, 3]")
    if pred.shape != target.shape or template.shape != target.shape[1:]:
        raise ValueError(f"pred, target [T, V, 3] and template [V, 3] must agree, got {shape_str(pred.shape)}, "
                         f"{shape_str(target.shape)}, {shape_str(template.shape)}")
    sel = upper_mask != 0
    if upper_mask.shape != (target.shape[1],) or not bool(sel.any()):
        raise ValueError(f"upper_mask must have shape [V={target.shape[1]}] and select at least one vertex, "
                         f"got shape {shape_str(upper_mask.shape)} selecting {int(sel.sum())}")

    def dynamics(x):
        disp = (x[:, sel] - template[sel]).square().sum(-1)  # [T, V_up]
        return disp.std(dim=0, unbiased=False).mean()

    return dynamics(target) - dynamics(pred)


def lip_vertex_error_l2(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
    """LVE in the MeshTalk paper's convention: per frame the maximum over lip vertices of the L2 error
    (a distance, not squared), averaged over frames. ``[..., V, 3]`` -> scalar.

    ``lip_vertex_error`` is the other convention, the one FaceFormer and CodeTalker report and torchmetrics'
    ``LipVertexError`` computes: the maximum of the *squared* L2 error. Reports name the two ``lve_l2``
    and ``lve`` so they are never mixed (the squared one is not the square of this: mean of squares)."""
    if pred.shape != target.shape or target.dim() < 2 or target.shape[-1] != 3:
        raise ValueError(f"pred and target must have the same shape [..., V, 3], got {shape_str(pred.shape)} "
                         f"and {shape_str(target.shape)}")
    sel = lip_mask != 0
    if lip_mask.shape != (target.shape[-2],) or not bool(sel.any()):
        raise ValueError(f"lip_mask must have shape [V={target.shape[-2]}] and select a vertex, got "
                         f"{shape_str(lip_mask.shape)}")
    return (pred - target).norm(dim=-1)[..., sel].amax(-1).mean()


def region_motion(geom: torch.Tensor, template: torch.Tensor, mask: torch.Tensor,
                  reduce: str = "max") -> torch.Tensor:
    """Per-frame motion of a region: ``||geom - template||`` over the vertices with ``mask > 0``, reduced
    by ``"max"`` (eyelids: the eye keypoints' largest displacement, ~full at a closed eye) or ``"mean"``
    (mask-weighted mean: brow height over the forehead mask). ``geom [..., T, V, 3]``, ``template [V, 3]``
    or ``[..., V, 3]``, ``mask [V]`` -> ``[..., T]``."""
    check_tensor("geom", geom, what="[..., T, V, 3]")
    V = geom.shape[-2]
    if geom.dim() < 3 or geom.shape[-1] != 3:
        raise ValueError(f"geom must have shape [..., T, V, 3], got {shape_str(geom.shape)}")
    if mask.shape != (V,):
        raise ValueError(f"mask must have shape [V={V}], got {shape_str(mask.shape)}")
    if not bool((mask > 0).any()):
        raise ValueError("mask selects no vertex (all weights are 0): the region is empty")
    base = template.unsqueeze(-3) if template.dim() == geom.dim() - 1 else template
    d = (geom - base).norm(dim=-1)  # [..., T, V]
    if reduce == "max":
        return d[..., mask > 0].amax(-1)
    if reduce == "mean":
        w = mask.clamp_min(0).to(d)
        return (d * w).sum(-1) / w.sum()
    raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")


def region_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per frame the largest vertex distance over the region ``mask > 0``: ``[..., T, V, 3]`` -> ``[..., T]``
    (the eyelid error over the eye keypoints, the brow error over the forehead)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {shape_str(pred.shape)} and "
                         f"{shape_str(target.shape)}")
    if mask.shape != (target.shape[-2],) or not bool((mask > 0).any()):
        raise ValueError(f"mask must have shape [V={target.shape[-2]}] and select a vertex, got "
                         f"{shape_str(mask.shape)} selecting {int((mask > 0).sum()) if mask.dim() == 1 else '?'}")
    return (pred - target).norm(dim=-1)[..., mask > 0].amax(-1)


def above_rest(signal: torch.Tensor) -> torch.Tensor:
    """``signal [T]`` minus its resting level (the median over frames: events such as blinks or brow
    raises fill a minority of the frames), so a constant offset of a model's face is not read as an event."""
    if signal.dim() != 1 or signal.numel() == 0:
        raise ValueError(f"signal must have shape [T > 0], got {shape_str(signal.shape)}")
    return signal - signal.median()


def event_scale(signals: Sequence[torch.Tensor]) -> Optional[float]:
    """The size of a full event in ground-truth signals (``region_motion`` of each sequence): the 99.5th
    percentile over all frames, or None when fewer than ``MIN_EVENT_SHARE`` of the frames move at all
    (the data has no such events; nothing is measured from nothing)."""
    x = torch.cat([s.flatten().float() for s in signals]) if signals else torch.zeros(0)
    if x.numel() == 0 or not bool(torch.isfinite(x).all()):
        raise ValueError(f"signals must be non-empty and finite, got {x.numel()} values")
    scale = float(torch.quantile(x, 0.995)) if x.numel() > 1 else float(x.max())
    if scale <= 0 or float((x > 0.2 * scale).float().mean()) < MIN_EVENT_SHARE:
        return None
    return scale


def event_signals(meshes: Sequence[Tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor,
                  reduce: str) -> Tuple[List[torch.Tensor], Optional[float]]:
    """The event rule's first half, the one place it is written: for each ``(geom [T, V, 3], template
    [V, 3])`` the region's motion above its resting level (``region_motion`` then ``above_rest``), and the
    scale of a full event over all of them (``event_scale``, None when the region never moves). An event
    is then a span of ``event_spans(signal, level * scale)``, level ``EYE_EVENT_LEVEL`` or
    ``BROW_EVENT_LEVEL``. Used by the evaluation, the trainer's event crops and the quick start's preview."""
    signals = [above_rest(region_motion(geom, template, mask, reduce)) for geom, template in meshes]
    return signals, event_scale(signals)


def event_spans(signal: torch.Tensor, threshold: float, min_gap: int = 2) -> List[Tuple[int, int]]:
    """Runs of frames ``[start, end)`` where ``signal [T] > threshold``; runs separated by fewer than
    ``min_gap`` frames below it are one event (a flicker at the threshold is not two blinks)."""
    if signal.dim() != 1:
        raise ValueError(f"signal must have shape [T], got {shape_str(signal.shape)}")
    above = (signal > threshold).tolist()
    spans: List[Tuple[int, int]] = []
    start = None
    for t, a in enumerate(above + [False]):
        if a and start is None:
            start = t
        elif not a and start is not None:
            if spans and start - spans[-1][1] < min_gap:
                spans[-1] = (spans[-1][0], t)
            else:
                spans.append((start, t))
            start = None
    return spans
