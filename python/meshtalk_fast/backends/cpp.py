"""The C++ core as the ``cpp`` backend: one table (``TABLE``) for the ops ``log_mel``, ``sample``,
``decode``, ``encode_audio``, ``encode_stream``, the streaming steps and smoothing, and the blendshape
solver (op ``solve_blendshapes``).

Tensors go to ``meshtalk_fast._core`` as numpy views (zero copy for contiguous CPU float32 tensors)
and the core runs with the GIL released. The weights are copied into the core's layout once per
model and cached; they are rebuilt only when a parameter or buffer changed (a new tensor, or an
in-place update, which bumps its version counter). Writes that bypass the version counter (``p.data``
assignments and in-place ops, PyTorch's fused optimizers) are not seen: after such writes call
``torch.autograd.graph.increment_version`` on the parameters (the trainer does after each fused Adam step).

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

from ..base.checks import check_tensor, shape_str
from ..base.dispatch import Impl, Inputs
from ..models.checkpoint import model_image
from ..ops.mel import N_MELS, check_log_mel_input

__all__ = ["TABLE", "core_unavailable", "cpp_log_mel", "context_weights", "decoder_weights", "cpp_sample", "cpp_decode",
           "audio_encoder_weights", "cpp_encode_audio", "cpp_encode_stream", "CppPriorStepper",
           "CppDecoderStepper", "cpp_post_smooth", "CppStreamingSmoother", "cpp_solve_blendshapes", "CppLiveSession",
           "core_model"]

try:
    from .. import _core
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


def _core_rule(inputs: Inputs) -> Optional[str]:
    return core_unavailable(inputs.device)


def _no_grad_rule(what: str):
    """The ``unavailable`` rule of a cpp op that computes no gradients: the core must load, and no gradient
    may be needed (``inputs.grad``: grad mode on), so that in grad mode ``auto`` keeps the reference."""
    def unavailable(inputs: Inputs) -> Optional[str]:
        reason = core_unavailable(inputs.device)
        if reason is None and inputs.grad:
            reason = (f"the C++ core computes no gradients and grad mode is on: {what} under torch.no_grad() or "
                      "torch.inference_mode(), or use backend='torch'")
        return reason
    return unavailable


def _log_mel_prefer_not(inputs: Inputs) -> Optional[str]:
    if inputs.dtype == torch.float64:
        return "float64 input is computed in float32 by the core; the reference keeps float64"
    return None


def _float32_prefer_not(inputs: Inputs) -> Optional[str]:
    if inputs.dtype is not None and inputs.dtype != torch.float32:
        return f"the core computes in float32; the reference keeps {str(inputs.dtype).replace('torch.', '')}"
    return None


def _f32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous float32 CPU tensor (no copy when it already is one), detached."""
    return x.detach().to("cpu", torch.float32).contiguous()


def _n_threads(threads: Optional[int]) -> int:
    return 0 if threads is None else threads  # 0: all cores


