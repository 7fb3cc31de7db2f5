"""The GPU check (benchmarks/gpu_check.sh) end to end in its CPU mode, so the script cannot rot where no
GPU is: the report's schema and fields, the summary's arithmetic, the RESULTS.md tool (which must never
write a CPU report into the GPU rows), and the pieces a GPU run needs that the CPU mode skips."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import gpu_phases  # noqa: E402
import gpu_results  # noqa: E402
import gpu_summary  # noqa: E402

PHASES = ["environment", "tests", "benchmarks", "precision", "training", "quickstart"]


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    """One CPU-mode run of the shell script, without installing (this environment is the package's)."""
    out = tmp_path_factory.mktemp("gpu_check")
    report = out / "gpu_check.json"
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the script sets it for its phases
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--cpu", "--no-install", "--out", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert report.is_file(), proc.stdout + proc.stderr
    return report, proc


def test_cpu_mode_end_to_end(cpu_report):
    path, proc = cpu_report
    report = json.loads(path.read_text())
    logs = {p.name: p.read_text()[-3000:] for p in (path.parent / "gpu_check_logs").glob("*.log")}
    assert proc.returncode == 0, (proc.stdout, proc.stderr, {k: v["status"] for k, v in report["phases"].items()}, logs)
    assert report["schema"] == gpu_check.SCHEMA and report["mode"] == "cpu" and report["complete"]
    assert report["running"] is None and report["finished_utc"] and report["started_utc"]
    assert report["phases_done"] == PHASES
    assert report["phases"]["install"]["status"] == "skipped"
    assert len(report["commit"] or "") == 40
    env = report["phases"]["environment"]["result"]
    assert env["triton_interpret"] == "1" and env["cuda_available"] is False and env["peak_bandwidth_gbps"] is None
    tests = report["phases"]["tests"]["result"]
    assert tests["exit_code"] == 0 and tests["passed"] >= 1 and tests["failed"] == 0 and not tests["native"]
    assert any("needs a CUDA GPU" in s["reason"] for s in tests["skips"])  # the CUDA test, named as skipped
    rows = report["phases"]["benchmarks"]["result"]["rows"]
    groups = {r["group"] for r in rows}
    assert all("(cpu, interpreter)" in g for g in groups)
    assert {gpu_summary._backend(r) for r in rows} >= {"torch", "triton"}
    for r in rows:
        assert r["median_ms"] > 0 and r["rounds"] >= 1
    training = report["phases"]["training"]["result"]["rows"]
    assert {(r["params"]["loss_backend"], r["params"]["amp"]) for r in training
            if "loss_backend" in r["params"]} == {("torch", "fp32"), ("triton", "fp32")}
    assert {r["params"]["decode_rows"] for r in training if "decode_rows" in r["params"]} == {True, False}
    precision = report["phases"]["precision"]["result"]
    assert len(precision["cases"]) == 12 and all(c["fast_error"] >= 0 for c in precision["cases"])
    assert "skipped" in report["phases"]["quickstart"]["result"]
    s = report["summary"]
    assert s["figures_are_gpu"] is False and s["quickstart"] is None
    assert s["losses"] and all(e["kernel_bytes"] > e["minimum_bytes"] > 0 for e in s["losses"])
    assert s["log_mel"] and s["lip_vertex_error"] and s["training"]
    assert any(t["target"].startswith("Triton and CUDA tests pass") and t["met"] for t in s["targets"])


def test_results_tool_prints_but_never_writes_a_cpu_report(cpu_report, tmp_path, capsys):
    path, _ = cpu_report
    results = tmp_path / "RESULTS.md"
    shutil.copy(BENCH / "RESULTS.md", results)
    before = results.read_text()
    assert gpu_results.main([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "CPU-mode report" in printed and "masked_vertex_losses" in printed
    assert gpu_results.main([str(path), "--write", str(results)]) == 2
    assert "not GPU figures" in capsys.readouterr().err
    assert results.read_text() == before


def test_results_tool_replaces_only_the_marked_section(cpu_report, tmp_path):
    """The replace mechanics, on a copy of RESULTS.md and the CPU report relabelled as a GPU one (a
    test fixture only: nothing here is a figure)."""
    path, _ = cpu_report
    report = json.loads(path.read_text())
    report["mode"], report["summary"]["figures_are_gpu"] = "gpu", True
    fake = tmp_path / "gpu.json"
    fake.write_text(json.dumps(report))
    results = tmp_path / "RESULTS.md"
    shutil.copy(BENCH / "RESULTS.md", results)
    head, tail = (BENCH / "RESULTS.md").read_text().split(gpu_results.BEGIN)[0], \
        (BENCH / "RESULTS.md").read_text().split(gpu_results.END)[1]
    assert gpu_results.main([str(fake), "--write", str(results)]) == 0
    text = results.read_text()
    assert text.startswith(head) and text.endswith(tail)
    assert "Not measured yet" not in text and "| case | reference ms |" in text
    assert gpu_results.main([str(fake), "--write", str(results)]) == 0 and results.read_text() == text
    with pytest.raises(ValueError, match="exactly one"):
        gpu_results.replace_section("no markers", "x")


def test_peak_bandwidth_and_bytes():
    assert gpu_phases.peak_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350.0
    assert gpu_phases.peak_bandwidth_gbps("NVIDIA H100 PCIe") == 2000.0
    assert gpu_phases.peak_bandwidth_gbps("NVIDIA H200") == 4800.0
    assert gpu_phases.peak_bandwidth_gbps("NVIDIA A100-SXM4-80GB") is None
    b = gpu_summary.loss_bytes({"B": 8, "T": 32, "V": 6172, "P": 3, "K": 4, "element_bytes": 4})
    E = 8 * 32 * 6172 * 3
    assert b == {"kernel_bytes": E * 4 * 11 + 8 * 4 * 6172, "minimum_bytes": E * 4 * 7}


def test_summary_of_a_gpu_like_report():
    """Speed-ups, bandwidth and the quick-start verdict from hand-made rows (arithmetic only)."""
    extra = {"B": 8, "T": 32, "V": 6172, "P": 3, "K": 4, "element_bytes": 4}
    group = "masked_vertex_losses fwd+bwd K=4 B=8 T=32 V=6172 squared fp32 (cuda)"
    rows = [{"group": group, "params": {"backend": b}, "median_ms": ms, "extra_info": extra}
            for b, ms in (("torch", 1.2), ("triton", 0.2))]
    rows.append({"group": "log_mel stream 60 s (cuda)", "params": {"backend": "torch"}, "median_ms": 3.0})
    rows.append({"group": "log_mel stream 60 s (cuda)", "params": {"backend": "triton"}, "median_ms": 2.0})
    report = {"mode": "gpu", "phases": {
        "environment": {"result": {"device_name": "NVIDIA H100 80GB HBM3", "peak_bandwidth_gbps": 3350.0}},
        "benchmarks": {"result": {"rows": rows}},
        "quickstart": {"result": {"minutes": 3.0, "metrics": {"lve": 8.8, "lve_ratio": 0.19},
                                  "cpu_reference": gpu_phases.CPU_QUICKSTART}}}}
    s = gpu_summary.summarise(report)
    (loss,) = s["losses"]
    assert loss["speedup"] == pytest.approx(6.0)
    assert loss["achieved_gbps"] == pytest.approx(gpu_summary.loss_bytes(extra)["kernel_bytes"] / 0.2e-3 / 1e9)
    assert loss["fraction_of_peak"] == pytest.approx(loss["achieved_gbps"] / 3350.0)
    verdicts = {t["target"]: t["met"] for t in s["targets"]}
    assert verdicts[f"{group}: fused vs eager"] is True
    assert verdicts[f"{group}: memory bandwidth"] is (loss["fraction_of_peak"] >= 0.7)
    assert verdicts["log_mel stream 60 s (cuda): fused vs torch.stft + matmul + log"] is False  # 1.5x < 2x
    assert s["quickstart"]["time_fraction"] == pytest.approx(0.3)
    assert any(t["target"].startswith("quick start") and t["met"] for t in s["targets"])


def test_quickstart_summary_reads_the_run_outputs(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"lve": 9.5, "lve_static": 40.0, "lve_ratio": 0.2375}))
    log = [{"stage": 1, "step": s, "split": "train", "frames_per_s": f} for s, f in ((1, 10.0), (10, 900.0),
                                                                                     (20, 1100.0))]
    log += [{"stage": 1, "step": 20, "split": "val", "lve": 1.0}, {"stage": 2, "step": 10, "split": "train",
                                                                    "frames_per_s": 3000.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    out = gpu_phases.summarise_quickstart(tmp_path)
    assert out["metrics"]["lve_ratio"] == 0.2375
    assert out["training"]["stage1"] == {"steps": 20, "frames_per_s_median": 1000.0, "validations": 1}
    assert out["training"]["stage2"] == {"steps": 10, "frames_per_s_median": None, "validations": 0}


def test_a_phase_cut_off_is_recorded_and_the_report_says_how_far_it_got(tmp_path, monkeypatch):
    """A phase past its timeout is killed and recorded; the phases after the deadline are out_of_time."""
    monkeypatch.setattr(gpu_check, "PHASES", [("environment", 1, 1), ("tests", 1, 1)])
    monkeypatch.setattr(gpu_check, "MIN_SECONDS", 0.5)

    class Slow(gpu_check.Runner):
        def _one(self, name, timeout):
            self.report["running"] = name
            gpu_check.save(self.path, self.report)
            assert json.loads(self.path.read_text())["running"] == name  # written before the phase runs
            gpu_check.record(self.report, name, "timeout", timeout, None, "killed")
            gpu_check.save(self.path, self.report)
            self.deadline = 0  # the clock ran out during this phase

    path = tmp_path / "r.json"
    assert Slow(path, "cpu", tmp_path / "w", tmp_path / "logs", 3.0, 100.0).run() == 1
    report = json.loads(path.read_text())
    assert report["phases"]["environment"]["status"] == "timeout"
    assert report["phases"]["tests"]["status"] == "out_of_time"
    assert report["phases_done"] == [] and report["complete"] is False


def test_kernels_compile_for_hopper(tmp_path):
    """Every Triton kernel compiles for sm_90 (H100/H200) with its CUDA launch choices, down to a cubin,
    without a GPU (the interpreter the other CPU tests use accepts what the compiler rejects: the
    log-mel kernel's non-constexpr global was found this way); the loss and LVE kernels do not spill."""
    out = tmp_path / "compile.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_compile.py"), "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads(out.read_text())
    kernels = {r["kernel"].split("[")[0] for r in results}
    assert kernels == {"_losses_fwd_kernel", "_losses_bwd_kernel", "_reduce_kernel", "_lve_kernel", "_log_mel_kernel"}
    for r in results:
        assert r["ok"] and r["registers"] is not None, r
        if not r["kernel"].startswith("_log_mel"):
            assert r["spill_store_bytes"] == 0, r
