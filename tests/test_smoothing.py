"""The released post-smoothing (ops "post_smooth" and "smooth_step"): the reference against a re-statement
of the release, every backend against the reference on whole sequences and streams (delay 0, 4, 8), odd
shapes, dispatch, and bad input."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import backends_of, require_backend
from meshtalk_fast.backends import cpp as _cpp
from meshtalk_fast.base.dispatch import BackendUnavailable, resolve
from meshtalk_fast.ops.smoothing import StreamingSmoother, torch_post_smooth

_core = pytest.importorskip("meshtalk_fast._core", reason="the C++ extension meshtalk_fast._core is not built")

CPU = torch.device("cpu")
POST_SMOOTH = backends_of("post_smooth")
SMOOTH_STEP = backends_of("smooth_step")
# float32 sums of 9 taps of coordinates ~100-400: a few ulp (3e-5) apart from torch's conv1d
TOL = dict(atol=1e-4, rtol=1e-6)


def frames(T, V, seed=0):
    return 100 * torch.randn(T, V, 3, generator=torch.Generator().manual_seed(seed))


def random_masks(V, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(V, generator=g), torch.rand(V, generator=g)


def stream(smoother, x, chunk):
    return torch.cat([smoother.push(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)] + [smoother.close()])


# ------------------------------------------------------------------------------------------ whole sequence
@pytest.mark.parametrize("backend", POST_SMOOTH)
def test_post_smooth_matches_restatement(backend, released_masks):
    """The released masks, a 9-tap Gaussian (sigma 2) over time with replicate padding, restated in numpy."""
    require_backend("post_smooth", backend)
    forehead, neck = released_masks
    geom = torch.randn(11, 6172, 3, dtype=torch.float64)
    taps = np.exp(-0.5 * np.arange(-4, 5) ** 2 / 4.0)
    taps /= taps.sum()

    def smooth(x, m):
        x_np = x.numpy()
        padded = np.concatenate([x_np[:1].repeat(4, 0), x_np, x_np[-1:].repeat(4, 0)])
        s = sum(taps[i] * padded[i:i + x_np.shape[0]] for i in range(9))
        m = m.double().numpy()[None, :, None]
        return torch.from_numpy(s * m + x_np * (1 - m))

    ref = smooth(smooth(geom, forehead), neck)
    with torch.no_grad():
        got = mf.post_smooth(geom, forehead, neck, backend=backend)
    if backend == "torch":
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    else:  # the core computes in float32
        torch.testing.assert_close(got.double(), ref, **TOL)


def test_smooth_geom_keeps_constant_motion_and_checks_its_mask():
    const = torch.ones(6, 4, 3)
    torch.testing.assert_close(mf.smooth_geom(const), const)  # constant motion is kept
    with pytest.raises(ValueError, match=r"mask must have shape \[V=4\]"):
        mf.smooth_geom(const, torch.ones(5))


@pytest.mark.parametrize("T", [1, 3, 7, 90])
@pytest.mark.parametrize("V", [1, 300])
@pytest.mark.parametrize("backend", POST_SMOOTH)
def test_post_smooth_equals_reference(backend, T, V):
    require_backend("post_smooth", backend)
    x, masks = frames(T, V), random_masks(V)
    ref = torch_post_smooth(x, *masks)
    with torch.no_grad():
        got = mf.post_smooth(x, *masks, backend=backend)
    assert got.shape == (T, V, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, **TOL)


def test_cpp_post_smooth_released_masks_and_threads(released_masks):
    x = frames(45, 6172, seed=2)
    ref = torch_post_smooth(x, *released_masks)
    one = _cpp.cpp_post_smooth(x, *released_masks, threads=1)
    two = _cpp.cpp_post_smooth(x, *released_masks, threads=2)
    torch.testing.assert_close(one, ref, **TOL)
    assert torch.equal(one, two)
    # batched in the core: each sequence as alone
    both = _core.post_smooth(torch.stack([x, x.flip(0)]).numpy(), released_masks[0].numpy(),
                             released_masks[1].numpy())
    assert np.array_equal(both[0], one.numpy())
    assert np.array_equal(both[1], _cpp.cpp_post_smooth(x.flip(0), *released_masks).numpy())


def test_post_smooth_dispatch():
    x, masks = frames(11, 30), random_masks(30)
    with torch.no_grad():
        auto = mf.post_smooth(x, *masks)  # float32 CPU outside grad mode: the C++ core
        assert torch.equal(auto, _cpp.cpp_post_smooth(x, *masks))
        x64 = x.double()  # other dtypes keep the reference's precision
        assert torch.equal(mf.post_smooth(x64, *masks), torch_post_smooth(x64, *masks))
    # in grad mode "auto" keeps the differentiable reference; explicit cpp says why it cannot run
    xg = x.clone().requires_grad_()
    out = mf.post_smooth(xg, *masks)
    out.sum().backward()
    assert xg.grad is not None
    with pytest.raises(BackendUnavailable, match="grad mode"):
        mf.post_smooth(x, *masks, backend="cpp")
    assert resolve("post_smooth", "torch", CPU) is torch_post_smooth


def test_cpp_post_smooth_is_the_float32_restatement_bit_for_bit():
    """The core's blend, restated in numpy float32 with its order of operations (s = t0 x0; s += t_k x_k;
    s * m + x * (1 - m)), equals the core bit for bit: its loop is vectorised (and cloned for AVX2 where the
    CPU has it) without fused multiply-adds, so every element is the scalar IEEE computation. Odd sizes:
    a vector body and a scalar tail."""
    T, V = 13, 1001
    x, (forehead, neck) = frames(T, V, seed=9), random_masks(V, seed=3)
    w = np.exp(-0.5 * np.arange(-4, 5, dtype=np.float64) ** 2 / 4.0)
    taps = (w / w.sum()).astype(np.float32)  # the core's taps: computed in double, rounded to float

    def one_pass(frames_np, mask):
        m = np.repeat(mask.numpy().astype(np.float32), 3)
        om = np.float32(1) - m
        out = np.empty_like(frames_np)
        for t in range(T):
            rows = [frames_np[min(max(t + k - 4, 0), T - 1)] for k in range(9)]
            s = taps[0] * rows[0]
            for k in range(1, 9):
                s = s + taps[k] * rows[k]
            out[t] = s * m + frames_np[t] * om
        return out

    flat = x.reshape(T, V * 3).numpy().astype(np.float32)
    want = one_pass(one_pass(flat, forehead), neck).reshape(T, V, 3)
    got = _cpp.cpp_post_smooth(x, forehead, neck).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, want), float(np.abs(got - want).max())


# ------------------------------------------------------------------------------------------ streaming
@pytest.mark.parametrize("delay", [0, 4, 8])
@pytest.mark.parametrize("T,chunk", [(1, 1), (5, 2), (23, 1), (23, 3), (23, 50)])
@pytest.mark.parametrize("backend", SMOOTH_STEP)
def test_streaming_equals_reference_streaming(backend, delay, T, chunk):
    require_backend("smooth_step", backend)
    V = 40
    x, masks = frames(T, V, seed=T), random_masks(V, seed=delay)
    ref = stream(StreamingSmoother(*masks, delay=delay), x, chunk)
    got = stream(resolve("smooth_step", backend, CPU)(*masks, delay=delay), x, chunk)
    assert got.shape == ref.shape == (T, V, 3)
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("delay", [0, 4, 8])
def test_cpp_streaming_frame_t_is_whole_smoothing_of_the_sequence_cut_at_t_plus_delay(delay):
    """The C++ stream gives frame t = post_smooth(frames[:t + delay + 1])[t] (the C++ whole-sequence
    function) bit for bit; delay 8 therefore equals the whole sequence's smoothing."""
    T, V = 26, 50
    x, masks = frames(T, V, seed=3), random_masks(V, seed=4)
    s = _core.StreamingSmoother(masks[0].numpy(), masks[1].numpy(), delay)
    out = []
    for t in range(T):
        emitted = s.push(x[t:t + 1].numpy())
        assert emitted.shape[0] == (1 if t >= delay else 0) and s.pending == min(t + 1, delay)
        out.extend(emitted)
    assert s.pending == min(T, delay)
    out.extend(s.close())
    got = np.stack(out)
    cut = [_cpp.cpp_post_smooth(x[:min(T, t + delay + 1)], *masks)[t].numpy() for t in range(T)]
    assert np.array_equal(got, np.stack(cut))
    if delay == 8:
        assert np.array_equal(got, _cpp.cpp_post_smooth(x, *masks).numpy())