def _as_dtype(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The core computes float32; results go back in the input's dtype."""
    return out if dtype == torch.float32 else out.to(dtype)


def cpp_log_mel(x: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """The C++ core's log-mel (csrc/core/mel.cpp): ``x [..., L] -> Tensor[..., 80, 1 + L // 160]``.

    Computed in float32 whatever x's dtype (a float64 x gets float64 results of float32 accuracy;
    16-bit inputs, as in the reference, float32). ``threads``: cores to use, default all. No gradients.
    """
    check_log_mel_input(x)
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("log_mel: backend 'cpp' computes no gradients and x requires grad; use backend='torch'")
    lead, L = x.shape[:-1], x.shape[-1]
    rows = _f32(x).reshape(-1, L).numpy()
    out = torch.from_numpy(_core.log_mel(rows, threads=_n_threads(threads)))
    out = out.reshape(*lead, N_MELS, out.shape[-1])
    return out.to(torch.float64) if x.dtype == torch.float64 else out


def _state_key(module: torch.nn.Module) -> tuple:
    # identity, storage, in-place version and shape of every parameter and buffer
    return tuple((name, id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                 for name, t in module.state_dict(keep_vars=True).items())


def _arrays(module: torch.nn.Module, prefix: str) -> Dict[str, np.ndarray]:
    out = {}
    for name, t in module.state_dict().items():
        if name.endswith(".mask"):
            continue
        out[prefix + name] = _f32(t).numpy()
    return out


def _config(model) -> dict:
    c = model.config
    return dict(heads=c.heads, classes=c.classes, n_vertices=c.n_vertices, context_hidden=c.context_hidden,
                audio_dim=c.audio_dim, dilations=[layer.dilation for layer in model.context_model.context_layers],
                prior_head_masks=model.context_model.head_masks)


def _check_masks(model) -> None:
    name = model.context_model.non_causal_layer()
    if name is not None:
        raise ValueError(f"context_model.{name}.mask must be the causal head mask of head_masks="
                         f"{model.context_model.head_masks!r} (output head i sees input heads < i, or <= i after the "
                         "embedding when 'inclusive'): the C++ sampler applies that mask by construction")


def context_weights(model, gemm: str = "builtin", weights: str = "f32"):
    """The model's ContextModel in the core's layout (cached until a weight or ``weights`` changes).
    ``weights``: the storage of its products, "f32" (exact), "bf16" or "int8" (``mt_model_params.weights``)."""
    entries = _CACHE.setdefault(model, {})
    key = (_state_key(model.context_model), gemm, weights)
    hit = entries.get("context")
    if hit is None or hit[0] != key:
        _check_masks(model)
        laid_out = _core.ContextWeights(_config(model), _arrays(model.context_model, "context_model."), gemm, weights)
        entries["context"] = hit = (key, laid_out)
    return hit[1]


def decoder_weights(model, gemm: str = "builtin", weights: str = "f32"):
    """The model's VertexUnet in the core's layout (cached until a weight or ``weights`` changes); ``weights``
    as ``context_weights`` (the LSTM's and the decoder's per-frame products; the template encoder stays f32)."""
    entries = _CACHE.setdefault(model, {})
    key = (_state_key(model.vertex_unet), gemm, weights)
    hit = entries.get("decoder")
    if hit is None or hit[0] != key:
        laid_out = _core.DecoderWeights(_config(model), _arrays(model.vertex_unet, "vertex_unet."), gemm, weights)
        entries["decoder"] = hit = (key, laid_out)
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
               seeds=None, lengths=None, threads: Optional[int] = None, weights: str = "f32") -> torch.Tensor:
    """``audio_code [B, T, A]`` -> ``one_hot [B, T, H, C]`` (zeros past each sequence's length). ``weights``:
    the prior's products in "f32" (exact), "bf16" or "int8" (``context_weights``)."""
    B, T, _ = audio_code.shape
    c = model.config
    audio = _f32(audio_code)
    seed_values = None if argmax else _seed_array(seeds, B, generator)
    length_values = None if lengths is None else np.asarray(
        lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)
    one_hot = torch.zeros(B, T, c.heads, c.classes, dtype=torch.float32)
    _core.sample(context_weights(model, weights=weights), audio.numpy(), argmax=argmax, seeds=seed_values,
                 lengths=length_values, threads=_n_threads(threads), one_hot=one_hot.numpy())
    return _as_dtype(one_hot, audio_code.dtype)


def cpp_decode(model, template: torch.Tensor, one_hot: torch.Tensor, threads: Optional[int] = None,
               weights: str = "f32") -> torch.Tensor:
    """``template [B, 1, V, 3]`` (as ``MeshTalk.decode`` passes it), ``one_hot [B, T, H, C]`` -> ``[B, T, V, 3]``;
    ``weights`` as ``decoder_weights``."""
    B, T = one_hot.shape[:2]
    V = model.config.n_vertices
    # One template for the whole batch is passed once (MeshTalk.decode expands it with stride 0).
    shared = template.shape[0] == 1 or template.stride(0) == 0
    template = (template[:1] if shared else template).reshape(-1, V, 3)
    tp = _f32(template)
    codes = _f32(one_hot)
    out = torch.empty(B, T, V, 3, dtype=torch.float32)
    _core.decode(decoder_weights(model, weights=weights), tp.numpy(), codes.numpy(), threads=_n_threads(threads),
                 out=out.numpy())
    return _as_dtype(out, one_hot.dtype)




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
        weights = _core.AudioEncoderWeights(model.config.audio_dim, _arrays(encoder, "encoder.audio_encoder."), gemm,
                                            audio_context_ms=model.config.audio_context_ms)
        entries["audio_encoder"] = hit = (key, weights)
    return hit[1]


def cpp_encode_audio(model, windows: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """Window framing: ``windows [B, T, W]`` (W = ``config.window_samples``) -> ``audio_code [B, T, A]``."""
    B, T = windows.shape[:2]
    W = model.config.window_samples
    codes = _core.encode_windows(audio_encoder_weights(model), _f32(windows).reshape(-1, W).numpy(),
                                 threads=_n_threads(threads))
    return _as_dtype(torch.from_numpy(codes).view(B, T, -1), windows.dtype)


def cpp_encode_stream(model, mel: torch.Tensor, positions: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """Stream framing: ``mel [B, 80, F]`` read at ``positions [T]`` or ``[B, T]`` -> ``audio_code [B, T, A]``."""
    pos = positions.detach().to("cpu", torch.int64).contiguous().numpy()
    out = torch.from_numpy(_core.encode_stream(audio_encoder_weights(model), _f32(mel).numpy(), pos,
                                               threads=_n_threads(threads)))
    return _as_dtype(out, mel.dtype)




# ---------------------------------------------------------------------------------------------------------
# Streaming: the ops "sample_step", "decode_step" (models/incremental.py) and "post_smooth", "smooth_step"
# (ops/smoothing.py) on the core's SamplerState / DecoderState / post_smooth / StreamingSmoother.
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
        self.state = _core.SamplerState(context_weights(model), self.batch, _n_threads(threads))
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
        check_tensor("audio_code", audio_code, shape=(self.batch, self.audio_dim), what="[B, A]")
        audio = _f32(audio_code)
        one_hot = torch.empty(self.batch, self.heads, self.classes, dtype=torch.float32)  # rows written whole
        self.state.step(self._slots, audio.numpy(), one_hot=one_hot.numpy())
        self.t += 1
        return _as_dtype(one_hot, audio_code.dtype)


class CppDecoderStepper:
    """``step(one_hot [B, k, H, C]) -> meshes [B, k, V, 3]``: the C++ decoder frame by frame (op "decode_step").

    As ``incremental.DecoderStepper``: ``template [V, 3]`` encoded once, the LSTM state carried across
    calls, B fixed by the first step. Equals ``model.decode(template, one_hot, backend="cpp")`` of the
    frames concatenated. threads: cores to use (default all).
    """

    def __init__(self, model, template: torch.Tensor, threads: Optional[int] = None):
        c = model.config
        V = c.n_vertices
        check_tensor("template", template, shape=(V, 3), what=f"[V, 3] with V == {V}")
        self.heads, self.classes, self.V = c.heads, c.classes, V
        self._weights = decoder_weights(model)
        self._template = _f32(template).numpy()
        self._threads = _n_threads(threads)
        self.state = None  # a DecoderState of capacity B, made by the first step
        self._slots = None

    @torch.no_grad()
    def step(self, one_hot: torch.Tensor) -> torch.Tensor:
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
        return _as_dtype(out.transpose(0, 1).contiguous(), one_hot.dtype)


def cpp_post_smooth(geom: torch.Tensor, forehead_mask: torch.Tensor, neck_mask: torch.Tensor,
                    threads: Optional[int] = None) -> torch.Tensor:
    """``geom [T, V, 3]``, masks ``[V]`` -> ``[T, V, 3]`` (op "post_smooth"; float32 inside)."""
    x = _f32(geom)
    out = torch.empty_like(x)
    _core.post_smooth(x[None].numpy(), _f32(forehead_mask).numpy(), _f32(neck_mask).numpy(),
                      threads=_n_threads(threads), out=out[None].numpy())
    return _as_dtype(out, geom.dtype)


class CppStreamingSmoother:
    """``push(frames [k, V, 3]) -> [j, V, 3]``, ``close() -> [rest, V, 3]`` (op "smooth_step"): the C++
    streaming post-smoothing, with ``smoothing.StreamingSmoother``'s constructor and semantics."""

    def __init__(self, forehead_mask: torch.Tensor, neck_mask: torch.Tensor, delay: int = 4):
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)):
            raise ValueError(f"delay must be an integer in [0, 8] frames, got {delay!r}")
        self._s = _core.StreamingSmoother(_f32(forehead_mask).numpy(), _f32(neck_mask).numpy(), int(delay))
        self.delay, self.n_vertices = int(delay), self._s.n_vertices
        self.closed = False

    @property
    def pushed(self) -> int:
        return self._s.pushed

    @property
    def emitted(self) -> int:
        return self._s.emitted

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("push() called after close(): this smoother is finished")
        check_tensor("frames", frames, shape=(None, self.n_vertices, 3), what="[k, V, 3]")
        return _as_dtype(torch.from_numpy(self._s.push(_f32(frames).numpy())), frames.dtype)

    def close(self) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("close() called twice: this smoother is already finished")
        self.closed = True
        return torch.from_numpy(self._s.close())




# ---------------------------------------------------------------------------------------------------------
# The live pipeline: op "live_session", the C API's own session (csrc/core/session.cpp) that engines run.
# ---------------------------------------------------------------------------------------------------------
def core_model(model, weights: str = "f32"):
    """The model as the C API's model (``_core.CoreModel``), loaded from its file image in memory (no
    temporary file; cached until a weight or ``weights``, the storage as ``context_weights``, changes)."""
    entries = _CACHE.setdefault(model, {})
    key = (_state_key(model), weights)
    hit = entries.get("session_model")
    if hit is None or hit[0] != key:
        entries["session_model"] = hit = (key, _core.CoreModel.from_bytes(model_image(model), weights=weights))
    return hit[1]


class CppLiveSession:
    """``push(samples [n]) -> frames [k, V, 3]``, ``close() -> [rest, V, 3]``: ``StreamingAnimator``'s cpp
    pipeline, which is the C API's session (readiness, latency and smoothing delay decided by the core, as
    ``mt_session_push`` does). Noise: one seed drawn from ``generator`` exactly as ``CppPriorStepper`` draws
    it (``torch.randint(0, 2**63 - 1, (1,), generator=generator)``; none with argmax). ``threads``: cores
    for this session (default 1, as ``mt_session_default_params``; 0: every core). ``weights``: the model's
    storage, as ``mt_model_params.weights`` ("f32" exact, "bf16", "int8")."""

    def __init__(self, model, template: torch.Tensor, generator: Optional[torch.Generator], argmax: bool,
                 masks: Optional[Tuple[torch.Tensor, torch.Tensor]], smoothing_delay: int,
                 threads: Optional[int] = None, weights: str = "f32"):
        seed = 0 if argmax else int(_seed_array(None, 1, generator)[0])
        smooth = None if masks is None else (_f32(masks[0]).numpy(), _f32(masks[1]).numpy())
        self._s = _core.Session(core_model(model, weights), _f32(template).numpy(), seed=seed, argmax=bool(argmax),
                                smooth_masks=smooth, smoothing_delay=int(smoothing_delay),
                                threads=1 if threads is None else threads)

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._s.push(_f32(samples).numpy()))

    def close(self) -> torch.Tensor:
        return torch.from_numpy(self._s.finish())


# ---------------------------------------------------------------------------------------------------------
# Blendshape weights: op "solve_blendshapes" on the core's BlendshapeSolver (csrc/core/blendshapes.cpp).
# ---------------------------------------------------------------------------------------------------------


def _float32_numpy(x: torch.Tensor) -> np.ndarray:
    return _f32(x).numpy()


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


# The one table of the cpp backend: op -> Impl(function, options it accepts, when it can run).
TABLE = {
    "log_mel": Impl(cpp_log_mel, ("threads",), _no_grad_rule("log_mel"), _log_mel_prefer_not),
    "sample": Impl(cpp_sample, ("seeds", "lengths", "threads", "weights"), _core_rule),
    "decode": Impl(cpp_decode, ("threads", "weights"), _no_grad_rule("decode")),
    "encode_audio": Impl(cpp_encode_audio, ("threads",), _no_grad_rule("encode")),
    "encode_stream": Impl(cpp_encode_stream, ("threads",), _no_grad_rule("encode")),
    "sample_step": Impl(CppPriorStepper, ("exact", "seeds", "threads"), _core_rule),
    "decode_step": Impl(CppDecoderStepper, ("threads",), _core_rule),
    "post_smooth": Impl(cpp_post_smooth, ("threads",), _no_grad_rule("smooth"), _float32_prefer_not),
    "smooth_step": Impl(CppStreamingSmoother, (), _core_rule),
    "solve_blendshapes": Impl(cpp_solve_blendshapes, (), _core_rule),
    "live_session": Impl(CppLiveSession, ("threads", "weights"), _core_rule),
}
