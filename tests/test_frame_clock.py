"""The frame clock (ops/frame_clock.py): one 1 s window per video frame, the released clock against an
independent re-statement of the release, the exact clock without drift, the lookahead, the centre of one frame, bad input (the C++
core's clock, csrc/core/frame_clock.cpp, is checked against the frame count in tests/cpp/test_capi.cpp)."""
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.ops.frame_clock import frame_centre, frame_centres


def released_chunks(audio: torch.Tensor, fps: int) -> torch.Tensor:
    """The release's chunking, restated from its description with a Python range."""
    spf = 16000 // fps
    pad = (16000 - spf) // 2
    padded = torch.cat([torch.zeros(pad), audio, torch.zeros(pad)])
    centres = list(range(8000, padded.shape[0] - 8000, spf))
    return torch.stack([padded[c - 8000:c + 8000] for c in centres])


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


def test_frame_centre_matches_the_frame_clock():
    for clock in ("released", "exact"):
        for fps in (25, 30, 60):
            ref = frame_centres(400, fps, clock).tolist()
            assert [frame_centre(k, fps, clock) for k in range(400)] == ref
