"""The reference log-mel against librosa (torchaudio itself has no CPU build here)."""
import librosa
import numpy as np
import pytest
import torch

import meshtalk_fast as mf


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
    w = mf.audio.hann_window(800, torch.float64)
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
    with pytest.raises(mf.BackendUnavailable, match="cpp"):
        mf.log_mel(torch.zeros(2000), backend="cpp")
