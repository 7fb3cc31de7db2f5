"""``animate``: speech (+ a template face) -> an animated mesh sequence, the offline product.

audio -> ``model.config.windows`` (the model's fps, clock and look-ahead) -> the audio encoder, in
chunks of frames so memory stays bounded for minutes of speech -> codes, either sampled from the
audio-conditioned prior (``model.sample``) or, for expression transfer, the argmax of the fusion of
an expression code (from a given mesh sequence) with this audio's code -> the decoder with the
template -> the released post-smoothing when masks are given.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import torch

from ..base.checks import check_finite, check_mask_weights, check_template, check_tensor, shape_str
from ..ops.audio import SAMPLE_RATE, load_audio
from ..ops.frame_clock import num_frames
from ..ops.smoothing import post_smooth

__all__ = ["animate", "prepare_audio", "encode_audio_chunked", "fit_expression", "check_smooth_masks",
           "PROGRESS_MIN_SECONDS"]

PROGRESS_MIN_SECONDS = 10.0  # progress=True shows a bar for inputs at least this long
CHUNK_FRAMES = 64            # audio windows per audio-encoder call (bounds the encoder's memory)


def prepare_audio(audio: Union[str, os.PathLike, torch.Tensor], normalize: bool = True) -> torch.Tensor:
    """A path (any format libsndfile reads, resampled to 16 kHz, mixed to mono) or a 16 kHz tensor
    ``[L]`` -> ``Tensor[L]`` float32. ``normalize``: the released loudness normalisation
    ``0.01 * x / mean(|x|)`` over the whole signal (idempotent on already normalised audio, up to
    rounding); ``False`` takes the samples as given (what live streams must do)."""
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio, normalize=normalize)
    check_tensor("audio", audio, ndim=1, what="[L] (mono, 16 kHz)")
    if audio.shape[0] == 0:
        raise ValueError("audio must hold at least one sample, got shape [0]")
    check_finite("audio", audio)
    if not normalize:
        return audio.detach().to(torch.float32)
    return load_audio(audio.detach().cpu(), sample_rate=SAMPLE_RATE, normalize=True).to(audio.device)


def check_smooth_masks(smooth_masks, n_vertices: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``None`` or ``(forehead [V], neck [V])`` -> the pair as float tensors (checked)."""
    if smooth_masks is None:
        return None
    if not isinstance(smooth_masks, (tuple, list)) or len(smooth_masks) != 2:
        raise TypeError(f"smooth_masks must be None or a pair (forehead [V], neck [V]), got {type(smooth_masks).__name__}"
                        + (f" of length {len(smooth_masks)}" if isinstance(smooth_masks, (tuple, list)) else ""))
    out = []
    for name, m in zip(("forehead", "neck"), smooth_masks):
        m = torch.as_tensor(m, dtype=torch.float32)
        if m.shape != (n_vertices,):
            raise ValueError(f"smooth_masks {name} mask must have shape [V={n_vertices}], got {shape_str(m.shape)}")
        out.append(check_mask_weights(f"smooth_masks {name} mask", m))
    return out[0], out[1]


def encode_audio_chunked(model, windows: torch.Tensor, chunk_frames: int = CHUNK_FRAMES, bar=None,
                         backend: str = "auto") -> torch.Tensor:
    """``windows [T, 16000]`` -> ``audio_code [1, T, A]``, ``chunk_frames`` windows per encoder call."""
    codes = []
    for s in range(0, windows.shape[0], chunk_frames):
        part = windows[s:s + chunk_frames]
        codes.append(model.encode_audio(part[None], backend=backend))
        if bar is not None:
            bar.update(part.shape[0])
    return torch.cat(codes, dim=1)


def fit_expression(expression: torch.Tensor, n_frames: int, n_vertices: int, strict: bool = False) -> torch.Tensor:
    """An expression sequence ``[T', V, 3]`` -> ``[T, V, 3]`` with T = ``n_frames``.

    Rule: T' >= T keeps the first T frames; T' < T loops it back and forth (0, 1, ..., T'-1, T'-2,
    ..., 1, 0, 1, ...), so the expression never jumps. ``strict=True`` refuses T' != T instead.
    """
    check_tensor("expression", expression, what=f"[T', V={n_vertices}, 3]")
    if expression.dim() != 3 or tuple(expression.shape[1:]) != (n_vertices, 3) or expression.shape[0] == 0:
        raise ValueError(f"expression must have shape [T' > 0, V={n_vertices}, 3] (a mesh sequence with the "
                         f"model's vertex count), got {shape_str(expression.shape)}")
    check_finite("expression", expression)
    T_in = expression.shape[0]
    if T_in == n_frames:
        return expression
    if strict:
        raise ValueError(f"expression has {T_in} frames but the audio gives {n_frames} frames, and strict "
                         "lengths were asked for (loop/trim allowed without strict)")
    if T_in > n_frames:
        return expression[:n_frames]
    if T_in == 1:
        index = torch.zeros(n_frames, dtype=torch.long)
    else:
        period = 2 * (T_in - 1)
        phase = torch.arange(n_frames) % period
        index = torch.where(phase < T_in, phase, period - phase)
    return expression[index.to(expression.device)]


