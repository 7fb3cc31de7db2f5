"""The C++ core as the ``cpp`` backend of ``MeshTalk.sample`` and ``MeshTalk.decode``, of the
audio encoder (ops ``encode_audio`` and ``encode_stream``; ``log_mel``'s is in audio.py), of the
streaming steps and smoothing, and of the blendshape solver (op ``solve_blendshapes``).

Tensors go to ``meshtalk_fast._core`` as numpy views (zero copy for contiguous CPU float32 tensors)
and the core runs with the GIL released. The weights are copied into the core's layout once per
model and cached; they are rebuilt only when a parameter or buffer changed (a new tensor, or an
in-place update, which bumps its version counter).

Gumbel sampling (``argmax=False``) with ``backend="cpp"`` takes its noise from ``seeds``, not from
``generator``: sequence b's noise is a function of ``(seeds[b], t, h, c)`` only, so its sample
depends on its weights, audio code and seed, never on the batch it is in. ``seeds`` is an int
(sequence b then uses ``seeds + b``) or B ints in [0, 2**64). Without ``seeds``, B seeds are drawn
from ``generator`` (or torch's global generator when it is None), so seeding torch still makes runs
repeatable; the noise differs from the torch backend's, the distribution does not.
"""
from __future__ import annotations

import weakref
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._dispatch import register

__all__ = ["core_unavailable", "context_weights", "decoder_weights", "cpp_sample", "cpp_decode",
           "audio_encoder_weights", "cpp_encode_audio", "cpp_encode_stream", "CppPriorStepper",
           "CppDecoderStepper", "cpp_post_smooth", "CppStreamingSmoother", "cpp_solve_blendshapes"]

try:
    from . import _core
    _IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # the extension was not built, or its OpenBLAS cannot be loaded
    _core = None
    _IMPORT_ERROR = (f"the C++ extension meshtalk_fast._core cannot be imported ({exc}); "
                     "reinstall the package with `pip install .` to build it")

# model -> {"context" | "decoder": (state key, core weights)}; weak so a deleted model frees them.
_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, Dict[str, Tuple[tuple, object]]]" = weakref.WeakKeyDictionary()


def core_unavailable(device: torch.device) -> Optional[str]:
    """None when the C++ core can run on ``device``, else why not."""
    if _core is None:
        return _IMPORT_ERROR
    if device.type != "cpu":
        return f"the C++ core runs on the CPU, the tensors are on {device}"
    return None


def _no_grad_unavailable(what: str):
    """The ``unavailable`` check of a cpp op: the core must load, and (it computes no gradients) grad mode
    must be off, so that in grad mode ``auto`` keeps the differentiable reference."""
    def unavailable(device: torch.device) -> Optional[str]:
        reason = core_unavailable(device)
        if reason is None and torch.is_grad_enabled():
            reason = (f"the C++ core computes no gradients and grad mode is on: {what} under torch.no_grad() or "
                      "torch.inference_mode(), or use backend='torch'")
        return reason
    return unavailable


