"""Helpers shared by the benchmark suites."""
import os

import pytest
import torch

import meshtalk_fast as mf


def require_backend(op: str, backend: str, device: torch.device = torch.device("cpu")) -> None:
    """Skip the case, naming the reason, when ``backend`` of ``op`` cannot run on ``device`` (no CUDA
    GPU for triton, no built C++ core for cpp). Checked outside grad mode, as the benchmarks run the
    ops (the C++ core computes no gradients)."""
    with torch.no_grad():
        reason = mf.available_backends(op, device)[backend]
    if reason is not None:
        pytest.skip(f"{op} backend {backend!r} cannot run here: {reason}")


def load_weights_or_skip(load, weights: str):
    """``load()`` (something that lays out weights in mode ``weights``: "f32", "bf16", "int8"), or skip the case
    when the C++ core refuses a reduced mode because this CPU has neither the AVX2+FMA nor the AVX-512 GEMM
    kernels (its error then names "f32" as the mode that runs). Any other error, and any error for "f32", is
    a failure."""
    try:
        return load()
    except ValueError as e:
        if weights == "f32" or "use weights 'f32'" not in str(e):
            raise
        pytest.skip(f"weights {weights!r} need the AVX2+FMA or AVX-512 GEMM kernels, which this CPU lacks: {e}")


def synchronized(fn):
    """``fn`` wrapped so a timing includes the GPU work it queued (a no-op on the CPU)."""
    def call():
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return call


def interpreting() -> bool:
    """TRITON_INTERPRET=1 in this process: Triton cases then run on the CPU through the interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def skip_triton_without_gpu(backend: str, device: torch.device) -> None:
    """Triton timings mean something on a CUDA GPU only, so Triton cases skip on the CPU, except under
    TRITON_INTERPRET=1 (benchmarks/gpu_check.py's CPU mode runs them at smoke size through the
    interpreter, to check the pipeline, never to quote a figure; their group names say "interpreter")."""
    if backend == "triton" and torch.device(device).type != "cuda" and not interpreting():
        pytest.skip("needs a CUDA GPU for triton (interpreter timings are meaningless)")


def device_label(device: torch.device) -> str:
    """``cuda``, ``cpu`` or ``cpu, interpreter``: the suffix of every benchmark group name."""
    device = torch.device(device)
    return "cpu, interpreter" if device.type == "cpu" and interpreting() else device.type


def run_info() -> dict:
    """What a saved result needs to be compared across commits: the commit (and whether the tree had
    changes), the device (CPU model, or the GPU), torch, the size preset and the UTC time of the run."""
    import datetime
    import platform
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args) -> str:
        try:
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu: {cpu}, {os.cpu_count()} cores"
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "device": device, "torch": torch.__version__, "size": os.environ.get("MESHTALK_BENCH_SIZE", "smoke"),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
