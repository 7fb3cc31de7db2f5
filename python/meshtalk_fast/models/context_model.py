"""ContextModel: the autoregressive prior over the categorical codes, conditioned on audio.

Channels are read head-major: a ``[B, T, H, C]`` tensor is viewed as ``[B, T, H*C]`` with channel
``h * C + c``. Each layer is a masked context convolution: ``masked_linear`` (1x1, output head i sees
input heads < i at the same step), ``unmasked_linear`` (1x1 on the audio code of the same step) and,
with kernel_size > 0, ``historic`` (kernel 2, the layer's dilation, over the previous steps only:
step t sees t-1 and t-1-dilation).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import LEAKY_SLOPE

__all__ = ["MaskedContextConvolution", "ContextModel", "causal_head_mask", "gumbel_noise", "HEAD_MASKS"]

# ContextModel's head_masks: "released" (every layer reads strictly earlier heads) or "inclusive"
HEAD_MASKS = ("released", "inclusive")


def causal_head_mask(ch_in: int, ch_out: int, heads: int, inclusive: bool = False) -> torch.Tensor:
    """``[heads*ch_out, heads*ch_in, 1]``: 1 where the output head is strictly later than the input head
    (``inclusive``: later or the same head)."""
    out_head = torch.arange(heads * ch_out) // ch_out
    in_head = torch.arange(heads * ch_in) // ch_in
    seen = in_head[None, :] <= out_head[:, None] if inclusive else in_head[None, :] < out_head[:, None]
    return seen.float().unsqueeze(-1)


def gumbel_noise(shape, generator: Optional[torch.Generator] = None, device=None,
                 dtype=torch.float32) -> torch.Tensor:
    """``-log(-log(clamp(U, 1e-10, 1)))`` with U uniform in [0, 1), as released."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(torch.clamp(u, min=1e-10, max=1.0)))


