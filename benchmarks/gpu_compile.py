"""Compile every Triton kernel ahead of time for a GPU, on a machine without one.

The interpreter (TRITON_INTERPRET=1, what the CPU tests run) accepts programs that the compiler rejects:
layouts, ``tl.dot`` shapes and dtypes, pointer casts, constexpr branches. Triton's compiler and the
``ptxas`` it ships need no GPU, so this compiles each kernel with the specialisations its launcher
uses on CUDA (dtypes, flags, the CUDA tile sizes, num_warps) down to a cubin for the target (default
sm_90: H100 and H200), and reports ptxas's registers, spills and shared memory per kernel.

    python benchmarks/gpu_compile.py [--arch 90] [--quick] [--json out.json]

Exit status 0 when every specialisation compiled. Run in a process without TRITON_INTERPRET (it is
removed here before triton is imported).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: kernels are decorated for the GPU

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TL = {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16, "fp64": tl.float64}
# the launchers' CUDA choices: vertex_losses.default_block_rows, triton_lip_vertex_error's block_frames
# (16 frames x 128 lip vertices for a mask of >= 128 lip vertices), mel.default_tiles
BLOCK_ROWS = 256


def _losses_specs(vl, quick: bool):
    dtypes = ["fp32", "bf16"] if quick else ["fp32", "bf16", "fp16"]
    specs = []
    for dt in dtypes:
        for l2 in ([False] if quick and dt == "bf16" else [False, True]):
            specs.append((vl._losses_fwd_kernel, {
                "pred_table": "*i64", "target_ptr": f"*{dt}", "masks_ptr": "*fp32", "index_ptr": "*i32",
                "partial_ptr": "*fp32", "n_rows": "i32", "n_verts": "i32", "n_preds": "i32", "n_terms": "i32"},
                dict(PRED_DTYPE=TL[dt], ACC=tl.float32, L2=l2, BLOCK_R=BLOCK_ROWS, BLOCK_K=4), 4))
            for target_grad in ([False] if quick or dt != "fp32" else [False, True]):
                specs.append((vl._losses_bwd_kernel, {
                    "pred_table": "*i64", "target_ptr": f"*{dt}", "masks_ptr": "*fp32", "index_ptr": "*i32",
                    "grad_out_ptr": "*fp32", "norm_ptr": "*fp32", "grad_preds_ptr": f"*{dt}",
                    "grad_target_ptr": f"*{dt}", "n_rows": "i32", "n_elems": "i32", "n_verts": "i32",
                    "n_preds": "i32", "n_terms": "i32"},
                    dict(PRED_DTYPE=TL[dt], ACC=tl.float32, L2=l2, PRED_GRAD=True, TARGET_GRAD=target_grad,
                         TARGET_DTYPE=TL[dt], BLOCK_R=BLOCK_ROWS, BLOCK_K=4), 4))
    for block_k in ([4] if quick else [2, 4]):
        specs.append((vl._reduce_kernel, {"partial_ptr": "*fp32", "norm_ptr": "*fp32", "out_ptr": "*fp32",
                                          "n_blocks": "i32", "n_terms": "i32"},
                      dict(ACC=tl.float32, BLOCK_B=256, BLOCK_K=block_k), 4))
    for dt in (["fp32"] if quick else ["fp32", "bf16"]):
        specs.append((vl._lve_kernel, {"pred_ptr": f"*{dt}", "target_ptr": f"*{dt}", "lip_ptr": "*i32",
                                       "partial_ptr": "*fp32", "best_ptr": "*i32", "n_frames": "i32",
                                       "n_verts": "i32", "n_lip": "i32"},
                      dict(ACC=tl.float32, BLOCK_F=16, BLOCK_L=128), 4))
    return specs


def _mel_specs(mel, quick: bool):
    block_t, block_m, block_k = 64, 32, 64  # mel.default_tiles on CUDA
    taps_pad, bins_pad = -(-mel.WIN_LENGTH // block_m) * block_m, -(-mel.N_BINS // block_k) * block_k
    specs = []
    for dt, precision in ([("fp32", "tf32x3")] if quick else [("fp32", "tf32x3"), ("fp32", "ieee"),
                                                               ("bf16", "tf32x3"), ("fp16", "tf32x3")]):
        specs.append((mel._log_mel_kernel, {
            "x_ptr": f"*{dt}", "basis_ptr": "*fp32", "fb_ptr": "*fp32", "out_ptr": "*fp32", "n_rows": "i32",
            "n_frames": "i32", "sig_len": "i32", "sig_stride": "i32"},
            dict(TAPS_PAD=taps_pad, BINS_PAD=bins_pad, N_OUT=mel.N_MELS, MELS=mel.MEL_PAD, HOP_=mel.HOP,
                 HALF_WIN=mel.WIN_LENGTH // 2, BLOCK_T=block_t, BLOCK_M=block_m, BLOCK_K=block_k,
                 PRECISION=precision), 8))
    return specs


def _ptxas_stats(ptx: str, arch: int) -> dict:
    """Registers, spill bytes and shared memory from the ptxas that ships with triton (``-v``)."""
    from triton.backends.nvidia.compiler import get_ptxas  # the one triton itself uses for this arch

    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([str(ptxas), "-v", f"--gpu-name=sm_{arch}a", str(src), "-o", str(src) + ".o"],
                              capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return {"registers": int(regs.group(1)) if regs else None,
            "spill_store_bytes": int(spill.group(1)) if spill else None,
            "spill_load_bytes": int(spill.group(2)) if spill else None}


def compile_all(arch: int = 90, quick: bool = False) -> list:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))
    from meshtalk_fast.backends.triton import kernel_module

    specs = _losses_specs(kernel_module("vertex_losses"), quick) + _mel_specs(kernel_module("mel"), quick)
    results = []
    for fn, signature, constexprs, num_warps in specs:
        label = f"{fn.__name__}[" + ", ".join(f"{k}={getattr(v, 'name', v)}" for k, v in constexprs.items()
                                               if k not in ("BLOCK_R", "BLOCK_B", "TAPS_PAD", "BINS_PAD")) + "]"
        entry = {"kernel": label, "arch": f"sm_{arch}", "num_warps": num_warps}
        t0 = time.perf_counter()
        try:
            full = {**signature, **{k: "constexpr" for k in constexprs}}
            full = {name: full[name] for name in fn.arg_names}  # in the kernel's argument order
            compiled = triton.compile(ASTSource(fn, full, constexprs=constexprs),
                                      target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
            entry.update(ok=True, shared_bytes=compiled.metadata.shared,
                         **_ptxas_stats(compiled.asm["ptx"], arch))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the others still compile
            entry.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[-2000:]}")
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        results.append(entry)
        print(("ok   " if entry["ok"] else "FAIL ") + label + (f": {entry.get('registers')} registers, "
              f"{entry.get('spill_store_bytes')} B spilled, {entry.get('shared_bytes')} B shared"
              if entry["ok"] else f": {entry['error'][:500]}"), flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    ap.add_argument("--quick", action="store_true", help="one specialisation per kernel")
    ap.add_argument("--json", type=pathlib.Path, help="write the results here")
    args = ap.parse_args(argv)
    results = compile_all(args.arch, args.quick)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