def test_reference_streaming_delay_8_equals_whole_and_released_masks_delay_4(released_masks):
    x = frames(30, 6172, seed=5)
    whole = torch_post_smooth(x, *released_masks)
    torch.testing.assert_close(stream(StreamingSmoother(*released_masks, delay=8), x, 7), whole, **TOL)
    # the released masks overlap by ~1e-6 at most, so delay 4 is within float rounding too (streaming.py)
    torch.testing.assert_close(stream(_cpp.CppStreamingSmoother(*released_masks, delay=4), x, 7), whole, **TOL)


def test_smoother_reset_starts_a_new_stream():
    V = 20
    x, masks = frames(12, V, seed=6), random_masks(V)
    s = _core.StreamingSmoother(masks[0].numpy(), masks[1].numpy(), 4)
    first = np.concatenate([s.push(x.numpy()), s.close()])
    s.reset()
    assert s.pushed == 0 and s.emitted == 0
    again = np.concatenate([s.push(x[:5].numpy()), s.push(x[5:].numpy()), s.close()])
    assert np.array_equal(first, again)


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs():
    V = 10
    masks = random_masks(V)
    with pytest.raises(ValueError, match=r"delay: expected a delay in \[0, 8\] frames \(8: exact\), found 9"):
        _core.StreamingSmoother(masks[0].numpy(), masks[1].numpy(), 9)
    with pytest.raises(ValueError, match=r"delay must be an integer in \[0, 8\] frames, got 9"):
        StreamingSmoother(*masks, delay=9)
    with pytest.raises(ValueError, match=r"neck shape: expected \[10\], found \[11\]"):
        _core.StreamingSmoother(masks[0].numpy(), np.zeros(11, np.float32), 4)
    s = _cpp.CppStreamingSmoother(*masks, delay=4)
    with pytest.raises(ValueError, match=r"frames must have shape \[\*, 10, 3\] \[k, V, 3\], got \[2, 11, 3\]"):
        s.push(torch.zeros(2, 11, 3))
    with pytest.raises(ValueError, match=r"frames shape: expected \[\*, 10, 3\], found \[2, 11, 3\]"):
        _core.StreamingSmoother(masks[0].numpy(), masks[1].numpy(), 4).push(np.zeros((2, 11, 3), np.float32))
    s.push(torch.zeros(2, V, 3))
    assert s.close().shape == (2, V, 3)
    with pytest.raises(RuntimeError, match="after close"):
        s.push(torch.zeros(1, V, 3))
    core = _core.StreamingSmoother(masks[0].numpy(), masks[1].numpy(), 4)
    core.close()
    with pytest.raises(ValueError, match=r"push: expected an open stream .*found a closed stream"):
        core.push(np.zeros((1, V, 3), np.float32))
    with pytest.raises(ValueError, match=r"forehead_mask must have shape \[10\] \[V=10\], got \[9\]"):
        mf.post_smooth(torch.zeros(3, V, 3), masks[0][:9], masks[1])
    with pytest.raises(ValueError, match=r"geom must have shape \[T > 0, V, 3\], got \[0, 10, 3\]"):
        mf.post_smooth(torch.zeros(0, V, 3), *masks)
    with pytest.raises(ValueError, match=r"frames shape: expected 4 dimensions \[B, T, V, 3\], found \[3, 10, 3\]"):
        _core.post_smooth(np.zeros((3, V, 3), np.float32), masks[0].numpy(), masks[1].numpy())
    with pytest.raises(ValueError, match=r"forehead shape: expected \[10\], found \[9\]"):
        _core.post_smooth(np.zeros((1, 3, V, 3), np.float32), np.zeros(9, np.float32), masks[1].numpy())