def _state_key(module: torch.nn.Module) -> tuple:
    # identity, storage, in-place version and shape of every parameter and buffer
    return tuple((name, id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                 for name, t in module.state_dict(keep_vars=True).items())


def _arrays(module: torch.nn.Module, prefix: str) -> Dict[str, np.ndarray]:
    out = {}
    for name, t in module.state_dict().items():
        if name.endswith(".mask"):
            continue
        out[prefix + name] = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return out


def _config(model) -> dict:
    c = model.config
    return dict(heads=c.heads, classes=c.classes, n_vertices=c.n_vertices, context_hidden=c.context_hidden,
                audio_dim=c.audio_dim, dilations=[layer.dilation for layer in model.context_model.context_layers])


def _check_masks(model) -> None:
    from .models.context_model import causal_head_mask

    cm = model.context_model
    for name, layer in [("embedding", cm.embedding), *[(f"context_layers.{i}", l) for i, l in
                                                        enumerate(cm.context_layers)], ("logits", cm.logits)]:
        if not torch.equal(layer.mask.cpu(), causal_head_mask(layer.ch_in, layer.ch_out, layer.heads)):
            raise ValueError(f"context_model.{name}.mask must be the causal head mask (output head i sees input "
                             "heads < i): the C++ sampler applies that mask by construction")


def context_weights(model, gemm: str = "builtin"):
    """The model's ContextModel in the core's layout (cached until a weight changes)."""
    entries = _CACHE.setdefault(model, {})
    key = (_state_key(model.context_model), gemm)
    hit = entries.get("context")
    if hit is None or hit[0] != key:
        _check_masks(model)
        weights = _core.ContextWeights(_config(model), _arrays(model.context_model, "context_model."), gemm)
        entries["context"] = hit = (key, weights)
    return hit[1]


def decoder_weights(model, gemm: str = "builtin"):
    """The model's VertexUnet in the core's layout (cached until a weight changes)."""
    entries = _CACHE.setdefault(model, {})
    key = (_state_key(model.vertex_unet), gemm)
    hit = entries.get("decoder")
    if hit is None or hit[0] != key:
        weights = _core.DecoderWeights(_config(model), _arrays(model.vertex_unet, "vertex_unet."), gemm)
        entries["decoder"] = hit = (key, weights)
    return hit[1]


def _seed_array(seeds: Union[int, Sequence[int], np.ndarray, torch.Tensor, None], B: int,
                generator: Optional[torch.Generator]) -> np.ndarray:
    if seeds is None:
        drawn = torch.randint(0, 2 ** 63 - 1, (B,), generator=generator, dtype=torch.int64)
        return drawn.numpy().astype(np.uint64)
    if isinstance(seeds, torch.Tensor):
        seeds = seeds.tolist()
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seed = int(seeds)
        if not 0 <= seed < 2 ** 64:
            raise ValueError(f"seeds must be in [0, 2**64), got {seed}")
        return np.array([(seed + b) % 2 ** 64 for b in range(B)], dtype=np.uint64)
    if isinstance(seeds, np.ndarray):
        if seeds.dtype.kind not in "iu":
            raise TypeError(f"seeds must be integers [B={B}], got an array of dtype {seeds.dtype}")
        if seeds.dtype.kind == "i" and seeds.size > 0 and seeds.min() < 0:
            raise ValueError(f"seeds must be in [0, 2**64), got {int(seeds.min())}")
        return seeds.astype(np.uint64)  # the core checks the shape [B]
    values = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"seeds must be an int or a sequence of ints [B={B}], got an element {s!r}")
        if not 0 <= int(s) < 2 ** 64:
            raise ValueError(f"seeds must be in [0, 2**64), got {int(s)}")
        values.append(int(s))
    return np.array(values, dtype=np.uint64)  # the core checks the shape [B]


def cpp_sample(model, audio_code: torch.Tensor, argmax: bool = False, generator: Optional[torch.Generator] = None,
               seeds=None, lengths=None, threads: Optional[int] = None) -> torch.Tensor:
    """``audio_code [B, T, A]`` -> ``one_hot [B, T, H, C]`` (zeros past each sequence's length)."""
    B, T, _ = audio_code.shape
    c = model.config
    audio = audio_code.detach().to(torch.float32).contiguous()
    seed_values = None if argmax else _seed_array(seeds, B, generator)
    length_values = None if lengths is None else np.asarray(
        lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)
    one_hot = torch.zeros(B, T, c.heads, c.classes, dtype=torch.float32)
    _core.sample(context_weights(model), audio.numpy(), argmax=argmax, seeds=seed_values, lengths=length_values,
                 threads=0 if threads is None else threads, one_hot=one_hot.numpy())
    return one_hot if audio_code.dtype == torch.float32 else one_hot.to(audio_code.dtype)


