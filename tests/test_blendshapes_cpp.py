"""The C++ blendshape solver (op "solve_blendshapes", backend "cpp": ``_core.BlendshapeSolver``,
csrc/core/blendshapes.cpp) against an exact, independent reference written here: scipy's
``lsq_linear`` (bounded-variable least squares) on each frame's stacked system, the weighted deltas
with the smoothing rows sqrt(s) I | sqrt(s) w_prev appended. Odd shapes (V not a multiple of 8, K = 1,
7, 52, 256), known weights, bounds, smoothing, warm start = cold start, the condition number, and bad
input. (The C API's side, with an optimality-condition check: tests/cpp/test_blendshapes.cpp.)"""
import contextlib
import math

import numpy as np
import pytest
import torch

try:
    from scipy.optimize import lsq_linear
except ImportError:  # scipy is not a dependency of the package: only these reference comparisons need it
    lsq_linear = None
try:  # numpy's BLAS threads spin against each other on a busy 2-core machine (0.8 s -> minutes for K = 256)
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

import meshtalk_fast as mf
from meshtalk_fast.base.dispatch import resolve

_core = pytest.importorskip("meshtalk_fast._core", reason="the C++ extension meshtalk_fast._core is not built")
from meshtalk_fast.backends.cpp import cpp_solve_blendshapes  # noqa: E402  (needs the core)

TOL = 1e-4  # the agreement; float32 inputs and the core's float32 product D^T M r


def basis(V, K, seed=0):
    rng = np.random.default_rng(seed)
    neutral = rng.normal(size=(V, 3)).astype(np.float32)
    deltas = rng.normal(size=(K, V, 3)).astype(np.float32)
    mask = rng.uniform(size=V).astype(np.float32)
    return neutral, deltas, mask


def meshes_from(neutral, deltas, w, noise=0.0, seed=1):
    rng = np.random.default_rng(seed)
    x = neutral[None] + np.einsum("tk,kvc->tvc", w, deltas.astype(np.float64))
    return (x + noise * rng.normal(size=x.shape)).astype(np.float32)


def reference(meshes, neutral, deltas, mask, lo, hi, smoothing):
    """Per frame: lsq_linear of the stacked system sqrt(m/S) [D | r] (+ sqrt(s) [I | w_prev] after the first)."""
    if lsq_linear is None:
        pytest.skip("scipy is not installed: the reference, scipy.optimize.lsq_linear, needs it")
    with threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext():
        return _reference(meshes, neutral, deltas, mask, lo, hi, smoothing)


def _reference(meshes, neutral, deltas, mask, lo, hi, smoothing):
    T, V, _ = meshes.shape
    K = deltas.shape[0]
    m = np.ones(V) if mask is None else mask.astype(np.float64)
    row = np.sqrt(np.repeat(m / m.sum(), 3))
    A = deltas.reshape(K, -1).T.astype(np.float64) * row[:, None]
    out, prev = [], None
    for t in range(T):
        b = (meshes[t].astype(np.float64) - neutral).reshape(-1) * row
        AA, bb = A, b
        if prev is not None and smoothing > 0:
            AA = np.vstack([A, math.sqrt(smoothing) * np.eye(K)])
            bb = np.concatenate([b, math.sqrt(smoothing) * prev])
        bounds = (lo, hi) if lo < hi else (-np.inf, np.inf)
        x = lsq_linear(AA, bb, bounds=bounds, method="bvls", tol=1e-12).x
        out.append(x)
        prev = x
    return np.array(out)


SMALL = [(K, V, T, s, m, b) for K, V, T in [(1, 37, 6), (7, 101, 8), (52, 203, 8)] for s in (0.0, 0.3)
         for m in (False, True) for b in ((0.0, 1.0), (-0.5, 2.0))]
# K = 256: two cases only (lsq_linear takes seconds per case there)
LARGE = [(256, 131, 3, 0.3, True, (0.0, 1.0)), (256, 131, 3, 0.0, False, (-0.5, 2.0))]


@pytest.mark.parametrize("K,V,T,smoothing,masked,bounds", SMALL + LARGE)
def test_matches_lsq_linear(K, V, T, smoothing, masked, bounds):
    neutral, deltas, mask = basis(V, K)
    rng = np.random.default_rng(K)
    span = bounds[1] - bounds[0]  # many weights outside the bounds: active constraints
    w = rng.uniform(bounds[0] - 0.4 * span, bounds[1] + 0.4 * span, size=(T, K))
    meshes = meshes_from(neutral, deltas, w, noise=0.05)
    mask = mask if masked else None
    out = _core.BlendshapeSolver(neutral, deltas, mask, *bounds, smoothing).solve(meshes)
    ref = reference(meshes, neutral, deltas, mask, *bounds, smoothing)
    assert out.shape == (T, K) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
    assert out.min() >= bounds[0] and out.max() <= bounds[1]
    active = np.isclose(ref, bounds[0], atol=1e-6) | np.isclose(ref, bounds[1], atol=1e-6)
    assert 0 < active.mean() < 1  # the cases exercise both free and bound weights


