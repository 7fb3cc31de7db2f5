"""The ``torch`` backend: the PyTorch references, in one table (``TABLE``).

Every op's reference lives next to its public function (``ops/<op>.py``) or in the model's modules
(``models/``); this table only names them for the dispatcher. They run on any device and dtype and
compute gradients; the table is the fallback ``auto`` uses where no fast path can run.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..base.dispatch import Impl
from ..models.incremental import DecoderStepper, PriorStepper
from ..ops.blendshapes import torch_solve_blendshapes
from ..ops.mel import torch_log_mel
from ..ops.smoothing import StreamingSmoother, torch_post_smooth
from ..ops.vertex_losses import torch_lip_vertex_error, torch_masked_vertex_losses

__all__ = ["TABLE", "torch_decode", "torch_sample", "torch_encode_audio", "torch_encode_stream"]


def torch_decode(model, template: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """``template [B, 1, V, 3]``, ``one_hot [B, T, H, C]`` -> ``[B, T, V, 3]`` (the VertexUnet)."""
    return model.vertex_unet(template, one_hot)


def torch_sample(model, audio_code: torch.Tensor, argmax: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``audio_code [B, T, A]`` -> ``one_hot [B, T, H, C]`` (the ContextModel's autoregressive sampler)."""
    return model.context_model.sample(audio_code, argmax=argmax, generator=generator)


def torch_encode_audio(model, windows: torch.Tensor) -> torch.Tensor:
    """``windows [B, T, W]`` -> ``audio_code [B, T, A]`` (the AudioEncoder per window; W = ``config.window_samples``)."""
    return model.encoder.audio_encoder(windows)


def torch_encode_stream(model, mel: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``mel [B, 80, F]`` read at ``positions`` -> ``audio_code [B, T, A]`` (the AudioEncoder on one mel)."""
    return model.encoder.audio_encoder.encode_stream(mel, positions)


# The one table of the torch backend: op -> Impl(function, options it accepts); it runs everywhere.
TABLE = {
    "log_mel": Impl(torch_log_mel),
    "masked_vertex_losses": Impl(torch_masked_vertex_losses),
    "lip_vertex_error": Impl(torch_lip_vertex_error),
    "post_smooth": Impl(torch_post_smooth),
    "smooth_step": Impl(StreamingSmoother),
    "solve_blendshapes": Impl(torch_solve_blendshapes),
    "encode_audio": Impl(torch_encode_audio),
    "encode_stream": Impl(torch_encode_stream),
    "decode": Impl(torch_decode),
    "sample": Impl(torch_sample),
    "sample_step": Impl(PriorStepper, ("exact",)),
    "decode_step": Impl(DecoderStepper),
}
