"""Straight-through Gumbel-softmax quantisation of categorical log-probabilities (tau = 1)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_tensor
from .models.context_model import gumbel_noise

__all__ = ["quantize"]


def quantize(logprobs: torch.Tensor, argmax: bool = False, generator: Optional[torch.Generator] = None,
             tau: float = 1.0) -> torch.Tensor:
    """``logprobs [..., C] -> one_hot [..., C]``: forward value is the hard one-hot, gradient flows
    through ``soft = softmax((logprobs + g) / tau)`` (g Gumbel noise, omitted when ``argmax``)."""
    check_tensor("logprobs", logprobs, what="[..., C]")
    if logprobs.dim() == 0:
        raise ValueError("logprobs must have at least one dimension [..., C], got a 0-d tensor")
    logits = logprobs
    if not argmax:
        logits = logits + gumbel_noise(logprobs.shape, generator, logprobs.device, logprobs.dtype)
    soft = torch.softmax(logits / tau, dim=-1)
    hard = F.one_hot(soft.detach().argmax(dim=-1), logprobs.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft
