"""The dispatch contract (base/dispatch.py): one table per backend, rules that see the inputs (Triton's:
installed, on a GPU or under the interpreter), options checked by ``resolve`` with one message, ``info``
reporting inference and training apart."""
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import meshtalk_fast as mf
from helpers import needs_core
from meshtalk_fast import backends
from meshtalk_fast.base import dispatch
from meshtalk_fast.base.dispatch import Impl, Inputs, resolve
from meshtalk_fast.backends import cpp as _cpp
from meshtalk_fast.backends import triton as _triton
from meshtalk_fast.cli import main as cli

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mf.MeshTalk(n_vertices=30, heads=2, classes=4).eval()


def test_backend_only_option_with_the_reference_is_a_clear_error(tiny):
    """Was ``TypeError: _torch_decode() got an unexpected keyword argument 'threads'``."""
    codes = torch.zeros(1, 3, 2, 4)
    with pytest.raises(ValueError, match=r"^decode: threads applies to backend 'cpp' only, got threads=2 with "
                                         r"backend 'torch' \(which accepts no options\)$"):
        tiny.decode(torch.zeros(30, 3), codes, backend="torch", threads=2)


@needs_core
def test_backend_only_option_when_auto_picks_the_reference_is_a_clear_error(tiny):
    """Was ``TypeError: _torch_encode_audio() got an unexpected keyword argument 'threads'`` (grad mode)."""
    windows = torch.zeros(1, 2, 16000)
    assert torch.is_grad_enabled()
    with pytest.raises(ValueError, match=r"encode_audio: threads applies to backend 'cpp' only, got threads=2 with "
                                         r"backend 'torch' \(picked by 'auto' for cpu float32 with grad; cpp: the C\+\+ "
                                         r"core computes no gradients"):
        tiny.encode_audio(windows, threads=2)
    with torch.no_grad():  # outside grad mode auto picks the core, which takes threads
        assert tiny.encode_audio(windows, threads=2).shape == (1, 2, 128)


def test_every_option_error_names_op_backend_option_and_what_it_accepts(tiny):
    with pytest.raises(ValueError, match=r"sample: seeds applies to backend 'cpp' only, got seeds=3 with backend "
                                         r"'torch' \(which accepts no options\)"):
        tiny.sample(torch.zeros(1, 2, 128), backend="torch", seeds=3)
    with pytest.raises(ValueError, match=r"sample: colour applies to no backend of this op, got colour='red' with "
                                         r"backend 'torch'"):
        tiny.sample(torch.zeros(1, 2, 128), backend="torch", colour="red")
    with pytest.raises(ValueError, match="log_mel: threads applies to backend 'cpp' only"):
        mf.log_mel(torch.zeros(2000), backend="torch", threads=1)


def test_one_table_per_backend_covers_every_op_with_a_reference():
    tables = backends.tables()
    assert sorted(tables) == ["cpp", "torch", "triton"]
    for name, table in tables.items():
        assert all(isinstance(impl, Impl) for impl in table.values()), name
    # every op has its reference, and every fast path is an op the reference has; the one exception is the
    # live pipeline, whose reference is StreamingAnimator's own orchestration of the step ops (an app)
    assert set(tables["cpp"]) - {"live_session"} <= set(tables["torch"]) <= set(dispatch.ops())
    assert set(tables["triton"]) <= set(tables["torch"])
    assert list(dispatch.ops()) == sorted(set(tables["torch"]) | {"live_session"})


def test_rules_see_device_dtype_and_grad():
    # the core needs CPU tensors; decode needs no gradient; log_mel leaves float64 to the reference under auto
    on_gpu = Inputs(torch.device("cuda"), torch.float32)
    assert "runs on the CPU" in mf.available_backends("decode", on_gpu.device)["cpp"]
    state = dispatch.status("log_mel", Inputs(CPU, torch.float64))
    assert state["torch"] == ("yes", None)
    if _cpp.core_unavailable(CPU) is None:
        assert state["cpp"][0] == "explicit" and "float64" in state["cpp"][1]
        assert dispatch.status("decode", Inputs(CPU, torch.float32, grad=True))["cpp"][0] == "no"
        assert dispatch.status("decode", Inputs(CPU, torch.float32, grad=False))["cpp"] == ("yes", None)
    assert resolve("decode", "auto", Inputs(CPU, torch.float32, grad=True)).__name__ == "torch_decode"


def test_an_unknown_op_or_backend_is_refused():
    with pytest.raises(mf.BackendUnavailable, match="no implementation is installed"):
        resolve("no_such_op", "auto", CPU)
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'triton', 'cpp', got 'gpu'"):
        resolve("decode", "gpu", CPU)
    with pytest.raises(mf.BackendUnavailable, match="masked_vertex_losses has no 'cpp' backend; available: torch, triton"):
        resolve("masked_vertex_losses", "cpp", CPU)


@needs_core
def test_info_reports_inference_and_training_apart(capsys):
    """Was ``decode: cpp=no`` on a machine where decode runs on the core (info asked in grad mode)."""
    assert cli(["info"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip().split(" ")[0] in dispatch.ops()}
    for op in ("decode", "encode_audio", "post_smooth"):
        inference, training = rows[op].split(None, 1)[1].split("  ", 1)
        assert "cpp=yes" in inference and "cpp=no" in training.strip(), rows[op]
    assert "inference (no gradient)" in out and "training (gradients flow)" in out


def test_triton_unavailable_reasons(monkeypatch):
    monkeypatch.setitem(_triton._state, "triton", None)
    assert "triton is not installed" in _triton.triton_unavailable(torch.device("cpu"))
    with pytest.raises(mf.BackendUnavailable, match="triton is not installed"):
        mf.log_mel(torch.zeros(2000), backend="triton")


def test_triton_on_cpu_without_interpreter_is_refused():
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
