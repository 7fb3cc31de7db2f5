"""Audio loading and the frame clock, against independent re-statements of the release."""
import numpy as np
import pytest
import soundfile as sf
import torch

import meshtalk_fast as mf


def released_chunks(audio: torch.Tensor, fps: int) -> torch.Tensor:
    """The release's chunking, restated from its description with a Python range."""
    spf = 16000 // fps
    pad = (16000 - spf) // 2
    padded = torch.cat([torch.zeros(pad), audio, torch.zeros(pad)])
    centres = list(range(8000, padded.shape[0] - 8000, spf))
    return torch.stack([padded[c - 8000:c + 8000] for c in centres])


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


@pytest.mark.parametrize("n", [535, 1066, 16000, 16533, 67552])
@pytest.mark.parametrize("fps", [30, 25, 60])
def test_released_clock_matches_release(n, fps):
    audio = torch.randn(n)
    if mf.num_frames(n, fps, "released") == 0:
        with pytest.raises(ValueError, match="too short"):
            mf.audio_windows(audio, fps)
        return
    torch.testing.assert_close(mf.audio_windows(audio, fps), released_chunks(audio, fps), rtol=0, atol=0)


def test_exact_clock_has_no_drift():
    fps, minutes = 30, 2
    n = 16000 * 60 * minutes
    audio = torch.arange(n, dtype=torch.float64)  # sample value = its index
    w = mf.audio_windows(audio, fps, clock="exact")
    assert w.shape == (fps * 60 * minutes, 16000)
    centres = w[:, 8000]  # the sample at the window centre
    exact = (torch.arange(w.shape[0], dtype=torch.float64) + 0.5) * 16000 / fps
    assert float((centres - exact).abs().max()) <= 0.5
    released = mf.audio_windows(audio, fps)[:, 8000]
    # the released clock lags by 1/3 sample per frame: 1200 samples (75 ms) after two minutes
    assert float(exact[-1] - released[w.shape[0] - 1]) > 1000
    # the first windows coincide with the released clock; the left edge is zero-padded
    assert torch.equal(w[0], mf.audio_windows(audio, fps)[0])


def test_windows_bad_input():
    with pytest.raises(ValueError, match=r"audio must have 1 dimensions"):
        mf.audio_windows(torch.zeros(2, 20000))
    with pytest.raises(ValueError, match="clock must be one of"):
        mf.audio_windows(torch.zeros(20000), clock="wall")
    with pytest.raises(ValueError, match="fps must be an integer"):
        mf.audio_windows(torch.zeros(20000), fps=0)
    with pytest.raises(ValueError, match="too short"):
        mf.audio_windows(torch.zeros(100))


def test_lookahead_shifts_the_window():
    audio = torch.arange(40000, dtype=torch.float64)
    for clock in ("released", "exact"):
        centred = mf.audio_windows(audio, 30, clock)
        early = mf.audio_windows(audio, 30, clock, lookahead=2000)
        assert early.shape == centred.shape
        # window k now ends 2000 samples after the frame centre instead of 8000
        k = 40
        assert float(early[k, -1]) == float(centred[k, 8000]) + 1999
        assert float(early[k, 14000]) == float(centred[k, 8000])
    with pytest.raises(ValueError, match=r"lookahead must be an integer number of samples in \[0, 16000\]"):
        mf.audio_windows(audio, lookahead=16001)
