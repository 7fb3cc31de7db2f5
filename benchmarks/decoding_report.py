"""Measurements of the C++ decoding core for benchmarks/RESULTS.md (run by hand, ~5 minutes):

    python benchmarks/decoding_report.py [--json out.json] [--quick]

At the released sizes (H=16, C=128, hidden 64, V=6172): the reference sampler and the cpp sampler
side by side; cpp frames/s for B = 1 .. 64 and the largest B that keeps 30 fps per sequence; peak
memory of long runs (each in a fresh process: ru_maxrss is a high-water mark); the builtin GEMM
kernel against OpenBLAS on the products the core runs; the decoder against the reference. Every
figure is a measurement of this run (min and median of repeated calls); nothing is extrapolated.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import meshtalk_fast as mf
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp

H, C, V = 16, 128, 6172


def timed(fn, reps: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return dict(min_s=min(times), median_s=statistics.median(times), reps=reps)


def machine() -> dict:
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return dict(cpu=model, cores=_core.default_threads(), python=platform.python_version(),
                torch=torch.__version__, torch_threads=torch.get_num_threads(), gemm=_core.gemm_info(),
                load_average=os.getloadavg())


def prior_model() -> mf.MeshTalk:
    torch.manual_seed(0)
    return mf.MeshTalk(V, heads=H, classes=C).eval()


def sampler_side_by_side(model, T: int, reps: int) -> dict:
    """The reference with torch's default threads and with one thread (on a busy 2-core machine the
    default can be several times slower); ratios use the faster of the two."""
    out = {}
    default_threads = torch.get_num_threads()
    for B in (1, 32):
        a = torch.randn(B, T, 128, generator=torch.Generator().manual_seed(B))
        row = {}
        for threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            try:
                row[f"torch_threads{threads}"] = timed(lambda: model.sample(a, argmax=True, backend="torch"),
                                                       1 if B > 1 else reps)
            finally:
                torch.set_num_threads(default_threads)
        row["torch"] = dict(min(row.values(), key=lambda v: v["min_s"]))
        for threads in (1, 0):
            row[f"cpp_threads{threads or 'all'}"] = timed(
                lambda: model.sample(a, argmax=True, backend="cpp", threads=threads or None), reps)
        for k, v in row.items():
            v["frames_per_s"] = B * T / v["min_s"]
        out[f"B={B}"] = row
    base = out["B=1"]["torch"]["frames_per_s"]
    for row in out.values():
        for v in row.values():
            v["x_reference_B1_fps"] = v["frames_per_s"] / base
    return out


def sweep(model, T: int, reps: int) -> dict:
    w = _cpp.context_weights(model)
    out = {}
    for B in (1, 2, 4, 8, 16, 32, 64):
        a = np.random.default_rng(B).standard_normal((B, T, 128), dtype=np.float32)
        row = {}
        for mode in ("argmax", "gumbel"):
            kw = dict(argmax=True) if mode == "argmax" else dict(seeds=np.arange(B, dtype=np.uint64))
            t = timed(lambda: _core.sample(w, a, **kw), reps)
            row[mode] = dict(t, frames_per_s=B * T / t["min_s"], per_sequence_fps=T / t["min_s"])
        out[B] = row
    return out


def real_time_batch(model, T: int, reps: int) -> dict:
    """Largest B with T / time >= 30 (Gumbel mode, all threads): doubling, then bisection."""
    w = _cpp.context_weights(model)

    def fps(B):
        a = np.random.default_rng(B).standard_normal((B, T, 128), dtype=np.float32)
        t = timed(lambda: _core.sample(w, a, seeds=np.arange(B, dtype=np.uint64)), reps)["min_s"]
        return T / t

    tried = {}
    lo, hi = 64, None
    while hi is None:
        tried[lo * 2] = fps(lo * 2)
        if tried[lo * 2] >= 30:
            lo *= 2
        else:
            hi = lo * 2
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        tried[mid] = fps(mid)
        lo, hi = (mid, hi) if tried[mid] >= 30 else (lo, mid)
    return dict(largest_B=lo, per_sequence_fps={int(k): v for k, v in sorted(tried.items())})


MEMORY_SCRIPT = """
import sys, numpy as np, torch, meshtalk_fast as mf
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp
B, T = int(sys.argv[1]), int(sys.argv[2])
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
torch.manual_seed(0)
model = mf.MeshTalk(30, heads=16, classes=128).eval()
w = _cpp.context_weights(model)
a = np.random.default_rng(0).standard_normal((B, T, 128), dtype=np.float32)
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages, so new allocations show in the RSS
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Linux: reset the peak resident set size (VmHWM) to the current one
before = status("VmRSS")
labels = _core.sample(w, a, seeds=np.arange(B, dtype=np.uint64))
print(before, status("VmHWM"), labels.nbytes)
"""


def memory() -> dict:
    """Peak resident memory added by the first sampler call of a fresh process (labels output only, no
    one-hot): the sampler's state, its threads and the [B, T, H] int32 labels it returns."""
    out = {}
    for B, T in ((32, 900), (32, 9000), (64, 900), (64, 9000)):
        res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(B), str(T)], capture_output=True,
                             text=True, check=True)
        before, peak, labels = (int(x) for x in res.stdout.split())
        out[f"B={B} T={T}"] = dict(rss_before_kib=before, peak_rss_kib=peak, peak_growth_kib=peak - before,
                                   labels_output_kib=labels // 1024,
                                   growth_minus_output_kib=peak - before - labels // 1024)
    return out


GEMM_SHAPES = [
    ("sampler historic tap, B=1", 1, 1024, 1024),
    ("sampler historic tap, B=32", 32, 1024, 1024),
    ("sampler audio projection, B=1", 1, 1024, 128),
    ("sampler masked head 15, B=1", 1, 64, 960),
    ("sampler masked head 15, B=32", 32, 64, 960),
    ("sampler logits head 15, B=1", 1, 128, 960),
    ("sampler logits head 15, B=32", 32, 128, 960),
    ("decoder template encoder, 1 template", 1, 512, 3 * V),
    ("decoder LSTM input, 32 seqs x 64 frames", 2048, 512, 128),
    ("decoder last layer, 256 frames", 256, 3 * V, 512),
]


def gemm_table(reps: int) -> list:
    rows = []
    for name, m, n, k in GEMM_SHAPES:
        row = dict(op=name, m=m, n=n, k=k)
        r = max(3, min(2000, int(2e8 / (m * n * k))))
        for backend in ("builtin", "blas"):
            if backend == "blas" and not _core.gemm_info()["blas_available"]:
                continue
            row[f"{backend}_us"] = min(_core._testing.bench_gemm(m, n, k, backend, reps=r, threads=1) for _ in range(reps)) * 1e6
        if "blas_us" in row:
            row["blas_over_builtin"] = row["blas_us"] / row["builtin_us"]
        rows.append(row)
    return rows


def sampler_backends(model, T: int, reps: int) -> dict:
    out = {}
    for gemm in ("builtin", "blas"):
        if gemm == "blas" and not _core.gemm_info()["blas_available"]:
            continue
        w = _cpp.context_weights(model, gemm=gemm)
        for B in (1, 32):
            a = np.random.default_rng(B).standard_normal((B, T, 128), dtype=np.float32)
            for threads in (1, 0):
                t = timed(lambda: _core.sample(w, a, argmax=True, threads=threads), reps)
                out[f"{gemm} B={B} threads={threads or 'all'}"] = dict(t, ms_per_step=t["min_s"] / T * 1e3,
                                                                      frames_per_s=B * T / t["min_s"])
    return out


def decoder(model, T: int, reps: int) -> dict:
    B = 32
    g = torch.Generator().manual_seed(B)
    labels = torch.randint(0, C, (B, T, H), generator=g)
    template = torch.randn(V, 3, generator=g)
    one_hot = torch.nn.functional.one_hot(labels, C).float()
    out = {}
    with torch.no_grad():
        default_threads = torch.get_num_threads()
        for threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            try:
                out[f"torch_threads{threads}"] = timed(lambda: model.decode(template, one_hot, backend="torch"), reps)
            finally:
                torch.set_num_threads(default_threads)
        out["torch"] = dict(min(out.values(), key=lambda v: v["min_s"]))  # the faster reference
        for gemm in ("builtin", "blas"):
            if gemm == "blas" and not _core.gemm_info()["blas_available"]:
                continue
            w = _cpp.decoder_weights(model, gemm=gemm)
            buf = torch.empty(B, T, V, 3)
            for threads in (1, 0):
                out[f"cpp {gemm} threads={threads or 'all'}"] = timed(
                    lambda: _core.decode(w, template[None].numpy(), one_hot.numpy(), threads=threads,
                                         out=buf.numpy()), reps)
    for v in out.values():
        v["frames_per_s"] = B * T / v["min_s"]
        v["x_torch"] = out["torch"]["min_s"] / v["min_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and steps (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated sections to run (default: all): "
                        "reference, sweep, realtime, memory, gemm, backends, decoder")
    args = parser.parse_args()
    reps, T = (1, 12) if args.quick else (5, 90)
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only  # noqa: E731
    model = prior_model()
    report = dict(machine=machine(), T=T)
    if want("reference"):
        report["sampler_vs_reference"] = sampler_side_by_side(model, T, 3 if not args.quick else 1)
    if want("sweep"):
        report["sampler_sweep"] = sweep(model, T, reps)
    if want("realtime"):
        report["real_time"] = real_time_batch(model, 30 if args.quick else 60, 1 if args.quick else 3)
    if want("memory"):
        report["memory"] = memory()
    if want("gemm"):
        report["gemm"] = gemm_table(3 if not args.quick else 1)
    if want("backends"):
        report["sampler_gemm_backends"] = sampler_backends(model, T, reps)
    if want("decoder"):
        report["decoder"] = decoder(model, T, 3 if not args.quick else 1)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["machine"]["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    text = json.dumps(report, indent=1, default=float)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
