"""``StreamingAnimator``: live speech in, animated frames out as soon as each can be computed.

Frame k's audio window is ``[centre_k + lookahead - 16000, centre_k + lookahead)`` of the signal
(``model.config``'s fps, clock and look-ahead; zeros before the start). Frame k is *ready* once the
samples up to ``centre_k + lookahead`` have arrived and k is certain to be a frame of the final
sequence (``k < num_frames(samples so far)``, which only grows). Then, per ready frame: its audio
code (the audio encoder, ready frames of one push batched), one step of the prior's sampler
(``sample_step``, the sampler's arithmetic one step at a time: ``incremental.py`` for torch, the C++
core's SamplerState for cpp), one decoder step (``decode_step``: template encoded once, LSTM state
carried), then the streaming post-smoothing (``smooth_step``, ``smoothing.py``).

Post-smoothing (``smooth_masks``) is the released one: a 9-tap Gaussian (sigma 2, replicate padding)
blended by the forehead mask, then a second such pass blended by the neck mask. Each pass is centred,
so it needs 4 frames after the frame; chained, a vertex that is in both masks reaches 8 frames ahead.
``smoothing_delay`` chooses:

- 4 (default): frame t is emitted when frame t + 4 is decoded. Frame t is computed from frames
  ``max(0, t-8) .. t+4`` as if the sequence ended at t + 4. This is exact for every vertex whose
  forehead or neck weight is 0; elsewhere the error is at most ``max_v(forehead_v * neck_v) * tail *
  max |x[t+j] - x[t+4]|`` over j in 5..8 (``tail`` = the weight of the composed 17-tap kernel beyond
  +-4, ``smoothing_tail``). With the released masks ``max(forehead * neck)`` is 1.1e-6, so frames
  differ from the offline ones by less than float32 rounding of the coordinates.
- 8: frame t waits for frame t + 8 and equals the offline result exactly (to float rounding).

``latency_s`` = look-ahead + one frame (+ ``smoothing_delay`` frames when smoothing): the audio time a
frame waits for before it can be computed, compute time not included.

With the same seed, model, template, masks and (already normalised) audio, the frames equal
``animate(audio, ..., normalize=False, backend=b, smooth_masks=...)`` for the same backend b
(``smoothing_delay=8``, or 4 within the bound above) to float precision, whatever the chunk sizes
pushed. With ``backend="cpp"`` (what "auto" picks on the CPU when the core is built) the codes are the
C++ sampler's, seeded like ``cpp_sample``: one seed drawn from ``torch.Generator().manual_seed(seed)``,
so they equal ``model.sample(..., backend="cpp", seeds=that seed)`` bit for bit; decoding and smoothing
differ from the offline C++ ones only by float rounding. For ``backend="torch"``, two float-rounding
differences remain: the audio encoder batches windows differently, and the default sampler step uses
contiguous copies of weights the reference reads through strided views (``incremental.PriorStepper``;
``exact_sampler=True`` removes that one at ~3-5x the sampler's cost). Either could change a sampled
class only where two classes tie within ~1e-6 after the Gumbel noise. Loudness: a live stream cannot use the
whole file's mean, so samples are taken as given; normalise them with a fixed gain beforehand (the
CLI's ``stream --gain``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._checks import check_choice, check_finite, check_tensor
from ._dispatch import resolve
from .animate import CHUNK_FRAMES, _check_template, check_smooth_masks
from .audio import SAMPLE_RATE, WINDOW_SAMPLES, num_frames
from .smoothing import gaussian_kernel
from . import incremental  # noqa: F401  (registers the torch sample_step / decode_step)

__all__ = ["StreamingAnimator", "frame_centre", "smoothing_tail"]


def frame_centre(k: int, fps: int, clock: str) -> int:
    """Sample index of frame k's centre (as ``audio.frame_centres``, for one frame, O(1))."""
    if clock == "released":
        spf = SAMPLE_RATE // fps
        return WINDOW_SAMPLES // 2 - (WINDOW_SAMPLES - spf) // 2 + k * spf
    return ((2 * k + 1) * SAMPLE_RATE + fps) // (2 * fps)


def smoothing_tail() -> float:
    """Weight of the released kernel convolved with itself beyond +-4 frames (one side)."""
    k = gaussian_kernel(9, 2.0, torch.float64)
    kk = torch.nn.functional.conv1d(k.view(1, 1, -1), k.flip(0).view(1, 1, -1), padding=8).view(-1)
    return float(kk[13:].sum())


