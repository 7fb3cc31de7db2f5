"""Straight-through Gumbel-softmax quantisation of categorical log-probabilities (tau = 1)."""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F

from ..base.checks import check_tensor
from .context_model import gumbel_noise

__all__ = ["quantize", "code_statistics"]


def quantize(logprobs: torch.Tensor, argmax: bool = False, generator: Optional[torch.Generator] = None,
             tau: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """``logprobs [..., C] -> one_hot [..., C]``: forward value is the hard one-hot, gradient flows
    through ``soft = softmax((logprobs + g) / tau)`` (g Gumbel noise, omitted when ``argmax``). ``tau``: a
    number, or a tensor that broadcasts against ``[..., 1]`` (one per head: ``[H, 1]`` for ``[..., H, C]``).
    The one-hot is the argmax of ``logprobs + g`` whatever ``tau``: only the gradient depends on it."""
    check_tensor("logprobs", logprobs, what="[..., C]")
    if logprobs.dim() == 0:
        raise ValueError("logprobs must have at least one dimension [..., C], got a 0-d tensor")
    logits = logprobs
    if not argmax:
        logits = logits + gumbel_noise(logprobs.shape, generator, logprobs.device, logprobs.dtype)
    soft = torch.softmax(logits / tau, dim=-1)
    hard = F.one_hot(soft.detach().argmax(dim=-1), logprobs.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


@torch.no_grad()
def code_statistics(logprobs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """How much the categorical codes can carry, from the fusion's ``logprobs [..., H, C]``.

    ``code_entropy``: mean entropy of one frame's distribution per head, in nats. ln C means uniform
    logits: the Gumbel noise alone picks the code, so it carries nothing; near 0 means saturated logits,
    whose straight-through gradient is 0. ``code_perplexity``: exp of the entropy of the distribution
    averaged over all frames, averaged over heads: about how many classes a head uses (1 = one class for
    every frame). A stage 1 whose codes collapse shows entropy near 0 with perplexity near 1, or entropy
    near ln C; training that works keeps entropy between and perplexity well above 1 (RESULTS.md).
    """
    check_tensor("logprobs", logprobs, what="[..., H, C]")
    if logprobs.dim() < 2 or logprobs.shape[-1] < 1 or logprobs.numel() == 0:
        raise ValueError(f"logprobs must have shape [..., H, C] with at least one frame, got "
                         f"{list(logprobs.shape)}")
    lp = logprobs.float().flatten(0, -3)  # [N, H, C]
    p = lp.exp()
    entropy = -(p * lp).nan_to_num(0.0).sum(-1).mean()  # 0 * -inf (a class of probability 0) counts 0
    average = p.mean(0)  # [H, C]
    usage = -(average * average.clamp_min(1e-30).log()).sum(-1)
    return {"code_entropy": entropy, "code_perplexity": usage.exp().mean()}
