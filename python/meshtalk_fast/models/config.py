"""``MeshTalkConfig``: the sizes and the audio framing of a model (what our model file stores as JSON)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..base.checks import check_choice, check_positive_int
from .context_model import HEAD_MASKS
from ..ops.frame_clock import AUDIO_CONTEXTS, check_audio_context, context_mel_frames, context_window

__all__ = ["MeshTalkConfig", "CONFIG_LIMITS"]

# Sane upper limits of the integer sizes (the C core's limits: csrc/core/weights.cpp, frame_clock.cpp;
# fps is held to the data sets' 1000, stricter than the core's 16000). Every other size: 2^20.
CONFIG_LIMITS = {"n_vertices": 1 << 24, "fps": 1000}


@dataclasses.dataclass
class MeshTalkConfig:
    """Sizes of the model. Defaults are the released ones (the hidden sizes were hard-coded there)."""

    n_vertices: int = 6172
    heads: int = 16
    classes: int = 128
    expression_dim: int = 128
    audio_dim: int = 128
    fusion_hidden: int = 256
    context_hidden: int = 64
    fps: int = 30               # video frame rate the model was trained for
    clock: str = "released"     # audio frame clock the model was trained with ("released" | "exact")
    lookahead: Optional[int] = None  # audio samples after the frame centre in its window, in [0, window];
                                     # None: centred, half the window (8000 released; 4800 at 600 ms). Set
                                     # on construction (__post_init__), so a config always holds an integer
                                     # (dataclasses.replace(c, audio_context_ms=600) keeps c's: give both)
    framing: str = "window"     # "window": log-mel per 1 s window (released); "stream": one log-mel of the
                                # whole utterance read at one position per frame (~17x less encoder work)
    expression_input: str = "mesh"  # what the expression encoder reads: "mesh" (released) or "offset"
                                    # (mesh - template: identity removed; see models.ExpressionEncoder)
    expression_heads: int = 0       # heads whose logits the fusion computes from the expression code alone
                                    # (0: released, every head sees both codes); see models.FusionMlp
    expression_std: str = "data"    # what the expression encoder's stddev buffer was set from when the model
                                    # was made for training (quickstart.initial_model): "data" (released: the
                                    # per-vertex std of the training meshes), "motion" (of mesh - template) or
                                    # "upper" (each vertex's largest motion on the upper-face mask, ~infinite
                                    # elsewhere: the encoder reads the upper face only; quickstart.motion_range)
    audio_heads: str = "fused"       # what the fusion computes the non-expression heads from: "fused" (released:
                                     # both codes) or "audio" (the audio code alone); see models.FusionMlp
    prior_expression: str = "audio"  # what the prior draws the expression heads from: "audio" (released: every
                                     # head sees the speech) or "free" (neither the speech nor the other heads:
                                     # blinks independent of speech; models.ContextModel free_heads)
    expression_groups: int = 1       # expression encoders, each with its own normaliser and its own share of the
                                     # expression heads (1: released; 2: the quick start's eyes and brows);
                                     # see models.GroupedExpressionEncoder
    prior_head_masks: str = "released"  # which heads of the same step the prior's layers read: "released"
                                        # (strictly earlier heads in every layer: head 0's distribution is a
                                        # constant) or "inclusive" (the same head too after the embedding:
                                        # head h sees heads < h of its step); models.ContextModel head_masks
    expression_logit_scale: float = 0.0  # 0: the expression heads' logits as the MLP computes them (released);
                                         # s > 0: centred and scaled to norm s over the classes, so their softmax
                                         # can never saturate (largest probability <= e^s / (e^s + C - 1)) and the
                                         # gradient always reaches every class. The argmax is unchanged. Why: the
                                         # brow heads' softmax saturated on one class early in some runs and never
                                         # left it (models.FusionMlp; RESULTS.md, "A new face, and bounded logits")
    audio_logit_scale: float = 0.0  # the same bound on the other heads' logits (the audio heads; every head when
                                    # expression_heads = 0); 0: off (released)
    audio_context_ms: int = 1000     # audio per frame: 1000 (released: a 1 s window, 101 x 80 log-mel, look-ahead
                                     # 500 ms centred) or 600 (the seed's a_t: a 600 ms window, 61 x 80 log-mel
                                     # -- the seed's "60 x 80" is one frame short of any odd receptive field --,
                                     # look-ahead 300 ms centred); the audio encoder's dilations follow it
                                     # (ops.frame_clock.AUDIO_CONTEXTS), so its receptive field is the window

    def __post_init__(self):
        if self.lookahead is None and self.audio_context_ms in AUDIO_CONTEXTS:
            self.lookahead = context_window(self.audio_context_ms) // 2

    @property
    def window_samples(self) -> int:
        """Samples of one frame's audio window: 16000 (1000 ms) or 9600 (600 ms)."""
        return context_window(self.audio_context_ms)

    @property
    def mel_window(self) -> int:
        """Mel frames of one window, the audio encoder's receptive field: 101 (1000 ms) or 61 (600 ms)."""
        return context_mel_frames(self.audio_context_ms)

    def validate(self) -> "MeshTalkConfig":
        for f in dataclasses.fields(self):
            if f.name not in ("clock", "lookahead", "framing", "expression_input", "expression_heads",
                              "expression_std", "prior_expression", "audio_heads", "audio_context_ms",
                              "expression_groups", "prior_head_masks", "expression_logit_scale",
                              "audio_logit_scale"):
                setattr(self, f.name, check_positive_int(f.name, getattr(self, f.name), CONFIG_LIMITS.get(f.name, 1 << 20)))
        check_choice("clock", self.clock, ("released", "exact"))
        check_choice("framing", self.framing, ("window", "stream"))
        check_choice("expression_input", self.expression_input, ("mesh", "offset"))
        check_choice("expression_std", self.expression_std, ("data", "motion", "upper"))
        check_choice("prior_expression", self.prior_expression, ("audio", "free"))
        check_choice("audio_heads", self.audio_heads, ("fused", "audio"))
        check_choice("prior_head_masks", self.prior_head_masks, HEAD_MASKS)
        k = self.expression_heads
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.heads:
            raise ValueError(f"expression_heads must be an integer in [0, heads={self.heads}), got {k!r}")
        for name, value, released in (("prior_expression", self.prior_expression, "audio"),
                                      ("audio_heads", self.audio_heads, "fused")):
            if value != released and k == 0:
                raise ValueError(f"{name} = {value!r} needs expression heads (expression_heads > 0), got 0")
        g = self.expression_groups
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"expression_groups must be an integer >= 1, got {g!r}")
        if g > 1 and (k < g or self.expression_dim % g):
            raise ValueError(f"expression_groups = {g} needs at least {g} expression heads and an expression_dim "
                             f"it divides, got expression_heads={k}, expression_dim={self.expression_dim}")
        for name in ("expression_logit_scale", "audio_logit_scale"):
            s = getattr(self, name)
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0 (0: off), got {s!r}")
        s = self.expression_logit_scale
        if s > 0 and k == 0:
            raise ValueError(f"expression_logit_scale = {s} needs expression heads (expression_heads > 0), got 0")
        check_audio_context(self.audio_context_ms)
        if self.lookahead is None:
            self.lookahead = self.window_samples // 2
        W = self.window_samples
        if isinstance(self.lookahead, bool) or not isinstance(self.lookahead, int) or not 0 <= self.lookahead <= W:
            raise ValueError(f"lookahead must be an integer in [0, {W}] samples (audio_context_ms="
                             f"{self.audio_context_ms}), got {self.lookahead!r}")
        return self

    def windows(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [L]`` -> this model's audio windows ``[T, window_samples]`` (its fps, clock, look-ahead and
        audio context)."""
        from ..ops.frame_clock import audio_windows

        return audio_windows(audio, self.fps, self.clock, self.lookahead, self.window_samples)
