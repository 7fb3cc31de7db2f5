"""Evaluation: LVE and FDD on held-out sequences, and the disentanglement check.

``mode="audio"`` animates from speech alone (codes sampled from the prior, the released inference);
``mode="reconstruct"`` encodes the ground-truth meshes with the audio (stage-1 quality).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence

import torch

from .losses import lip_vertex_error
from .meshtalk import MeshTalk
from .metrics import upper_face_dynamics_deviation
from .training.batches import Clip

__all__ = ["animate_clip", "reconstruct_clip", "evaluate", "disentanglement", "code_sensitivity", "on_model_device"]


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
def animate_clip(model: MeshTalk, clip: Clip, seed: int = 0, argmax: bool = False) -> torch.Tensor:
    """Speech -> meshes ``[T, V, 3]`` on the model's device, with codes sampled from the prior (Gumbel,
    seeded; the generator lives on the model's device, so CUDA and CPU draw different noise)."""
    clip = on_model_device(model, clip)
    one_hot = model.sample(model.encode_speech(clip.audio)[:, :clip.frames], argmax=argmax,
                           generator=torch.Generator(device=clip.audio.device).manual_seed(seed))
    return model.decode(clip.template, one_hot)[0]


@torch.no_grad()
def reconstruct_clip(model: MeshTalk, clip: Clip) -> torch.Tensor:
    """Ground-truth meshes + speech -> argmax codes -> meshes ``[T, V, 3]`` on the model's device."""
    clip = on_model_device(model, clip)
    expression_code, audio_code = _codes(model, clip)
    one_hot = model.quantize(model.fuse(expression_code, audio_code), argmax=True)
    return model.decode(clip.template, one_hot)[0]


@torch.no_grad()
def evaluate(model: MeshTalk, clips: Sequence[Clip], lips: torch.Tensor, upper_face: torch.Tensor,
             mode: str = "audio", seed: int = 0) -> Dict[str, float]:
    """Frame-weighted LVE, LVE of the unmoving template, and FDD over ``clips``."""
    if not clips:
        raise ValueError("clips must hold at least one sequence to evaluate, got none")
    was_training = model.training
    model.eval()
    totals = {"lve": 0.0, "lve_static": 0.0, "fdd": 0.0}
    frames = 0
    for i, clip in enumerate(clips):
        clip = on_model_device(model, clip)
        lips, upper_face = lips.to(clip.geom.device), upper_face.to(clip.geom.device)
        pred = animate_clip(model, clip, seed + i) if mode == "audio" else reconstruct_clip(model, clip)
        static = clip.template.expand_as(clip.geom)
        n = clip.frames
        totals["lve"] += float(lip_vertex_error(pred, clip.geom, lips, backend="torch")) * n
        totals["lve_static"] += float(lip_vertex_error(static, clip.geom, lips, backend="torch")) * n
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
        expression_code, audio_code = _codes(model, clip)
        one_hot = model.quantize(model.fuse(expression_code, audio_code), argmax=True)
        own = model.decode(clip.template, one_hot)[0]
        other = model.decode(clip.template, one_hot.roll(shift, 1))[0]
        moved += float((own - other).norm(dim=-1).mean()) * clip.frames
        real += float((clip.geom - clip.geom.roll(shift, 0)).norm(dim=-1).mean()) * clip.frames
    model.train(was_training)
    if real == 0.0:
        raise ValueError("the sequences' meshes never move, so code sensitivity is undefined")
    return moved / real
