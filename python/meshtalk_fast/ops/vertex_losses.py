"""Reference (plain PyTorch) vertex losses and the lip-vertex error metric.

``torch_masked_vertex_losses`` is the ground truth the fused Triton kernel is tested against:
loss k = sum_{n, v} m_k[v] d(pred_{p(k)}[n, v], target[n, v]) / (N * sum_v m_k[v] * 3) for
``distance="squared"`` (the released code, d = squared L2 distance) or / (N * sum_v m_k[v]) for
``distance="l2"`` (the paper's ||.||, with gradient 0 at zero distance), N = number of frames.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch

from ..base.checks import check_choice, check_finite, check_tensor, shape_str
from ..base.dispatch import Inputs, resolve

__all__ = ["torch_masked_vertex_losses", "masked_vertex_losses", "step1_losses", "torch_lip_vertex_error",
           "lip_vertex_error", "check_loss_inputs", "check_lve_inputs"]

Preds = Union[torch.Tensor, Sequence[torch.Tensor]]


def check_loss_inputs(preds: Preds, target: torch.Tensor, masks: torch.Tensor,
                      pred_index: Optional[Union[Sequence[int], torch.Tensor]], distance: str,
                      check_values: bool = True):
    """Validate and normalise the arguments: returns (list of P preds, target, masks, index [K]).
    ``check_values=False`` skips the finiteness of preds and target (a read of each and a host sync
    on a GPU): for a caller that checks its result instead (the fused kernel)."""
    check_choice("distance", distance, ("squared", "l2"))
    check_tensor("target", target, what="[..., V, 3]")
    if target.dim() < 2 or target.shape[-1] != 3:
        raise ValueError(f"target must have shape [..., V, 3], got {shape_str(target.shape)}")
    V = target.shape[-2]
    if isinstance(preds, torch.Tensor):
        check_tensor("preds", preds, what="[P, ..., V, 3]")
        if preds.shape[1:] != target.shape:
            raise ValueError(f"preds must have shape [P, {', '.join(map(str, target.shape))}] (P predictions "
                             f"of target's shape), got {shape_str(preds.shape)}")
        plist = list(preds.unbind(0))
    else:
        plist = list(preds)
        if not plist:
            raise ValueError("preds must hold at least one prediction, got an empty sequence")
        for i, p in enumerate(plist):
            check_tensor(f"preds[{i}]", p, what="[..., V, 3]")
            if p.shape != target.shape:
                raise ValueError(f"preds[{i}] must have target's shape {shape_str(target.shape)}, "
                                 f"got {shape_str(p.shape)}")
    check_tensor("masks", masks, ndim=2, what=f"[K, V={V}]")
    if masks.shape[1] != V:
        raise ValueError(f"masks must have shape [K, V={V}] (V from target), got {shape_str(masks.shape)}")
    if masks.shape[0] == 0:
        raise ValueError("masks must hold at least one mask, got K = 0")
    check_finite("masks", masks)
    if bool((masks < 0).any()):
        raise ValueError(f"masks must be non-negative weights, got minimum {float(masks.min())}")
    sums = masks.sum(dim=1)
    if bool((sums == 0).any()):
        raise ValueError(f"masks must not be all zero; mask rows {torch.nonzero(sums == 0).flatten().tolist()} are")
    K, P = masks.shape[0], len(plist)
    if pred_index is None:
        if P != K:
            raise ValueError(f"pred_index is needed when the number of preds ({P}) differs from the number of "
                             f"masks ({K})")
        index = torch.arange(K)
    else:
        index = torch.as_tensor(pred_index, dtype=torch.int64).flatten().cpu()
        if index.numel() != K:
            raise ValueError(f"pred_index must have K={K} entries (one per mask), got {index.numel()}")
        if bool(((index < 0) | (index >= P)).any()):
            raise ValueError(f"pred_index entries must be in [0, {P}), got {index.tolist()}")
    if check_values:
        for i, p in enumerate(plist):
            check_finite(f"preds[{i}]", p)
        check_finite("target", target)
    if target.numel() == 0:
        raise ValueError(f"target must hold at least one frame, got shape {shape_str(target.shape)}")
    return plist, target, masks, index


def _distance(diff: torch.Tensor, distance: str) -> torch.Tensor:
    sq = diff.square().sum(dim=-1)
    if distance == "squared":
        return sq
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def torch_masked_vertex_losses(preds: Preds, target: torch.Tensor, masks: torch.Tensor,
                               pred_index=None, distance: str = "squared") -> torch.Tensor:
    """Reference: ``preds [P, ..., V, 3]`` (or a list of P), ``target [..., V, 3]``, ``masks [K, V]`` ->
    ``Tensor[K]`` in float32 (float64 for float64 inputs)."""
    plist, target, masks, index = check_loss_inputs(preds, target, masks, pred_index, distance)
    dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    V = target.shape[-2]
    frames = target.numel() // (V * 3)
    tgt = target.to(dtype).reshape(frames, V, 3)
    out = []
    for k in range(masks.shape[0]):
        pred = plist[int(index[k])].to(dtype).reshape(frames, V, 3)
        m = masks[k].to(dtype)
        d = _distance(pred - tgt, distance)  # [N, V]
        norm = frames * m.sum() * (3 if distance == "squared" else 1)
        out.append((d * m).sum() / norm)
    return torch.stack(out)




def masked_vertex_losses(preds: Preds, target: torch.Tensor, masks: torch.Tensor, pred_index=None,
                         distance: str = "squared", backend: str = "auto") -> torch.Tensor:
    """All K masked vertex losses in one call: see the module docstring. Differentiable in preds and
    in target (both backends)."""
    return resolve("masked_vertex_losses", backend, Inputs.of(target))(preds, target, masks, pred_index, distance)


def step1_losses(recon: torch.Tensor, keep_audio: torch.Tensor, keep_expression: torch.Tensor,
                 target: torch.Tensor, landmarks: torch.Tensor, mouth_mask: torch.Tensor,
                 eye_mask: torch.Tensor, distance: str = "squared", backend: str = "auto",
                 landmarks_pred: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """The released step-1 objective in one call.

    recon: decoder output from the sequence's own codes ``[B, T, V, 3]``; keep_audio: decoded with the
    expression code of another sequence (mouth must still follow the audio); keep_expression: decoded
    with the audio of another sequence (eyes must still follow the expression). Masks ``[V]``.
    Returns ``recon`` (mean squared error), ``landmarks``, ``mouth`` and ``eye`` (the two modality-
    crossing terms), ``modality_crossing = mouth + eye`` and ``total`` (all weights 1, as released).
    ``landmarks_pred`` (default ``recon``): another decoding of the sequence's own codes to measure the
    landmark term on (the trainer's ``stage1.upper_face_codes = "expression"``).
    """
    V = target.shape[-2]
    # masks stay float32 (or float64 for float64 targets) so 16-bit targets do not round the weights
    dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    ones = torch.ones(V, dtype=dtype, device=target.device)
    masks = torch.stack([ones, landmarks.to(ones), mouth_mask.to(ones), eye_mask.to(ones)])
    if landmarks_pred is None:
        preds, index = [recon, keep_audio, keep_expression], [0, 0, 1, 2]
    else:
        preds, index = [recon, landmarks_pred, keep_audio, keep_expression], [0, 1, 2, 3]
    terms = masked_vertex_losses(preds, target, masks, pred_index=index, distance=distance, backend=backend)
    out = {"recon": terms[0], "landmarks": terms[1], "mouth": terms[2], "eye": terms[3]}
    out["modality_crossing"] = terms[2] + terms[3]
    out["total"] = terms[0] + terms[1] + out["modality_crossing"]
    return out


def check_lve_inputs(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
    """The lip vertex error's input rules, shared by the reference and the Triton kernel: ``pred, target
    [..., V, 3]`` of one shape, finite, at least one frame; ``lip_mask [V]`` selecting at least one vertex.
    Returns the selection ``lip_mask != 0`` (bool ``[V]``)."""
    check_tensor("pred", pred, what="[..., V, 3]")
    check_tensor("target", target, what="[..., V, 3]")
    if pred.shape != target.shape or target.dim() < 2 or target.shape[-1] != 3:
        raise ValueError(f"pred and target must have the same shape [..., V, 3], got {shape_str(pred.shape)} "
                         f"and {shape_str(target.shape)}")
    V = target.shape[-2]
    check_tensor("lip_mask", lip_mask, floating=False, what=f"[V={V}]")
    if lip_mask.shape != (V,):
        raise ValueError(f"lip_mask must have shape [V={V}], got {shape_str(lip_mask.shape)}")
    if target.numel() == 0:
        raise ValueError(f"pred and target must hold at least one frame, got shape {shape_str(target.shape)}")
    check_finite("pred", pred)
    check_finite("target", target)
    sel = lip_mask != 0
    if not bool(sel.any()):
        raise ValueError("lip_mask must select at least one vertex, got none")
    return sel


def torch_lip_vertex_error(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
    """LVE: per frame the maximum over lip vertices of the squared L2 error, averaged over frames.
    ``pred, target [..., V, 3]``, ``lip_mask [V]`` (non-zero = lip vertex) -> scalar."""
    sel = check_lve_inputs(pred, target, lip_mask)
    d = (pred - target).square().sum(-1)[..., sel]  # [..., V_lip]
    return d.amax(dim=-1).mean()




def lip_vertex_error(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor,
                     backend: str = "auto") -> torch.Tensor:
    """Lip vertex error (see ``torch_lip_vertex_error``)."""
    return resolve("lip_vertex_error", backend, Inputs.of(target))(pred, target, lip_mask)
