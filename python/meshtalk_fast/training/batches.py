"""Deterministic training batches drawn from in-memory face sequences.

All randomness of a training step comes from ``step_seed(seed, step, micro)``: which crops form
the global batch, the Gumbel noise, the modality-crossing shift and dropout. So a run resumed from a
checkpoint continues bit for bit, and ``world_size`` processes that each take their share of the
micro-batches compute the same losses as one process taking them all.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ..evaluation.metrics import BROW_EVENT_LEVEL, EYE_EVENT_LEVEL, event_signals, event_spans
from ..ops.frame_clock import STREAM_PAD, WINDOW_SAMPLES, frame_centres, num_frames, stream_positions
from ..ops.mel import HOP_LENGTH, torch_log_mel

__all__ = ["step_seed", "Clip", "CropSampler", "IdentityMix", "align", "distinct_templates", "upper_face_events"]


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
    with clips weighted by their number of possible crops. ``collate`` builds the tensors: audio
    windows ``[B, T, W]`` (framing "window"; W = ``window``, the model's audio context: 16000 samples for the
    released 1 s, 9600 for 600 ms), or for framing "stream" the crop's span of the
    utterance's log-mel ``mel [B, 80, F]`` (computed once per clip and cached) with ``positions [B, T]``.
    """

    def __init__(self, clips: Sequence[Clip], segment_frames: int, fps: int, clock: str, lookahead: int,
                 seed: int, framing: str = "window", events: Optional[Sequence[torch.Tensor]] = None,
                 event_share: float = 0.0, window: int = WINDOW_SAMPLES):
        self.segment_frames, self.fps, self.clock, self.lookahead, self.seed = segment_frames, fps, clock, lookahead, seed
        self.window = window  # samples of one frame's audio window (MeshTalkConfig.window_samples)
        self.mel_window = 1 + window // HOP_LENGTH  # its mel frames, the encoder's receptive field
        self.framing = framing
        self._mel: Dict[int, torch.Tensor] = {}
        keep = [i for i, c in enumerate(clips) if c.frames >= segment_frames]
        self.clips = [clips[i] for i in keep]
        if not self.clips:
            longest = max((c.frames for c in clips), default=0)
            raise ValueError(f"no training sequence has segment_frames={segment_frames} frames; the longest "
                             f"has {longest}")
        self.weights = torch.tensor([c.frames - segment_frames + 1 for c in self.clips], dtype=torch.float64)
        # Event crops: ``events`` holds, per kind of event (blinks, brow raises: upper_face_events), one bool
        # [T] per clip marking the frames inside such an event; ``event_share`` of each batch's crops contain
        # one, of a kind drawn uniformly (so rare blinks are not outnumbered by frequent brow raises).
        if not 0 <= event_share <= 1:
            raise ValueError(f"event_share must be in [0, 1], got {event_share}")
        self.event_share, self._event_frames = event_share, []
        if event_share > 0:
            if events is None:
                raise ValueError("events (one [T] mask per clip, per kind) are required when event_share > 0")
            for kind in events:
                if len(kind) != len(clips):
                    raise ValueError(f"events must hold one [T] mask per clip ({len(clips)}) for each kind, "
                                     f"got {len(kind)}")
                pairs = []
                for j, i in enumerate(keep):
                    if kind[i].shape != (clips[i].frames,):
                        raise ValueError(f"events[{i}] must have shape [T={clips[i].frames}], got "
                                         f"{list(kind[i].shape)}")
                    pairs += [(j, int(f)) for f in torch.nonzero(kind[i]).flatten()]
                if pairs:  # a kind that never happens draws nothing
                    self._event_frames.append(pairs)

    def batch(self, step: int, size: int) -> List[tuple]:
        g = torch.Generator().manual_seed(step_seed(self.seed, "batch", step))
        idx = torch.multinomial(self.weights, size, replacement=True, generator=g).tolist()
        starts = [int(torch.randint(0, self.clips[i].frames - self.segment_frames + 1, (1,), generator=g))
                  for i in idx]
        n_event = round(self.event_share * size) if self._event_frames else 0
        for j in range(n_event):  # the first n_event crops: a kind, then one of its event frames, uniformly
            kind = self._event_frames[int(torch.randint(0, len(self._event_frames), (1,), generator=g))]
            i, f = kind[int(torch.randint(0, len(kind), (1,), generator=g))]
            lo, hi = max(0, f - self.segment_frames + 1), min(f, self.clips[i].frames - self.segment_frames)
            idx[j], starts[j] = i, int(torch.randint(lo, hi + 1, (1,), generator=g))
        return list(zip(idx, starts))

    def windows(self, clip: Clip, start: int) -> torch.Tensor:
        """Audio windows of frames ``[start, start + segment_frames)``: ``[T, W]`` (copies only the crop)."""
        centres = frame_centres(start + self.segment_frames, self.fps, self.clock)[start:]
        starts = centres + self.lookahead - self.window
        lo, hi = int(starts[0]), int(starts[-1]) + self.window
        span = clip.audio[max(lo, 0):min(hi, clip.audio.shape[0])]
        span = torch.nn.functional.pad(span, (max(0, -lo), max(0, hi - clip.audio.shape[0])))
        index = (starts - lo)[:, None] + torch.arange(self.window)[None, :]
        return span[index]

    def mel_span(self, index: int, start: int):
        """Framing "stream": (``mel [80, F]`` covering the crop's windows, ``positions [T]`` into it)."""
        clip = self.clips[index]
        if index not in self._mel:
            padded = torch.nn.functional.pad(clip.audio, (STREAM_PAD, STREAM_PAD))
            self._mel[index] = torch_log_mel(padded)
        pos = stream_positions(start + self.segment_frames, self.fps, self.clock, self.lookahead, self.window)[start:]
        lo = int(pos[0])
        return self._mel[index][:, lo:int(pos[-1]) + self.mel_window], pos - lo

    def collate(self, items: Sequence[tuple]) -> Dict[str, torch.Tensor]:
        T = self.segment_frames
        clips = [(self.clips[i], s) for i, s in items]
        out = {"template": torch.stack([c.template for c, _ in clips]),
               "geom": torch.stack([c.geom[s:s + T] for c, s in clips])}
        if self.framing == "window":
            out["windows"] = torch.stack([self.windows(c, s) for c, s in clips])
            return out
        spans = [self.mel_span(i, s) for i, s in items]
        width = max(m.shape[-1] for m, _ in spans)  # spans differ by a frame at most; zero tails are never read
        out["mel"] = torch.stack([torch.nn.functional.pad(m, (0, width - m.shape[-1])) for m, _ in spans])
        out["positions"] = torch.stack([p for _, p in spans])
        return out


