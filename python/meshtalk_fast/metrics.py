"""Evaluation metrics used in the field (definitions: docs/meshtalk-model.md, "Evaluation")."""
from __future__ import annotations

import torch

from ._checks import check_tensor, shape_str
from .losses import lip_vertex_error

__all__ = ["lip_vertex_error", "upper_face_dynamics_deviation"]


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