@torch.no_grad()
def animate(audio: Union[str, os.PathLike, torch.Tensor], template: torch.Tensor, model,
            expression: Optional[torch.Tensor] = None, seed: Optional[int] = None, argmax: bool = False,
            backend: str = "auto", smooth_masks: Optional[Sequence[torch.Tensor]] = None,
            progress: bool = True, normalize: bool = True, strict_expression: bool = False,
            chunk_frames: int = CHUNK_FRAMES, weights: Optional[str] = None) -> torch.Tensor:
    """Speech -> animated face: ``Tensor[T, V, 3]`` at ``model.config.fps`` frames per second.

    audio: a file path, or a 16 kHz mono tensor ``[L]`` of any length.
    template: the neutral face ``[V, 3]`` (V == model.config.n_vertices).
    model: a ``MeshTalk`` (``MeshTalk.load`` or ``load_official``).
    expression: ``None`` samples the upper face from the prior. A mesh sequence ``[T', V, 3]`` transfers
        its expression instead (the paper's re-targeting): its expression code is fused with this
        audio's code and quantised by argmax (deterministic; ``seed``/``argmax`` then do nothing).
        Lengths are matched by ``fit_expression`` (trim, or loop back and forth), or refused when
        ``strict_expression``.
    seed: reproducible sampling (``torch.Generator().manual_seed(seed)``); None uses torch's global RNG.
    argmax: take the prior's mode instead of sampling (no noise).
    backend: for ``model.sample`` and ``model.decode`` ("auto", "torch", "cpp", ...). Note the C++
        sampler draws its noise from seeds, not from the generator's stream, so its samples differ from
        the torch backend's for the same seed (same distribution).
    smooth_masks: ``(forehead [V], neck [V])`` applies the released post-smoothing (``post_smooth``, on the
        reference for backend "torch", else the fastest: the C++ core on the CPU); None skips it.
    progress: show a tqdm bar (stderr) for inputs of at least 10 s.
    normalize: apply the released loudness normalisation (see ``prepare_audio``); ``False`` takes the
        samples as given, which is what ``StreamingAnimator`` does.
    chunk_frames: audio windows per audio-encoder call.
    weights: the C++ core's storage of the prior's and the decoder's products: None or "f32" (exact), "bf16"
        or "int8" (faster, measured in benchmarks/RESULTS.md "Issue 17"; ``mt_model_params.weights`` of the C
        API). Given, the sampler and decoder must run on backend "cpp" (``auto`` picks it on the CPU); any
        other backend is refused by name. Expression transfer decodes with it too.
    """
    c = model.config
    check_template(template, c.n_vertices)
    masks = check_smooth_masks(smooth_masks, c.n_vertices)
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    device = next(model.parameters()).device
    samples = prepare_audio(audio, normalize).to(device)
    if c.framing == "window":
        windows = c.windows(samples)  # [T, 16000]; raises if the audio is shorter than one frame
        T = windows.shape[0]
    else:  # streaming framing: one log-mel of the utterance, the encoder read once per frame
        windows = None
        T = num_frames(samples.shape[0], c.fps, c.clock)
    if expression is not None:
        expression = fit_expression(torch.as_tensor(expression), T, c.n_vertices, strict_expression)
    template = template.to(device, torch.float32)
    show = progress and samples.shape[0] >= PROGRESS_MIN_SECONDS * SAMPLE_RATE
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=T, desc="audio encoder", unit="frame")
    try:
        if windows is not None:
            audio_code = encode_audio_chunked(model, windows, chunk_frames, bar)
        else:
            audio_code = model.encode_speech(samples)
            if bar is not None:
                bar.update(T)
        if bar is not None:
            bar.set_description("codes (prior)" if expression is None else "codes (expression)")
        if expression is None:
            generator = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
            one_hot = model.sample(audio_code, argmax=argmax, generator=generator, backend=backend, weights=weights)
        else:
            expression_code = model.encode_expression(expression.to(device, torch.float32)[None], template)
            one_hot = model.quantize(model.fuse(expression_code, audio_code), argmax=True)
        if bar is not None:
            bar.set_description("decoder")
        geom = model.decode(template, one_hot, backend=backend, weights=weights)[0]
        if masks is not None:
            if bar is not None:
                bar.set_description("smoothing")
            # backend "torch" keeps the whole pipeline on the reference; otherwise the fastest smoother
            geom = post_smooth(geom, masks[0].to(device), masks[1].to(device),
                               backend="torch" if backend == "torch" else "auto")
    finally:
        if bar is not None:
            bar.close()
    return geom
