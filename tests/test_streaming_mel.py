"""StreamingLogMel (streaming/streaming_mel.py): pushed chunks, concatenated, equal log_mel of the whole signal
on the same backend (every backend), frames come out as soon as their samples are in, the buffer stays
bounded, errors; then the C++ core's own StreamingMel (batches of streams, timing, binding errors)."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import backends_of, device_of, push_in_chunks, require_backend

CHUNKS = [[1], [7], [160], [700], [4000], [100000], [0, 3, 1500, 161, 0, 999]]
# Under the interpreter every push that completes a frame runs the kernel (minutes for small chunks): Triton
# streams the larger chunks only.
TRITON_CHUNKS = [[700], [4000]]
STREAMS = [(b, c) for b in backends_of("log_mel") for c in (TRITON_CHUNKS if b == "triton" else CHUNKS)]
WHOLE_ATOL = {"cpp": 0.0}  # the core's frames are bit for bit those of the whole signal; else within 1e-5


def stream(x, chunks, backend):
    """Push ``x`` in chunks of the given sizes (cycled), then close; returns (frames [80, F], outputs)."""
    outs = push_in_chunks(mf.StreamingLogMel(backend=backend), x, chunks)
    for o in outs:
        assert o.dim() == 2 and o.shape[0] == 80
    return torch.cat(outs, dim=1), outs


@pytest.mark.parametrize("backend, chunks", STREAMS, ids=[f"{b}-{'_'.join(map(str, c))}" for b, c in STREAMS])
def test_stream_equals_whole(speech, backend, chunks):
    device = device_of(backend)
    require_backend("log_mel", backend, device)
    if backend == "triton":
        x = speech[20000:20000 + 8011]
    else:
        x = speech[:2 * 16000 + 33] if chunks != [1] else speech[:16000 + 33]
    x = x.to(device)
    out, _ = stream(x, chunks, backend)
    ref = mf.log_mel(x, backend=backend)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=WHOLE_ATOL.get(backend, 1e-5))
    err = (out.cpu().double() - mf.torch_log_mel(x.cpu().double())).abs().max()
    assert float(err) <= 1e-3


def test_each_frame_comes_out_as_soon_as_its_samples_are_in():
    x = 0.01 * torch.randn(3000, generator=torch.Generator().manual_seed(0))
    s = mf.StreamingLogMel(backend="torch")
    emitted_at = []  # number of samples pushed when each frame came out
    for n in range(1, x.shape[0] + 1):
        emitted_at += [n] * s.push(x[n - 1:n]).shape[1]
    # frame t needs samples up to 160 t + 399, and log_mel needs at least 1025 samples in all
    assert emitted_at == [max(1025, 160 * t + 400) for t in range(len(emitted_at))]
    assert len(emitted_at) == (3000 - 400) // 160 + 1
    assert s.close().shape[1] == 3000 // 160 + 1 - len(emitted_at)


def test_buffer_stays_bounded():
    s = mf.StreamingLogMel(backend="torch")
    g = torch.Generator().manual_seed(1)
    peak = 0
    for _ in range(300):  # 300 x 1000 samples = 18.75 s
        s.push(0.01 * torch.randn(1000, generator=g))
        peak = max(peak, s.buffered_samples)
    assert peak <= 1185, f"buffer grew to {peak} samples"
    assert s.samples_seen == 300_000 and s.frames_emitted == (300_000 - 400) // 160 + 1


@pytest.mark.parametrize("backend", backends_of("log_mel"))
def test_float64_stream(speech, backend):
    device = device_of(backend)
    require_backend("log_mel", backend, device, torch.float64)
    x = speech[:5000].double().to(device)
    out, _ = stream(x, [1234], backend)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, mf.log_mel(x, backend=backend), rtol=0, atol=1e-9)


def test_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        mf.StreamingLogMel(backend="cuda")
    s = mf.StreamingLogMel(backend="torch")
    with pytest.raises(ValueError, match=r"samples must have 1 dimensions \[n\] \(mono, 16 kHz\), got shape \[2, 5\]"):
        s.push(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="samples must be finite, got 1 NaN and 0 inf"):
        s.push(torch.tensor([0.0, float("nan")]))
    with pytest.raises(TypeError, match="samples must be a torch.Tensor"):
        s.push([0.0, 1.0])
    s.push(torch.zeros(1000))
    with pytest.raises(ValueError, match="at least 1025 samples along the last dim, got 1000") as short:
        s.close()
    with pytest.raises(ValueError) as whole:
        mf.log_mel(torch.zeros(1000), backend="torch")
    assert str(short.value) == str(whole.value)
    with pytest.raises(RuntimeError, match="push\\(\\) called after close\\(\\)"):
        s.push(torch.zeros(10))
    with pytest.raises(RuntimeError, match="close\\(\\) called twice"):
        s.close()
    with pytest.raises(ValueError, match="at least 1025 samples"):
        mf.StreamingLogMel(backend="torch").close()


# ------------------------------------------------------------------------------------------ C++ core
def cpp_stream(x: np.ndarray, chunks, batch: int = 1):
    """Push ``x [B, n]`` into the core's StreamingMel in chunks (cycled); returns (frames [B, 80, F], stream)."""
    from meshtalk_fast import _core

    s = _core.StreamingMel(batch)
    outs = push_in_chunks(s, x, chunks)
    for o in outs:
        assert o.shape[:2] == (batch, 80) and o.dtype == np.float32
    return np.concatenate(outs, axis=2), s


