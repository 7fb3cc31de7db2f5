"""The fused Triton log-mel against the float64 PyTorch reference, on real speech.

Without CUDA the kernel runs on the CPU through the Triton interpreter (TRITON_INTERPRET=1 is set once in conftest.py,
before triton is imported); with CUDA it runs on the GPU.
"""
import os
import subprocess
import sys
import pathlib

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

import pytest  # noqa: E402

import meshtalk_fast as mf  # noqa: E402
from meshtalk_fast.backends import triton as _triton  # noqa: E402

LOG_ATOL = 1e-3  # absolute error allowed on the log scale vs the float64 reference


def assert_log_mel_close(out, x, what):
    ref = mf.torch_log_mel(x.detach().cpu().double())
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    err = (out.detach().cpu().double() - ref).abs()
    worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
    assert float(err.max()) <= LOG_ATOL, f"{what}: max |log-mel error| {float(err.max()):.2e} at {worst}"
    return float(err.max())


def test_streaming_framing_on_real_speech(speech):
    x = speech[8000:8000 + 2 * 16000 + 77].to(DEVICE)  # ~2 s of the sentence, odd length
    out = mf.log_mel(x, backend="triton")
    assert out.dtype == torch.float32 and out.shape == (80, 1 + x.shape[0] // 160)
    assert assert_log_mel_close(out, x, "streamed 2 s") < 1e-4


def test_per_window_framing_reads_strided_windows(speech):
    windows = mf.audio_windows(speech.to(DEVICE))[20:26].reshape(2, 3, 16000)  # B=2, T=3 real windows
    assert windows.stride(-2) == 16000 // 30  # a view into the utterance: read in place, no copy
    out = mf.log_mel(windows, backend="triton")
    assert out.shape == (2, 3, 80, 101)
    assert_log_mel_close(out, windows, "per-window B=2 T=3")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtypes(speech, dtype):
    x = speech[16000:16000 + 4000].to(DEVICE, dtype)
    out = mf.log_mel(x, backend="triton")
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_log_mel_close(out, x, f"{dtype} input")


@pytest.mark.parametrize("n", [1025, 1026, 16001])
def test_odd_lengths_and_silence(n):
    g = torch.Generator().manual_seed(n)
    x = (0.01 * torch.randn(n, generator=g)).to(DEVICE)
    out = mf.log_mel(x, backend="triton")
    assert out.shape == (80, 1 + n // 160)
    assert_log_mel_close(out, x, f"noise of {n} samples")
    silent = mf.log_mel(torch.zeros(2, n, device=DEVICE), backend="triton")
    floor = mf.torch_log_mel(torch.zeros(n))
    torch.testing.assert_close(silent.cpu(), floor.expand(2, -1, -1), rtol=0, atol=1e-6)


def test_other_tiles_give_the_same_result(speech):
    mel = _triton.kernel_module("mel")
    x = speech[30000:30000 + 1500].to(DEVICE)
    a = mel.log_mel_2d(x[None], block_t=32, block_m=32, block_k=128)  # 800 taps in exact tiles
    b = mel.log_mel_2d(x[None], block_t=16, block_m=64, block_k=256)  # padded taps and bins
    assert_log_mel_close(a[0], x, "tiles 32/32/128")
    assert_log_mel_close(b[0], x, "tiles 16/64/256")
    with pytest.raises(ValueError, match="block_m must be a power of two >= 16, got 48"):
        mel.log_mel_2d(x[None], block_m=48)


def test_bad_input():
    with pytest.raises(ValueError, match="expected at least 1025 samples along the last dim, got 1024"):
        mf.log_mel(torch.zeros(1024, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN and 1 inf"):
        mf.log_mel(torch.tensor([0.0, float("nan"), float("inf")] + [0.0] * 1200, device=DEVICE), backend="triton")
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        mf.log_mel(torch.zeros(2000, dtype=torch.int32, device=DEVICE), backend="triton")


def test_unavailable_reasons(monkeypatch):
    monkeypatch.setitem(_triton._state, "triton", None)
    assert "triton is not installed" in _triton.triton_unavailable(torch.device("cpu"))
    with pytest.raises(mf.BackendUnavailable, match="triton is not installed"):
        mf.log_mel(torch.zeros(2000), backend="triton")


def test_cpu_without_interpreter_is_refused():
    """TRITON_INTERPRET is process-wide, so this runs in a fresh interpreter without it."""
    script = (
        "import torch, meshtalk_fast as mf\n"
        "calls = [lambda: mf.log_mel(torch.zeros(2000), backend='triton'),\n"
        "         lambda: mf.masked_vertex_losses([torch.zeros(2, 5, 3)], torch.zeros(2, 5, 3), torch.ones(1, 5),"
        " backend='triton'),\n"
        "         lambda: mf.lip_vertex_error(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.ones(5),"
        " backend='triton')]\n"
        "for call in calls:\n"
        "    try:\n"
        "        call()\n"
        "    except mf.BackendUnavailable as exc:\n"
        "        print('UNAVAILABLE:', exc)\n"
        "    else:\n"
        "        print('RAN')\n"
        "print('AUTO:', float(mf.log_mel(torch.zeros(2000)).max()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    package_root = str(pathlib.Path(mf.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    unavailable = [line for line in lines if line.startswith("UNAVAILABLE:")]
    assert len(unavailable) == 3, proc.stdout
    for line in unavailable:
        assert "tensor is on cpu and TRITON_INTERPRET is not set" in line, line
    assert lines[-1] == f"AUTO: {float(mf.torch_log_mel(torch.zeros(2000)).max())}"  # auto: the reference