class StreamingAnimator:
    """``push(samples [n]) -> Tensor[k, V, 3]`` (frames that became ready), ``close() -> Tensor[rest, V, 3]``.

    model: a ``MeshTalk``; template: ``[V, 3]``; seed: the sampler's generator seed (None: torch's
    global RNG); smooth_masks: ``(forehead [V], neck [V])`` or None; argmax: the prior's mode instead
    of sampling; backend: for ``sample_step`` / ``decode_step`` / ``smooth_step`` ("auto" picks the
    fastest registered step implementation for the model's device: the C++ core on the CPU; "torch" is
    the reference); smoothing_delay: 4 or 8 (see the module docstring); exact_sampler: the torch sampler
    step bit-identical to the reference sampler (slower; the cpp step always is the cpp sampler).
    Samples are 16 kHz mono, taken as given (no normalisation).
    """

    def __init__(self, model, template: torch.Tensor, seed: Optional[int] = None,
                 smooth_masks: Optional[Sequence[torch.Tensor]] = None, argmax: bool = False,
                 backend: str = "auto", smoothing_delay: int = 4, chunk_frames: int = CHUNK_FRAMES,
                 exact_sampler: bool = False):
        c = model.config
        if c.framing != "window":
            raise ValueError(f"StreamingAnimator supports models with framing='window' (the released per-window "
                             f"audio encoder); this model has framing={c.framing!r}: animate it offline with "
                             "meshtalk_fast.animate")
        _check_template(template, c.n_vertices)
        check_choice("smoothing_delay", smoothing_delay, (4, 8))
        self.model, self.config = model, c
        self.device = next(model.parameters()).device
        masks = check_smooth_masks(smooth_masks, c.n_vertices)
        self.masks = None if masks is None else (masks[0].to(self.device), masks[1].to(self.device))
        self.smoothing_delay = smoothing_delay if masks is not None else 0
        self.chunk_frames = int(chunk_frames)
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))
        with torch.no_grad():
            options = {"exact": True} if exact_sampler else {}  # the cpp step accepts it too (always exact)
            self._sampler = resolve("sample_step", backend, self.device)(model, 1, argmax, generator, **options)
            self._decoder = resolve("decode_step", backend, self.device)(model, template.to(self.device, torch.float32))
            self._smoother = None if masks is None else resolve("smooth_step", backend, self.device)(
                *self.masks, self.smoothing_delay)
        self._buf = torch.zeros(0, device=self.device)  # samples [_buf_start, _n)
        self._buf_start = 0
        self._n = 0
        self._next_code = 0          # first frame whose code is not computed yet
        self._next_out = 0           # first frame not yet returned
        self._closed = False

    # ------------------------------------------------------------------ facts
    @property
    def fps(self) -> int:
        return self.config.fps

    @property
    def latency_breakdown(self) -> dict:
        """Seconds of audio a frame waits for: ``lookahead_s``, ``frame_s`` (one frame) and ``smoothing_s``."""
        return {"lookahead_s": self.config.lookahead / SAMPLE_RATE, "frame_s": 1.0 / self.fps,
                "smoothing_s": self.smoothing_delay / self.fps}

    @property
    def latency_s(self) -> float:
        """Look-ahead + one frame (+ ``smoothing_delay`` frames with smoothing), in seconds."""
        return sum(self.latency_breakdown.values())

    @property
    def samples_seen(self) -> int:
        return self._n

    @property
    def frames_emitted(self) -> int:
        return self._next_out

    # ------------------------------------------------------------------ streaming
    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Append ``samples [n]`` (16 kHz mono, any n >= 0); return the frames now ready ``[k, V, 3]``."""
        if self._closed:
            raise RuntimeError("push() called after close(): this StreamingAnimator is finished; start a new one")
        check_tensor("samples", samples, ndim=1, what="[n] (mono, 16 kHz)")
        check_finite("samples", samples)
        self._buf = torch.cat([self._buf, samples.detach().to(self.device, torch.float32)])
        self._n += samples.shape[0]
        c = self.config
        exist = num_frames(self._n, c.fps, c.clock)
        stop = self._next_code
        while stop < exist and frame_centre(stop, c.fps, c.clock) + c.lookahead <= self._n:
            stop += 1
        out = self._output(self._advance(stop), final=False)
        self._trim_audio()
        return out

    def close(self) -> torch.Tensor:
        """End of speech: the remaining frames ``[rest, V, 3]`` (windows zero-padded past the end).
        A stream shorter than one frame gives ``[0, V, 3]``."""
        if self._closed:
            raise RuntimeError("close() called twice: this StreamingAnimator is already finished")
        self._closed = True
        c = self.config
        total = num_frames(self._n, c.fps, c.clock)
        out = self._output(self._advance(total), final=True)
        self._buf = self._buf[:0]
        return out

    # ------------------------------------------------------------------ internals
    def _window(self, k: int) -> torch.Tensor:
        c = self.config
        end = frame_centre(k, c.fps, c.clock) + c.lookahead
        start = end - WINDOW_SAMPLES
        lo, hi = max(start, self._buf_start), min(end, self._n)
        w = torch.zeros(WINDOW_SAMPLES, device=self.device)
        if hi > lo:
            w[lo - start:hi - start] = self._buf[lo - self._buf_start:hi - self._buf_start]
        return w

    @torch.no_grad()
    def _advance(self, stop: int) -> torch.Tensor:
        """Decoded (unsmoothed) frames [_next_code, stop) as ``[k, V, 3]``."""
        decoded = []
        for s in range(self._next_code, stop, self.chunk_frames):
            e = min(stop, s + self.chunk_frames)
            windows = torch.stack([self._window(k) for k in range(s, e)])[None]  # [1, k, 16000]
            audio_code = self.model.encode_audio(windows)
            one_hot = torch.stack([self._sampler.step(audio_code[:, i]) for i in range(e - s)], dim=1)
            decoded.append(self._decoder.step(one_hot)[0])
        self._next_code = max(self._next_code, stop)
        if not decoded:
            return torch.zeros(0, self.config.n_vertices, 3, device=self.device)
        return torch.cat(decoded)

    @torch.no_grad()
    def _output(self, decoded: torch.Tensor, final: bool) -> torch.Tensor:
        """The frames to return now: ``decoded [k, V, 3]`` through the smoother (all of it when ``final``)."""
        if self._smoother is None:
            out = decoded
        else:
            out = self._smoother.push(decoded)
            if final:
                out = torch.cat([out, self._smoother.close().to(out)])
        self._next_out += out.shape[0]
        return out.to(self.device)

    def _trim_audio(self) -> None:
        c = self.config
        keep_from = max(0, frame_centre(self._next_code, c.fps, c.clock) + c.lookahead - WINDOW_SAMPLES)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:].clone()
            self._buf_start = keep_from