def align(name: str, template: torch.Tensor, geom: torch.Tensor, audio: torch.Tensor, fps: int, clock: str,
          tolerance: int = 2) -> Clip:
    """Trim meshes and audio frames to the shorter of the two; more than ``tolerance`` frames apart is an error."""
    audio_frames = num_frames(audio.shape[0], fps, clock)
    if abs(audio_frames - geom.shape[0]) > tolerance:
        raise ValueError(f"sequence {name!r}: {geom.shape[0]} mesh frames but its audio gives {audio_frames} frames "
                         f"at {fps} fps (tolerance {tolerance})")
    frames = min(audio_frames, geom.shape[0])
    return Clip(name, template.float(), geom[:frames].float().contiguous(), audio.float(), frames)


def upper_face_events(clips: Sequence[Clip], eye_keypoints: Optional[torch.Tensor],
                      forehead: Optional[torch.Tensor]) -> List[List[torch.Tensor]]:
    """Per kind of upper-face event (blinks from the eye keypoints, brow raises from the forehead), per
    clip a bool ``[T]`` of the frames inside such an event of the clips' own meshes, by the evaluation's
    event rule (``metrics.event_spans`` over ``event_scale``). A missing or empty mask, or a region that
    never moves, gives no kind."""
    out = []
    for mask, reduce, level in ((eye_keypoints, "max", EYE_EVENT_LEVEL), (forehead, "mean", BROW_EVENT_LEVEL)):
        if mask is None or not bool((mask > 0).any()):
            continue
        signals, scale = event_signals([(c.geom, c.template) for c in clips], mask, reduce)
        if scale is None:
            continue
        kind = [torch.zeros(c.frames, dtype=torch.bool) for c in clips]
        for m, sig in zip(kind, signals):
            for a, b in event_spans(sig, level * scale):
                m[a:b] = True
        out.append(kind)
    return out


