"""Vertex-loss benchmark: the four released step-1 terms, forward + backward, fused Triton vs reference,
float32 and bfloat16 inputs.

Same inputs for both backends (one setup factory); both sit in one group. ``MESHTALK_BENCH_SIZE=full``:
B=8, T=32, V=6172 (a training batch); the default "smoke" size is tiny so the normal test suite runs
every case. Triton cases need a CUDA GPU (or TRITON_INTERPRET=1: see ``common.skip_triton_without_gpu``).
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_vertex_losses.py --benchmark-enable``.
"""
import os

import pytest
import torch

import meshtalk_fast as mf
from common import device_label, skip_triton_without_gpu, synchronized

SIZE = os.environ.get("MESHTALK_BENCH_SIZE", "smoke")
if SIZE not in ("smoke", "full"):
    raise ValueError(f"MESHTALK_BENCH_SIZE must be 'smoke' or 'full', got {SIZE!r}")
B, T, V = (8, 32, 6172) if SIZE == "full" else (1, 2, 300)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def loss_inputs(dtype=torch.float32):
    """One setup for every backend: recon, keep_audio, keep_expression [B, T, V, 3] (requiring grad),
    target [B, T, V, 3] and the step-1 masks [4, V] (all ones, 62 landmarks, mouth, eye weights)."""
    g = torch.Generator().manual_seed(0)
    target = 50.0 * torch.randn(B, T, V, 3, generator=g)
    preds = [(target + torch.randn(B, T, V, 3, generator=g)).to(DEVICE, dtype).requires_grad_() for _ in range(3)]
    landmarks = torch.zeros(V)
    landmarks[torch.randperm(V, generator=g)[:62]] = 1.0
    masks = torch.stack([torch.ones(V), landmarks, torch.rand(V, generator=g), torch.rand(V, generator=g)])
    return preds, target.to(DEVICE, dtype), masks.to(DEVICE)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("distance", ["squared", "l2"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_step1_losses_forward_backward(benchmark, backend, distance, dtype):
    skip_triton_without_gpu(backend, DEVICE)
    preds, target, masks = loss_inputs(DTYPES[dtype])
    benchmark.group = (f"masked_vertex_losses fwd+bwd K=4 B={B} T={T} V={V} {distance} {dtype} "
                       f"({device_label(DEVICE)})")
    # what one call must move at least: read P=3 preds and the target, write 3 gradients (gpu_check.py
    # derives achieved bandwidth from it and from the kernels' actual traffic)
    benchmark.extra_info.update(B=B, T=T, V=V, P=3, K=4, element_bytes=target.element_size())

    def step():
        out = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], distance, backend=backend)
        return out, torch.autograd.grad(out.sum(), preds)

    out, grads = benchmark(synchronized(step))
    assert out.shape == (4,) and all(g.shape == target.shape for g in grads)


@pytest.mark.parametrize("block_rows", [128, 256, 512])
def test_fused_losses_block_rows(benchmark, block_rows):
    """The fused kernel's rows per program, timed (squared, fp32): which default_block_rows is best on
    this GPU. A GPU measurement only."""
    if DEVICE.type != "cuda":
        pytest.skip("needs a CUDA GPU: the rows-per-program sweep times the compiled kernel")
    from meshtalk_fast.backends.triton import kernel_module

    fused = kernel_module("vertex_losses").triton_masked_vertex_losses
    preds, target, masks = loss_inputs()
    benchmark.group = f"masked_vertex_losses fused block_rows sweep B={B} T={T} V={V} squared fp32 ({DEVICE.type})"
    benchmark.extra_info.update(B=B, T=T, V=V, P=3, K=4, element_bytes=target.element_size())

    def step():
        out = fused(preds, target, masks, [0, 0, 1, 2], "squared", block_rows=block_rows)
        return out, torch.autograd.grad(out.sum(), preds)

    out, grads = benchmark(synchronized(step))
    assert out.shape == (4,)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_lip_vertex_error(benchmark, backend):
    skip_triton_without_gpu(backend, DEVICE)
    preds, target, masks = loss_inputs()
    lips = masks[2] > 0.9
    benchmark.group = f"lip_vertex_error B={B} T={T} V={V} ({device_label(DEVICE)})"
    with torch.no_grad():
        out = benchmark(synchronized(lambda: mf.lip_vertex_error(preds[0], target, lips, backend=backend)))
    assert out.shape == ()
