"""The summary of a ``gpu_check.py`` report: speed-ups (reference ms / fast ms, same group, same run),
achieved memory bandwidth of the fused losses against the card's peak, the precision verdicts, the
quick start against the CPU's, and the issue's targets, each with what was measured and whether it
was met (None when not measured). Standard library only.

Bytes moved by one fused-losses call (forward + backward), from the design in kernels/vertex_losses.py,
with E = B*T*V*3 elements of s bytes, P = 3 predictions, K = 4 masks of V float32 weights:
  forward reads the target and the P preds: E*s*(1 + P); backward reads them again and writes the P
  gradients: E*s*(1 + 2P); the masks are read once per pass (they stay in L2): 2*K*V*4.
  kernel bytes = E*s*(2 + 3P) + 8*K*V          (what the kernels move: the bandwidth figure)
  minimum bytes = E*s*(1 + 2P)                 (read inputs once, write gradients once: any design)
"""
from __future__ import annotations

from typing import Dict, List, Optional

TARGETS = {"losses_speedup": 3.0, "losses_bandwidth_fraction": 0.70, "log_mel_speedup": 2.0,
           "quickstart_time_fraction": 1 / 3}


def _rows(report: Dict, phase: str) -> List[Dict]:
    result = (report.get("phases", {}).get(phase) or {}).get("result") or {}
    return result.get("rows") or []


def _backend(row: Dict) -> str:
    params = row.get("params") or {}
    return params.get("backend") or params.get("loss_backend") or "?"


def _pairs(rows: List[Dict], key=lambda row: row["group"]) -> Dict[str, Dict[str, Dict]]:
    """{key: {backend: row}}"""
    out: Dict[str, Dict[str, Dict]] = {}
    for row in rows:
        out.setdefault(key(row), {})[_backend(row)] = row
    return out


def _ratio(ref: Optional[Dict], fast: Optional[Dict]) -> Optional[float]:
    if ref is None or fast is None or not fast["median_ms"]:
        return None
    return ref["median_ms"] / fast["median_ms"]


def loss_bytes(extra: Dict) -> Dict[str, Optional[int]]:
    try:
        E = extra["B"] * extra["T"] * extra["V"] * 3
        s, P, K, V = extra["element_bytes"], extra["P"], extra["K"], extra["V"]
    except KeyError:
        return {"kernel_bytes": None, "minimum_bytes": None}
    return {"kernel_bytes": E * s * (2 + 3 * P) + 8 * K * V, "minimum_bytes": E * s * (1 + 2 * P)}


def _kernel_rows(report: Dict, peak: Optional[float]) -> Dict[str, List[Dict]]:
    out: Dict[str, List[Dict]] = {"log_mel": [], "losses": [], "lip_vertex_error": [], "losses_block_rows": []}
    rows = _rows(report, "benchmarks")
    for row in rows:  # the fused kernel's rows-per-program sweep (GPU only)
        if "block_rows sweep" in row["group"]:
            sizes = loss_bytes(row.get("extra_info") or {})
            gbps = sizes["kernel_bytes"] / (row["median_ms"] * 1e-3) / 1e9 if sizes["kernel_bytes"] else None
            out["losses_block_rows"].append({"block_rows": row["params"].get("block_rows"),
                                             "median_ms": row["median_ms"], "achieved_gbps": gbps,
                                             "fraction_of_peak": gbps / peak if gbps and peak else None})
    for group, by in _pairs([r for r in rows if "block_rows sweep" not in r["group"]]).items():
        ref, fast = by.get("torch"), by.get("triton")
        entry = {"group": group, "reference_ms": ref and ref["median_ms"], "triton_ms": fast and fast["median_ms"],
                 "speedup": _ratio(ref, fast)}
        if group.startswith("log_mel"):
            entry["cpp_ms"] = by.get("cpp") and by["cpp"]["median_ms"]
            out["log_mel"].append(entry)
        elif group.startswith("masked_vertex_losses"):
            sizes = loss_bytes((fast or ref or {}).get("extra_info") or {})
            entry.update(sizes)
            if fast is not None and sizes["kernel_bytes"]:
                seconds = fast["median_ms"] * 1e-3
                entry["achieved_gbps"] = sizes["kernel_bytes"] / seconds / 1e9
                entry["achieved_gbps_minimum_bytes"] = sizes["minimum_bytes"] / seconds / 1e9
                entry["peak_gbps"] = peak
                entry["fraction_of_peak"] = entry["achieved_gbps"] / peak if peak else None
            out["losses"].append(entry)
        elif group.startswith("lip_vertex_error"):
            out["lip_vertex_error"].append(entry)
    return out


