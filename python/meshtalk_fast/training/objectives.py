"""The two training objectives as modules, so DistributedDataParallel can wrap them.

Stage 1 trains the encoders and the decoder with the released step-1 terms; stage 2 trains the
autoregressive prior on the frozen encoder's argmax codes (cross-entropy).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..ops.vertex_losses import masked_vertex_losses, step1_losses
from ..models import MultimodalEncoder, VertexUnet
from ..models.encoders import group_heads
from ..models.quantize import code_statistics, quantize

__all__ = ["Stage1Objective", "Stage2Objective", "frozen_codes", "encode_audio_inputs", "logit_gap_penalty",
           "expression_group_spans"]


class Stage1Objective(nn.Module):
    """``forward(batch, generator) -> loss terms`` (released step 1) plus the code statistics of the
    sequences' own codes (``code_entropy``, ``code_perplexity``). Masks are ``[V]`` buffers."""

    def __init__(self, encoder: MultimodalEncoder, vertex_unet: VertexUnet, landmarks: torch.Tensor,
                 mouth: torch.Tensor, eye: torch.Tensor, distance: str = "squared", loss_backend: str = "auto",
                 codes: str = "gumbel", diversity: float = 0.0, weights: Optional[Dict[str, float]] = None,
                 expression_diversity: Optional[float] = None, forehead: Optional[torch.Tensor] = None,
                 upper_face_codes: str = "all", decode_rows: bool = True,
                 logit_gap: Tuple[float, float] = (0.0, 0.0), expression_st_temperature: float = 1.0):
        super().__init__()
        # T: the expression heads' straight-through gradient flows through softmax(logits / T) (their codes, the
        # one-hots of the argmax, are the same for every T); 1: as the other heads (released). A head whose
        # softmax saturated on one class (the stuck brows: the largest logit ~70 above the next) passes no
        # gradient at T = 1; at T = 10 it sees a gap of ~7 and the decoder's gradient reaches its logits again
        self.expression_st_temperature = float(expression_st_temperature)
        if not 0 < self.expression_st_temperature < float("inf"):
            raise ValueError(f"expression_st_temperature must be a finite number > 0, got "
                             f"{expression_st_temperature!r}")
        if self.expression_st_temperature != 1.0 and not encoder.fusion_model.expression_heads:
            raise ValueError("expression_st_temperature other than 1 needs expression heads (model.expression_heads), "
                             "got 0")
        # (limit, weight): the "logit_gap" term, weight x mean over frames and expression heads of
        # relu(largest logit - mean logit - limit)^2 (logit_gap_penalty); limit 0: off (released)
        self.logit_gap_limit, self.logit_gap_weight = (float(v) for v in logit_gap)
        if not (self.logit_gap_limit >= 0 and self.logit_gap_weight >= 0):
            raise ValueError(f"logit_gap must be (limit >= 0, weight >= 0), got {tuple(logit_gap)}")
        if self.logit_gap_limit > 0 and not encoder.fusion_model.expression_heads:
            raise ValueError("logit_gap with a limit > 0 needs expression heads (model.expression_heads), got 0")
        # True: the decodings that only a masked term reads (the two crossing terms, the eyelid and brow
        # terms' own decodings) are computed for their mask's vertices alone (VertexUnet(vertices=...)):
        # the same terms, ~3x less decoder work per step. False: whole decodings (the reference the test
        # compares with).
        self.decode_rows = decode_rows
        # "all" (released): the eyelid (landmark) and brow terms reach every head's codes; "expression":
        # they are computed from a second decoding in which the other heads' codes carry no gradient, so
        # they teach the expression heads and the decoder but never move the audio heads (RESULTS.md, "The
        # upper face": a strong eyelid term collapsed the audio codes when the blinks were learnt); "split":
        # the same, with the expression heads split in two groups, the first ceil(k/2) reached by the eyelid
        # term only and the rest by the brow term only, so blinks and brow raises do not compete for the
        # same heads (RESULTS.md, "The upper face")
        if upper_face_codes not in ("all", "expression", "split"):
            raise ValueError(f"upper_face_codes must be 'all', 'expression' or 'split', got {upper_face_codes!r}")
        need = {"all": 0, "expression": 1, "split": 2}[upper_face_codes]
        if encoder.fusion_model.expression_heads < need:
            raise ValueError(f"upper_face_codes={upper_face_codes!r} needs at least {need} expression heads "
                             f"(model.expression_heads), got {encoder.fusion_model.expression_heads}")
        self.upper_face_codes = upper_face_codes
        # temperature of the expression heads' relaxed codes, None: hard codes (set per step by the trainer)
        self.expression_tau: Optional[float] = None
        # code usage on the expression heads (FusionMlp.expression_heads); None: like the other heads
        self.expression_diversity = diversity if expression_diversity is None else expression_diversity
        # weights of "recon", "landmarks", "mouth", "eye" (missing ones 1, as released) and "brow" (0 unless
        # given: the reconstruction error over the forehead mask, normalised like the eye landmarks, a term
        # of ours for the brow raises: RESULTS.md, "The upper face")
        self.weights = {k: 1.0 for k in ("recon", "landmarks", "mouth", "eye")}
        self.weights["brow"] = 0.0
        unknown = set(weights or {}) - set(self.weights)
        if unknown:
            raise ValueError(f"weights: unknown terms {sorted(unknown)}; known: {sorted(self.weights)}")
        self.weights.update(weights or {})
        if self.weights["brow"] > 0 and (forehead is None or not bool((forehead > 0).any())):
            raise ValueError("the brow term (weight > 0) needs a forehead mask with weights > 0, got "
                             f"{'none' if forehead is None else 'an empty mask'}")
        self.register_buffer("forehead", None if forehead is None else forehead.float())
        self.encoder, self.vertex_unet, self.distance = encoder, vertex_unet, distance
        self.argmax = codes == "argmax"  # "gumbel" (released) or "argmax": see StageSection.codes
        self.diversity = diversity       # weight of the code-usage term (0: released): see StageSection
        self.loss_backend = loss_backend  # "auto": the fused Triton losses on CUDA, the reference on CPU
        self.register_buffer("landmarks", landmarks.float())
        self.register_buffer("mouth", mouth.float())
        self.register_buffer("eye", eye.float())
        for name, mask in (("landmarks", landmarks), ("mouth", mouth), ("eye", eye), ("forehead", forehead)):
            rows = None if mask is None else torch.nonzero(mask > 0).flatten()
            self.register_buffer(f"{name}_rows", rows, persistent=False)

    def _quantize(self, logprobs, generator):
        """The codes the decoder reads: hard one-hots (straight-through), except the expression heads'
        while ``expression_tau`` is set (the trainer's ``stage1.relaxed_expression`` warm-up): then their
        relaxed codes ``softmax(logprobs / tau)``, so the decoder's gradient reaches every class of those
        heads, not only through the straight-through estimate of the one that won. The expression heads'
        straight-through estimate reads ``softmax(logprobs / expression_st_temperature)``."""
        k = self.encoder.fusion_model.expression_heads
        spans = expression_group_spans(self.encoder.fusion_model)
        t = self.expression_st_temperature  # one for every expression head, or one per group (training/locks.py)
        temps = t if isinstance(t, tuple) else (t,) * len(spans)
        if len(temps) != len(spans):
            raise ValueError(f"expression_st_temperature: one per expression group ({len(spans)}) expected, "
                             f"got {len(temps)}")
        tau = 1.0
        if any(tg != 1.0 for tg in temps):
            tau = torch.ones(logprobs.shape[-2], 1, device=logprobs.device, dtype=logprobs.dtype)
            for (lo, hi), tg in zip(spans, temps):
                tau[lo:hi] = tg
        one_hot = quantize(logprobs, argmax=self.argmax, generator=generator, tau=tau)
        if self.expression_tau is None or not k:
            return one_hot
        soft = torch.softmax(logprobs[..., :k, :].float() / self.expression_tau, dim=-1).to(one_hot.dtype)
        return torch.cat([soft, one_hot[..., k:, :]], dim=-2)

    def _reconstruct(self, template, logprobs, generator):
        return self.vertex_unet(template[:, None], self._quantize(logprobs, generator))

    def forward(self, template: torch.Tensor, geom: torch.Tensor, generator: torch.Generator,
                windows: Optional[torch.Tensor] = None, mel: Optional[torch.Tensor] = None,
                positions: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``template [B, V, 3]``, ``geom [B, T, V, 3]`` and the audio: ``windows [B, T, W]`` (framing "window";
        W = ``config.window_samples``) or ``mel [B, 80, F]`` + ``positions [B, T]`` (framing "stream")."""
        B = geom.shape[0]
        if B < 2:
            raise ValueError(f"stage 1 needs at least 2 sequences per micro-batch for the modality-crossing "
                             f"terms, got {B}")
        expression_code = self.encoder.expression_encoder(geom, template)
        audio_code = encode_audio_inputs(self.encoder, windows, mel, positions)
        # another sequence of the batch; drawn on the generator's device (a CUDA generator cannot draw
        # a CPU tensor)
        shift = int(torch.randint(1, B, (1,), generator=generator, device=generator.device))
        fuse = self.encoder.fusion_model
        own = fuse(expression_code, audio_code)
        one_hot = self._quantize(own, generator)
        recon = self.vertex_unet(template[:, None], one_hot)
        if self.decode_rows:
            terms = self._row_terms(template, geom, generator, one_hot, recon, expression_code, audio_code, shift)
        else:
            terms = self._whole_terms(template, geom, generator, one_hot, recon, expression_code, audio_code, shift)
        with torch.autocast(geom.device.type, enabled=False):
            if any(w != (0.0 if k == "brow" else 1.0) for k, w in self.weights.items()):
                terms["total"] = sum(w * terms[k] for k, w in self.weights.items() if w > 0)
            # the weighted terms that fit the data, without the regularisers added below: what the trainer's
            # end-of-stage check compares (Trainer._settle_average)
            terms["fitting"] = terms["total"]
            k = self.encoder.fusion_model.expression_heads
            if k and self.expression_diversity != self.diversity:
                if self.diversity > 0:
                    terms["diversity"] = diversity_loss(own[..., k:, :])
                    terms["total"] = terms["total"] + self.diversity * terms["diversity"]
                if self.expression_diversity > 0:
                    terms["expression_diversity"] = diversity_loss(own[..., :k, :])
                    terms["total"] = terms["total"] + self.expression_diversity * terms["expression_diversity"]
            elif self.diversity > 0:
                terms["diversity"] = diversity_loss(own)
                terms["total"] = terms["total"] + self.diversity * terms["diversity"]
            if self.logit_gap_limit > 0:
                terms["logit_gap"] = logit_gap_penalty(own[..., :k, :], self.logit_gap_limit)
                terms["total"] = terms["total"] + self.logit_gap_weight * terms["logit_gap"]
            terms.update(code_statistics(own))  # diagnostics only (no gradient, not in "total"): see quantize.py
            terms.update(group_saturation(own.detach(), fuse))
        return terms

    def _upper_face_codes(self, one_hot: torch.Tensor):
        """The codes the eyelid and brow terms decode (None: the sequence's own decoding, ``recon``)."""
        k = self.encoder.fusion_model.expression_heads
        if self.upper_face_codes == "expression":
            return live_heads(one_hot, 0, k), live_heads(one_hot, 0, k)
        if self.upper_face_codes == "split":
            (eye_lo, eye_hi), (brow_lo, brow_hi) = group_heads(k, 2)  # as the grouped expression encoder's
            return live_heads(one_hot, eye_lo, eye_hi), live_heads(one_hot, brow_lo, brow_hi)
        return None, None

    def _whole_terms(self, template, geom, generator, one_hot, recon, expression_code, audio_code, shift):
        """The terms from whole decodings (the reference of ``_row_terms``)."""
        fuse = self.encoder.fusion_model
        eye_codes, brow_codes = self._upper_face_codes(one_hot)
        eyes = recon if eye_codes is None else self.vertex_unet(template[:, None], eye_codes)
        brows = recon if brow_codes is None else self.vertex_unet(template[:, None], brow_codes)
        keep_audio = self._reconstruct(template, fuse(expression_code.roll(shift, 0), audio_code), generator)
        keep_expression = self._reconstruct(template, fuse(expression_code, audio_code.roll(shift, 0)), generator)
        # The losses in float32 whatever the autocast around this call (the trainer's bf16 autocast on
        # CUDA covers the encoders and the decoder only): squared errors of vertices in mm summed over
        # ~10^5 terms lose their low bits in bf16.
        with torch.autocast(geom.device.type, enabled=False):
            terms = step1_losses(recon.float(), keep_audio.float(), keep_expression.float(), geom.float(),
                                 self.landmarks, self.mouth, self.eye, distance=self.distance,
                                 backend=self.loss_backend, landmarks_pred=None if eyes is recon else eyes.float())
            if self.weights["brow"] > 0:
                terms["brow"] = masked_vertex_losses([brows.float()], geom.float(), self.forehead[None],
                                                     distance=self.distance, backend=self.loss_backend)[0]
        return terms

    def _row_terms(self, template, geom, generator, one_hot, recon, expression_code, audio_code, shift):
        """The same terms as ``_whole_terms``, each masked term from its mask's vertices alone. Each loss
        is normalised by its mask's weight sum, so dropping the vertices of weight 0 changes nothing."""
        fuse = self.encoder.fusion_model
        eye_codes, brow_codes = self._upper_face_codes(one_hot)

        def decode(codes, rows):
            return self.vertex_unet(template[:, None], codes, vertices=rows)

        def term(pred, name):
            rows = getattr(self, f"{name}_rows")
            mask = getattr(self, name)[rows]
            return masked_vertex_losses([pred.float()], geom[:, :, rows].float(), mask[None],
                                        distance=self.distance, backend=self.loss_backend)[0]

        keep_audio = decode(self._quantize(fuse(expression_code.roll(shift, 0), audio_code), generator), self.mouth_rows)
        keep_expression = decode(self._quantize(fuse(expression_code, audio_code.roll(shift, 0)), generator),
                                 self.eye_rows)
        eyes = recon[:, :, self.landmarks_rows] if eye_codes is None else decode(eye_codes, self.landmarks_rows)
        with torch.autocast(geom.device.type, enabled=False):  # float32 losses: see _whole_terms
            ones = torch.ones(geom.shape[-2], dtype=torch.float32, device=geom.device)
            terms = {"recon": masked_vertex_losses([recon.float()], geom.float(), ones[None], distance=self.distance,
                                                   backend=self.loss_backend)[0],
                     "landmarks": term(eyes, "landmarks"), "mouth": term(keep_audio, "mouth"),
                     "eye": term(keep_expression, "eye")}
            terms["modality_crossing"] = terms["mouth"] + terms["eye"]
            terms["total"] = terms["recon"] + terms["landmarks"] + terms["modality_crossing"]
            if self.weights["brow"] > 0:
                brows = (recon[:, :, self.forehead_rows] if brow_codes is None
                         else decode(brow_codes, self.forehead_rows))
                terms["brow"] = term(brows, "forehead")
        return terms


def expression_group_spans(fuse) -> List[Tuple[int, int]]:
    """The expression groups' head ranges ``[(lo, hi)]`` of the fusion model (one group when it has no groups; none
    without expression heads)."""
    return group_heads(fuse.expression_heads, fuse.expression_groups) if fuse.expression_heads else []


def group_saturation(logprobs: torch.Tensor, fuse) -> Dict[str, torch.Tensor]:
    """Diagnostics of expression group g's heads from ``logprobs [..., H, C]`` (no gradient):
    ``saturation_group{g}``, the mean over frames and heads of the largest class probability, and
    ``classes_group{g}``, the mean over the group's heads of how many classes the batch's frames chose. Saturation
    near 1 means confident frames: the argmax still varies from frame to frame in runs that learn (0.5-0.99 in the
    brow group after step ~150 in the quick starts before its straight-through temperature), but a group whose
    frames all chose one class (``classes_group{g}`` 1) with its softmax saturated passes no gradient to its logits
    and stays there (RESULTS.md, "Stuck brow heads")."""
    spans = expression_group_spans(fuse)
    if not spans:
        return {}
    z = logprobs.detach().float()
    top = z.amax(-1).exp()  # [..., H]
    labels = z.argmax(-1).flatten(0, -2)  # [N, H]
    used = torch.zeros(labels.shape[1], z.shape[-1], device=z.device).scatter_(1, labels.T, 1.0).sum(-1)  # [H]
    out = {}
    for g, (lo, hi) in enumerate(spans):
        out[f"saturation_group{g}"] = top[..., lo:hi].mean()
        out[f"classes_group{g}"] = used[lo:hi].mean()
    return out


def logit_gap_penalty(logprobs: torch.Tensor, limit: float) -> torch.Tensor:
    """Mean over frames and heads of ``relu(max_c z - mean_c z - limit)^2`` for ``logprobs [..., H, C]`` (z: the
    logits up to a constant per head, so log-probabilities serve). 0 while every head's largest logit is within
    ``limit`` of its mean; above, its gradient grows with the gap, where a saturated softmax passes none (with C
    classes and the others equal, a gap of ``limit`` is a largest probability of e^limit / (e^limit + C - 1):
    0.76 at limit 6, C 128). The cure for a head stuck on one class has to reach the logits directly."""
    z = logprobs.float()
    gap = z.amax(-1) - z.mean(-1)
    return torch.relu(gap - limit).square().mean()


def live_heads(one_hot: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``one_hot [B, T, H, C]`` with the gradient kept on heads ``lo:hi`` only (the others detached)."""
    return torch.cat([one_hot[:, :, :lo].detach(), one_hot[:, :, lo:hi], one_hot[:, :, hi:].detach()], 2)


def diversity_loss(logprobs: torch.Tensor) -> torch.Tensor:
    """Code usage: 1 - (perplexity of the batch-averaged distribution per head) / C, averaged over heads,
    from ``logprobs [..., H, C]`` (0 when every class is used equally often, 1 - 1/C when all frames
    pick one class). The diversity loss of wav2vec 2.0 (Baevski et al., 2020, eq. 4), there for the
    same failure: every frame's logits pushed towards one class."""
    p = logprobs.float().exp().flatten(0, -3).mean(0)  # [H, C]
    perplexity = torch.exp(-(p * p.clamp_min(1e-30).log()).sum(-1))
    return 1 - perplexity.mean() / logprobs.shape[-1]


def encode_audio_inputs(encoder: MultimodalEncoder, windows=None, mel=None, positions=None) -> torch.Tensor:
    """Audio codes ``[B, T, A]`` from windows (framing "window") or mel + positions ("stream")."""
    if windows is not None:
        return encoder.audio_encoder(windows)
    return encoder.audio_encoder.encode_stream(mel, positions)


@torch.no_grad()
def frozen_codes(encoder: MultimodalEncoder, geom: torch.Tensor, windows=None, mel=None, positions=None,
                 template: Optional[torch.Tensor] = None):
    """Stage-2 targets: argmax codes of the frozen encoder and its audio codes (``template [B, V, 3]``
    for an encoder with the offset input)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():  # targets only: no graph through the encoders
        expression_code = encoder.expression_encoder(geom, template)
        audio_code = encode_audio_inputs(encoder, windows, mel, positions)
        one_hot = quantize(encoder.fusion_model(expression_code, audio_code), argmax=True)
    encoder.train(was_training)
    return one_hot, audio_code


class Stage2Objective(nn.Module):
    """``forward(one_hot, audio_code) -> {"cross_entropy", "total"}`` for the ContextModel."""

    def __init__(self, context_model: nn.Module):
        super().__init__()
        self.context_model = context_model

    def forward(self, one_hot: torch.Tensor, audio_code: torch.Tensor) -> Dict[str, torch.Tensor]:
        logprobs = self.context_model(one_hot, audio_code)
        with torch.autocast(logprobs.device.type, enabled=False):  # the loss in float32 (see Stage1Objective)
            nll = -(logprobs.float() * one_hot.float()).sum(-1).mean()
        return {"cross_entropy": nll, "fitting": nll, "total": nll}
