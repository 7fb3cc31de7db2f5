"""``MeshTalk``: the one object users hold. Wraps the three released modules.

State-dict keys are the released ones prefixed by the file they come from: ``encoder.*``
(MultimodalEncoder, released ``encoder.pkl``), ``vertex_unet.*`` and ``context_model.*``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch
from torch import nn

from ..base.checks import check_tensor, shape_str
from ..base.dispatch import Inputs, resolve
from ..ops.frame_clock import STREAM_PAD, num_frames, stream_positions
from ..ops.mel import log_mel
from . import checkpoint
from .config import CONFIG_LIMITS, MeshTalkConfig
from .context_model import ContextModel
from .encoders import MultimodalEncoder
from .quantize import quantize as _quantize
from .vertex_unet import VertexUnet

__all__ = ["MeshTalk", "MeshTalkConfig", "CONFIG_LIMITS"]

class MeshTalk(nn.Module):
    """MeshTalk: ``MeshTalk(n_vertices, heads=16, classes=128, mean=None, stddev=None, **config)``.

    Randomly initialised as the release initialises. ``mean``/``stddev`` (``[V, 3]``) normalise
    vertices in the expression encoder and the decoder (zeros/ones when None). ``expression_stddev``
    (``[V, 3]``, or ``[G, V, 3]`` with ``expression_groups = G > 1``: one per group; default ``stddev``) is
    the expression encoder's own normaliser: with the offset input, the per-vertex std of the motion
    (``mesh - template``) makes a rare, local motion such as a blink as loud in the encoder's input as the
    ever-present mouth motion (benchmarks/RESULTS.md, "The upper face").
    """

    def __init__(self, n_vertices: int = 6172, heads: int = 16, classes: int = 128,
                 mean: Optional[torch.Tensor] = None, stddev: Optional[torch.Tensor] = None,
                 expression_stddev: Optional[torch.Tensor] = None, **config):
        super().__init__()
        unknown = set(config) - {f.name for f in dataclasses.fields(MeshTalkConfig)}
        if unknown:
            raise TypeError(f"unknown MeshTalk config keys: {sorted(unknown)}")
        self.config = MeshTalkConfig(n_vertices=n_vertices, heads=heads, classes=classes, **config).validate()
        c = self.config
        for name, value in (("mean", mean), ("stddev", stddev), ("expression_stddev", expression_stddev)):
            if value is None:
                continue
            if name == "expression_stddev" and c.expression_groups > 1:  # one normaliser per group
                g = c.expression_groups
                check_tensor(name, torch.as_tensor(value), shape=(g, c.n_vertices, 3), what=f"[G={g}, V, 3]")
            else:
                check_tensor(name, torch.as_tensor(value), shape=(c.n_vertices, 3), what="[V, 3]")
        mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        stddev = None if stddev is None else torch.as_tensor(stddev, dtype=torch.float32)
        for name, value in (("stddev", stddev), ("expression_stddev", expression_stddev)):
            if value is not None and not bool((torch.as_tensor(value) > 0).all()):
                raise ValueError(f"{name} must be > 0 everywhere, got min {float(torch.as_tensor(value).min())}")
        expression_stddev = stddev if expression_stddev is None else torch.as_tensor(expression_stddev,
                                                                                     dtype=torch.float32)
        if expression_stddev is not None and c.expression_groups > 1 and expression_stddev.ndim == 2:
            expression_stddev = expression_stddev.expand(c.expression_groups, -1, -1)
        self.encoder = MultimodalEncoder(c.classes, c.heads, c.expression_dim, c.audio_dim, c.n_vertices,
                                         mean, expression_stddev, c.fusion_hidden, c.expression_input,
                                         c.expression_heads, c.audio_heads, c.audio_context_ms,
                                         c.expression_groups, c.expression_logit_scale,
                                         c.audio_logit_scale)
        self.vertex_unet = VertexUnet(c.classes, c.heads, c.n_vertices, mean, stddev)
        self.context_model = ContextModel(c.classes, c.heads, c.audio_dim, c.context_hidden,
                                          free_heads=c.expression_heads if c.prior_expression == "free" else 0,
                                          head_masks=c.prior_head_masks)

    # ---------------------------------------------------------------- checks
    def _check_bt(self, name: str, x: torch.Tensor, tail, what: str) -> None:
        check_tensor(name, x, shape=(None, None, *tail), what=what)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must have B > 0 and T > 0 {what}, got {shape_str(x.shape)}")

    def _check_codes(self, name: str, one_hot: torch.Tensor) -> None:
        c = self.config
        self._check_bt(name, one_hot, (c.heads, c.classes), f"[B, T, H={c.heads}, C={c.classes}]")

    def _check_audio_code(self, audio_code: torch.Tensor) -> None:
        self._check_bt("audio_code", audio_code, (self.config.audio_dim,), f"[B, T, {self.config.audio_dim}]")

    # ---------------------------------------------------------------- encoders
    def encode_audio(self, windows: torch.Tensor, backend: str = "auto", threads: Optional[int] = None) -> torch.Tensor:
        """``windows [B, T, W]`` (``audio_windows`` per sequence; W = ``config.window_samples``: 16000 for the
        released 1 s context, 9600 for 600 ms) -> ``audio_code [B, T, A]``.

        ``threads`` (backend "cpp" only): cores to use, default all. The cpp backend computes no
        gradients, so ``auto`` picks it only outside grad mode (under ``torch.no_grad()``).
        """
        W = self.config.window_samples
        self._check_bt("windows", windows, (W,), f"[B, T, {W}] (audio_context_ms={self.config.audio_context_ms})")
        options = {} if threads is None else {"threads": threads}
        return resolve("encode_audio", backend, Inputs.model(windows), options)(self, windows, **options)

    def encode_speech(self, audio: torch.Tensor, backend: str = "auto", threads: Optional[int] = None) -> torch.Tensor:
        """Speech -> ``audio_code [B, T, A]`` with this model's fps, clock, look-ahead and framing.

        ``audio [L]`` or ``[B, L]`` (16 kHz, normalised as ``load_audio`` does); T frames per
        ``num_frames(L, fps, clock)``. Framing "window" is the released per-frame 1 s windows;
        "stream" computes one log-mel of the whole (zero-padded) utterance and reads the encoder at one
        position per frame (ops ``log_mel`` and ``encode_stream``, both dispatched on ``backend``).
        ``threads``: as for ``encode_audio``.
        """
        check_tensor("audio", audio, ndim=(1, 2), what="[L] or [B, L] (16 kHz)")
        audio = audio[None] if audio.dim() == 1 else audio
        c = self.config
        if c.framing == "window":
            return self.encode_audio(torch.stack([c.windows(a) for a in audio]), backend=backend, threads=threads)
        T = num_frames(audio.shape[-1], c.fps, c.clock)
        if T == 0:
            raise ValueError(f"audio is too short for one video frame at fps={c.fps}: got {audio.shape[-1]} samples")
        mel = log_mel(torch.nn.functional.pad(audio, (STREAM_PAD, STREAM_PAD)), backend=backend, threads=threads)
        positions = stream_positions(T, c.fps, c.clock, c.lookahead, c.window_samples).to(audio.device)
        return self.encode_mel_stream(mel, positions, backend=backend, threads=threads)

    def encode_mel_stream(self, mel: torch.Tensor, positions: torch.Tensor, backend: str = "auto",
                          threads: Optional[int] = None) -> torch.Tensor:
        """Streaming framing: ``mel [B, 80, F]`` read at ``positions [T]`` or ``[B, T]`` (first of the
        ``config.mel_window`` mel frames each video frame sees: 101, or 61 at 600 ms) -> ``audio_code [B, T, A]`` (op ``encode_stream``)."""
        options = {} if threads is None else {"threads": threads}
        return resolve("encode_stream", backend, Inputs.model(mel), options)(self, mel, positions, **options)

    def encode_expression(self, geom: torch.Tensor, template: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``geom [B, T, V, 3]`` -> ``expression_code [B, T, E]``. ``template [V, 3]`` or ``[B, V, 3]``, the
        subject's neutral face, is required when ``config.expression_input == "offset"`` (ignored otherwise)."""
        self._check_bt("geom", geom, (self.config.n_vertices, 3), f"[B, T, V={self.config.n_vertices}, 3]")
        if template is not None:  # an offset-input encoder without one raises there
            template = self._template_batch(template, geom.shape[0])[:, 0]
        return self.encoder.expression_encoder(geom, template)

    def fuse(self, expression_code: torch.Tensor, audio_code: torch.Tensor) -> torch.Tensor:
        """``[B, T, E]``, ``[B, T, A]`` -> ``logprobs [B, T, H, C]``."""
        c = self.config
        self._check_bt("expression_code", expression_code, (c.expression_dim,), f"[B, T, {c.expression_dim}]")
        self._check_audio_code(audio_code)
        if expression_code.shape[:2] != audio_code.shape[:2]:
            raise ValueError(f"expression_code and audio_code must agree in [B, T], got "
                             f"{shape_str(expression_code.shape)} and {shape_str(audio_code.shape)}")
        return self.encoder.fusion_model(expression_code, audio_code)

    @staticmethod
    def quantize(logprobs: torch.Tensor, argmax: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``logprobs [B, T, H, C] -> one_hot [B, T, H, C]`` (straight-through Gumbel-softmax)."""
        return _quantize(logprobs, argmax=argmax, generator=generator)

    # ---------------------------------------------------------------- decoder
    def _template_batch(self, template: torch.Tensor, B: int) -> torch.Tensor:
        V = self.config.n_vertices
        check_tensor("template", template, ndim=(2, 3), what=f"[V, 3] or [B, V, 3] with V == {V}")
        if template.shape[-2:] != (V, 3):
            raise ValueError(f"template must have shape [V, 3] or [B, V, 3] with V == {V}, got "
                             f"{shape_str(template.shape)}")
        if template.dim() == 3 and template.shape[0] not in (1, B):
            raise ValueError(f"template batch must be 1 or B={B}, got {shape_str(template.shape)}")
        return template.reshape(-1, 1, V, 3).expand(B, 1, V, 3)

    def decode(self, template: torch.Tensor, one_hot: torch.Tensor, backend: str = "auto",
               threads: Optional[int] = None, weights: Optional[str] = None) -> torch.Tensor:
        """``template [V, 3] or [B, V, 3]``, ``one_hot [B, T, H, C]`` -> meshes ``[B, T, V, 3]``.

        ``threads`` (backend "cpp" only): cores to use, default all. ``weights`` (backend "cpp" only): the
        storage of the per-frame products, "f32" (exact, the default), "bf16" or "int8" (README, "Reduced
        precision"). The cpp backend computes no gradients, so ``auto`` picks it only outside grad mode
        (under ``torch.no_grad()``).
        """
        self._check_codes("one_hot", one_hot)
        template = self._template_batch(template, one_hot.shape[0])
        options = {k: v for k, v in (("threads", threads), ("weights", weights)) if v is not None}
        return resolve("decode", backend, Inputs.model(one_hot), options)(self, template, one_hot, **options)

    # ---------------------------------------------------------------- prior
    def context_logprobs(self, one_hot: torch.Tensor, audio_code: torch.Tensor) -> torch.Tensor:
        """Teacher-forced prior: ``one_hot [B, T, H, C]``, ``audio_code [B, T, A]`` -> ``[B, T, H, C]``."""
        self._check_codes("one_hot", one_hot)
        self._check_audio_code(audio_code)
        if one_hot.shape[:2] != audio_code.shape[:2]:
            raise ValueError(f"one_hot and audio_code must agree in [B, T], got {shape_str(one_hot.shape)} "
                             f"and {shape_str(audio_code.shape)}")
        return self.context_model(one_hot, audio_code)

    def sample(self, audio_code: torch.Tensor, argmax: bool = False, generator: Optional[torch.Generator] = None,
               backend: str = "auto", seeds=None, lengths=None, threads: Optional[int] = None,
               weights: Optional[str] = None, **kwargs) -> torch.Tensor:
        """Sample codes from the prior: ``audio_code [B, T, A]`` -> ``one_hot [B, T, H, C]``.

        Options of backend "cpp" (the C++ core; ``auto`` picks it for CPU tensors):
        ``seeds``: the Gumbel noise source, an int (sequence b uses ``seeds + b``) or ``[B]`` ints; when
        None, B seeds are drawn from ``generator`` (torch's global generator if None), so ``generator``
        still makes a run repeatable but is not itself the noise source. ``lengths``: ``[B]`` steps per
        sequence in [0, T], outputs past a length are zero. ``threads``: cores to use, default all.
        ``weights``: the storage of the prior's products, "f32" (exact, the default), "bf16" or "int8".
        """
        self._check_audio_code(audio_code)
        options = {k: v for k, v in (("seeds", seeds), ("lengths", lengths), ("threads", threads),
                                     ("weights", weights), *kwargs.items()) if v is not None}
        return resolve("sample", backend, Inputs.model(audio_code), options)(self, audio_code, argmax=argmax,
                                                                             generator=generator, **options)

    # ---------------------------------------------------------------- files
    def save(self, path: Union[str, "os.PathLike"]) -> None:
        """One safetensors file with the config in its metadata (written atomically)."""
        checkpoint.save_model(self, path)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike"], map_location: str = "cpu",
             audio_context_ms: Optional[int] = None) -> "MeshTalk":
        """Load a file written by ``save``; its config comes from the file's metadata. ``audio_context_ms``
        (None: whatever the file holds): the audio context the caller expects (1000 or 600); a file of the
        other context raises ``CheckpointError`` naming both."""
        return checkpoint.load_model(path, map_location, model_class=cls, audio_context_ms=audio_context_ms)
