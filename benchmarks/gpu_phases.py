"""The phases of ``gpu_check.py``, each run in its own process (``gpu_check.py phase NAME``), so that a
phase that hangs or crashes is killed and recorded while the others still run.

Every phase returns a JSON-serialisable dict. Timings come from pytest-benchmark (the suites in this
folder, through ``--benchmark-json``); this module only runs them and reads their output. Mode "gpu"
runs on CUDA at the released sizes; mode "cpu" runs the Triton kernels through the interpreter
(``TRITON_INTERPRET=1``, set by the orchestrator) at smoke sizes, to check the pipeline, never to
quote a figure.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The Triton and CUDA tests, run natively in mode "gpu" (the Triton cases of these files use CUDA when it is
# there; their other backends run as anywhere, in seconds); mode "cpu" runs a quick selection through the
# interpreter (the suite runs the rest).
TESTS = {
    "gpu": ["tests/test_mel.py", "tests/test_vertex_losses.py",
            "tests/test_training.py::test_cuda_training_with_autocast_and_validation",
            "tests/test_training.py::test_losses_stay_float32_under_bf16_autocast"],
    "cpu": ["tests/test_vertex_losses.py::test_deterministic_and_no_grad_path[triton]",
            "tests/test_training.py::test_cuda_training_with_autocast_and_validation"],
}
# Benchmark cases: all at the released sizes on the GPU; on the CPU (interpreter) a cheap selection.
BENCH_SELECT = {"gpu": None,
                "cpu": "stream or lip or (squared and fp32) or (l2 and bf16)"}
# The quick start's held-out result on the CPU that the GPU run is compared with (benchmarks/RESULTS.md,
# "Quick start": the run exactly as the README says, seed 1, default data set, 10 minutes, 2-core CPU).
CPU_QUICKSTART = {"lve": 9.16, "lve_static": 46.32, "lve_ratio": 0.198, "minutes": 10.0, "seed": 1,
                  "source": "benchmarks/RESULTS.md, 'Seed 2's collapse': seed 1, code usage 3 / 0.5, 2-core CPU"}


def _pytest(args: List[str], log: pathlib.Path, env: Optional[dict] = None) -> int:
    """Run pytest in this process (one interpreter start less per phase), from the repository root;
    its output goes where this process's goes (the phase log). ``env``: variables to set first."""
    import pytest

    os.environ.update(env or {})
    os.chdir(ROOT)
    print(f"$ pytest {' '.join(args)}", flush=True)
    rc = int(pytest.main(["-p", "no:cacheprovider", *args]))
    sys.stdout.flush()
    return rc


# ---------------------------------------------------------------------------------------------- environment
def peak_bandwidth_gbps(name: str) -> Optional[float]:
    """The card's peak memory bandwidth in GB/s from its name; None when the card is not known here."""
    n = name.upper()
    if "H200" in n:
        return 4800.0
    if "H100" in n and "PCIE" in n:
        return 2000.0
    if "H100" in n and ("SXM" in n or "HBM3" in n):  # the SXM card reports itself as "H100 80GB HBM3"
        return 3350.0
    return None


def environment(mode: str, work: pathlib.Path, **_) -> Dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "triton_interpret": os.environ.get("TRITON_INTERPRET"),
            "cpu_count": os.cpu_count()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as exc:
        info["triton"] = None
        info["triton_error"] = str(exc)
    if mode == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("mode 'gpu' but torch.cuda.is_available() is False (torch "
                               f"{torch.__version__}, CUDA {torch.version.cuda}): a CPU-only torch build, or no driver")
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
        info["peak_bandwidth_gbps"] = peak_bandwidth_gbps(props.name)
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.memory", "--format=csv"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"not available: {exc}"
    else:
        info["device_name"] = "cpu: " + (platform.processor() or platform.machine())
        info["peak_bandwidth_gbps"] = None
    import meshtalk_fast as mf
    from meshtalk_fast.base.dispatch import resolve

    info["meshtalk_fast"] = str(pathlib.Path(mf.__file__).parent)
    device = torch.device("cuda" if mode == "gpu" else "cpu")
    info["backends"] = {}
    for op in ("log_mel", "masked_vertex_losses", "lip_vertex_error"):
        fn = resolve(op, "auto", device)
        info["backends"][op] = {"auto": f"{fn.__module__}.{fn.__name__}",
                                "unavailable": {k: v for k, v in mf.available_backends(op, device).items() if v}}
    return info


