"""``MeshTalk``: the one object users hold. Wraps the three released modules.

State-dict keys are the released ones prefixed by the file they come from: ``encoder.*``
(MultimodalEncoder, released ``encoder.pkl``), ``vertex_unet.*`` and ``context_model.*``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch
from torch import nn

from ._checks import check_choice, check_positive_int, check_tensor, shape_str
from .audio import num_frames
from ._dispatch import register, resolve
from .models import ContextModel, MultimodalEncoder, VertexUnet
from .quantize import quantize as _quantize

__all__ = ["MeshTalk", "MeshTalkConfig", "CONFIG_LIMITS"]

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
    lookahead: int = 8000       # audio samples after the frame centre in its window (8000: centred, released)
    framing: str = "window"     # "window": log-mel per 1 s window (released); "stream": one log-mel of the
                                # whole utterance read at one position per frame (~17x less encoder work)
    expression_input: str = "mesh"  # what the expression encoder reads: "mesh" (released) or "offset"
                                    # (mesh - template: identity removed; see models.ExpressionEncoder)
    expression_heads: int = 0       # heads whose logits the fusion computes from the expression code alone
                                    # (0: released, every head sees both codes); see models.FusionMlp
    expression_std: str = "data"    # what the expression encoder's stddev buffer was set from when the model
                                    # was made for training (quickstart.initial_model): "data" (released: the
                                    # per-vertex std of the training meshes) or "motion" (of mesh - template)

    def validate(self) -> "MeshTalkConfig":
        for f in dataclasses.fields(self):
            if f.name not in ("clock", "lookahead", "framing", "expression_input", "expression_heads",
                              "expression_std"):
                setattr(self, f.name, check_positive_int(f.name, getattr(self, f.name), CONFIG_LIMITS.get(f.name, 1 << 20)))
        check_choice("clock", self.clock, ("released", "exact"))
        check_choice("framing", self.framing, ("window", "stream"))
        check_choice("expression_input", self.expression_input, ("mesh", "offset"))
        check_choice("expression_std", self.expression_std, ("data", "motion"))
        k = self.expression_heads
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.heads:
            raise ValueError(f"expression_heads must be an integer in [0, heads={self.heads}), got {k!r}")
        if isinstance(self.lookahead, bool) or not isinstance(self.lookahead, int) or not 0 <= self.lookahead <= 16000:
            raise ValueError(f"lookahead must be an integer in [0, 16000] samples, got {self.lookahead!r}")
        return self

    def windows(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [L]`` -> this model's audio windows ``[T, 16000]`` (its fps, clock and look-ahead)."""
        from .audio import audio_windows

        return audio_windows(audio, self.fps, self.clock, self.lookahead)