def _training(report: Dict) -> List[Dict]:
    out = []
    # the loss-backend pairs only (test_stage1_step); the quick start's step (decode_rows) stays in the rows
    rows = [r for r in _rows(report, "training") if "loss_backend" in (r.get("params") or {})]
    for amp, by in _pairs(rows, key=lambda r: (r.get("params") or {}).get("amp", "?")).items():
        entry = {"amp": amp, "speedup_triton_losses": _ratio(by.get("torch"), by.get("triton"))}
        for backend, row in by.items():
            frames = (row.get("extra_info") or {}).get("frames")
            entry[f"{backend}_ms"] = row["median_ms"]
            entry[f"{backend}_frames_per_s"] = frames / (row["median_ms"] * 1e-3) if frames else None
        out.append(entry)
    return out


def _target(name: str, goal: str, measured, met: Optional[bool]) -> Dict:
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def summarise(report: Dict) -> Dict:
    env = (report.get("phases", {}).get("environment") or {}).get("result") or {}
    peak = env.get("peak_bandwidth_gbps")
    kernels = _kernel_rows(report, peak)
    precision = (report.get("phases", {}).get("precision") or {}).get("result") or {}
    tests = (report.get("phases", {}).get("tests") or {}).get("result") or {}
    qs = (report.get("phases", {}).get("quickstart") or {}).get("result") or {}
    out = {"figures_are_gpu": report.get("mode") == "gpu", "device": env.get("device_name"),
           "peak_bandwidth_gbps": peak, **kernels, "training": _training(report)}
    targets = []
    if tests:
        ok = tests.get("exit_code") == 0
        targets.append(_target("Triton and CUDA tests pass" + (" natively" if tests.get("native") else
                                                                " (interpreter)"), "0 failed",
                               {k: tests.get(k) for k in ("passed", "failed", "errors", "skipped")}, ok))
    for e in kernels["losses"]:
        targets.append(_target(f"{e['group']}: fused vs eager", f">= {TARGETS['losses_speedup']}x", e["speedup"],
                               None if e["speedup"] is None else e["speedup"] >= TARGETS["losses_speedup"]))
        frac = e.get("fraction_of_peak")
        targets.append(_target(f"{e['group']}: memory bandwidth", f">= {TARGETS['losses_bandwidth_fraction']:.0%} "
                               "of the card's peak", frac,
                               None if frac is None else frac >= TARGETS["losses_bandwidth_fraction"]))
    for e in kernels["log_mel"]:
        targets.append(_target(f"{e['group']}: fused vs torch.stft + matmul + log",
                               f">= {TARGETS['log_mel_speedup']}x", e["speedup"],
                               None if e["speedup"] is None else e["speedup"] >= TARGETS["log_mel_speedup"]))
    if precision.get("cases"):
        bad = [c["case"] for c in precision["cases"] if not c["within_reference"]]
        targets.append(_target("precision vs float64 no worse than the eager reference", precision.get("rule"),
                               {"cases": len(precision["cases"]), "worse": bad}, not bad))
    out["quickstart"] = None
    if qs.get("metrics"):
        ref = qs["cpu_reference"]
        ratio = qs["metrics"]["lve_ratio"]
        fraction = qs["minutes"] / ref["minutes"]
        out["quickstart"] = {"lve": qs["metrics"]["lve"], "lve_ratio": ratio, "minutes": qs["minutes"],
                             "cpu_lve_ratio": ref["lve_ratio"], "cpu_minutes": ref["minutes"],
                             "time_fraction": fraction, "training": qs.get("training"),
                             "gpu_utilisation": qs.get("gpu_utilisation")}
        targets.append(_target("quick start on the GPU reaches the CPU's held-out LVE ratio in <= 1/3 of its time",
                               f"lve_ratio <= {ref['lve_ratio']} with minutes <= {ref['minutes'] / 3:.2f}",
                               {"lve_ratio": ratio, "minutes": qs["minutes"]},
                               ratio <= ref["lve_ratio"] and fraction <= TARGETS["quickstart_time_fraction"] + 1e-9))
    out["targets"] = targets
    return out