def distinct_templates(clips: Sequence[Clip]) -> List[torch.Tensor]:
    """The clips' different templates (identities), in order of first appearance."""
    out: List[torch.Tensor] = []
    for c in clips:
        if not any(t.shape == c.template.shape and torch.equal(t, c.template) for t in out):
            out.append(c.template)
    return out


class IdentityMix:
    """Identity augmentation (``stage1.identity_mix``): a share of each micro-batch's crops get another face.

    A crop drawn for it moves its template and every one of its frames by the same displacement
    ``delta [V, 3] = sum_k c_k (T_k - mean_k T_k)``, a random combination of how the training identities
    ``templates [K, V, 3]`` differ from their mean, with ``c ~ N(0, 1 / K)`` (so ``delta`` is about as large
    as one identity's difference from the mean). The motion ``geom - template`` is unchanged: only who makes
    it changes. Why it was tried: with the built-in data set's six training faces the decoder applies
    wrong identity-specific corrections to the held-out voice's face, a constant error of ~2 on the
    forehead through the whole sequence. Measured, it did not mend that and cost the upper face in the
    10-minute budget, so the quick start leaves it off (RESULTS.md, "A new face, and bounded logits"); kept for data
    sets with many identities. Which crops and which ``c`` depend on ``(seed, step, micro)`` alone, like
    every other draw of a step (resumes and DDP stay exact).
    """

    def __init__(self, templates: Sequence[torch.Tensor], share: float, seed: int, name: str = "identity_mix"):
        if not (isinstance(share, (int, float)) and 0 <= share <= 1):
            raise ValueError(f"{name} must be a number in [0, 1], got {share!r}")
        if share > 0 and len(templates) < 2:
            raise ValueError(f"{name} > 0 needs training data with at least 2 identities (distinct "
                             f"templates), got {len(templates)}")
        shapes = {tuple(t.shape) for t in templates}
        if len(shapes) > 1:
            raise ValueError(f"{name} needs templates of one shape [V, 3], got {sorted(shapes)}")
        self.share, self.seed = float(share), seed
        stack = torch.stack([t.float() for t in templates]) if templates else torch.zeros(0, 0, 3)
        self.directions = stack - stack.mean(0, keepdim=True)   # [K, V, 3]
        self.sigma = 1.0 / math.sqrt(max(1, len(templates)))

    def __call__(self, batch: Dict[str, torch.Tensor], step: int, micro: int) -> Dict[str, torch.Tensor]:
        """``batch["template"] [B, V, 3]`` and ``batch["geom"] [B, T, V, 3]`` with the drawn crops' faces moved."""
        if self.share <= 0:
            return batch
        template, geom = batch["template"], batch["geom"]
        if template.shape[1:] != self.directions.shape[1:]:
            raise ValueError(f"batch template must have shape [B, {', '.join(map(str, self.directions.shape[1:]))}], "
                             f"got {list(template.shape)}")
        g = torch.Generator().manual_seed(step_seed(self.seed, "identity", step, micro))
        B, K = template.shape[0], self.directions.shape[0]
        chosen = torch.rand(B, generator=g) < self.share
        coeffs = torch.randn(B, K, generator=g) * self.sigma * chosen[:, None]
        delta = torch.einsum("bk,kvd->bvd", coeffs, self.directions).to(template.dtype)
        return {**batch, "template": template + delta, "geom": geom + delta[:, None]}
