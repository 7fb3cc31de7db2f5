"""The ``animate`` and ``stream`` subcommands of ``meshtalk-fast`` (registered by ``cli.command``).

``--model`` is either our ``.safetensors`` file (``MeshTalk.load``) or a released model directory
holding ``encoder.pkl``, ``vertex_unet.pkl``, ``context_model.pkl`` (``load_official``): a directory
means released. Our files store no template mesh, so ``--template`` is required with them; a released
directory may hold ``face_template.obj`` (and the masks) beside the ``.pkl`` files, which are then the
defaults. Every failure is raised as one line naming the file and the problem (``cli.command.main`` prints it
on stderr and exits with 2).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional, TypeVar

import numpy as np

__all__ = ["add_parsers", "load_model_any", "CliError"]

R = TypeVar("R")
MASK_FILES = ("forehead_mask.txt", "neck_mask.txt")
MAX_VIDEO_SIZE = 4096     # preview.mp4 side in pixels (a frame of 65536^2 would need 12 GB)
MAX_CHUNK = 60 * 16000    # stream --chunk: samples per push, at most 60 s
MAX_SEED = 2 ** 63 - 1    # torch.Generator.manual_seed takes a signed 64-bit integer


class CliError(ValueError):
    """A one-line, user-facing error."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _about(what: str, fn: Callable[[], R]) -> R:
    """Run ``fn``; any failure becomes ``CliError("<what>: <problem>")`` on one line."""
    try:
        return fn()
    except CliError:
        raise
    except Exception as exc:  # every library error, re-worded with the file it is about
        message = _one_line(exc) or type(exc).__name__
        raise CliError(message if what in message or not what else f"{what}: {message}") from None


# ------------------------------------------------------------------------------------------------
# Shared inputs
# ------------------------------------------------------------------------------------------------
def load_model_any(path: str, n_vertices: Optional[int] = None):
    """A released model directory (``load_official``) or one of our ``.safetensors`` files."""
    from ..models.released import load_model_any as load

    if not os.path.exists(path):
        raise CliError(f"model {path!r} does not exist (expected a .safetensors file or a released model directory)")
    kind = "released model directory" if os.path.isdir(path) else "model file"
    return _about(f"{kind} {path!r}", lambda: load(path, n_vertices))


def _inputs(args):
    """(model, template [V, 3], faces [F, 3], masks or None, notes) from --model/--template/--masks."""
    import meshtalk_fast as mf
    from ..io.mesh import find_mask_file, load_smoothing_masks

    model_dir = args.model if os.path.isdir(args.model) else None
    template_path = args.template
    if template_path is None:
        own = os.path.join(model_dir, "face_template.obj") if model_dir else None
        if own is None or not os.path.isfile(own):
            kind = f"released model directory {args.model!r} holds no face_template.obj" if model_dir else \
                f"model file {args.model!r} stores no template mesh (our .safetensors files hold weights and config only)"
            raise CliError(f"--template is required: {kind}")
        template_path = own
    template, faces = _about(f"template {template_path!r}", lambda: mf.load_obj(template_path))
    V = template.shape[0]
    model = load_model_any(args.model, n_vertices=V).eval()
    if model.config.n_vertices != V:
        raise CliError(f"template {template_path!r} has {V} vertices but model {args.model!r} animates meshes of "
                       f"{model.config.n_vertices} vertices (a checkpoint of another topology)")
    if faces.shape[0] == 0:
        raise CliError(f"template {template_path!r} has no triangles (f lines); the outputs need its faces")
    masks_dir = args.masks
    if masks_dir is None and model_dir and all(find_mask_file(model_dir, k) for k in ("forehead", "neck")):
        masks_dir = model_dir
    masks = None
    if masks_dir is not None:
        if not os.path.isdir(masks_dir):
            raise CliError(f"--masks {masks_dir!r} is not a folder (expected one holding {' and '.join(MASK_FILES)}, "
                           "or forehead.txt and neck.txt)")
        masks = _about("--masks", lambda: load_smoothing_masks(masks_dir, V))  # errors name the mask file
    return model, template, faces, masks, template_path


def _check_backend(backend: str, ops) -> None:
    """Refuse a backend that cannot run the ops here before any work (the library would, later)."""
    import torch

    from ..base.dispatch import resolve

    with torch.no_grad():
        for op in ops:
            _about(f"--backend {backend}", lambda op=op: resolve(op, backend, torch.device("cpu")))