def cpp_decode(model, template: torch.Tensor, one_hot: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """``template [B, 1, V, 3]`` (as ``MeshTalk.decode`` passes it), ``one_hot [B, T, H, C]`` -> ``[B, T, V, 3]``."""
    B, T = one_hot.shape[:2]
    V = model.config.n_vertices
    # One template for the whole batch is passed once (MeshTalk.decode expands it with stride 0).
    shared = template.shape[0] == 1 or template.stride(0) == 0
    template = (template[:1] if shared else template).reshape(-1, V, 3)
    tp = template.detach().to(torch.float32).contiguous()
    codes = one_hot.detach().to(torch.float32).contiguous()
    out = torch.empty(B, T, V, 3, dtype=torch.float32)
    _core.decode(decoder_weights(model), tp.numpy(), codes.numpy(), threads=0 if threads is None else threads,
                 out=out.numpy())
    return out if one_hot.dtype == torch.float32 else out.to(one_hot.dtype)


register("sample", "cpp", cpp_sample, core_unavailable)
register("decode", "cpp", cpp_decode, _no_grad_unavailable("decode"))


# ----------------------------------------------------------------------------------------------
# Audio front end: log-mel and the AudioEncoder (both framings).
# ----------------------------------------------------------------------------------------------
def audio_encoder_weights(model, gemm: str = "builtin"):
    """The model's AudioEncoder in the core's layout, melspec buffers included (cached until a weight changes)."""
    entries = _CACHE.setdefault(model, {})
    encoder = model.encoder.audio_encoder
    key = (_state_key(encoder), gemm)
    hit = entries.get("audio_encoder")
    if hit is None or hit[0] != key:
        weights = _core.AudioEncoderWeights(model.config.audio_dim, _arrays(encoder, "encoder.audio_encoder."), gemm)
        entries["audio_encoder"] = hit = (key, weights)
    return hit[1]


def _float32_rows(x: torch.Tensor, width: int) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).reshape(-1, width).contiguous().numpy()