@pytest.mark.parametrize("chunks", [[1], [159], [160], [533], [4000], [10 ** 6], [0, 3, 1500, 161, 0, 999]])
def test_cpp_stream_equals_whole(speech, chunks):
    """The core's StreamingMel: the pushed chunks' frames equal log_mel of the whole signal, bit for bit."""
    x = (speech[:16000 + 33] if chunks == [1] else speech[:3 * 16000 + 77]).numpy()[None]
    out, s = cpp_stream(x, chunks)
    whole = mf.log_mel(torch.from_numpy(x), backend="cpp").numpy()
    assert out.shape == whole.shape
    assert np.array_equal(out, whole), f"max |stream - whole| = {np.abs(out - whole).max():.2e}"
    np.testing.assert_allclose(out[0], mf.torch_log_mel(torch.from_numpy(x[0])).numpy(), rtol=0, atol=2e-4)
    assert s.closed and s.frames_emitted == whole.shape[-1] and s.samples_seen == x.shape[1]


def test_cpp_stream_batch_of_streams(speech):
    x = np.stack([speech[:20011].numpy(), speech[7000:27011].numpy()])
    out, _ = cpp_stream(x, [777], batch=2)
    assert np.array_equal(out, _core_log_mel(x))


def _core_log_mel(x):
    from meshtalk_fast import _core

    return _core.log_mel(np.ascontiguousarray(x, dtype=np.float32))


def test_cpp_stream_timing_and_bounded_buffer_match_python():
    """Each frame comes out when the Python StreamingLogMel gives it; the buffer stays small."""
    from meshtalk_fast import _core

    x = 0.01 * torch.randn(3000, generator=torch.Generator().manual_seed(0))
    s, ref = _core.StreamingMel(), mf.StreamingLogMel(backend="torch")
    for n in range(1, x.shape[0] + 1):
        got = s.push(x[None, n - 1:n].numpy()).shape[2]
        assert got == ref.push(x[n - 1:n]).shape[1], f"after {n} samples"
    assert s.close().shape[2] == ref.close().shape[1]
    g = torch.Generator().manual_seed(1)
    s.reset()
    peak = 0
    for _ in range(100):
        s.push((0.01 * torch.randn(1, 1000, generator=g)).numpy())
        peak = max(peak, s.buffered_samples)
    assert peak <= 1024 + 1000, f"buffer grew to {peak} samples"
    assert s.samples_seen == 100_000 and s.frames_emitted == (100_000 - 400) // 160 + 1


def test_cpp_stream_errors():
    from meshtalk_fast import _core

    s = _core.StreamingMel(2)
    with pytest.raises(ValueError, match=r"samples shape: expected \[2, \*\], found \[1, 5\]"):
        s.push(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="samples dtype: expected float32, found float64"):
        s.push(np.zeros((2, 5)))
    s.push(np.zeros((2, 1000), np.float32))
    with pytest.raises(ValueError, match="the stream is too short for the log-mel's reflect padding: expected at "
                                         "least 1025 samples, found 1000"):
        s.close()
    with pytest.raises(ValueError, match=r"push\(\) called after close\(\)"):
        s.push(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"close\(\) called twice"):
        s.close()
    s.reset()
    assert s.push(np.zeros((2, 1025), np.float32)).shape == (2, 80, 4)  # usable again after reset
    with pytest.raises(ValueError, match=r"StreamingMel batch: expected an integer in \[1, 4096\], found 0"):
        _core.StreamingMel(0)