class MeshTalk(nn.Module):
    """MeshTalk: ``MeshTalk(n_vertices, heads=16, classes=128, mean=None, stddev=None, **config)``.

    Randomly initialised as the release initialises. ``mean``/``stddev`` (``[V, 3]``) normalise
    vertices in the expression encoder and the decoder (zeros/ones when None). ``expression_stddev``
    (``[V, 3]``, default ``stddev``) is the expression encoder's own normaliser: with the offset input,
    the per-vertex std of the motion (``mesh - template``) makes a rare, local motion such as a blink as
    loud in the encoder's input as the ever-present mouth motion (benchmarks/RESULTS.md, "The upper face").
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
            if value is not None:
                check_tensor(name, torch.as_tensor(value), shape=(c.n_vertices, 3), what="[V, 3]")
        mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        stddev = None if stddev is None else torch.as_tensor(stddev, dtype=torch.float32)
        for name, value in (("stddev", stddev), ("expression_stddev", expression_stddev)):
            if value is not None and not bool((torch.as_tensor(value) > 0).all()):
                raise ValueError(f"{name} must be > 0 everywhere, got min {float(torch.as_tensor(value).min())}")
        expression_stddev = stddev if expression_stddev is None else torch.as_tensor(expression_stddev,
                                                                                     dtype=torch.float32)
        self.encoder = MultimodalEncoder(c.classes, c.heads, c.expression_dim, c.audio_dim, c.n_vertices,
                                         mean, expression_stddev, c.fusion_hidden, c.expression_input,
                                         c.expression_heads)
        self.vertex_unet = VertexUnet(c.classes, c.heads, c.n_vertices, mean, stddev)
        self.context_model = ContextModel(c.classes, c.heads, c.audio_dim, c.context_hidden)

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
        """``windows [B, T, 16000]`` (``audio_windows`` per sequence) -> ``audio_code [B, T, A]``.

        ``threads`` (backend "cpp" only): cores to use, default all. The cpp backend computes no
        gradients, so ``auto`` picks it only outside grad mode (under ``torch.no_grad()``).
        """
        self._check_bt("windows", windows, (16000,), "[B, T, 16000]")
        extra = {} if threads is None else {"threads": threads}
        return resolve("encode_audio", backend, windows.device)(self, windows, **extra)

    def encode_speech(self, audio: torch.Tensor, backend: str = "auto", threads: Optional[int] = None) -> torch.Tensor:
        """Speech -> ``audio_code [B, T, A]`` with this model's fps, clock, look-ahead and framing.

        ``audio [L]`` or ``[B, L]`` (16 kHz, normalised as ``load_audio`` does); T frames per
        ``num_frames(L, fps, clock)``. Framing "window" is the released per-frame 1 s windows;
        "stream" computes one log-mel of the whole (zero-padded) utterance and reads the encoder at one
        position per frame (ops ``log_mel`` and ``encode_stream``, both dispatched on ``backend``).
        ``threads``: as for ``encode_audio``.
        """
        from .audio import STREAM_PAD, log_mel, stream_positions

        check_tensor("audio", audio, ndim=(1, 2), what="[L] or [B, L] (16 kHz)")
        audio = audio[None] if audio.dim() == 1 else audio
        c = self.config
        if c.framing == "window":
            return self.encode_audio(torch.stack([c.windows(a) for a in audio]), backend=backend, threads=threads)
        T = num_frames(audio.shape[-1], c.fps, c.clock)
        if T == 0:
            raise ValueError(f"audio is too short for one video frame at fps={c.fps}: got {audio.shape[-1]} samples")
        mel = log_mel(torch.nn.functional.pad(audio, (STREAM_PAD, STREAM_PAD)), backend=backend, threads=threads)
        positions = stream_positions(T, c.fps, c.clock, c.lookahead).to(audio.device)
        return self.encode_mel_stream(mel, positions, backend=backend, threads=threads)

    def encode_mel_stream(self, mel: torch.Tensor, positions: torch.Tensor, backend: str = "auto",
                          threads: Optional[int] = None) -> torch.Tensor:
        """Streaming framing: ``mel [B, 80, F]`` read at ``positions [T]`` or ``[B, T]`` (first of the 101
        mel frames each video frame sees) -> ``audio_code [B, T, A]`` (op ``encode_stream``)."""
        encode = resolve("encode_stream", backend, mel.device)
        extra = {} if threads is None or encode is _torch_encode_stream else {"threads": threads}
        return encode(self, mel, positions, **extra)

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
               threads: Optional[int] = None) -> torch.Tensor:
        """``template [V, 3] or [B, V, 3]``, ``one_hot [B, T, H, C]`` -> meshes ``[B, T, V, 3]``.

        ``threads`` (backend "cpp" only): cores to use, default all. The cpp backend computes no
        gradients, so ``auto`` picks it only outside grad mode (under ``torch.no_grad()``).
        """
        self._check_codes("one_hot", one_hot)
        template = self._template_batch(template, one_hot.shape[0])
        extra = {} if threads is None else {"threads": threads}
        return resolve("decode", backend, one_hot.device)(self, template, one_hot, **extra)

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
               **kwargs) -> torch.Tensor:
        """Sample codes from the prior: ``audio_code [B, T, A]`` -> ``one_hot [B, T, H, C]``.

        Options of backend "cpp" (the C++ core; ``auto`` picks it for CPU tensors):
        ``seeds``: the Gumbel noise source, an int (sequence b uses ``seeds + b``) or ``[B]`` ints; when
        None, B seeds are drawn from ``generator`` (torch's global generator if None), so ``generator``
        still makes a run repeatable but is not itself the noise source. ``lengths``: ``[B]`` steps per
        sequence in [0, T], outputs past a length are zero. ``threads``: cores to use, default all.
        """
        self._check_audio_code(audio_code)
        extra = {k: v for k, v in (("seeds", seeds), ("lengths", lengths), ("threads", threads)) if v is not None}
        return resolve("sample", backend, audio_code.device)(self, audio_code, argmax=argmax,
                                                             generator=generator, **extra, **kwargs)

    # ---------------------------------------------------------------- files
    def save(self, path: Union[str, "os.PathLike"]) -> None:
        """One safetensors file with the config in its metadata (written atomically)."""
        from .checkpoint import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike"], map_location: str = "cpu") -> "MeshTalk":
        """Load a file written by ``save``; its config comes from the file's metadata."""
        from .checkpoint import load_model

        return load_model(path, map_location)


def _torch_decode(model: MeshTalk, template: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    return model.vertex_unet(template, one_hot)


def _torch_sample(model: MeshTalk, audio_code: torch.Tensor, argmax: bool = False,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    return model.context_model.sample(audio_code, argmax=argmax, generator=generator)


def _torch_encode_audio(model: MeshTalk, windows: torch.Tensor) -> torch.Tensor:
    return model.encoder.audio_encoder(windows)


def _torch_encode_stream(model: MeshTalk, mel: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return model.encoder.audio_encoder.encode_stream(mel, positions)


register("encode_audio", "torch", _torch_encode_audio)
register("encode_stream", "torch", _torch_encode_stream)
register("decode", "torch", _torch_decode)
register("sample", "torch", _torch_sample)