def cpp_encode_audio(model, windows: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """Window framing: ``windows [B, T, 16000]`` -> ``audio_code [B, T, A]``."""
    B, T = windows.shape[:2]
    codes = _core.encode_windows(audio_encoder_weights(model), _float32_rows(windows, 16000),
                                 threads=0 if threads is None else threads)
    out = torch.from_numpy(codes).view(B, T, -1)
    return out if windows.dtype == torch.float32 else out.to(windows.dtype)


def cpp_encode_stream(model, mel: torch.Tensor, positions: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """Stream framing: ``mel [B, 80, F]`` read at ``positions [T]`` or ``[B, T]`` -> ``audio_code [B, T, A]``."""
    m = mel.detach().to("cpu", torch.float32).contiguous().numpy()
    pos = positions.detach().to("cpu", torch.int64).contiguous().numpy()
    out = torch.from_numpy(_core.encode_stream(audio_encoder_weights(model), m, pos,
                                               threads=0 if threads is None else threads))
    return out if mel.dtype == torch.float32 else out.to(mel.dtype)


register("encode_audio", "cpp", cpp_encode_audio, _no_grad_unavailable("encode"))
register("encode_stream", "cpp", cpp_encode_stream, _no_grad_unavailable("encode"))


# ---------------------------------------------------------------------------------------------------------
# Streaming: the ops "sample_step", "decode_step" (incremental.py) and "post_smooth", "smooth_step"
# (smoothing.py) on the core's SamplerState / DecoderState / post_smooth / StreamingSmoother.
# ---------------------------------------------------------------------------------------------------------


class CppPriorStepper:
    """``step(audio_code [B, A]) -> one_hot [B, H, C]``: the C++ sampler one step at a time (op "sample_step").

    The constructor and ``step`` are ``incremental.PriorStepper``'s. Noise, as ``cpp_sample``: from
    ``seeds`` (an int s: sequence b uses s + b; or B ints in [0, 2**64)); when None, B seeds are drawn
    from ``generator`` (``torch.randint(0, 2**63 - 1, (B,), generator=generator)``, torch's global
    generator when None; nothing is drawn with argmax), exactly as ``cpp_sample`` draws them. So T steps
    equal ``model.sample(audio_code, generator=g, backend="cpp")`` (or ``seeds=...``) for a generator in
    the same state, bit for bit. ``exact`` is accepted for PriorStepper's signature: the C++ step is
    always exactly the C++ sampler. threads: cores to use (default all).
    """

    def __init__(self, model, batch: int = 1, argmax: bool = False, generator: Optional[torch.Generator] = None,
                 exact: bool = False, seeds=None, threads: Optional[int] = None):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        c = model.config
        self.batch, self.argmax = int(batch), bool(argmax)
        self.heads, self.classes, self.audio_dim = c.heads, c.classes, c.audio_dim
        self.state = _core.SamplerState(context_weights(model), self.batch, 0 if threads is None else threads)
        if self.argmax:
            self.seeds = np.zeros(self.batch, dtype=np.uint64)
        else:
            self.seeds = _seed_array(seeds, self.batch, generator)
            if self.seeds.shape != (self.batch,):
                raise ValueError(f"seeds must be an int or [B={self.batch}] ints, got shape {list(self.seeds.shape)}")
        for b in range(self.batch):
            self.state.reset(b, int(self.seeds[b]), self.argmax)
        self._slots = np.arange(self.batch, dtype=np.int64)
        self.t = 0

    @torch.no_grad()
    def step(self, audio_code: torch.Tensor) -> torch.Tensor:
        from ._checks import check_tensor

        check_tensor("audio_code", audio_code, shape=(self.batch, self.audio_dim), what="[B, A]")
        audio = audio_code.detach().to("cpu", torch.float32).contiguous()
        one_hot = torch.empty(self.batch, self.heads, self.classes, dtype=torch.float32)  # rows written whole
        self.state.step(self._slots, audio.numpy(), one_hot=one_hot.numpy())
        self.t += 1
        return one_hot if audio_code.dtype == torch.float32 else one_hot.to(audio_code.dtype)


class CppDecoderStepper:
    """``step(one_hot [B, k, H, C]) -> meshes [B, k, V, 3]``: the C++ decoder frame by frame (op "decode_step").

    As ``incremental.DecoderStepper``: ``template [V, 3]`` encoded once, the LSTM state carried across
    calls, B fixed by the first step. Equals ``model.decode(template, one_hot, backend="cpp")`` of the
    frames concatenated. threads: cores to use (default all).
    """

    def __init__(self, model, template: torch.Tensor, threads: Optional[int] = None):
        from ._checks import check_tensor

        c = model.config
        V = c.n_vertices
        check_tensor("template", template, shape=(V, 3), what=f"[V, 3] with V == {V}")
        self.heads, self.classes, self.V = c.heads, c.classes, V
        self._weights = decoder_weights(model)
        self._template = template.detach().to("cpu", torch.float32).contiguous().numpy()
        self._threads = 0 if threads is None else threads
        self.state = None  # a DecoderState of capacity B, made by the first step
        self._slots = None

    @torch.no_grad()
    def step(self, one_hot: torch.Tensor) -> torch.Tensor:
        from ._checks import check_tensor, shape_str

        check_tensor("one_hot", one_hot, shape=(None, None, self.heads, self.classes), what="[B, k, H, C]")
        B, k = one_hot.shape[:2]
        if self.state is None:
            if B < 1:
                raise ValueError(f"one_hot must have B >= 1, got {shape_str(one_hot.shape)}")
            self.state = _core.DecoderState(self._weights, B, self._threads)
            encoded = self.state.encode_template(self._template)
            for b in range(B):
                self.state.reset(b, encoded)
            self._slots = np.arange(B, dtype=np.int64)
        elif self.state.capacity != B:
            raise ValueError(f"one_hot must keep the batch size B={self.state.capacity} of earlier steps, "
                             f"got {shape_str(one_hot.shape)}")
        codes = one_hot.detach().to("cpu", torch.float32)
        out = torch.empty(k, B, self.V, 3, dtype=torch.float32)
        for f in range(k):
            self.state.step(self._slots, codes[:, f].contiguous().numpy(), out=out[f].numpy())
        out = out.transpose(0, 1).contiguous()
        return out if one_hot.dtype == torch.float32 else out.to(one_hot.dtype)


def cpp_post_smooth(geom: torch.Tensor, forehead_mask: torch.Tensor, neck_mask: torch.Tensor,
                    threads: Optional[int] = None) -> torch.Tensor:
    """``geom [T, V, 3]``, masks ``[V]`` -> ``[T, V, 3]`` (op "post_smooth"; float32 inside)."""
    x = geom.detach().to("cpu", torch.float32).contiguous()
    m1 = forehead_mask.detach().to("cpu", torch.float32).contiguous()
    m2 = neck_mask.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty_like(x)
    _core.post_smooth(x[None].numpy(), m1.numpy(), m2.numpy(), threads=0 if threads is None else threads,
                      out=out[None].numpy())
    return out if geom.dtype == torch.float32 else out.to(geom.dtype)


class CppStreamingSmoother:
    """``push(frames [k, V, 3]) -> [j, V, 3]``, ``close() -> [rest, V, 3]`` (op "smooth_step"): the C++
    streaming post-smoothing, with ``smoothing.StreamingSmoother``'s constructor and semantics."""

    def __init__(self, forehead_mask: torch.Tensor, neck_mask: torch.Tensor, delay: int = 4):
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)):
            raise ValueError(f"delay must be an integer in [0, 8] frames, got {delay!r}")
        m1 = forehead_mask.detach().to("cpu", torch.float32).contiguous().numpy()
        m2 = neck_mask.detach().to("cpu", torch.float32).contiguous().numpy()
        self._s = _core.StreamingSmoother(m1, m2, int(delay))
        self.delay, self.n_vertices = int(delay), self._s.n_vertices
        self.closed = False

    @property
    def pushed(self) -> int:
        return self._s.pushed

    @property
    def emitted(self) -> int:
        return self._s.emitted

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        from ._checks import check_tensor

        if self.closed:
            raise RuntimeError("push() called after close(): this smoother is finished")
        check_tensor("frames", frames, shape=(None, self.n_vertices, 3), what="[k, V, 3]")
        out = torch.from_numpy(self._s.push(frames.detach().to("cpu", torch.float32).contiguous().numpy()))
        return out if frames.dtype == torch.float32 else out.to(frames.dtype)

    def close(self) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("close() called twice: this smoother is already finished")
        self.closed = True
        return torch.from_numpy(self._s.close())


