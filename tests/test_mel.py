"""The reference log-mel against librosa (torchaudio itself has no CPU build here), and the C++ core's
log-mel (backend "cpp") against the reference."""
import librosa
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import _core


def librosa_log_mel(x: np.ndarray) -> np.ndarray:
    """torchaudio's MelSpectrogram(16000, n_fft=2048, win_length=800, hop=160, n_mels=80) + log."""
    mel = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=2048, hop_length=160, win_length=800,
                                         window="hann", center=True, pad_mode="reflect", power=2.0,
                                         n_mels=80, fmin=0.0, fmax=8000.0, htk=True, norm=None)
    return np.log(np.maximum(mel, 1e-10))


def test_filterbank_matches_librosa():
    ours = mf.mel_filterbank(dtype=torch.float64).numpy()
    ref = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=80, fmin=0.0, fmax=8000.0, htk=True, norm=None,
                              dtype=np.float64).T
    assert ours.shape == (1025, 80)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_window_is_periodic_hann():
    w = mf.ops.mel.hann_window(800, torch.float64)
    np.testing.assert_allclose(w.numpy(), librosa.filters.get_window("hann", 800, fftbins=True), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_mel_matches_librosa_on_real_speech(speech, dtype):
    x = speech[:3 * 16000 + 77]  # odd length: 3 s of the real sentence
    ours = mf.log_mel(x.to(dtype), backend="torch")
    assert ours.shape == (80, 1 + x.shape[0] // 160) and ours.dtype == dtype
    ref = librosa_log_mel(x.double().numpy())
    err = np.abs(ours.double().numpy() - ref)
    assert err.max() <= 1e-3, f"max |log-mel - librosa| = {err.max():.2e} at {np.unravel_index(err.argmax(), err.shape)}"


def test_log_mel_per_window_leading_dims(speech):
    windows = mf.audio_windows(speech)[:5].reshape(1, 5, 16000)
    out = mf.log_mel(windows, backend="torch")
    assert out.shape == (1, 5, 80, 101)
    for k in range(5):
        ref = librosa_log_mel(windows[0, k].double().numpy())
        assert np.abs(out[0, k].double().numpy() - ref).max() <= 1e-3


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")  # librosa notes short inputs; expected here
@pytest.mark.parametrize("n", [1025, 1026, 1185, 16001])
def test_odd_lengths_and_silence_floor(n):
    x = torch.randn(n, dtype=torch.float64)
    out = mf.log_mel(x, backend="torch")
    assert out.shape == (80, 1 + n // 160)
    np.testing.assert_allclose(out.numpy(), librosa_log_mel(x.numpy()), atol=1e-6)
    silent = mf.log_mel(torch.zeros(n), backend="torch")
    assert torch.all(silent == float(np.log(np.float32(1e-10))))


def test_log_mel_bad_input():
    with pytest.raises(ValueError, match="at least 1025 samples"):
        mf.log_mel(torch.zeros(1024))
    with pytest.raises(ValueError, match="must be finite"):
        mf.log_mel(torch.tensor([0.0, float("nan")] * 600))
    with pytest.raises(TypeError, match="floating-point"):
        mf.log_mel(torch.zeros(2000, dtype=torch.int32))
    with pytest.raises(ValueError, match="backend must be one of"):
        mf.log_mel(torch.zeros(2000), backend="cuda")
    with pytest.raises(mf.BackendUnavailable, match="backend 'cpp' cannot run on device meta"):
        mf.log_mel(torch.zeros(2000, device="meta"), backend="cpp")


# ------------------------------------------------------------------------------------------ C++ core
# Tolerance of the C++ log-mel. Both it and the reference compute in float32, so their log-mel errors
# grow where a mel value is far below its frame's energy (the FFT's rounding error is relative to the
# whole frame): on the real sentence (log-mel from -13.4 to 3.5) each lies up to ~1e-4 from the float64
# result. So the check is (a) |cpp - torch float32| <= 2e-4 everywhere and (b) the C++ result is no
# less accurate than the float32 reference: max |cpp - float64| <= 2 max |torch - float64| + 1e-6.
CPP_ATOL = 2e-4


def check_cpp_log_mel(x: torch.Tensor, **kwargs) -> torch.Tensor:
    cpp = mf.log_mel(x, backend="cpp", **kwargs)
    ref32 = mf.torch_log_mel(x.float())
    ref64 = mf.torch_log_mel(x.double())
    assert cpp.shape == ref32.shape and cpp.dtype == torch.float32
    diff = (cpp - ref32).abs()
    where = np.unravel_index(int(diff.argmax()), diff.shape)
    assert float(diff.max()) <= CPP_ATOL, (f"max |cpp - torch| = {float(diff.max()):.2e} at {where}: "
                                           f"cpp {float(cpp[where]):.6f}, torch {float(ref32[where]):.6f}")
    err_cpp = float((cpp.double() - ref64).abs().max())
    err_ref = float((ref32.double() - ref64).abs().max())
    assert err_cpp <= 2 * err_ref + 1e-6, f"cpp is {err_cpp:.2e} from float64, the float32 reference {err_ref:.2e}"
    return cpp


def test_cpp_filters_equal_the_reference_ones():
    window, fb = _core.standard_mel_filters()
    assert np.array_equal(window, mf.ops.mel.hann_window(800).numpy())
    assert np.array_equal(fb, mf.mel_filterbank().numpy())
    # every frequency bin touches at most two triangles: the kernel's sparse filterbank
    assert int((fb != 0).sum(axis=1).max()) == 2


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("L", [1025, 1026, 16000, 16000 * 3 + 77])
def test_cpp_matches_reference_odd_lengths(N, L):
    x = 0.01 * torch.randn(N, L, generator=torch.Generator().manual_seed(L + N))
    out = check_cpp_log_mel(x)
    assert out.shape == (N, 80, 1 + L // 160)


def test_cpp_matches_reference_on_real_speech(speech):
    check_cpp_log_mel(speech)                                   # the whole sentence, [L]
    check_cpp_log_mel(mf.audio_windows(speech)[:7])             # 7 windows, [7, 16000]
    check_cpp_log_mel(speech[:16000 * 2 + 33].reshape(1, 1, -1))  # leading dims are kept


def test_cpp_threads_and_batch_do_not_change_results(speech):
    x = torch.stack([speech[:20011], speech[5000:25011], speech[:20011]])
    one = mf.log_mel(x, backend="cpp", threads=1)
    assert torch.equal(one, mf.log_mel(x, backend="cpp", threads=2))
    assert torch.equal(one[0], one[2])  # a row does not depend on its neighbours
    assert torch.equal(one[1], mf.log_mel(x[1], backend="cpp"))


def test_cpp_silence_dtypes_and_auto():
    silent = mf.log_mel(torch.zeros(2, 1500), backend="cpp")
    assert torch.all(silent == float(np.log(np.float32(1e-10))))
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


def test_cpp_bad_input():
    with pytest.raises(ValueError, match="at least 1025 samples along the last dim, got 1024"):
        mf.log_mel(torch.zeros(3, 1024), backend="cpp")
    with pytest.raises(ValueError, match="must be finite"):
        mf.log_mel(torch.tensor([0.0, float("inf")] * 600), backend="cpp")
    # the binding checks what it is handed
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
    torch.testing.assert_close(ours, ref, rtol=0, atol=CPP_ATOL)