def _set_threads(n: Optional[int]) -> None:
    if n is not None:
        import torch

        if n < 1:
            raise CliError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)


def _load_expression(path: str):
    import torch

    def read():
        if path.lower().endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                if "vertices" not in z.files:
                    raise ValueError(f"expected an array 'vertices' [T', V, 3], found arrays {z.files}")
                arr = z["vertices"]
        else:
            arr = np.load(path, allow_pickle=False)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
            raise ValueError(f"expected floating-point vertices [T', V, 3], found dtype {getattr(arr, 'dtype', None)}")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    if not os.path.isfile(path):
        raise CliError(f"expression file {path!r} does not exist")
    return _about(f"expression file {path!r}", read)


def _check_seed(seed: Optional[int]) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise CliError(f"--seed must be an integer in [0, 2**63 - 1], got {seed}")


def _check_audio_file(path: str) -> None:
    from ..base.checks import check_regular_file

    _about("", lambda: check_regular_file("audio file", path))  # missing, a folder, a device (/dev/zero)
    if os.path.getsize(path) == 0:
        raise CliError(f"audio file {path!r} is empty (0 bytes)")


# ------------------------------------------------------------------------------------------------
# animate
# ------------------------------------------------------------------------------------------------
def run_animate(args) -> int:
    import meshtalk_fast as mf
    from ..animation.offline import fit_expression
    from ..io.export import OUTPUTS, check_output_folder, parse_formats, write_animation

    _set_threads(args.threads)
    from .rig import RIG_OUTPUTS, load_rig, residual_line, rig_outputs, solve_rig

    formats = _about("--formats", lambda: parse_formats(args.formats))
    # the whole output set: an old output of a format not asked for now would disagree with the new ones
    rig_names = list(RIG_OUTPUTS) if args.blendshapes else []
    _about("", lambda: check_output_folder(args.out, list(OUTPUTS.values()) + rig_names, args.force))
    if args.blendshape_map and not args.blendshapes:
        raise CliError("--blendshape-map needs --blendshapes (the rig it maps)")
    if args.video_size % 16 or not 16 <= args.video_size <= MAX_VIDEO_SIZE:
        raise CliError(f"--video-size must be a multiple of 16 in [16, {MAX_VIDEO_SIZE}] pixels, got {args.video_size}")
    _check_seed(args.seed)
    _check_audio_file(args.audio)
    _check_backend(args.backend, ("sample", "decode"))
    model, template, faces, masks, template_path = _inputs(args)
    c = model.config
    rig = _about("", lambda: load_rig(args.blendshapes, args.blendshape_map, c.n_vertices, args.model)) \
        if args.blendshapes else None
    audio = _about(f"audio file {args.audio!r}", lambda: mf.load_audio(args.audio))
    if mf.num_frames(audio.shape[0], c.fps, c.clock) == 0:
        raise CliError(f"audio file {args.audio!r}: {audio.shape[0]} samples are too short for one video frame "
                       f"at {c.fps} fps")
    expression = None
    if args.expression_from:
        expression = _load_expression(args.expression_from)
        T = mf.num_frames(audio.shape[0], c.fps, c.clock)
        _about(f"expression file {args.expression_from!r}",
               lambda: fit_expression(expression, max(T, 1), c.n_vertices, args.expression_strict))
    print(f"model {args.model} ({'released' if os.path.isdir(args.model) else 'meshtalk_fast'}), template "
          f"{template_path} ({c.n_vertices} vertices), smoothing {'on' if masks else 'off (no --masks)'}, "
          f"{'expression from ' + args.expression_from if expression is not None else 'prior sampling'}")
    t0 = time.perf_counter()
    # every input was checked above, each error naming its argument or file: what fails now names itself
    geom = _about("", lambda: mf.animate(
        audio, template, model, expression=expression, seed=args.seed, argmax=args.argmax, backend=args.backend,
        smooth_masks=masks, progress=True, normalize=False, strict_expression=args.expression_strict,
        weights=args.weights)).cpu()
    compute_s = time.perf_counter() - t0
    T = geom.shape[0]
    seconds = audio.shape[0] / mf.ops.audio.SAMPLE_RATE
    print(f"animated {T} frames at {c.fps} fps from {seconds:.2f} s of speech in {compute_s:.2f} s "
          f"(real-time factor {seconds / compute_s:.2f})")
    extra = None
    if rig is not None:
        basis, index = rig
        weights, residual = _about(f"--blendshapes {args.blendshapes!r}", lambda: solve_rig(
            geom, basis, args.blendshape_smoothing, args.backend))
        print(f"blendshapes: {basis.n_shapes} rig shapes ({len(index)} ARKit-named); " + residual_line(residual))
        extra = rig_outputs(args.blendshapes, basis, index, weights, residual, c.fps, args.blendshape_smoothing, faces)
    soundtrack = None
    if "mp4" in formats:  # the speech as recorded (mono 16 kHz), not the model's normalised input
        soundtrack = _about(f"audio file {args.audio!r}", lambda: mf.load_audio(args.audio, normalize=False))
    t0 = time.perf_counter()
    info = _about(f"--out {args.out!r}", lambda: write_animation(
        args.out, formats, geom, template, faces, c.fps, audio=soundtrack, force=args.force,
        video_size=args.video_size, progress=T >= 300, extra=extra))
    for f in formats + rig_names:
        print(f"wrote {info['paths'][f]}")
    if "glb" in info:
        g = info["glb"]
        print(f"animation.glb: {g['mode']} morph targets ({g['targets']} targets for {g['frames']} frames); "
              f"reconstruction error max {g['max_vertex_error']:.3g}, RMS {g['rms_vertex_error']:.3g} "
              "(template units)")
    print(f"outputs written in {time.perf_counter() - t0:.2f} s")
    return 0


