"""The log-mel (op "log_mel"): the reference against librosa (torchaudio itself has no CPU build here), and
every backend (torch, triton, cpp) against the reference on real speech, odd lengths, leading dims, input
dtypes and silence; each fast path's own parts (the core's filters, threads and binding; the kernel's
tiles), dispatch and bad input.

Triton runs on the GPU where there is one, else on the CPU through the interpreter (conftest.py sets
TRITON_INTERPRET=1 once, before triton is imported)."""
import librosa
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import assert_close, backends_of, device_of, require_backend
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp
from meshtalk_fast.backends import triton as _triton
from meshtalk_fast.base import dispatch as _dispatch

MEL = backends_of("log_mel")
FLOOR = float(np.log(np.float32(1e-10)))  # log of the clamp: silence
# Tolerances against the reference. Every backend computes in float32 (float64 inputs too, except the
# reference), so its log-mel errors grow where a mel value is far below its frame's energy (the FFT's rounding
# error is relative to the whole frame): on the real sentence (log-mel from -13.4 to 3.5) each lies up to ~1e-4
# from the float64 result. So the check is (a) |out - torch float32| <= FAST_ATOL everywhere, (b) the backend is
# no less accurate than the float32 reference: max |out - float64| <= 2 max |torch - float64| + 1e-6, and
# (c) max |out - float64| <= LOG_ATOL.
FAST_ATOL = 2e-4
LOG_ATOL = 1e-3


def librosa_log_mel(x: np.ndarray) -> np.ndarray:
    """torchaudio's MelSpectrogram(16000, n_fft=2048, win_length=800, hop=160, n_mels=80) + log."""
    mel = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=2048, hop_length=160, win_length=800,
                                         window="hann", center=True, pad_mode="reflect", power=2.0,
                                         n_mels=80, fmin=0.0, fmax=8000.0, htk=True, norm=None)
    return np.log(np.maximum(mel, 1e-10))


def backend_device(backend: str) -> torch.device:
    """The device of ``backend``'s inputs, after skipping where it cannot run the log-mel."""
    device = device_of(backend)
    require_backend("log_mel", backend, device)
    return device


def check_log_mel(backend: str, x: torch.Tensor, what: str, **kwargs) -> torch.Tensor:
    """``log_mel(x)`` on ``backend`` against the reference (see the tolerances above); returns it."""
    out = mf.log_mel(x, backend=backend, **kwargs)
    x = x.detach().cpu()
    ref32, ref64 = mf.torch_log_mel(x.float()), mf.torch_log_mel(x.double())
    assert out.shape == ref64.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref64.shape)}"
    assert out.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32), f"{what}: {out.dtype}"
    assert_close(f"{what}: {backend} against the float32 reference", out, ref32, FAST_ATOL)
    err_out = float((out.detach().cpu().double() - ref64).abs().max())
    err_ref = float((ref32.double() - ref64).abs().max())
    assert err_out <= 2 * err_ref + 1e-6, f"{what}: {backend} is {err_out:.2e} from float64, the float32 " \
                                          f"reference {err_ref:.2e}"
    assert_close(f"{what}: {backend} against the float64 reference", out, ref64, LOG_ATOL)
    return out


