"""The GPU section of benchmarks/RESULTS.md, from a ``gpu_check.py`` report.

    python benchmarks/gpu_results.py gpu_check.json            # print the section
    python benchmarks/gpu_results.py gpu_check.json --write    # replace it in benchmarks/RESULTS.md

The section lies between the markers ``<!-- gpu_check:begin -->`` and ``<!-- gpu_check:end -->``;
``--write`` replaces what is between them (atomically) and nothing else. A report of the CPU mode (the
interpreter: its timings mean nothing) is printed with a warning but never written into the GPU rows.
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Dict, List, Optional

BEGIN, END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
RESULTS = pathlib.Path(__file__).resolve().parent / "RESULTS.md"


def _f(x, digits: int = 3, suffix: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}{suffix}"
    return f"{x}{suffix}"


def _met(m: Optional[bool]) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[m]


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def section(report: Dict) -> str:
    """The markdown between the markers (the markers not included)."""
    s = report.get("summary") or {}
    env = ((report.get("phases") or {}).get("environment") or {}).get("result") or {}
    lines = []
    if report.get("mode") != "gpu":
        lines.append("**CPU-mode report (Triton through the interpreter, smoke sizes): these timings mean "
                     "nothing and are not GPU figures.**\n")
    lines.append(f"Device: **{s.get('device')}** (peak memory bandwidth {_f(s.get('peak_bandwidth_gbps'))} GB/s); "
                 f"torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, triton {env.get('triton')}; commit "
                 f"`{(report.get('commit') or '?')[:10]}`{' (uncommitted changes)' if report.get('dirty') else ''}, "
                 f"run {report.get('started_utc')} with `bash benchmarks/gpu_check.sh`; phases done: "
                 f"{', '.join(report.get('phases_done') or []) or 'none'}"
                 + ("" if report.get("complete") else " (**incomplete**: see the report's `phases`)") + ".")
    lines.append("Median ms per call (pytest-benchmark, fast path and reference in the same group, same inputs, "
                 "same run); speed-up = reference / triton.\n")
    rows = []
    for e in s.get("log_mel") or []:
        rows.append([e["group"], _f(e["reference_ms"]), _f(e["triton_ms"]), _f(e["speedup"], suffix="x"), "-"])
    for e in s.get("losses") or []:
        bw = "-" if e.get("achieved_gbps") is None else (
            f"{e['achieved_gbps']:.0f} GB/s of {_f(e['kernel_bytes'] / 1e6, 4)} MB"
            + ("" if e.get("fraction_of_peak") is None else f" ({e['fraction_of_peak']:.0%} of peak)"))
        rows.append([e["group"], _f(e["reference_ms"]), _f(e["triton_ms"]), _f(e["speedup"], suffix="x"), bw])
    for e in s.get("lip_vertex_error") or []:
        rows.append([e["group"], _f(e["reference_ms"]), _f(e["triton_ms"]), _f(e["speedup"], suffix="x"), "-"])
    lines += _table(["case", "reference ms", "triton ms", "speed-up", "bandwidth (kernel bytes / median)"], rows)
    sweep = s.get("losses_block_rows") or []
    if sweep:
        lines.append("\nFused losses (squared, fp32), rows per program (`default_block_rows` is 256):\n")
        lines += _table(["block_rows", "ms", "GB/s", "of peak"],
                        [[str(e["block_rows"]), _f(e["median_ms"]), _f(e["achieved_gbps"], 4),
                          "-" if e["fraction_of_peak"] is None else f"{e['fraction_of_peak']:.0%}"] for e in sweep])
    train = s.get("training") or []
    if train:
        lines.append("\nStage-1 optimizer step (`bench_training.py`), losses through the reference or the fused kernel:\n")
        lines += _table(["autocast", "reference losses ms", "fused losses ms", "speed-up", "frames/s (fused)"],
                        [[e["amp"], _f(e.get("torch_ms")), _f(e.get("triton_ms")), _f(e.get("speedup_triton_losses"),
                                                                                       suffix="x"),
                          _f(e.get("triton_frames_per_s"), 4)] for e in train])
    qs = s.get("quickstart")
    if qs:
        util = (qs.get("gpu_utilisation") or {}).get("mean_percent_while_training")
        lines.append(f"\nQuick start on the GPU (`--minutes {_f(qs['minutes'])} --seed 1`): held-out LVE {_f(qs['lve'], 4)}, "
                     f"ratio to the unmoving template {_f(qs['lve_ratio'])} (CPU, {_f(qs['cpu_minutes'])} min: "
                     f"{_f(qs['cpu_lve_ratio'])}); GPU utilisation while training {_f(util, 3, ' %')}.")
    targets = s.get("targets") or []
    if targets:
        lines.append("\nTargets (issue 18):\n")
        lines += _table(["target", "goal", "measured", "verdict"],
                        [[t["target"], str(t["goal"]), _f(t["measured"]) if not isinstance(t["measured"], dict)
                          else json.dumps(t["measured"]), _met(t["met"])] for t in targets])
    return "\n".join(lines) + "\n"


def replace_section(text: str, body: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the results file must hold exactly one {BEGIN} ... {END} pair, in that order")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", type=pathlib.Path, help="the JSON gpu_check.py wrote")
    ap.add_argument("--write", nargs="?", const=RESULTS, type=pathlib.Path, default=None,
                    help=f"replace the section in this file (default {RESULTS})")
    args = ap.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"gpu_results: cannot read the report {args.report}: {exc}", file=sys.stderr)
        return 2
    body = section(report)
    if args.write is None:
        print(body, end="")
        return 0
    if report.get("mode") != "gpu" or not (report.get("summary") or {}).get("figures_are_gpu"):
        print(f"gpu_results: {args.report} is a {report.get('mode')!r}-mode report: its timings are not GPU "
              f"figures, so it is not written into {args.write}", file=sys.stderr)
        return 2
    try:
        text = replace_section(args.write.read_text(), body)
    except (OSError, ValueError) as exc:
        print(f"gpu_results: {args.write}: {exc}", file=sys.stderr)
        return 2
    tmp = args.write.with_name(args.write.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.write)
    print(f"gpu_results: wrote the GPU section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