# ------------------------------------------------------------------------------------------------
# stream
# ------------------------------------------------------------------------------------------------
def _file_chunks(path: str, chunk: int):
    import meshtalk_fast as mf

    audio = _about(f"audio file {path!r}", lambda: mf.load_audio(path, normalize=False)).numpy()
    for s in range(0, audio.shape[0], chunk):
        yield audio[s:s + chunk]


def _stdin_chunks(chunk: int):
    stream = sys.stdin.buffer
    rest = b""
    while True:
        data = stream.read(chunk * 4)
        if not data:
            break
        data = rest + data
        whole = len(data) // 4 * 4
        rest = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype="<f4").astype(np.float32)
    if rest:
        raise CliError(f"stdin: {len(rest)} trailing bytes do not make a whole float32 sample "
                       "(expected raw little-endian float32, 16 kHz mono)")


def _finite(chunks, source: str):
    """Pass the chunks on, refusing the first NaN / inf sample as soon as its chunk arrives (before the
    gain's first second is complete: a bad sample there would otherwise hold back the whole stream)."""
    n = 0
    for c in chunks:
        bad = ~np.isfinite(c)
        if bad.any():
            i = int(np.argmax(bad))
            raise CliError(f"{source}: sample {n + i} (at {(n + i) / 16000:.3f} s) is {c[i]}; the audio must be finite")
        n += c.shape[0]
        yield c


def _gained(chunks, gain: Optional[float], source: str):
    """Yield the chunks scaled by ``gain``; without one, derive it from the first second: the released
    formula ``0.01 / mean(|x|)`` over the first 16000 samples (over all of them if the stream is
    shorter; if that second is silent, over everything until the first non-silent chunk)."""
    if gain is not None:
        for c in chunks:
            yield c * np.float32(gain)
        return
    held, n = [], 0
    for c in chunks:
        held.append(c)
        n += c.shape[0]
        if n < 16000:
            continue
        head = np.concatenate(held)
        level = float(np.abs(head[:16000]).mean()) or float(np.abs(head).mean())
        if level > 0:
            gain = 0.01 / level
            print(f"gain {gain:.6g} from the first second (0.01 / mean |x|)", file=sys.stderr)
            yield head * np.float32(gain)
            held = None
            break
    if held is not None:  # the stream ended within a second, or was silent so far
        head = np.concatenate(held) if held else np.zeros(0, np.float32)
        level = float(np.abs(head).mean()) if head.size else 0.0
        if level == 0:
            raise CliError(f"{source}: the audio is silent (or empty), so no gain can be derived from it; pass --gain")
        gain = 0.01 / level
        print(f"gain {gain:.6g} from the whole (shorter than 1 s) stream", file=sys.stderr)
        yield head * np.float32(gain)
        return
    for c in chunks:
        yield c * np.float32(gain)


