"""``StreamingAnimator``: live speech in, animated frames out as soon as each can be computed.

Frame k's audio window is ``[centre_k + lookahead - W, centre_k + lookahead)`` of the signal
(``model.config``'s fps, clock, look-ahead and audio context: W = 16000 samples for the released 1 s,
9600 for 600 ms; zeros before the start). Frame k is *ready* once the
samples up to ``centre_k + lookahead`` have arrived and k is certain to be a frame of the final
sequence (``k < num_frames(samples so far)``, which only grows). Then, per ready frame: its audio
code (the audio encoder, ready frames of one push batched), one step of the prior's sampler
(``sample_step``, the sampler's arithmetic one step at a time: ``models/incremental.py`` for torch, the C++
core's SamplerState under another backend), one decoder step (``decode_step``: template encoded once,
LSTM state carried), then the streaming post-smoothing (``smooth_step``, ``ops/smoothing.py``). That is the
reference pipeline (``backend="torch"``); with ``backend="cpp"`` the same decisions are the C API session's
(csrc/core/session.cpp, op ``live_session``), which engines run through ``mt_session_*``.

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

from ..base.checks import check_choice, check_finite, check_positive_int, check_template, check_tensor
from ..base.dispatch import Inputs, resolve, runs
from ..animation.offline import CHUNK_FRAMES, check_smooth_masks
from ..ops.mel import HOP_LENGTH, WIN_LENGTH
from ..ops.audio import SAMPLE_RATE
from ..ops.frame_clock import STREAM_PAD, frame_centre, frame_centres, num_frames, stream_positions
from ..ops.blendshapes import BlendshapeStream
from ..ops.smoothing import gaussian_kernel

__all__ = ["StreamingAnimator", "smoothing_tail"]
# The mel frames one video frame's window spans (the audio encoder's receptive field) are the model's:
# ``config.mel_window``, 101 for the released 1 s context, 61 for 600 ms.


def smoothing_tail() -> float:
    """Weight of the released kernel convolved with itself beyond +-4 frames (one side)."""
    k = gaussian_kernel(9, 2.0, torch.float64)
    kk = torch.nn.functional.conv1d(k.view(1, 1, -1), k.flip(0).view(1, 1, -1), padding=8).view(-1)
    return float(kk[13:].sum())


class StreamingAnimator:
    """``push(samples [n]) -> Tensor[k, V, 3]`` (frames that became ready), ``close() -> Tensor[rest, V, 3]``.

    model: a ``MeshTalk``; template: ``[V, 3]``; seed: the sampler's generator seed (None: torch's
    global RNG); smooth_masks: ``(forehead [V], neck [V])`` or None; argmax: the prior's mode instead
    of sampling; backend: "cpp" runs the C API's own session (csrc/core/session.cpp, op ``live_session``:
    the pipeline engines run, weights passed from memory); "torch" is the reference pipeline, the step ops
    ``sample_step`` / ``decode_step`` / ``smooth_step`` orchestrated here; "auto" picks the session where the
    core runs (CPU models), else the reference. threads: the session's cores (backend "cpp" only, default 1).
    smoothing_delay: 4 or 8 (see the module docstring); exact_sampler: the torch sampler step bit-identical
    to the reference sampler (slower; the core's sampler always is the cpp sampler).
    Samples are 16 kHz mono, taken as given (no normalisation).
    blendshapes: a ``BlendshapeBasis`` on the model's topology: each returned frame is also solved into
    the rig's weights (``BlendshapeStream``, causal, ``blendshape_smoothing``), collected by ``pop_weights()``.
    weights: the session's storage of the prior's and decoder's weights (backend "cpp" only, as
    ``mt_model_params.weights``): None or "f32" (exact), "bf16" or "int8" (faster; ``animate``'s ``weights``).
    """

    def __init__(self, model, template: torch.Tensor, seed: Optional[int] = None,
                 smooth_masks: Optional[Sequence[torch.Tensor]] = None, argmax: bool = False,
                 backend: str = "auto", smoothing_delay: int = 4, chunk_frames: int = CHUNK_FRAMES,
                 exact_sampler: bool = False, blendshapes=None, blendshape_smoothing: float = 0.0,
                 threads: Optional[int] = None, weights: Optional[str] = None):
        c = model.config
        check_template(template, c.n_vertices)
        check_choice("smoothing_delay", smoothing_delay, (4, 8))
        self.model, self.config = model, c
        self.device = next(model.parameters()).device
        masks = check_smooth_masks(smooth_masks, c.n_vertices)
        self.masks = None if masks is None else (masks[0].to(self.device), masks[1].to(self.device))
        self.smoothing_delay = smoothing_delay if masks is not None else 0
        self.chunk_frames = check_positive_int("chunk_frames", chunk_frames)
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))
        inputs = Inputs(self.device, torch.float32)  # the pipeline runs without gradients
        self._session = self._sampler = self._decoder = self._smoother = None
        if backend == "cpp" or (backend == "auto" and runs("live_session", "cpp", inputs)):
            # the C API's own session: one live pipeline per backend, the one engines run
            options = {k: v for k, v in (("threads", threads), ("weights", weights)) if v is not None}
            self._session = resolve("live_session", "cpp", inputs, options)(
                model, template, generator, argmax, self.masks, self.smoothing_delay, **options)
        elif threads is not None or weights is not None:
            name, value = ("threads", threads) if threads is not None else ("weights", weights)
            raise ValueError(f"{name} applies to backend 'cpp' only (the core's session), got {name}={value!r} "
                             f"with backend={backend!r}")
        else:  # the reference pipeline: the step ops orchestrated here (torch, or any backend that has them)
            with torch.no_grad():
                options = {"exact": True} if exact_sampler else {}
                self._sampler = resolve("sample_step", backend, inputs, options)(model, 1, argmax, generator, **options)
                self._decoder = resolve("decode_step", backend, inputs)(model, template.to(self.device, torch.float32))
                self._smoother = None if masks is None else resolve("smooth_step", backend, inputs)(
                    *self.masks, self.smoothing_delay)
        front = _WindowFront if c.framing == "window" else _StreamFront
        self._front = front(model, self.device)
        self._n = 0
        self._next_code = 0          # first frame whose code is not computed yet
        self._next_out = 0           # first frame not yet returned
        self._closed = False
        self._blend, self._weights = None, []
        if blendshapes is not None:
            self._blend = BlendshapeStream(blendshapes, smoothing=blendshape_smoothing)
            blendshapes.check_vertices(c.n_vertices, "the model")

    # ------------------------------------------------------------------ facts
    @property
    def fps(self) -> int:
        return self.config.fps

    @property
    def latency_breakdown(self) -> dict:
        """Seconds of audio a frame waits for: ``lookahead_s``, ``frame_s`` (one frame), ``mel_s`` (framing
        "stream" only: the last mel frame's half window past the window end, at most 30 ms) and ``smoothing_s``."""
        return {"lookahead_s": self.config.lookahead / SAMPLE_RATE, "frame_s": 1.0 / self.fps,
                "mel_s": self._front.extra_samples / SAMPLE_RATE, "smoothing_s": self.smoothing_delay / self.fps}

    @property
    def latency_s(self) -> float:
        """Look-ahead + one frame (+ the mel half window for framing "stream", + ``smoothing_delay`` frames
        with smoothing), in seconds: the most any frame waits."""
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
        if self._session is not None:
            self._n += samples.shape[0]
            return self._deliver(self._session.push(samples))
        self._front.push(samples.detach().to(self.device, torch.float32))
        self._n += samples.shape[0]
        c = self.config
        exist = num_frames(self._n, c.fps, c.clock)
        stop = self._next_code
        while stop < exist and self._front.ready(stop):
            stop += 1
        out = self._output(self._advance(stop), final=False)
        self._front.trim(self._next_code)
        return out

    def close(self) -> torch.Tensor:
        """End of speech: the remaining frames ``[rest, V, 3]`` (windows zero-padded past the end).
        A stream shorter than one frame gives ``[0, V, 3]``."""
        if self._closed:
            raise RuntimeError("close() called twice: this StreamingAnimator is already finished")
        self._closed = True
        if self._session is not None:
            return self._deliver(self._session.close())
        c = self.config
        total = num_frames(self._n, c.fps, c.clock)
        self._front.close()
        out = self._output(self._advance(total), final=True)
        return out

    def pop_weights(self) -> torch.Tensor:
        """The rig weights ``[k, K]`` (float32, CPU) of the frames returned since the last call (needs
        ``blendshapes``)."""
        if self._blend is None:
            raise RuntimeError("pop_weights() needs a StreamingAnimator made with blendshapes=BlendshapeBasis(...)")
        out = torch.cat(self._weights) if self._weights else torch.zeros(0, self._blend.basis.n_shapes)
        self._weights = []
        return out

    # ------------------------------------------------------------------ internals
    @torch.no_grad()
    def _advance(self, stop: int) -> torch.Tensor:
        """Decoded (unsmoothed) frames [_next_code, stop) as ``[k, V, 3]``."""
        decoded = []
        for s in range(self._next_code, stop, self.chunk_frames):
            e = min(stop, s + self.chunk_frames)
            audio_code = self._front.codes(s, e)  # [1, e - s, A]
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
        return self._deliver(out)

    def _deliver(self, out: torch.Tensor) -> torch.Tensor:
        """Count the frames ``out [k, V, 3]`` returned now, solve them into rig weights if asked, return them."""
        self._next_out += out.shape[0]
        if self._blend is not None and out.shape[0]:
            self._weights.append(self._blend.push(out.cpu()))
        return out.to(self.device)


# --------------------------------------------------------------------------------------------------
# Audio fronts: samples in, audio codes of ready frames out. Both use the encoders' "auto" backend,
# as offline ``animate`` does, so the codes match it whatever step backend the animator uses.
# --------------------------------------------------------------------------------------------------
class _WindowFront:
    """Framing "window" (released): frame k's code from its own window (W = ``config.window_samples``)
    ``[centre_k + lookahead - W, centre_k + lookahead)``, zeros outside the signal."""

    def __init__(self, model, device: torch.device):
        self.model, self.config, self.device = model, model.config, device
        self.extra_samples = 0  # a frame needs nothing past its window's end
        self.buf = torch.zeros(0, device=device)  # samples [start, n)
        self.start = self.n = 0

    def push(self, samples: torch.Tensor) -> None:
        self.buf = torch.cat([self.buf, samples])
        self.n += samples.shape[0]

    def close(self) -> None:
        """Nothing to flush: windows past the end read zeros."""

    def ready(self, k: int) -> bool:
        c = self.config
        return frame_centre(k, c.fps, c.clock) + c.lookahead <= self.n

    def _window(self, k: int) -> torch.Tensor:
        c = self.config
        end = frame_centre(k, c.fps, c.clock) + c.lookahead
        start = end - c.window_samples
        lo, hi = max(start, self.start), min(end, self.n)
        w = torch.zeros(c.window_samples, device=self.device)
        if hi > lo:
            w[lo - start:hi - start] = self.buf[lo - self.start:hi - self.start]
        return w

    def codes(self, s: int, e: int) -> torch.Tensor:
        """Audio codes of frames [s, e): ``[1, e - s, A]``."""
        return self.model.encode_audio(torch.stack([self._window(k) for k in range(s, e)])[None])

    def trim(self, next_frame: int) -> None:
        """Drop samples no frame >= next_frame reads."""
        c = self.config
        keep_from = max(0, frame_centre(next_frame, c.fps, c.clock) + c.lookahead - c.window_samples)
        if keep_from > self.start:
            self.buf = self.buf[keep_from - self.start:].clone()
            self.start = keep_from


class _StreamFront:
    """Framing "stream": the utterance with ``STREAM_PAD`` zeros on both sides, framed once on the 10 ms
    grid by a ``StreamingLogMel`` (so its mel frames are those of the offline ``log_mel`` of the padded
    utterance); frame k reads mel frames ``p_k .. p_k + R - 1`` with ``p_k = stream_positions(k)`` (R =
    ``config.mel_window``: 101, or 61 at 600 ms). Mel frame m is final once padded sample ``160 m + 400`` is
    in, so frame k waits for original sample ``160 (p_k + R - 1) + 400 - 16000`` (padding: -16000), at most
    ``lookahead + 480`` samples past its centre; the audio past the end is known to be zeros only at
    ``close``. The encoder's conv stack runs once per batch of ready frames over the mel frames they span
    (plus its receptive field),
    as offline runs it once over the utterance: the same position gives the same code up to float rounding."""

    def __init__(self, model, device: torch.device):
        from .streaming_mel import StreamingLogMel

        self.model, self.config, self.device = model, model.config, device
        c = self.config
        # the worst wait past the frame centre over one period of the frame clock on the 160-sample grid
        period = 160 if c.clock == "released" else c.fps  # released: 533 k mod 160; exact: fps frames = 100 hops
        waits = HOP_LENGTH * stream_positions(period, c.fps, c.clock, c.lookahead, c.window_samples) \
            + HOP_LENGTH * (c.mel_window - 1) - STREAM_PAD + WIN_LENGTH // 2 \
            - frame_centres(period, c.fps, c.clock)
        self.extra_samples = max(0, int(waits.max()) - c.lookahead)
        self.mel_stream = StreamingLogMel()
        first = self.mel_stream.push(torch.zeros(STREAM_PAD, device=device))
        self.mel = first  # mel frames [mel_start, mel_start + mel.shape[1])
        self.mel_start = 0

    def push(self, samples: torch.Tensor) -> None:
        self.mel = torch.cat([self.mel, self.mel_stream.push(samples)], dim=1)

    def close(self) -> None:
        tail = self.mel_stream.push(torch.zeros(STREAM_PAD, device=self.device))
        self.mel = torch.cat([self.mel, tail, self.mel_stream.close()], dim=1)

    def _position(self, k: int) -> int:
        c = self.config
        return int(stream_positions(k + 1, c.fps, c.clock, c.lookahead, c.window_samples)[k])

    def ready(self, k: int) -> bool:
        return self._position(k) + self.config.mel_window <= self.mel_start + self.mel.shape[1]

    def codes(self, s: int, e: int) -> torch.Tensor:
        c = self.config
        positions = stream_positions(e, c.fps, c.clock, c.lookahead, c.window_samples)[s:].to(self.device)
        lo = int(positions[0])
        block = self.mel[:, lo - self.mel_start:int(positions[-1]) + c.mel_window - self.mel_start]
        return self.model.encode_mel_stream(block[None], positions - lo)

    def trim(self, next_frame: int) -> None:
        keep_from = self._position(next_frame)
        if keep_from > self.mel_start:
            self.mel = self.mel[:, keep_from - self.mel_start:].clone()
            self.mel_start = keep_from
