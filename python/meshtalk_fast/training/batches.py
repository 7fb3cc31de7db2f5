"""Deterministic training batches drawn from in-memory face sequences.

All randomness of a training step comes from ``step_seed(seed, step, micro)``: which crops form
the global batch, the Gumbel noise, the modality-crossing shift and dropout. So a run resumed from a
checkpoint continues bit for bit, and ``world_size`` processes that each take their share of the
micro-batches compute the same losses as one process taking them all.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch

from ..audio import WINDOW_SAMPLES, frame_centres, num_frames

__all__ = ["step_seed", "Clip", "CropSampler", "align"]


def step_seed(*parts) -> int:
    """A 63-bit seed derived from the parts (stable across runs, processes and platforms)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Clip:
    """One sequence ready for cropping: audio and meshes aligned to the same frame count."""
    name: str
    template: torch.Tensor  # [V, 3]
    geom: torch.Tensor      # [T, V, 3]
    audio: torch.Tensor     # [L] 16 kHz, normalised
    frames: int


class CropSampler:
    """Fixed-length crops ``segment_frames`` long from ``clips`` (sequences at least that long).

    ``batch(step, size)`` -> list of (clip index, start frame), drawn from ``step_seed(seed, step)``
    with clips weighted by their number of possible crops. ``collate`` builds the tensors.
    """

    def __init__(self, clips: Sequence[Clip], segment_frames: int, fps: int, clock: str, lookahead: int,
                 seed: int):
        self.segment_frames, self.fps, self.clock, self.lookahead, self.seed = segment_frames, fps, clock, lookahead, seed
        self.clips = [c for c in clips if c.frames >= segment_frames]
        if not self.clips:
            longest = max((c.frames for c in clips), default=0)
            raise ValueError(f"no training sequence has segment_frames={segment_frames} frames; the longest "
                             f"has {longest}")
        self.weights = torch.tensor([c.frames - segment_frames + 1 for c in self.clips], dtype=torch.float64)

    def batch(self, step: int, size: int) -> List[tuple]:
        g = torch.Generator().manual_seed(step_seed(self.seed, "batch", step))
        idx = torch.multinomial(self.weights, size, replacement=True, generator=g).tolist()
        starts = [int(torch.randint(0, self.clips[i].frames - self.segment_frames + 1, (1,), generator=g))
                  for i in idx]
        return list(zip(idx, starts))

    def windows(self, clip: Clip, start: int) -> torch.Tensor:
        """Audio windows of frames ``[start, start + segment_frames)``: ``[T, 16000]`` (copies only the crop)."""
        centres = frame_centres(start + self.segment_frames, self.fps, self.clock)[start:]
        starts = centres + self.lookahead - WINDOW_SAMPLES
        lo, hi = int(starts[0]), int(starts[-1]) + WINDOW_SAMPLES
        span = clip.audio[max(lo, 0):min(hi, clip.audio.shape[0])]
        span = torch.nn.functional.pad(span, (max(0, -lo), max(0, hi - clip.audio.shape[0])))
        index = (starts - lo)[:, None] + torch.arange(WINDOW_SAMPLES)[None, :]
        return span[index]

    def collate(self, items: Sequence[tuple]) -> Dict[str, torch.Tensor]:
        T = self.segment_frames
        clips = [(self.clips[i], s) for i, s in items]
        return {
            "template": torch.stack([c.template for c, _ in clips]),
            "geom": torch.stack([c.geom[s:s + T] for c, s in clips]),
            "windows": torch.stack([self.windows(c, s) for c, s in clips]),
        }


def align(name: str, template: torch.Tensor, geom: torch.Tensor, audio: torch.Tensor, fps: int, clock: str,
          tolerance: int = 2) -> Clip:
    """Trim meshes and audio frames to the shorter of the two; more than ``tolerance`` frames apart is an error."""
    audio_frames = num_frames(audio.shape[0], fps, clock)
    if abs(audio_frames - geom.shape[0]) > tolerance:
        raise ValueError(f"sequence {name!r}: {geom.shape[0]} mesh frames but its audio gives {audio_frames} frames "
                         f"at {fps} fps (tolerance {tolerance})")
    frames = min(audio_frames, geom.shape[0])
    return Clip(name, template.float(), geom[:frames].float().contiguous(), audio.float(), frames)