register("sample_step", "cpp", CppPriorStepper, core_unavailable)
register("decode_step", "cpp", CppDecoderStepper, core_unavailable)
register("post_smooth", "cpp", cpp_post_smooth, _no_grad_unavailable("smooth"))
register("smooth_step", "cpp", CppStreamingSmoother, core_unavailable)


# ---------------------------------------------------------------------------------------------------------
# Blendshape weights: op "solve_blendshapes" on the core's BlendshapeSolver (csrc/core/blendshapes.cpp).
# ---------------------------------------------------------------------------------------------------------


def _float32_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


def cpp_solve_blendshapes(meshes: torch.Tensor, neutral: torch.Tensor, deltas: torch.Tensor,
                          weights_mask: Optional[torch.Tensor], lo: float, hi: float, smoothing: float) -> torch.Tensor:
    """``meshes [T, V, 3]``, ``neutral [V, 3]``, ``deltas [K, V, 3]``, ``weights_mask [V]`` or None ->
    ``weights [T, K]`` float32: per frame, bounded least squares of (mesh - neutral) on the deltas with the
    smoothness term towards the previous frame (the first frame has none), solved exactly in the core with
    a fresh warm-start state per call. The core checks the shapes and values (ValueError naming them)."""
    solver = _core.BlendshapeSolver(_float32_numpy(neutral), _float32_numpy(deltas),
                                    None if weights_mask is None else _float32_numpy(weights_mask),
                                    float(lo), float(hi), float(smoothing))
    return torch.from_numpy(solver.solve(_float32_numpy(meshes)))


register("solve_blendshapes", "cpp", cpp_solve_blendshapes, core_unavailable)