# ---------------------------------------------------------------------------------------------- tests
def read_junit(path: pathlib.Path) -> Dict:
    """Counts and the failing tests (with the first lines of their message) of a junit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skips": []}
    for case in (c for s in suites for c in s.iter("testcase")):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            out["failed" if problem.tag == "failure" else "errors"] += 1
            text = (problem.get("message") or "") + "\n" + (problem.text or "")
            out["failures"].append({"test": name, "message": text.strip()[-1500:]})
        elif skip is not None:
            out["skipped"] += 1
            out["skips"].append({"test": name, "reason": (skip.get("message") or "")[:300]})
        else:
            out["passed"] += 1
    return out


def tests(mode: str, work: pathlib.Path, log: pathlib.Path, **_) -> Dict:
    xml = work / "tests.xml"
    rc = _pytest([*TESTS[mode], "-q", "-rs", f"--junitxml={xml}"], log)
    out = read_junit(xml) if xml.is_file() else {"error": "pytest wrote no junit file"}
    out.update(exit_code=rc, targets=TESTS[mode], native=os.environ.get("TRITON_INTERPRET") != "1")
    return out


# ---------------------------------------------------------------------------------------------- benchmarks
def read_benchmarks(path: pathlib.Path) -> List[Dict]:
    """One row per pytest-benchmark case: group, name, params, times in ms, extra_info."""
    rows = []
    for b in json.loads(path.read_text())["benchmarks"]:
        st = b["stats"]
        rows.append({"group": b["group"], "name": b["name"], "params": b.get("params") or {},
                     "median_ms": st["median"] * 1e3, "min_ms": st["min"] * 1e3, "mean_ms": st["mean"] * 1e3,
                     "stddev_ms": st["stddev"] * 1e3, "rounds": st["rounds"], "extra_info": b.get("extra_info", {})})
    return rows


def _bench(files: List[str], mode: str, work: pathlib.Path, log: pathlib.Path, stem: str) -> Dict:
    out_json = work / f"{stem}.json"
    args = [*files, "--benchmark-enable", f"--benchmark-json={out_json}", "-q", "-rs"]
    if mode == "cpu":  # the pipeline only: one round per case
        args += ["--benchmark-max-time=0.01", "--benchmark-min-rounds=1", "--benchmark-warmup=off"]
    else:  # warm-up rounds include Triton's compilation, so the timed rounds never do
        args += ["--benchmark-warmup=on", "--benchmark-warmup-iterations=3", "--benchmark-max-time=0.5"]
    if BENCH_SELECT[mode] and stem == "kernels":
        args += ["-k", BENCH_SELECT[mode]]
    size = "full" if mode == "gpu" else "smoke"
    rc = _pytest(args, log, {"MESHTALK_BENCH_SIZE": size})
    rows = read_benchmarks(out_json) if out_json.is_file() else []
    return {"exit_code": rc, "size": size, "rows": rows}


def benchmarks(mode: str, work: pathlib.Path, log: pathlib.Path, **_) -> Dict:
    return _bench(["benchmarks/bench_mel.py", "benchmarks/bench_vertex_losses.py"], mode, work, log, "kernels")


def training(mode: str, work: pathlib.Path, log: pathlib.Path, **_) -> Dict:
    return _bench(["benchmarks/bench_training.py"], mode, work, log, "training")


# ---------------------------------------------------------------------------------------------- quick start
def summarise_quickstart(out_dir: pathlib.Path) -> Dict:
    """The held-out metrics (``metrics.json``) and the training log's throughput (``metrics.jsonl``)."""
    metrics = json.loads((out_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in open(out_dir / "metrics.jsonl") if line.strip()]
    stages = {}
    for stage in (1, 2):
        train = [r for r in records if r.get("stage") == stage and r.get("split") == "train"]
        fps = [r["frames_per_s"] for r in train[1:] if "frames_per_s" in r]  # the first step includes warm-up
        stages[f"stage{stage}"] = {"steps": max((r["step"] for r in train), default=0),
                                   "frames_per_s_median": statistics.median(fps) if fps else None,
                                   "validations": sum(1 for r in records if r.get("stage") == stage
                                                      and r.get("split") == "val")}
    return {"metrics": metrics, "training": stages}


class _Utilisation(threading.Thread):
    """Samples the GPU's utilisation (percent of time a kernel ran) every ``period`` seconds."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.samples, self.stop, self.error = period, [], threading.Event(), None

    def _read(self) -> float:
        try:
            import torch

            return float(torch.cuda.utilization(0))  # NVML, through pynvml / nvidia-ml-py
        except Exception:  # noqa: BLE001 - fall back on nvidia-smi when NVML is not importable
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return float(out.split()[0])

    def run(self):
        t0 = time.perf_counter()
        while not self.stop.is_set():
            try:
                self.samples.append((time.perf_counter() - t0, self._read()))
            except Exception as exc:  # noqa: BLE001 - recorded, not fatal: the figure is then null
                self.error = str(exc)
                return
            self.stop.wait(self.period)


def quickstart(mode: str, work: pathlib.Path, log: pathlib.Path, minutes: float = 3.0, **_) -> Dict:
    if mode != "gpu":
        return {"skipped": "CPU mode: even 2 s of training take ~40 s of data making and evaluation on a "
                           "2-core CPU; tests/test_cli_train.py::test_quickstart_smoke runs it"}
    out_dir = work / "quickstart"
    cmd = [sys.executable, "-m", "meshtalk_fast.cli", "quickstart", "--out", str(out_dir), "--minutes",
           f"{minutes:g}", "--seed", str(CPU_QUICKSTART["seed"]), "--device", "cuda"]
    sampler = _Utilisation()
    sampler.start()
    t0 = time.perf_counter()
    train_start = None
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True)
        for line in proc.stdout:  # the "data: ..." line is printed just before training starts
            f.write(line)
            f.flush()
            if train_start is None and line.startswith("data:"):
                train_start = time.perf_counter() - t0
        rc = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join(timeout=5)
    out = {"exit_code": rc, "command": " ".join(cmd[1:]), "minutes": minutes, "wall_s": wall,
           "cpu_reference": CPU_QUICKSTART}
    if rc != 0:
        return out
    out.update(summarise_quickstart(out_dir))
    util = [u for t, u in sampler.samples
            if train_start is not None and train_start <= t <= train_start + 60 * minutes]
    out["gpu_utilisation"] = {"mean_percent_while_training": statistics.fmean(util) if util else None,
                              "samples": len(util), "error": sampler.error}
    return out


# ---------------------------------------------------------------------------------------------- precision
def precision(mode: str, work: pathlib.Path, **_) -> Dict:
    from gpu_precision import precision_cases  # noqa: E402 - beside this file

    return precision_cases(mode)


PHASES = {"environment": environment, "tests": tests, "benchmarks": benchmarks, "precision": precision,
          "training": training, "quickstart": quickstart}


def run_phase(name: str, mode: str, work: pathlib.Path, log: pathlib.Path, result: pathlib.Path,
              minutes: float) -> None:
    """Run one phase; its dict goes to ``result`` (written whole or not at all)."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    out = PHASES[name](mode=mode, work=work, log=log, minutes=minutes)
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    os.replace(tmp, result)
