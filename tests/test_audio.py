"""Audio loading (ops/audio.py): files and arrays to 16 kHz mono, normalised as released; channel layouts,
resampling, bad input (the frame clock that cuts it into windows is in test_frame_clock.py)."""
import numpy as np
import pytest
import soundfile as sf
import torch

import meshtalk_fast as mf


def test_load_file_is_16k_mono_normalised(assets, speech):
    info = sf.info(str(assets / "example_sentence.wav"))
    assert info.samplerate == 48000
    expected_len = round(info.frames * 16000 / info.samplerate)
    assert abs(speech.shape[0] - expected_len) <= 1
    assert speech.dtype == torch.float32 and speech.dim() == 1
    assert float(speech.abs().mean()) == pytest.approx(0.01, rel=1e-5)


def test_load_array_matches_file(assets, speech):
    raw, rate = sf.read(str(assets / "example_sentence.wav"), dtype="float64")
    from_array = mf.load_audio(raw, sample_rate=rate)
    torch.testing.assert_close(from_array, speech, atol=1e-6, rtol=0)
    # a 16 kHz tensor is only normalised
    x = torch.randn(20000, dtype=torch.float64)
    out = mf.load_audio(x, sample_rate=16000)
    torch.testing.assert_close(out.double(), 0.01 * x / x.abs().mean(), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("layout", ["cl", "lc"])
def test_multichannel_is_averaged(layout):
    x = torch.randn(2, 18000, dtype=torch.float64)
    arr = x if layout == "cl" else x.T
    out = mf.load_audio(arr, sample_rate=16000)
    mono = x.mean(0)
    torch.testing.assert_close(out.double(), 0.01 * mono / mono.abs().mean(), atol=1e-7, rtol=1e-6)


def test_stereo_file_resampled(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, sr)
    out = mf.load_audio(path)
    assert abs(out.shape[0] - 16000) <= 1
    # a 440 Hz tone stays a 440 Hz tone
    spec = np.abs(np.fft.rfft(out.numpy()))
    assert abs(np.argmax(spec) * 16000 / out.shape[0] - 440) < 2


@pytest.mark.parametrize("bad, kwargs, match", [
    (np.zeros(0), {"sample_rate": 16000}, "empty"),
    (np.zeros(1000), {"sample_rate": 16000}, "silent"),
    (np.array([0.1, float("nan"), 0.2] * 400), {"sample_rate": 16000}, "NaN"),
    (np.array([0.1, float("inf"), 0.2] * 400), {"sample_rate": 16000}, "inf"),
    (np.ones((64, 64)), {"sample_rate": 16000}, "ambiguous channel layout"),
    (np.ones((2, 3, 100)), {"sample_rate": 16000}, r"\[C, L\]"),
    (np.ones(1000), {}, "sample_rate must be given"),
    (np.ones(1000), {"sample_rate": 0}, "sample_rate must be an integer"),
    (np.ones(1000), {"sample_rate": -16000}, "sample_rate must be an integer"),
    (np.ones(1000), {"sample_rate": 16000.5}, "sample_rate must be a positive integer"),
    (np.ones(1000), {"sample_rate": float("nan")}, "sample_rate must be a positive integer"),
])
def test_load_bad_input(bad, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mf.load_audio(bad, **kwargs)


def test_load_silence_keep_and_file_errors(tmp_path, assets):
    assert torch.equal(mf.load_audio(np.zeros(100), sample_rate=16000, on_silence="keep"), torch.zeros(100))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mf.load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF1234WAVEnot really")
    with pytest.raises(ValueError, match="could not be read"):
        mf.load_audio(junk)
    with pytest.raises(ValueError, match="disagrees with the rate"):
        mf.load_audio(assets / "example_sentence.wav", sample_rate=16000)
