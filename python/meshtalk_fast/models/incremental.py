"""Step-at-a-time inference for live use: the prior's sampler and the decoder, one frame at a time.

``PriorStepper`` is the reference sampler (``ContextModel.sample``) cut at time steps: the same
arithmetic in the same order and the same Gumbel draws from the same generator. Its state is bounded
by the receptive field: per context layer (dilation d) a ring of d + 1 earlier input activations
``[B, H * hidden]``; nothing grows with the number of steps. Two modes:

- ``exact=True``: the reference's operations verbatim, so its codes equal
  ``model.sample(..., backend="torch")`` on the whole sequence bit for bit.
- ``exact=False`` (default): the historic convolution's two taps are copied to contiguous matrices
  once. The reference multiplies by the strided views ``historic.weight[..., k]``, which takes torch's
  slow non-BLAS path (~4 ms per 1024 x 1024 product on one core, ~80% of a step); the copies make a
  step ~5x faster and change the log-probabilities only by float rounding (~1e-6), so the codes are the
  reference's except where two classes tie within that after the Gumbel noise.

``DecoderStepper`` is ``VertexUnet.forward`` with the template encoded once and the 2-layer LSTM state
``(h, c)`` carried across calls.

Both are the ``"torch"`` implementations of the ops ``"sample_step"`` and ``"decode_step"`` (in the table of
backends/reference.py); a faster backend plugs in with a factory of the same signature in its table:
``factory(model, batch, argmax, generator)`` with ``.step(audio_code [B, A]) -> one_hot [B, H, C]``,
and ``factory(model, template)`` with ``.step(one_hot [B, k, H, C]) -> [B, k, V, 3]``. The C++ core's
are ``backends.cpp.CppPriorStepper`` (noise from seeds, drawn from ``generator`` as ``cpp_sample`` draws them)
and ``backends.cpp.CppDecoderStepper``.
"""
from __future__ import annotations

from collections import deque
from typing import List, Optional

import torch
import torch.nn.functional as F

from ..base.checks import check_tensor, shape_str
from .context_model import gumbel_noise
from .encoders import LEAKY_SLOPE

__all__ = ["PriorStepper", "DecoderStepper"]


class PriorStepper:
    """``step(audio_code [B, A]) -> one_hot [B, H, C]``: one time step of the prior's sampler.

    argmax: take the mode of each conditional (no noise). generator: the Gumbel noise source, drawn
    ``[B, C]`` per head in order, exactly as the reference sampler draws it. exact: see the module
    docstring (bit-identical to the reference, or ~5x faster and equal to float rounding).
    """

    def __init__(self, model, batch: int = 1, argmax: bool = False, generator: Optional[torch.Generator] = None,
                 exact: bool = False):
        cm = model.context_model
        self.heads, self.classes, self.audio_dim = cm.heads, cm.classes, cm.audio_dim
        self.batch, self.argmax, self.generator = int(batch), bool(argmax), generator
        p = next(cm.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.layers = [cm.embedding, *cm.context_layers, cm.logits]
        self.weights = [(l.masked_linear.weight[..., 0] * l.mask[..., 0]).detach() for l in self.layers]
        self.exact = bool(exact)
        taps = lambda w: (w[..., 0], w[..., 1]) if self.exact else (w[..., 0].contiguous(), w[..., 1].contiguous())
        self.taps = [taps(l.historic.weight.detach()) if l.kernel_size > 0 else None for l in self.layers]
        # history[i]: input activations of layers[i] at the last (dilation + 1) steps, newest last
        self.history: List[deque] = [deque(maxlen=(l.dilation + 1) if l.kernel_size > 0 else 1) for l in self.layers]
        self.t = 0

    @torch.no_grad()
    def step(self, audio_code: torch.Tensor) -> torch.Tensor:
        check_tensor("audio_code", audio_code, shape=(self.batch, self.audio_dim), what="[B, A]")
        B, H, C = self.batch, self.heads, self.classes
        dev, dt, t = self.device, audio_code.dtype, self.t
        layers, n = self.layers, len(self.layers)
        fixed = []
        for i, layer in enumerate(layers):  # the terms that do not depend on this step's codes
            y = layer.masked_linear.bias.expand(B, -1).clone()
            if 0 < i < n - 1:
                y += F.linear(audio_code, layer.unmasked_linear.weight[..., 0], layer.unmasked_linear.bias)
                w0, w1 = self.taps[i]
                y += layer.historic.bias
                hist = self.history[i]
                if t - 1 >= 0:
                    y += F.linear(hist[-1], w1)
                if t - 1 - layer.dilation >= 0:
                    y += F.linear(hist[-1 - layer.dilation], w0)
            fixed.append(y)
        acts = [torch.zeros(B, l.heads * l.ch_in, device=dev, dtype=dt) for l in layers]  # this step's inputs
        one_hot = acts[0]
        for h in range(H):
            for i, layer in enumerate(layers):
                rows = slice(h * layer.ch_out, (h + 1) * layer.ch_out)
                z = fixed[i][:, rows] + F.linear(acts[i], self.weights[i][rows])
                if i == n - 1:
                    logprobs = F.log_softmax(z, dim=-1)
                else:
                    acts[i + 1][:, rows] = z if i == 0 else F.leaky_relu(z, LEAKY_SLOPE)
            if not self.argmax:
                logprobs = logprobs + gumbel_noise((B, C), self.generator, dev, dt)
            label = logprobs.argmax(dim=-1)
            one_hot[torch.arange(B, device=dev), h * C + label] = 1.0
        for i in range(n):
            self.history[i].append(acts[i])
        self.t += 1
        return one_hot.view(B, H, C)


class DecoderStepper:
    """``step(one_hot [B, k, H, C]) -> meshes [B, k, V, 3]`` for the next k frames of B sequences,
    decoding with ``template [V, 3]`` (encoded once); the LSTM state carries over between calls."""

    def __init__(self, model, template: torch.Tensor):
        vu = model.vertex_unet
        V = vu.n_vertices
        check_tensor("template", template, shape=(V, 3), what=f"[V, 3] with V == {V}")
        self.vu, self.heads, self.classes, self.V = vu, vu.heads, vu.classes, V
        with torch.no_grad():
            x = ((template.to(vu.mean) - vu.mean) / vu.stddev).reshape(1, 1, V * 3)
            self.code, self.skips = vu.encode_template(x)  # [1, 1, 128], skips
        self.state = None

    @torch.no_grad()
    def step(self, one_hot: torch.Tensor) -> torch.Tensor:
        check_tensor("one_hot", one_hot, shape=(None, None, self.heads, self.classes), what="[B, k, H, C]")
        B, k = one_hot.shape[:2]
        if self.state is not None and self.state[0].shape[1] != B:
            raise ValueError(f"one_hot must keep the batch size B={self.state[0].shape[1]} of earlier steps, "
                             f"got {shape_str(one_hot.shape)}")
        if k == 0:
            return one_hot.new_zeros(B, 0, self.V, 3)
        vu = self.vu
        codes = one_hot.reshape(B, k, self.heads * self.classes)
        x = F.leaky_relu(vu.fusion(torch.cat([self.code.expand(B, k, -1), codes], dim=-1)), LEAKY_SLOPE)
        x, self.state = vu.temporal(x, self.state)
        for layer, skip in zip(vu.decoder, self.skips):
            x = skip + F.leaky_relu(layer(x), LEAKY_SLOPE)
        x = x + vu.vertex_bias
        return x.view(B, k, self.V, 3) * vu.stddev + vu.mean