@pytest.mark.parametrize("K", [1, 7, 52])
def test_known_weights_are_recovered(K):
    neutral, deltas, mask = basis(61, K, seed=K)
    w = np.random.default_rng(3).uniform(0.05, 0.95, size=(5, K))
    out = torch.as_tensor(cpp_solve_blendshapes(torch.from_numpy(meshes_from(neutral, deltas, w)),
                                                torch.from_numpy(neutral), torch.from_numpy(deltas),
                                                torch.from_numpy(mask), 0.0, 1.0, 0.0))
    assert out.dtype == torch.float32 and out.shape == (5, K)
    np.testing.assert_allclose(out.numpy(), w, atol=TOL, rtol=0)


def test_warm_start_equals_cold_start():
    neutral, deltas, mask = basis(77, 52)
    rng = np.random.default_rng(4)  # a slowly moving face: weights drift, some across the bounds
    w = rng.uniform(-0.3, 1.3, size=(1, 52)) + np.cumsum(rng.normal(scale=0.05, size=(12, 52)), axis=0)
    meshes = meshes_from(neutral, deltas, w, noise=0.05)
    warm = _core.BlendshapeSolver(neutral, deltas, mask)
    cold = _core.BlendshapeSolver(neutral, deltas, mask)
    a = warm.solve(meshes)
    b = []
    for t in range(12):
        cold.reset()
        b.append(cold.solve(meshes[t:t + 1])[0])
    np.testing.assert_allclose(a, np.array(b), atol=1e-5, rtol=0)
    assert warm.unconverged_frames == 0 and warm.frames_solved == 12
    assert warm.iterations < cold.iterations  # and it saves work on a moving face


def test_state_carries_across_calls_until_reset():
    neutral, deltas, _ = basis(45, 7)
    w = np.random.default_rng(5).uniform(0, 1, size=(9, 7))
    meshes = meshes_from(neutral, deltas, w, noise=0.02)
    whole = _core.BlendshapeSolver(neutral, deltas, None, 0.0, 1.0, 2.0).solve(meshes)
    s = _core.BlendshapeSolver(neutral, deltas, None, 0.0, 1.0, 2.0)
    pieces = np.concatenate([s.solve(meshes[:4]), s.solve(meshes[4:])])
    np.testing.assert_array_equal(whole, pieces)
    np.testing.assert_allclose(whole, reference(meshes, neutral, deltas, None, 0.0, 1.0, 2.0), atol=TOL, rtol=0)
    s.reset()
    np.testing.assert_allclose(s.solve(meshes[:1]), whole[:1], atol=1e-6, rtol=0)  # no smoothing term again
    # cpp_solve_blendshapes starts fresh every call
    again = cpp_solve_blendshapes(*(torch.from_numpy(a) for a in (meshes, neutral, deltas)), None, 0.0, 1.0, 2.0)
    np.testing.assert_array_equal(again.numpy(), whole)


def test_smoothing_damps_a_jump():
    neutral, deltas, _ = basis(40, 3)
    meshes = meshes_from(neutral, deltas, np.array([[0.2] * 3, [0.8] * 3]))
    jumps = [np.diff(_core.BlendshapeSolver(neutral, deltas, None, 0.0, 1.0, s).solve(meshes), axis=0)[0, 0]
             for s in (0.0, 1.0, 100.0)]
    assert abs(jumps[0] - 0.6) < 1e-5 and jumps[0] > jumps[1] > jumps[2] > 0


def test_fixed_and_unbounded_weights():
    neutral, deltas, _ = basis(31, 6)
    w = np.random.default_rng(6).uniform(-3, 3, size=(2, 6))
    meshes = meshes_from(neutral, deltas, w)
    np.testing.assert_array_equal(_core.BlendshapeSolver(neutral, deltas, None, 0.25, 0.25).solve(meshes), 0.25)
    free = _core.BlendshapeSolver(neutral, deltas, None, -math.inf, math.inf).solve(meshes)
    np.testing.assert_allclose(free, w, atol=TOL, rtol=0)