def run_stream(args) -> int:
    import torch

    import meshtalk_fast as mf

    _set_threads(args.threads)
    to_stdout = args.out == "-"
    if not to_stdout:
        if not args.out.lower().endswith(".npz"):
            raise CliError(f"--out must be a .npz file or '-' (stdout), got {args.out!r}")
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise CliError(f"--out {args.out!r}: folder {folder!r} does not exist")
        if os.path.exists(args.out) and not args.force:
            raise CliError(f"--out {args.out!r} already exists; pass --force to overwrite")
    if not 1 <= args.chunk <= MAX_CHUNK:
        raise CliError(f"--chunk must be in [1, {MAX_CHUNK}] samples (up to 60 s), got {args.chunk}")
    _check_seed(args.seed)
    if args.gain is not None and not (args.gain > 0 and np.isfinite(args.gain)):
        raise CliError(f"--gain must be a positive finite number, got {args.gain}")
    info = sys.stderr if to_stdout else sys.stdout
    if args.audio != "-":
        _check_audio_file(args.audio)
    _check_backend(args.backend, ("sample_step", "decode_step"))
    from .rig import stream_rig
    from ..streaming.livelink import arkit_frame

    if args.blendshape_map and not args.blendshapes:
        raise CliError("--blendshape-map needs --blendshapes (the rig it maps)")
    model, template, faces, masks, _ = _inputs(args)
    rig, sender = _about("", lambda: stream_rig(args, model.config.n_vertices, model.config.fps))
    animator = _about("stream", lambda: mf.StreamingAnimator(
        model, template, seed=args.seed, smooth_masks=masks, backend=args.backend,
        smoothing_delay=args.smoothing_delay, blendshapes=rig[0] if rig else None,
        blendshape_smoothing=args.blendshape_smoothing, weights=args.weights))
    if sender is not None:
        print(f"sending Live Link Face packets to {sender.address[0]}:{sender.address[1]} (subject "
              f"{sender.subject!r})", file=sys.stderr if to_stdout else sys.stdout, flush=True)
    b = animator.latency_breakdown
    print(f"latency {animator.latency_s:.3f} s = look-ahead {b['lookahead_s']:.3f} s + one frame {b['frame_s']:.3f} s"
          + (f" + smoothing {args.smoothing_delay} frames {b['smoothing_s']:.3f} s" if masks else " (no smoothing)")
          + " (audio waited for; compute time comes on top)", file=info, flush=True)
    source = "stdin" if args.audio == "-" else f"audio file {args.audio!r}"
    chunks = _stdin_chunks(args.chunk) if args.audio == "-" else _file_chunks(args.audio, args.chunk)
    frames, n_samples, compute = [], 0, 0.0
    weights, residuals = [], []
    start = time.perf_counter()

    def emit(out: torch.Tensor) -> None:
        if out.shape[0] == 0:
            return
        out = out.cpu()
        if rig is not None:
            w = animator.pop_weights()
            weights.append(w)
            residuals.append(mf.blendshape_residual(out, rig[0], w))
            if sender is not None:
                for row in arkit_frame(w.numpy(), rig[1]):
                    sender.send(row)
        if to_stdout:
            sys.stdout.buffer.write(out.numpy().astype("<f4").tobytes())
            sys.stdout.buffer.flush()
        else:
            frames.append(out)

    for chunk in _gained(_finite(chunks, source), args.gain, source):
        n_samples += chunk.shape[0]
        if args.realtime:
            delay = start + n_samples / 16000 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t0 = time.perf_counter()
        out = _about(source, lambda: animator.push(torch.from_numpy(np.ascontiguousarray(chunk))))
        compute += time.perf_counter() - t0
        emit(out)
    t0 = time.perf_counter()
    emit(_about(source, animator.close))
    compute += time.perf_counter() - t0
    T = animator.frames_emitted
    if T == 0:
        raise CliError(f"{source}: {n_samples} samples are too short for one video frame")
    seconds = n_samples / 16000
    print(f"{T} frames at {animator.fps} fps from {seconds:.2f} s of audio; compute {compute:.2f} s "
          f"({1000 * compute / T:.1f} ms per frame, real-time factor {seconds / compute:.2f})", file=info)
    rig_arrays = {}
    if rig is not None:
        from .rig import residual_line

        residual = torch.cat(residuals)
        print(residual_line(residual) + (f"; sent {sender.sent} Live Link packets" if sender else ""), file=info)
        rig_arrays = dict(weights=torch.cat(weights).numpy(), weight_names=np.array(rig[0].names),
                          residual=residual.numpy())
        if sender is not None:
            sender.close()
    if not to_stdout:
        vertices = torch.cat(frames).numpy()

        def save():
            from ..base.tempfiles import temp_path

            with temp_path(folder, os.path.basename(args.out), suffix=".npz") as tmp:
                np.savez(tmp, vertices=vertices, faces=faces.numpy().astype(np.int32), fps=np.int64(animator.fps),
                         latency_s=np.float64(animator.latency_s), **rig_arrays)
                os.replace(tmp, args.out)

        _about(f"--out {args.out!r}", save)
        print(f"wrote {args.out}", file=info)
    return 0