class MaskedContextConvolution(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, heads: int, audio_dim: int, kernel_size: int = 0,
                 dilation: int = 1, inclusive: bool = False):
        super().__init__()
        self.ch_in, self.ch_out, self.heads = ch_in, ch_out, heads
        self.kernel_size, self.dilation = kernel_size, dilation
        self.unmasked_linear = nn.Conv1d(audio_dim, ch_out * heads, kernel_size=1)
        self.masked_linear = nn.Conv1d(ch_in * heads, ch_out * heads, kernel_size=1)
        self.inclusive = inclusive
        self.register_buffer("mask", causal_head_mask(ch_in, ch_out, heads, inclusive))
        if kernel_size > 0:
            self.historic = nn.Conv1d(ch_in * heads, ch_out * heads, kernel_size=kernel_size, dilation=dilation)

    def lookback(self) -> int:
        """How many earlier steps this layer reads (0 without ``historic``)."""
        return 0 if self.kernel_size == 0 else self.dilation * (self.kernel_size - 1) + 1

    def forward(self, x: torch.Tensor, audio: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [B, H*ch_in, T]``, ``audio [B, audio_dim, T]`` -> ``[B, H*ch_out, T]`` (teacher forced)."""
        y = F.conv1d(x, self.masked_linear.weight * self.mask, self.masked_linear.bias)
        if audio is not None:
            y = y + self.unmasked_linear(audio)
        if self.kernel_size > 0:
            # shift right by one step, left-pad with zeros: step t sees t-1, t-1-dilation, ...
            y = y + self.historic(F.pad(x[..., :-1], (self.lookback(), 0)))
        return y


class ContextModel(nn.Module):
    """``embedding`` (C -> hidden per head), four ``context_layers`` (hidden -> hidden, kernel 2,
    dilations 1, 2, 4, 8, with audio, each followed by leaky ReLU), ``logits`` (hidden -> C).

    ``head_masks``: which heads of the same step a layer's output head reads. "released": strictly
    earlier heads in every layer. Then each layer moves the current step's information one head on, so
    head h's log-probabilities see the current step's labels of heads <= h - 6 only, and head 0's
    logits read nothing at all: its distribution is the logits' bias, the same at every step, and its
    samples are independent from frame to frame. "inclusive" (ours, PixelCNN's masks A then B): the
    embedding reads strictly earlier heads (a head never sees its own label at its own step) and every
    later layer the same head too, so head h sees all heads < h at this step and head 0 its history.

    ``free_heads = k > 0`` (ours; 0 as released): the first k heads are drawn free of the speech. Their
    rows of every context layer's audio weights (``unmasked_linear``) and their history taps on the other
    heads (``historic``) are zero and stay zero in training (a gradient hook masks them), so head h < k
    depends only on heads < k, at this step and earlier ones: the audio reaches it through no path. The
    first context layer's history taps may also read the embedding of head k: it holds the labels of
    heads < k only (the embedding has neither audio nor history), and it is the one place where head
    k-1's own earlier labels can be read (the embedding of head j holds the labels of heads < j). Because
    the zeros are in the weights themselves, every backend (the reference sampler, the incremental one,
    the C++ core) samples this prior unchanged. Used for the expression heads
    (``MeshTalkConfig.prior_expression = "free"``): blinks happen independently of speech.
    """

    def __init__(self, classes: int = 128, heads: int = 16, audio_dim: int = 128, hidden: int = 64,
                 dilations: Sequence[int] = (1, 2, 4, 8), free_heads: int = 0, head_masks: str = "released"):
        super().__init__()
        if isinstance(free_heads, bool) or not isinstance(free_heads, int) or not 0 <= free_heads < heads:
            raise ValueError(f"free_heads must be an integer in [0, heads={heads}), got {free_heads!r}")
        if head_masks not in HEAD_MASKS:
            raise ValueError(f"head_masks must be one of {HEAD_MASKS}, got {head_masks!r}")
        self.classes, self.heads, self.audio_dim, self.hidden = classes, heads, audio_dim, hidden
        self.free_heads, self.head_masks = free_heads, head_masks
        inclusive = head_masks == "inclusive"
        self.embedding = MaskedContextConvolution(classes, hidden, heads, audio_dim, kernel_size=0)
        self.context_layers = nn.ModuleList([
            MaskedContextConvolution(hidden, hidden, heads, audio_dim, kernel_size=2, dilation=d, inclusive=inclusive)
            for d in dilations])
        self.logits = MaskedContextConvolution(hidden, classes, heads, audio_dim, kernel_size=0, inclusive=inclusive)
        if free_heads:
            for i, layer in enumerate(self.context_layers):
                rows, cols = self._free_block(i)
                audio_keep = torch.ones_like(layer.unmasked_linear.weight)
                audio_keep[:rows] = 0
                history_keep = torch.ones_like(layer.historic.weight)
                history_keep[:rows, cols:] = 0
                for weight, keep in ((layer.unmasked_linear.weight, audio_keep), (layer.historic.weight, history_keep)):
                    with torch.no_grad():
                        weight.mul_(keep)
                    weight.register_hook(lambda grad, keep=keep: grad * keep.to(grad))
            self._register_load_state_dict_pre_hook(self._check_free_heads)

    def _free_block(self, i: int) -> tuple:
        """Context layer i's free rows and the first history column they must not read (see the class)."""
        layer, k = self.context_layers[i], self.free_heads
        return k * layer.ch_out, (k + (1 if i == 0 else 0)) * layer.ch_in

    def _check_free_heads(self, state_dict, prefix, *args) -> None:
        """Loading weights into a prior with free heads: their masked entries must be zero (else the
        speech would reach heads this model promises are free of it)."""
        k = self.free_heads
        for i in range(len(self.context_layers)):
            rows, cols = self._free_block(i)
            for name in ("unmasked_linear", "historic"):
                key = f"{prefix}context_layers.{i}.{name}.weight"
                w = state_dict.get(key)
                if w is None:
                    continue
                block = w[:rows, cols:] if name == "historic" else w[:rows]
                if bool((block != 0).any()):
                    raise ValueError(f"{key}: a prior with free_heads={k} needs the free heads' "
                                     f"{'history taps on the other heads' if name == 'historic' else 'audio weights'} "
                                     f"to be zero, got a largest magnitude {float(block.abs().max()):.3g}")

    def non_causal_layer(self) -> Optional[str]:
        """The name of the first layer whose head mask is not the causal one of this model's ``head_masks``
        (None when all are): the released files store the masks; the C++ sampler applies the causal mask
        by construction."""
        layers = [("embedding", self.embedding), *[(f"context_layers.{i}", l) for i, l in
                                                   enumerate(self.context_layers)], ("logits", self.logits)]
        for name, layer in layers:
            if not torch.equal(layer.mask.cpu(), causal_head_mask(layer.ch_in, layer.ch_out, layer.heads,
                                                                  layer.inclusive)):
                return name
        return None

    def receptive_field(self) -> int:
        """Steps that influence step t's log-probabilities, step t included (20 as released)."""
        return 1 + sum(layer.lookback() for layer in self.context_layers)

    def forward(self, one_hot: torch.Tensor, audio_code: torch.Tensor) -> torch.Tensor:
        """Teacher forced: ``one_hot [B, T, H, C]``, ``audio_code [B, T, A]`` -> logprobs ``[B, T, H, C]``
        with ``logprobs[b, t, h] = log p(c[t, h] | c[<t, :], c[t, <h], audio[<=t])``."""
        B, T, H, C = one_hot.shape
        x = one_hot.reshape(B, T, H * C).transpose(1, 2)
        audio = audio_code.transpose(1, 2)
        x = self.embedding(x)
        for layer in self.context_layers:
            x = F.leaky_relu(layer(x, audio), LEAKY_SLOPE)
        logits = self.logits(x).view(B, H, C, T).permute(0, 3, 1, 2)
        return F.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def sample(self, audio_code: torch.Tensor, argmax: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Reference sampler: ``audio_code [B, T, A] -> one_hot [B, T, H, C]``.

        A plain loop over time and heads, as released but for any batch size: the ``historic`` and
        audio terms of every layer are computed once per step from the cached activations of the
        earlier steps; then, head by head, the masked terms for that head at this step, its
        log-probabilities, Gumbel noise (unless ``argmax``) from ``generator`` with shape [B, C]
        per (t, h) in loop order, and the argmax.
        """
        B, T, _ = audio_code.shape
        H, C, dev, dt = self.heads, self.classes, audio_code.device, audio_code.dtype
        one_hot = torch.zeros(B, T, H * C, device=dev, dtype=dt)
        layers: List[MaskedContextConvolution] = [self.embedding, *self.context_layers, self.logits]
        # acts[i] holds the input activations of layers[i] for all steps so far: [B, T, H*ch_in]
        acts = [one_hot] + [torch.zeros(B, T, l.heads * l.ch_out, device=dev, dtype=dt) for l in layers[:-1]]
        weights = [(l.masked_linear.weight[..., 0] * l.mask[..., 0]) for l in layers]
        # contiguous copies of the 1x1 / kernel-tap slices: F.linear on the strided views of the conv
        # weights takes torch's slow non-BLAS path (about 3x slower sampling)
        audio_w = [l.unmasked_linear.weight[..., 0].contiguous() for l in layers]
        hist_w = [(l.historic.weight[..., 0].contiguous(), l.historic.weight[..., 1].contiguous())
                  if l.kernel_size > 0 else None for l in layers]
        for t in range(T):
            # per-layer terms that do not depend on this step's codes
            fixed = []
            for i, layer in enumerate(layers):
                y = layer.masked_linear.bias.expand(B, -1).clone()
                if 0 < i < len(layers) - 1:  # context layers get audio and history
                    y += F.linear(audio_code[:, t], audio_w[i], layer.unmasked_linear.bias)
                    y += layer.historic.bias
                    if t - 1 >= 0:
                        y += F.linear(acts[i][:, t - 1], hist_w[i][1])
                    if t - 1 - layer.dilation >= 0:
                        y += F.linear(acts[i][:, t - 1 - layer.dilation], hist_w[i][0])
                fixed.append(y)
            for h in range(H):
                for i, layer in enumerate(layers):
                    rows = slice(h * layer.ch_out, (h + 1) * layer.ch_out)
                    z = fixed[i][:, rows] + F.linear(acts[i][:, t], weights[i][rows])
                    if i == len(layers) - 1:
                        logprobs = F.log_softmax(z, dim=-1)
                    else:
                        acts[i + 1][:, t, rows] = z if i == 0 else F.leaky_relu(z, LEAKY_SLOPE)
                if not argmax:
                    logprobs = logprobs + gumbel_noise((B, C), generator, dev, dt)
                label = logprobs.argmax(dim=-1)
                one_hot[torch.arange(B, device=dev), t, h * C + label] = 1.0
        return one_hot.view(B, T, H, C)
