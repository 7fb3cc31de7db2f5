"""Blendshape weights (op "solve_blendshapes"): the C++ solver next to the references, same inputs,
same group; and its share of a live frame of the C API's session.

Group "solve_blendshapes": T frames of a moving face solved into K weights in [0, 1]:
  cpp_stream  a prepared ``_core.BlendshapeSolver`` (reset, then the T frames warm-started): the live
              path's per-frame cost is this time / T;
  cpp         the op as dispatched (``cpp_solve_blendshapes``: the solver built per call, Gram matrix
              and condition number included);
  torch       the PyTorch reference of the op (skipped, naming why, where none is registered);
  scipy       scipy.optimize.lsq_linear per frame on the stacked system (the tests' exact reference;
              skipped without scipy).
Group "live frame": one stream of the C API session (``_core.Session``, one thread, 533-sample
pushes, released smoothing), without and with the solver on every popped frame; ``with_solver``
also stores the solver's and the session's own CPU seconds (time.process_time: both run on the
calling thread, and CPU time is what a busy machine does not inflate) in extra_info
(``solver_share`` = solver / session time: the issue's target is under 5 %).
On a shared machine add ``--benchmark-timer time.process_time`` (every case here is single-threaded).

``MESHTALK_BENCH_SIZE=full``: V=6172 (the released template when ../shared/assets/meshtalk holds
it), K=52 (ARKit's count), T=300 frames (10 s at 30 fps), a released-size model (16 heads x 128
classes, random weights) and 4 s of speech for the live group; default "smoke": tiny sizes, run once
in the normal test suite.
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_blendshapes.py --benchmark-enable``.
"""
import os
import pathlib
import time

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from bench_animate import speech
from common import require_backend
from meshtalk_fast.base.dispatch import resolve

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
V, K, T = (6172, 52, 300) if FULL else (300, 7, 10)
SECONDS, HEADS, CLASSES = (4.0, 16, 128) if FULL else (0.6, 4, 16)
ASSETS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "assets" / "meshtalk"
CPU = torch.device("cpu")


def _core():
    try:
        from meshtalk_fast import _core
    except ImportError as e:  # the C++ extension was not built
        pytest.skip(f"the C++ core (meshtalk_fast._core) is not built: {e}")
    return _core


@pytest.fixture(scope="module")
def face():
    """neutral [V, 3], deltas [K, V, 3] (local bumps, as a rig's shapes are), meshes [T, V, 3] of weights
    that move in and out of [0, 1] over time (so the active set changes), with 0.01 noise."""
    g = torch.Generator().manual_seed(0)
    if FULL and (ASSETS / "face_template.obj").is_file():
        neutral = mf.load_obj(ASSETS / "face_template.obj")[0].float()
    else:
        neutral = 100 * torch.rand(V, 3, generator=g)
    extent = (neutral.max(0).values - neutral.min(0).values).norm()
    centres = neutral[torch.randint(0, V, (K,), generator=g)]
    falloff = torch.exp(-torch.cdist(centres, neutral) ** 2 / (2 * (0.15 * extent) ** 2))  # [K, V]
    deltas = falloff[:, :, None] * torch.randn(K, 1, 3, generator=g) * 0.05 * extent
    t = torch.arange(T, dtype=torch.float32)[:, None]
    freq, phase = 0.2 + 2 * torch.rand(K, generator=g), 6.28 * torch.rand(K, generator=g)
    weights = 0.5 + 0.7 * torch.sin(6.283 * freq * t / 30 + phase)  # [T, K], partly outside [0, 1]
    meshes = neutral + torch.einsum("tk,kvc->tvc", weights, deltas) + 0.01 * torch.randn(T, V, 3, generator=g)
    return neutral, deltas.contiguous(), meshes.contiguous()


@pytest.mark.parametrize("impl", ["cpp_stream", "cpp", "torch", "scipy"])
def test_solve_blendshapes(benchmark, face, impl):
    neutral, deltas, meshes = face
    benchmark.group = f"solve_blendshapes T={T} V={V} K={K}"
    benchmark.extra_info.update(frames=T, V=V, K=K)
    if impl == "cpp_stream":
        core = _core()
        solver = core.BlendshapeSolver(neutral.numpy(), deltas.numpy(), None, 0.0, 1.0, 0.0)
        x = meshes.numpy()

        def run():
            solver.reset()
            return solver.solve(x)
        out = torch.from_numpy(benchmark(run))
    elif impl == "scipy":
        optimize = pytest.importorskip("scipy.optimize", reason="the scipy baseline needs scipy")
        A = deltas.reshape(K, -1).T.double().numpy() / np.sqrt(V)
        r = (meshes - neutral).reshape(T, -1).double().numpy() / np.sqrt(V)

        def run():
            return np.stack([optimize.lsq_linear(A, r[i], bounds=(0, 1), method="bvls").x for i in range(T)])
        out = torch.from_numpy(benchmark.pedantic(run, rounds=1 if FULL else 3, iterations=1))
    else:
        require_backend("solve_blendshapes", impl)
        fn = resolve("solve_blendshapes", impl, CPU)
        with torch.no_grad():
            out = benchmark(fn, meshes, neutral, deltas, None, 0.0, 1.0, 0.0)
    assert out.shape == (T, K) and float(out.min()) >= -1e-9 and float(out.max()) <= 1 + 1e-9  # scipy: rounding


@pytest.fixture(scope="module")
def live(tmp_path_factory, face):
    """A model of the face's V saved for the core, its session's template (the neutral) and speech."""
    neutral, deltas, _ = face
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench_blendshapes") / "model.safetensors"
    mf.MeshTalk(V, heads=HEADS, classes=CLASSES).eval().save(path)
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(V, generator=g).numpy(), torch.rand(V, generator=g).numpy())
    return path, neutral.numpy(), deltas.numpy(), masks, speech(SECONDS).numpy()


@pytest.mark.parametrize("impl", ["session", "with_solver"])
def test_live_frame(benchmark, live, impl):
    core = _core()
    path, neutral, deltas, masks, audio = live
    benchmark.group = f"live frame: C API session, {SECONDS:g} s, V={V} K={K}"
    model = core.CoreModel.from_file(str(path))
    pieces = [audio[i:i + 533] for i in range(0, audio.shape[0], 533)]
    solver = core.BlendshapeSolver(neutral, deltas, None, 0.0, 1.0, 0.0) if impl == "with_solver" else None
    timing = {}

    def run():
        session_s = solver_s = 0.0
        frames = 0
        s = core.Session(model, neutral, seed=0, smooth_masks=masks, threads=1)
        if solver is not None:
            solver.reset()
        for p in pieces + [None]:
            t0 = time.process_time()
            out = s.push(p) if p is not None else s.finish()
            t1 = time.process_time()
            session_s += t1 - t0
            frames += out.shape[0]
            if solver is not None and out.shape[0]:
                solver.solve(out)
                solver_s += time.process_time() - t1
        timing.update(session_s=session_s, solver_s=solver_s)
        return frames

    frames = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(frames=frames, session_ms_per_frame=1e3 * timing["session_s"] / frames,
                                solver_ms_per_frame=1e3 * timing["solver_s"] / frames,
                                solver_share=timing["solver_s"] / timing["session_s"])
    assert frames == mf.num_frames(audio.shape[0], 30, "released")