def test_condition_number():
    neutral, deltas, mask = basis(50, 5)
    s = _core.BlendshapeSolver(neutral, deltas, mask)
    D = deltas.reshape(5, -1).astype(np.float64)
    G = (D * np.repeat(mask / mask.sum(), 3)) @ D.T
    assert s.condition == pytest.approx(np.linalg.cond(G), rel=1e-6)
    deltas[1] = deltas[0]  # linearly dependent: still solves, the pair shares the weight
    dep = _core.BlendshapeSolver(neutral, deltas, None)
    assert dep.condition > 1e12
    out = dep.solve(meshes_from(neutral, deltas, np.array([[0.6, 0.0, 0.3, 0.1, 0.5]])))
    np.testing.assert_allclose(out[0], [0.3, 0.3, 0.3, 0.1, 0.5], atol=TOL)


def test_vertices_no_shape_moves_or_weighted_zero_are_exact():
    """The core leaves such vertices out of its per-frame product: still the reference's answer, and their
    coordinates are still checked."""
    neutral, deltas, mask = basis(83, 7, seed=2)
    deltas[:, :30] = 0  # local shapes: the first 30 vertices never move
    mask[40:50] = 0     # and 10 more are cut by the weights
    w = np.random.default_rng(7).uniform(-0.3, 1.3, size=(6, 7))
    meshes = meshes_from(neutral, deltas, w, noise=0.05)
    out = _core.BlendshapeSolver(neutral, deltas, mask, 0.0, 1.0, 0.2).solve(meshes)
    np.testing.assert_allclose(out, reference(meshes, neutral, deltas, mask, 0.0, 1.0, 0.2), atol=TOL, rtol=0)
    meshes[3, 5, 0] = np.inf
    with pytest.raises(ValueError, match=r"frames\[3\] vertex 5: expected finite coordinates, found inf"):
        _core.BlendshapeSolver(neutral, deltas, mask).solve(meshes)
    zero = _core.BlendshapeSolver(neutral, np.zeros_like(deltas), None, 0.25, 1.0)  # nothing moves at all
    assert zero.condition == math.inf
    np.testing.assert_array_equal(zero.solve(meshes[:2]), 0.25)  # any weights fit: the ridge picks clamp(0)


def test_dispatch_registers_the_cpp_backend():
    assert mf.available_backends("solve_blendshapes", torch.device("cpu"))["cpp"] is None
    assert resolve("solve_blendshapes", "cpp", torch.device("cpu")) is cpp_solve_blendshapes


def test_bad_input_is_refused_with_its_name():
    neutral, deltas, mask = basis(9, 2)
    with pytest.raises(ValueError, match=r"bounds \(lo, hi\): expected lo <= hi.*found \(2, 1\)"):
        _core.BlendshapeSolver(neutral, deltas, None, 2.0, 1.0)
    with pytest.raises(ValueError, match="bounds"):
        _core.BlendshapeSolver(neutral, deltas, None, math.nan, 1.0)
    with pytest.raises(ValueError, match="smoothing: expected a finite value >= 0, found -1"):
        _core.BlendshapeSolver(neutral, deltas, None, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match=r"deltas shape: expected \[2, 9, 3\], found \[2, 8, 3\]"):
        _core.BlendshapeSolver(neutral, np.ascontiguousarray(deltas[:, :8]), None)
    with pytest.raises(ValueError, match=r"weights_mask shape: expected \[9\]"):
        _core.BlendshapeSolver(neutral, deltas, mask[:4])
    bad = mask.copy()
    bad[3] = -0.5
    with pytest.raises(ValueError, match=r"weights_mask\[3\]: expected a finite weight >= 0, found -0.5"):
        _core.BlendshapeSolver(neutral, deltas, bad)
    with pytest.raises(ValueError, match="n_shapes: expected 1 .. 256 blendshapes, found 257"):
        _core.BlendshapeSolver(*basis(9, 257)[:2], None)
    with pytest.raises(ValueError, match="deltas dtype: expected float32, found float64"):
        _core.BlendshapeSolver(neutral, deltas.astype(np.float64), None)
    with pytest.raises(TypeError, match="neutral: expected a numpy float32 array"):
        _core.BlendshapeSolver([[0.0, 0.0, 0.0]], deltas, None)
    s = _core.BlendshapeSolver(neutral, deltas, None)
    meshes = meshes_from(neutral, deltas, np.full((3, 2), 0.5))
    meshes[2, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"frames\[2\] vertex 4: expected finite coordinates, found nan"):
        s.solve(meshes)
    with pytest.raises(ValueError, match=r"meshes shape: expected \[3, 9, 3\], found \[3, 8, 3\]"):
        s.solve(np.ascontiguousarray(meshes[:, :8]))
    with pytest.raises(ValueError, match="bounds"):  # through the dispatched implementation too
        cpp_solve_blendshapes(*(torch.from_numpy(a) for a in (meshes, neutral, deltas)), None, 1.0, 0.0, 0.0)