# ------------------------------------------------------------------------------------------------
# argparse
# ------------------------------------------------------------------------------------------------
def _common(p) -> None:
    p.add_argument("--model", required=True, help="our .safetensors model, or a released model directory")
    p.add_argument("--template", help="template mesh (.obj) with the model's vertex count; required unless the "
                                      "model directory holds face_template.obj")
    p.add_argument("--masks", help="folder with forehead_mask.txt and neck_mask.txt: turns on the released "
                                   "post-smoothing (default: the model directory's, if it has them)")
    p.add_argument("--seed", type=int, help="sampling seed (reproducible); default: random")
    p.add_argument("--backend", default="auto", help="auto | torch | cpp | triton (default auto)")
    p.add_argument("--weights", choices=("f32", "bf16", "int8"), default=None,
                   help="the C++ core's storage of the prior's and decoder's weights: f32 (exact, default), bf16 or "
                        "int8 (faster; needs backend auto or cpp, and a CPU with AVX2+FMA)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def add_parsers(sub) -> None:
    from .rig import add_rig_arguments

    p = sub.add_parser("animate", help="speech -> meshes.npz, OBJ sequence, animation.glb, preview.mp4",
                       description="Animate a face from speech; outputs are written all-or-nothing.")
    _common(p)
    p.add_argument("--audio", required=True, help="speech file (wav, flac, ogg, ...: anything libsndfile reads)")
    p.add_argument("--expression-from", help="mesh sequence [T', V, 3] (.npy, or .npz with 'vertices') whose "
                                             "expression to transfer instead of sampling the prior")
    p.add_argument("--expression-strict", action="store_true",
                   help="refuse an expression sequence whose length differs from the audio's frame count "
                        "(default: trim it, or loop it back and forth)")
    p.add_argument("--argmax", action="store_true", help="the prior's mode instead of a sample")
    p.add_argument("--formats", default="npz,obj,glb,mp4", help="comma-separated subset of npz,obj,glb,mp4")
    p.add_argument("--video-size", type=int, default=512, help="preview.mp4 width = height in pixels (multiple of 16)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--out", required=True, help="output folder")
    add_rig_arguments(p)
    p.set_defaults(fn=run_animate)

    p = sub.add_parser("stream", help="live: audio in (file or stdin), frames out as they are ready",
                       description="Stream speech through the model. stdin ('-') takes raw little-endian float32 "
                                   "samples, 16 kHz, mono. --out X.npz writes vertices [T, V, 3], faces, fps and "
                                   "latency_s at the end (with --blendshapes also weights [T, K], weight_names "
                                   "and residual [T]); --out - writes each frame to stdout as soon as it is "
                                   "ready, as V*3 raw little-endian float32 values (x, y, z per vertex), and "
                                   "prints everything else on stderr.")
    _common(p)
    p.add_argument("--audio", default="-", help="speech file, or '-' for stdin (default)")
    p.add_argument("--out", required=True, help="frames.npz, or '-' for a raw float32 frame stream on stdout")
    p.add_argument("--gain", type=float, help="fixed loudness gain applied to every sample; default: 0.01 / "
                                              "mean|x| over the first second (frames start after it)")
    p.add_argument("--realtime", action="store_true", help="pace the input to real time (for files)")
    p.add_argument("--chunk", type=int, default=512, help="samples per push (default 512 = 32 ms)")
    p.add_argument("--smoothing-delay", type=int, choices=(4, 8), default=4,
                   help="frames the smoothing waits for: 4 (released kernel's half width) or 8 (exact)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    add_rig_arguments(p, live=True)
    p.set_defaults(fn=run_stream)