# ------------------------------------------------------------------------------------------ the reference
def test_filterbank_matches_librosa():
    ours = mf.mel_filterbank(dtype=torch.float64).numpy()
    ref = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=80, fmin=0.0, fmax=8000.0, htk=True, norm=None,
                              dtype=np.float64).T
    assert ours.shape == (1025, 80)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_window_is_periodic_hann():
    w = mf.ops.mel.hann_window(800, torch.float64)
    np.testing.assert_allclose(w.numpy(), librosa.filters.get_window("hann", 800, fftbins=True), atol=1e-12)


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")  # librosa notes short inputs; expected here
@pytest.mark.parametrize("n", [1025, 1026, 1185, 16001])
def test_reference_odd_lengths_and_silence_floor(n):
    x = torch.randn(n, dtype=torch.float64)
    out = mf.log_mel(x, backend="torch")
    assert out.shape == (80, 1 + n // 160)
    np.testing.assert_allclose(out.numpy(), librosa_log_mel(x.numpy()), atol=1e-6)
    silent = mf.log_mel(torch.zeros(n), backend="torch")
    assert torch.all(silent == FLOOR)


# ------------------------------------------------------------------------------------------ every backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", MEL)
def test_log_mel_matches_librosa_on_real_speech(backend, speech, dtype):
    device = backend_device(backend)
    x = speech[:3 * 16000 + 77]  # odd length: 3 s of the real sentence
    ours = check_log_mel(backend, x.to(device, dtype), f"3 s {dtype}")
    assert ours.shape == (80, 1 + x.shape[0] // 160) and ours.dtype == dtype
    ref = librosa_log_mel(x.double().numpy())
    err = np.abs(ours.double().cpu().numpy() - ref)
    assert err.max() <= 1e-3, f"max |log-mel - librosa| = {err.max():.2e} at {np.unravel_index(err.argmax(), err.shape)}"


@pytest.mark.parametrize("backend", MEL)
def test_on_real_speech(backend, speech):
    device = backend_device(backend)
    x = speech.to(device)
    check_log_mel(backend, x, "the whole sentence [L]")
    check_log_mel(backend, mf.audio_windows(x)[:7], "7 windows [7, 16000]")
    check_log_mel(backend, x[:16000 * 2 + 33].reshape(1, 1, -1), "leading dims are kept [1, 1, L]")
    two = x[8000:8000 + 2 * 16000 + 77]  # ~2 s of the sentence, odd length
    out = check_log_mel(backend, two, "2 s")
    assert float((out.cpu().double() - mf.torch_log_mel(two.cpu().double())).abs().max()) < 1e-4


@pytest.mark.parametrize("backend", MEL)
def test_per_window_leading_dims_read_strided_windows(backend, speech):
    device = backend_device(backend)
    windows = mf.audio_windows(speech.to(device))[20:26].reshape(2, 3, 16000)  # B=2, T=3 real windows
    assert windows.stride(-2) == 16000 // 30  # a view into the utterance: the kernels read it in place
    out = check_log_mel(backend, windows, "per-window B=2 T=3")
    assert out.shape == (2, 3, 80, 101)
    for b in range(2):
        for k in range(3):
            ref = librosa_log_mel(windows[b, k].double().cpu().numpy())
            assert np.abs(out[b, k].double().cpu().numpy() - ref).max() <= 1e-3


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("L", [1025, 1026, 16000, 16001, 16000 * 3 + 77])
@pytest.mark.parametrize("backend", MEL)
def test_matches_reference_odd_lengths(backend, N, L):
    device = backend_device(backend)
    x = 0.01 * torch.randn(N, L, generator=torch.Generator().manual_seed(L + N))
    out = check_log_mel(backend, x.to(device), f"noise [{N}, {L}]")
    assert out.shape == (N, 80, 1 + L // 160)


@pytest.mark.parametrize("n", [1025, 1026, 1500, 16001])
@pytest.mark.parametrize("backend", MEL)
def test_silence_is_the_floor(backend, n):
    device = backend_device(backend)
    silent = mf.log_mel(torch.zeros(2, n, device=device), backend=backend)
    assert silent.shape == (2, 80, 1 + n // 160)
    if backend == "triton":  # the kernel's log may be an ulp off on a GPU
        torch.testing.assert_close(silent.cpu(), torch.full_like(silent.cpu(), FLOOR), rtol=0, atol=1e-6)
    else:
        assert torch.all(silent == FLOOR)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend", MEL)
def test_input_dtypes(backend, speech, dtype):
    """16-bit inputs are computed (and returned) in float32, float64 inputs returned in float64."""
    device = backend_device(backend)
    check_log_mel(backend, speech[16000:16000 + 4000].to(device, dtype), f"{dtype} input")


@pytest.mark.parametrize("backend", MEL)
def test_bad_input(backend):
    device = backend_device(backend)
    for shape in [(1024,), (3, 1024)]:
        with pytest.raises(ValueError, match="expected at least 1025 samples along the last dim, got 1024"):
            mf.log_mel(torch.zeros(shape, device=device), backend=backend)
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN and 1 inf"):
        mf.log_mel(torch.tensor([0.0, float("nan"), float("inf")] + [0.0] * 1200, device=device), backend=backend)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        mf.log_mel(torch.zeros(2000, dtype=torch.int32, device=device), backend=backend)


# ------------------------------------------------------------------------------------------ dispatch
def test_auto_and_backend_errors():
    cpu = torch.device("cpu")
    expected = mf.torch_log_mel if _cpp.core_unavailable(cpu) else _cpp.cpp_log_mel
    assert _dispatch.resolve("log_mel", "auto", cpu) is expected  # the core where it is built
    with pytest.raises(ValueError, match="backend must be one of"):
        mf.log_mel(torch.zeros(2000), backend="cuda")
    with pytest.raises(mf.BackendUnavailable, match="backend 'cpp' cannot run on device meta"):
        mf.log_mel(torch.zeros(2000, device="meta"), backend="cpp")


def test_cpp_dtypes_auto_and_threads_option():
    require_backend("log_mel", "cpp")
    x = 0.01 * torch.randn(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out64 = mf.log_mel(x, backend="cpp")  # computed in float32, returned in the input's dtype
    assert out64.dtype == torch.float64
    assert torch.equal(out64.float(), mf.log_mel(x.float(), backend="cpp"))
    # auto: the core for float32 CPU input; float64 and inputs needing a gradient stay on the reference
    assert torch.equal(mf.log_mel(x.float()), mf.log_mel(x.float(), backend="cpp"))
    assert torch.equal(mf.log_mel(x), mf.torch_log_mel(x))
    # threads is an option of the core only: refused (not ignored) when auto picks the reference
    with pytest.raises(ValueError, match="threads applies to backend 'cpp' only, got threads=1 with backend 'torch' "
                                         r"\(picked by 'auto' for cpu float64; cpp: float64 input"):
        mf.log_mel(x, threads=1)
    g = x.float().requires_grad_()
    assert mf.log_mel(g).requires_grad
    with pytest.raises(mf.BackendUnavailable, match="computes no gradients"):
        mf.log_mel(g, backend="cpp")
    with pytest.raises(ValueError, match="threads applies to backend 'cpp' only"):
        mf.log_mel(x, backend="torch", threads=1)


# ------------------------------------------------------------------------------------------ the C++ core
def test_cpp_filters_equal_the_reference_ones():
    window, fb = _core.standard_mel_filters()
    assert np.array_equal(window, mf.ops.mel.hann_window(800).numpy())
    assert np.array_equal(fb, mf.mel_filterbank().numpy())
    # every frequency bin touches at most two triangles: the kernel's sparse filterbank
    assert int((fb != 0).sum(axis=1).max()) == 2


def test_cpp_threads_and_batch_do_not_change_results(speech):
    x = torch.stack([speech[:20011], speech[5000:25011], speech[:20011]])
    one = mf.log_mel(x, backend="cpp", threads=1)
    assert torch.equal(one, mf.log_mel(x, backend="cpp", threads=2))
    assert torch.equal(one[0], one[2])  # a row does not depend on its neighbours
    assert torch.equal(one[1], mf.log_mel(x[1], backend="cpp"))


def test_cpp_binding_bad_input():
    """The binding checks what it is handed."""
    with pytest.raises(ValueError, match=r"expected at least 1025 samples|L >= 1025"):
        _core.log_mel(np.zeros((2, 1000), np.float32))
    with pytest.raises(ValueError, match=r"x shape: expected 2 dimensions \[N, L\], found \[2000\]"):
        _core.log_mel(np.zeros(2000, np.float32))
    with pytest.raises(ValueError, match="x dtype: expected float32, found float64"):
        _core.log_mel(np.zeros((1, 2000)))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.log_mel(np.zeros((2000, 2), np.float32).T)
    with pytest.raises(TypeError, match="expected a numpy float32 array"):
        _core.log_mel([0.0] * 2000)
    with pytest.raises(ValueError, match=r"out shape: expected \[1, 80, 13\], found \[1, 80, 12\]"):
        _core.log_mel(np.zeros((1, 2000), np.float32), out=np.zeros((1, 80, 12), np.float32))
    with pytest.raises(ValueError, match="window and fb: expected both arrays or both None"):
        _core.log_mel(np.zeros((1, 2000), np.float32), window=np.ones(800, np.float32))
    fb = mf.mel_filterbank().numpy().copy()
    fb[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"mel filterbank \[1025, 80\] entry \[3, 4\]: expected a finite value"):
        _core.log_mel(np.zeros((1, 2000), np.float32), window=np.ones(800, np.float32), fb=fb)
    with pytest.raises(ValueError, match="threads: expected 0 \\(all cores\\) or a thread count"):
        _core.log_mel(np.zeros((1, 2000), np.float32), threads=-1)


def test_cpp_custom_window_and_filterbank(speech):
    x = speech[:8000]
    window = torch.hamming_window(800, periodic=True)
    fb = mf.mel_filterbank() * torch.linspace(0.5, 2.0, 80)
    ours = torch.from_numpy(_core.log_mel(x[None].numpy(), window=window.numpy(), fb=fb.numpy()))[0]
    ref = mf.torch_log_mel(x, window, fb)
    torch.testing.assert_close(ours, ref, rtol=0, atol=FAST_ATOL)


# ------------------------------------------------------------------------------------------ the Triton kernel
def test_triton_other_tiles_give_the_same_result(speech):
    device = backend_device("triton")
    mel = _triton.kernel_module("mel")
    x = speech[30000:30000 + 1500].to(device)
    a = mel.log_mel_2d(x[None], block_t=32, block_m=32, block_k=128)  # 800 taps in exact tiles
    b = mel.log_mel_2d(x[None], block_t=16, block_m=64, block_k=256)  # padded taps and bins
    ref64 = mf.torch_log_mel(x.cpu().double())
    assert_close("tiles 32/32/128", a[0], ref64, LOG_ATOL)
    assert_close("tiles 16/64/256", b[0], ref64, LOG_ATOL)
    with pytest.raises(ValueError, match="block_m must be a power of two >= 16, got 48"):
        mel.log_mel_2d(x[None], block_m=48)
