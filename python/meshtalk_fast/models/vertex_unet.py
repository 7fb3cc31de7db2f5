"""VertexUnet, MeshTalk's decoder D: template mesh + one-hot code sequence -> animated meshes."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import LEAKY_SLOPE

__all__ = ["VertexUnet"]


class VertexUnet(nn.Module):
    """Released layout: ``encoder.{0,1,2}`` (V*3 -> 512 -> 256 -> 128), ``fusion`` (128 + H*C -> 128),
    ``temporal`` (2-layer LSTM 128), ``decoder.{0,1,2}`` (128 -> 256 -> 512 -> V*3) with U-net skips,
    ``vertex_bias`` (V*3) and the ``mean``/``stddev`` buffers (1, 1, V, 3)."""

    def __init__(self, classes: int = 128, heads: int = 16, n_vertices: int = 6172,
                 mean: Optional[torch.Tensor] = None, stddev: Optional[torch.Tensor] = None):
        super().__init__()
        self.classes, self.heads, self.n_vertices = classes, heads, n_vertices
        shape = (1, 1, n_vertices, 3)
        self.register_buffer("mean", torch.zeros(shape) if mean is None else mean.reshape(shape).float().clone())
        self.register_buffer("stddev", torch.ones(shape) if stddev is None else stddev.reshape(shape).float().clone())
        self.encoder = nn.ModuleList([nn.Linear(n_vertices * 3, 512), nn.Linear(512, 256), nn.Linear(256, 128)])
        self.fusion = nn.Linear(heads * classes + 128, 128)
        self.temporal = nn.LSTM(input_size=128, hidden_size=128, num_layers=2, batch_first=True)
        self.decoder = nn.ModuleList([nn.Linear(128, 256), nn.Linear(256, 512), nn.Linear(512, n_vertices * 3)])
        self.vertex_bias = nn.Parameter(torch.zeros(n_vertices * 3))

    def encode_template(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Normalised flat template ``[..., V*3]`` -> (``[..., 128]``, skips [256-d, 512-d, V*3-d])."""
        skips: List[torch.Tensor] = []
        for layer in self.encoder:
            skips.insert(0, x)
            x = F.leaky_relu(layer(x), LEAKY_SLOPE)
        return x, skips

    def forward(self, geom: torch.Tensor, one_hot: torch.Tensor, vertices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``geom [B, T, V, 3]`` (the template per frame), ``one_hot [B, T, H, C]`` -> ``[B, T, V, 3]``, or
        ``[B, T, len(vertices), 3]``: those vertices alone (``vertices``, int64 ``[N]``), equal to the same
        rows of the whole output. The last layer (512 -> V*3) is most of the decoder's work, so a loss
        over a mask of a few hundred vertices (the trainer's crossing, eyelid and brow terms) costs a
        fraction of a whole decoding."""
        B, T = one_hot.shape[:2]
        x = (geom - self.mean) / self.stddev
        x = x.reshape(x.shape[0], x.shape[1], self.n_vertices * 3)
        x, skips = self.encode_template(x)
        codes = one_hot.reshape(B, T, self.heads * self.classes)
        x = F.leaky_relu(self.fusion(torch.cat([x.expand(B, T, -1), codes], dim=-1)), LEAKY_SLOPE)
        x, _ = self.temporal(x)
        if vertices is None:
            for layer, skip in zip(self.decoder, skips):
                x = skip + F.leaky_relu(layer(x), LEAKY_SLOPE)
            x = x + self.vertex_bias
            return x.view(B, T, self.n_vertices, 3) * self.stddev + self.mean
        for layer, skip in zip(self.decoder[:-1], skips[:-1]):
            x = skip + F.leaky_relu(layer(x), LEAKY_SLOPE)
        last, rows = self.decoder[-1], (vertices[:, None] * 3 + torch.arange(3, device=vertices.device)).reshape(-1)
        x = skips[-1][..., rows] + F.leaky_relu(F.linear(x, last.weight[rows], last.bias[rows]), LEAKY_SLOPE)
        x = (x + self.vertex_bias[rows]).view(B, T, vertices.shape[0], 3)
        return x * self.stddev[:, :, vertices] + self.mean[:, :, vertices]
