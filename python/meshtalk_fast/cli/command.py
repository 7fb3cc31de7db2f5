"""The ``meshtalk-fast`` command line.

Subcommands:
  info               versions and which backends can run here
  cmake-dir          the folder of the installed C API's CMake package (find_package(meshtalk_fast))
  convert-official   released encoder.pkl / vertex_unet.pkl / context_model.pkl -> one .safetensors
  demo               speech -> meshes with the reference path on the real example sentence
  animate            speech -> meshes.npz, OBJ sequence, animation.glb, preview.mp4 (cli/animate.py)
  stream             live speech (file or stdin) -> frames as they are ready, with the latency (cli/animate.py)
  make-dataset, train, evaluate, calibrate, quickstart: data, training and evaluation (cli/train.py)
  make-rig           the built-in face as an ARKit-named blendshape rig (cli/rig.py)
Errors are one line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _info(args) -> int:
    import torch

    import meshtalk_fast as mf
    from ..base import dispatch

    print(f"meshtalk_fast {mf.__version__}, torch {torch.__version__}")
    try:
        from meshtalk_fast import _core

        print(f"C++ core: {_core.core_version()}")
    except ImportError as exc:
        print(f"C++ core: not importable ({exc})")
    print("backends per op for float32 CPU tensors (yes: runs, auto may pick it; explicit: runs when named, "
          "auto passes it over; no: cannot run)")
    print(f"{'op':>22}  {'inference (no gradient)':<40}training (gradients flow)")
    cpu = torch.device("cpu")
    for op in dispatch.ops():
        cells = []
        for grad in (False, True):
            states = dispatch.status(op, dispatch.Inputs(cpu, torch.float32, grad))
            cells.append(", ".join(f"{b}={state}" for b, (state, _) in states.items()))
        print(f"{op:>22}  {cells[0]:<40}{cells[1]}")
    return 0


def _cmake_dir(args) -> int:
    from ..backends.capi import cmake_dir

    print(cmake_dir())
    return 0


def _convert(args) -> int:
    import meshtalk_fast as mf

    model = mf.load_official(args.model_dir, heads=args.heads, classes=args.classes, n_vertices=args.vertices)
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _demo(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    import meshtalk_fast as mf

    assets = args.assets
    audio = mf.load_audio(args.audio or os.path.join(assets, "example_sentence.wav"))
    template, faces = mf.load_obj(os.path.join(assets, "face_template.obj"))
    if args.model:
        model = mf.MeshTalk.load(args.model)
    else:
        torch.manual_seed(args.seed)
        model = mf.MeshTalk(template.shape[0], mean=torch.from_numpy(np.load(os.path.join(assets, "face_mean.npy"))),
                            stddev=torch.from_numpy(np.load(os.path.join(assets, "face_std.npy"))))
        print("no --model given: using randomly initialised weights (shapes and timings only)")
    model.eval()
    V = model.config.n_vertices
    from ..io.mesh import load_smoothing_masks

    forehead, neck = load_smoothing_masks(assets, V)
    os.makedirs(args.out, exist_ok=True)
    times = {}
    with torch.no_grad(), tqdm(total=4, desc="demo", unit="stage") as bar:
        t0 = time.perf_counter()
        windows = model.config.windows(audio)[None]  # its fps, clock, look-ahead and audio context
        code = model.encode_audio(windows)
        times["encode_audio_s"] = time.perf_counter() - t0
        bar.update()
        t0 = time.perf_counter()
        one_hot = model.sample(code, generator=torch.Generator().manual_seed(args.seed))
        times["sample_s"] = time.perf_counter() - t0
        bar.update()
        t0 = time.perf_counter()
        geom = model.decode(template, one_hot)[0]
        times["decode_s"] = time.perf_counter() - t0
        bar.update()
        geom = mf.post_smooth(geom, forehead, neck)
        bar.update()
    seconds = audio.shape[0] / 16000
    out = os.path.join(args.out, "meshes.npz")
    from ..base.tempfiles import temp_path

    with temp_path(args.out, "meshes", suffix=".npz") as tmp:
        np.savez(tmp, vertices=geom.numpy(), faces=faces.numpy(), fps=model.config.fps)
        os.replace(tmp, out)
    report = dict(frames=int(geom.shape[0]), audio_s=seconds, **times,
                  real_time_factor=seconds / sum(times.values()))
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="meshtalk-fast", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and available backends").set_defaults(fn=_info)
    sub.add_parser("cmake-dir", help="print the folder to give CMake for find_package(meshtalk_fast) "
                                     "(the installed C API)").set_defaults(fn=_cmake_dir)
    p = sub.add_parser("convert-official", help="released .pkl files -> one .safetensors file")
    p.add_argument("model_dir")
    p.add_argument("out")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--classes", type=int, default=128)
    p.add_argument("--vertices", type=int, default=6172)
    p.set_defaults(fn=_convert)
    p = sub.add_parser("demo", help="speech -> meshes with the reference path")
    p.add_argument("--assets", required=True, help="folder with face_template.obj, masks, mean/std")
    p.add_argument("--audio", help="speech file (default: the assets' example_sentence.wav)")
    p.add_argument("--model", help="a .safetensors model (default: random weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_demo)
    from .animate import add_parsers as _add_animate_parsers
    from .rig import add_parsers as _add_rig_parsers
    from .train import add_parsers as _add_train_parsers

    _add_animate_parsers(sub)
    _add_train_parsers(sub)
    _add_rig_parsers(sub)
    args = parser.parse_args(argv)
    return _run(args)


# Exceptions whose message says it all; any other type is named in front of its message.
_PLAIN = (ValueError, TypeError, OSError, RuntimeError)


def _close_progress_bars() -> None:
    """Close the tqdm bars an exception left open, so the error starts on a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _run(args) -> int:
    """The one place exceptions become CLI errors: one line on stderr, ``meshtalk-fast <command>: ...``;
    exit 2 for errors, 130 for Ctrl-C and 128 + signal for SIGTERM (raised as ``Terminated`` so that
    temporary files are removed on the way out; see ``_tempfiles``), never a traceback."""
    from ..base.tempfiles import Terminated, termination_raises

    prefix = f"meshtalk-fast {args.command}"
    try:
        with termination_raises():
            return args.fn(args)
    except Terminated as exc:
        _close_progress_bars()
        print(f"{prefix}: terminated by signal {exc.signum}; nothing half-written is left", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"{prefix}: interrupted; nothing half-written is left", file=sys.stderr)
        return 130
    except MemoryError as exc:
        _close_progress_bars()
        print(f"{prefix}: error: out of memory{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001  (every error becomes one line; see _PLAIN)
        _close_progress_bars()
        message = " ".join(str(exc).split()) or "(no message)"
        if not isinstance(exc, _PLAIN):
            message = f"{type(exc).__name__}: {message}"
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
