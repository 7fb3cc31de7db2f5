"""Fused masked vertex losses (all K terms and every gradient in one pass) and the lip vertex error.

``triton_masked_vertex_losses(preds, target, masks, pred_index, distance) -> Tensor[K]`` has the contract
of ``meshtalk_fast.ops.vertex_losses.torch_masked_vertex_losses``: loss k = sum_{n,v} m_k[v] d(pred_{p(k)}[n,v] -
target[n,v]) / norm_k, norm_k = N * sum_v m_k[v] * (3 for "squared", 1 for "l2").

One forward pass (``_losses_fwd_kernel``), one program per ``BLOCK_R`` (frame, vertex) rows:
* reads the target tile once, the K mask weights of its vertices once, and each of the P predictions
  once (their base addresses come from a small int64 pointer table, so a list of preds is never
  stacked and a stacked tensor is never split);
* writes per-program partial sums ``[programs, K]``; a second single-program kernel adds them in a
  fixed order and divides by norm_k. No float atomics: results are bitwise deterministic;
* writes nothing else: the forward pass reads 1 + P tensors and writes none.

Gradients: grad_pred_p[n,v] = D_p[n,v] * w_p[v] with D_p = d'(pred_p - target) (``2 diff`` for squared,
``diff / ||diff||`` for l2, 0 at zero distance) and w_p[v] = sum_{k: p(k)=p} g_k m_k[v] / norm_k, so ONE
gradient per pred is exact however many terms share a pred (the step-1 objective uses ``recon`` for
both "recon" and "landmarks"). Backward is one elementwise pass (``_losses_bwd_kernel``) that reads the
target and the P preds again, recomputes D_p in the accumulation dtype, and writes every pred's gradient
(and the target's, ``-sum_p grad_p``, when the target requires grad: it IS supported as a
differentiable input), each rounded once to its dtype as the reference's are. Recomputing rather than
storing D_p in forward moves less memory (forward + backward: (2 + 3P) tensor passes instead of
1 + 4P; 11 instead of 13 for step 1) and rounds a 16-bit gradient once instead of twice. The masks are
weights, not parameters: masks that require grad are refused with a ValueError rather than silently
ignored.

Validation: shapes and masks are checked before the kernel (as the reference does), but the inputs'
finiteness is checked on the K losses afterwards: a NaN or inf anywhere in a pred that a loss reads, or
in the target, makes a loss non-finite (a mask weight of 0 times inf or NaN is NaN), and only then are
the inputs searched for the argument to name. That saves a read of every input and a host sync per
input on each call; preds that no loss reads are checked up front.

Accumulation is fp32 (fp64 for a float64 target, matching the reference's dtype rule); inputs may be
float16 / bfloat16 / float32 / float64; the losses come back float32 (float64 for float64 target).
``triton_lip_vertex_error`` (LVE): one program per block of frames takes the max over the lip vertices
(gathered by index, so other vertices are never read) and the argmax; per-block sums are reduced in a
fixed order; backward sends each frame's gradient to its argmax vertex.

Module-level imports are triton/torch only; the public functions validate with meshtalk_fast's shared
checks (imported when called), so messages match the reference.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl

__all__ = ["triton_masked_vertex_losses", "triton_lip_vertex_error", "default_block_rows"]

_TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
             torch.float64: tl.float64}


@triton.jit
def _rounded(x, DTYPE: tl.constexpr):
    """``x`` (the accumulation dtype) in DTYPE, rounded to nearest, ties to even. For bfloat16 the rounding
    is done here on the float32 bits, because the Triton interpreter truncates float32 -> bfloat16 (one
    ulp of error instead of half: twice the reference's) while the GPU rounds; so both give the
    reference's rounding, and the CPU tests check it. (A float64 accumulator is rounded to float32
    first: a double rounding only for a float64 target with bfloat16 preds.)"""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)


@triton.jit
def _losses_fwd_kernel(pred_table, target_ptr, masks_ptr, index_ptr, partial_ptr,
                       n_rows, n_verts, n_preds, n_terms,
                       PRED_DTYPE: tl.constexpr, ACC: tl.constexpr, L2: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)   # one row = one (frame, vertex)
    row_ok = rows < n_rows
    comp = tl.arange(0, 4)                                       # x, y, z (+1 masked lane)
    elem_ok = row_ok[:, None] & (comp[None, :] < 3)
    offs = rows[:, None] * 3 + comp[None, :]
    tgt = tl.load(target_ptr + offs, mask=elem_ok, other=0.0).to(ACC)
    vert = rows % n_verts
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < n_terms
    m = tl.load(masks_ptr + ks[None, :] * n_verts + vert[:, None], mask=row_ok[:, None] & k_ok[None, :],
                other=0.0).to(ACC)                               # [BLOCK_R, BLOCK_K]
    pred_of_k = tl.load(index_ptr + ks, mask=k_ok, other=-1)
    acc = tl.zeros([BLOCK_K], dtype=ACC)
    for p in range(n_preds):
        base = tl.load(pred_table + p).to(tl.pointer_type(PRED_DTYPE))
        diff = tl.load(base + offs, mask=elem_ok, other=0.0).to(ACC) - tgt
        sq = tl.sum(diff * diff, axis=1)
        if L2:
            positive = sq > 0
            d = tl.where(positive, tl.sqrt(tl.where(positive, sq, 1.0)), 0.0)
        else:
            d = sq
        term = tl.sum(m * d[:, None], axis=0)                   # [BLOCK_K]
        acc += tl.where(pred_of_k == p, term, 0.0)
    tl.store(partial_ptr + pid * BLOCK_K + ks, acc)


@triton.jit
def _reduce_kernel(partial_ptr, norm_ptr, out_ptr, n_blocks, n_terms,
                   ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[k] = (sum over blocks of partial[b, k]) / norm[k], always in the same order."""
    ks = tl.arange(0, BLOCK_K)
    blocks = tl.arange(0, BLOCK_B)
    acc = tl.zeros([BLOCK_B, BLOCK_K], dtype=ACC)
    for b0 in range(0, n_blocks, BLOCK_B):
        b = b0 + blocks
        acc += tl.load(partial_ptr + b[:, None] * BLOCK_K + ks[None, :], mask=(b < n_blocks)[:, None], other=0.0)
    k_ok = ks < n_terms
    norm = tl.load(norm_ptr + ks, mask=k_ok, other=1.0)
    tl.store(out_ptr + ks, tl.sum(acc, axis=0) / norm, mask=k_ok)


@triton.jit
def _losses_bwd_kernel(pred_table, target_ptr, masks_ptr, index_ptr, grad_out_ptr, norm_ptr, grad_preds_ptr,
                       grad_target_ptr, n_rows, n_elems, n_verts, n_preds, n_terms,
                       PRED_DTYPE: tl.constexpr, ACC: tl.constexpr, L2: tl.constexpr, PRED_GRAD: tl.constexpr,
                       TARGET_GRAD: tl.constexpr, TARGET_DTYPE: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    comp = tl.arange(0, 4)
    elem_ok = row_ok[:, None] & (comp[None, :] < 3)
    offs = rows[:, None] * 3 + comp[None, :]
    vert = rows % n_verts
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < n_terms
    m = tl.load(masks_ptr + ks[None, :] * n_verts + vert[:, None], mask=row_ok[:, None] & k_ok[None, :],
                other=0.0).to(ACC)
    coef = (tl.load(grad_out_ptr + ks, mask=k_ok, other=0.0).to(ACC)
            / tl.load(norm_ptr + ks, mask=k_ok, other=1.0))     # g_k / norm_k
    pred_of_k = tl.load(index_ptr + ks, mask=k_ok, other=-1)
    tgt = tl.load(target_ptr + offs, mask=elem_ok, other=0.0).to(ACC)
    grad_target = tl.zeros([BLOCK_R, 4], dtype=ACC)
    grad_ptrs = grad_preds_ptr + offs                            # advanced by n_elems = N * V * 3 per pred
    for p in range(n_preds):
        w = tl.sum(m * tl.where(pred_of_k == p, coef, 0.0)[None, :], axis=1)   # w_p[v]
        base = tl.load(pred_table + p).to(tl.pointer_type(PRED_DTYPE))
        diff = tl.load(base + offs, mask=elem_ok, other=0.0).to(ACC) - tgt
        if L2:
            sq = tl.sum(diff * diff, axis=1)
            positive = sq > 0
            scale = tl.where(positive, 1.0 / tl.sqrt(tl.where(positive, sq, 1.0)), 0.0) * w
        else:
            scale = 2.0 * w
        grad = diff * scale[:, None]
        if PRED_GRAD:
            tl.store(grad_ptrs, _rounded(grad, PRED_DTYPE), mask=elem_ok)
        grad_ptrs += n_elems
        grad_target -= grad
    if TARGET_GRAD:
        tl.store(grad_target_ptr + offs, _rounded(grad_target, TARGET_DTYPE), mask=elem_ok)


def default_block_rows(device: torch.device) -> int:
    """(frame, vertex) rows per program: 256 on CUDA; 4096 on the CPU, where the interpreter's cost is
    per operation. Chosen by register pressure, not yet timed on hardware: compiled for sm_90 with 4
    warps (benchmarks/gpu_compile.py, ptxas -v), 512 rows took 128 (forward) and 146-188 (backward)
    registers per thread, which caps a streaming kernel at ~3 blocks per SM; 256 rows take 71-72, 128
    rows 40. bench_vertex_losses.py's block-rows sweep measures 128/256/512 on a GPU."""
    return 256 if device.type == "cuda" else 4096


def _acc_dtype(target: torch.Tensor) -> torch.dtype:
    return torch.float64 if target.dtype == torch.float64 else torch.float32


def _pointers(preds, stacked: bool, n_preds: int) -> List[int]:
    """The P preds' base addresses (slices of one stacked tensor, or P tensors)."""
    if stacked:
        return [preds[0].data_ptr() + p * preds[0].stride(0) * preds[0].element_size() for p in range(n_preds)]
    return [p.data_ptr() for p in preds]


class _MaskedVertexLosses(torch.autograd.Function):
    """Inputs: target [N, V, 3], masks [K, V] (acc dtype), index [K] int32, l2, block_rows, stacked
    (preds given as one [P, N, V, 3] tensor), then the pred tensors (one stacked or P separate)."""

    @staticmethod
    def forward(ctx, target, masks, index, l2, block_rows, stacked, *preds):
        n_verts = target.shape[-2]
        n_rows = target.numel() // 3
        n_preds = preds[0].shape[0] if stacked else len(preds)
        pred_dtype = preds[0].dtype
        acc = _acc_dtype(target)
        table = torch.tensor(_pointers(preds, stacked, n_preds), dtype=torch.int64, device=target.device)
        n_terms = masks.shape[0]
        block_k = max(2, triton.next_power_of_2(n_terms))
        n_blocks = triton.cdiv(n_rows, block_rows)
        partial = torch.empty(n_blocks, block_k, dtype=acc, device=target.device)
        _losses_fwd_kernel[(n_blocks,)](table, target, masks, index, partial, n_rows, n_verts, n_preds, n_terms,
                                        PRED_DTYPE=_TL_DTYPE[pred_dtype], ACC=_TL_DTYPE[acc], L2=l2,
                                        BLOCK_R=block_rows, BLOCK_K=block_k, num_warps=4)
        frames = n_rows // n_verts
        norm = masks.sum(dim=1) * frames * (1 if l2 else 3)
        out = torch.empty(n_terms, dtype=acc, device=target.device)
        _reduce_kernel[(1,)](partial, norm, out, n_blocks, n_terms, ACC=_TL_DTYPE[acc], BLOCK_B=256,
                             BLOCK_K=block_k, num_warps=4)
        # the preds and target themselves are saved (autograd's version counters catch an in-place change
        # before backward); the pointer table is rebuilt from them in backward
        ctx.save_for_backward(target, masks, index, norm, *preds)
        ctx.meta = (stacked, n_preds, l2, block_rows, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        target, masks, index, norm, *preds = ctx.saved_tensors
        stacked, n_preds, l2, block_rows, block_k = ctx.meta
        need_preds = any(ctx.needs_input_grad[6:])
        need_target = ctx.needs_input_grad[0]
        n_verts = masks.shape[1]
        n_rows = target.numel() // 3
        acc = masks.dtype  # saved in the accumulation dtype
        pred_dtype = preds[0].dtype
        table = torch.tensor(_pointers(preds, stacked, n_preds), dtype=torch.int64, device=target.device)
        grad_preds = (torch.empty((n_preds, n_rows * 3), dtype=pred_dtype, device=target.device) if need_preds
                      else target.new_empty(1))
        grad_target = torch.empty_like(target) if need_target else target.new_empty(1)
        _losses_bwd_kernel[(triton.cdiv(n_rows, block_rows),)](
            table, target, masks, index, grad_out.contiguous(), norm, grad_preds, grad_target, n_rows, n_rows * 3,
            n_verts, n_preds, masks.shape[0], PRED_DTYPE=_TL_DTYPE[pred_dtype], ACC=_TL_DTYPE[acc], L2=l2,
            PRED_GRAD=need_preds, TARGET_GRAD=need_target, TARGET_DTYPE=_TL_DTYPE[target.dtype],
            BLOCK_R=block_rows, BLOCK_K=block_k, num_warps=4)
        if not need_preds:
            pred_grads = [None] * len(preds)
        elif stacked:
            pred_grads = [grad_preds.view(preds[0].shape)]
        else:
            pred_grads = [grad_preds[p].view(preds[p].shape) for p in range(n_preds)]
        return (grad_target if need_target else None, None, None, None, None, None, *pred_grads)


def triton_masked_vertex_losses(preds, target: torch.Tensor, masks: torch.Tensor, pred_index=None,
                                distance: str = "squared", block_rows: Optional[int] = None) -> torch.Tensor:
    """All K masked vertex losses in one fused pass: ``preds [P, ..., V, 3]`` (or a list of P tensors
    ``[..., V, 3]``), ``target [..., V, 3]``, ``masks [K, V]``, ``pred_index [K]`` (default ``arange(K)``)
    -> ``Tensor[K]`` float32 (float64 for a float64 target). Differentiable in preds and target.

    ``block_rows`` (a power of two) overrides ``default_block_rows(device)``.
    """
    from meshtalk_fast.ops.vertex_losses import check_loss_inputs

    # values (finiteness) are checked on the losses below: see the module docstring
    plist, target, masks, index = check_loss_inputs(preds, target, masks, pred_index, distance, check_values=False)
    if masks.requires_grad and torch.is_grad_enabled():
        raise ValueError("masks must not require grad with backend='triton' (they are fixed weights; the "
                         "reference backend differentiates them), got masks.requires_grad=True")
    device = target.device
    for i, p in enumerate(plist):
        if p.device != device:
            raise ValueError(f"preds[{i}] must be on target's device {device}, got {p.device}")
    if masks.device != device:
        raise ValueError(f"masks must be on target's device {device}, got {masks.device}")
    block_rows = block_rows or default_block_rows(device)
    if block_rows < 16 or block_rows & (block_rows - 1):
        raise ValueError(f"block_rows must be a power of two >= 16, got {block_rows}")
    unread = sorted(set(range(len(plist))) - set(index.tolist()))
    if unread:  # no loss reads them, so the losses cannot reveal a NaN in them: check them now
        check_loss_inputs([plist[i] for i in unread], target, masks[:1], [0], distance)
    acc = _acc_dtype(target)
    pred_dtype = plist[0].dtype
    for p in plist[1:]:
        pred_dtype = torch.promote_types(pred_dtype, p.dtype)
    stacked = isinstance(preds, torch.Tensor)
    if stacked:
        tensors: List[torch.Tensor] = [preds.to(pred_dtype).contiguous()]
    else:
        tensors = [p.to(pred_dtype).contiguous() for p in plist]
    out = _MaskedVertexLosses.apply(target.contiguous(), masks.detach().to(acc).contiguous(),
                                    index.to(device=device, dtype=torch.int32), distance == "l2", block_rows,
                                    stacked, *tensors)
    if not bool(torch.isfinite(out.detach()).all()):  # one host sync; then name the culprit as the reference does
        check_loss_inputs(preds, target, masks, pred_index, distance)
    return out


@triton.jit
def _lve_kernel(pred_ptr, target_ptr, lip_ptr, partial_ptr, best_ptr, n_frames, n_verts, n_lip,
                ACC: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_L: tl.constexpr):
    """Per frame: max over lip vertices of the squared error (and which lip vertex); per program: the sum."""
    pid = tl.program_id(0)
    frames = pid.to(tl.int64) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_ok = frames < n_frames
    best = tl.full([BLOCK_F], -1.0, dtype=ACC)
    best_j = tl.zeros([BLOCK_F], dtype=tl.int32)
    lanes = tl.arange(0, BLOCK_L)
    for j0 in range(0, n_lip, BLOCK_L):
        j = j0 + lanes
        j_ok = j < n_lip
        vert = tl.load(lip_ptr + j, mask=j_ok, other=0).to(tl.int64)
        ok = f_ok[:, None] & j_ok[None, :]
        base = frames[:, None] * (n_verts * 3) + vert[None, :] * 3
        sq = tl.zeros([BLOCK_F, BLOCK_L], dtype=ACC)
        for c in range(3):
            diff = (tl.load(pred_ptr + base + c, mask=ok, other=0.0).to(ACC)
                    - tl.load(target_ptr + base + c, mask=ok, other=0.0).to(ACC))
            sq += diff * diff
        sq = tl.where(ok, sq, -1.0)
        tile_max = tl.max(sq, axis=1)
        tile_arg = tl.argmax(sq, axis=1).to(tl.int32) + j0
        better = tile_max > best          # strict: the first lip vertex wins a tie
        best_j = tl.where(better, tile_arg, best_j)
        best = tl.where(better, tile_max, best)
    tl.store(best_ptr + frames, best_j, mask=f_ok)
    tl.store(partial_ptr + pid * 2, tl.sum(tl.where(f_ok, best, 0.0), axis=0))


class _LipVertexError(torch.autograd.Function):
    """pred, target [N, V, 3] contiguous; lip [V_lip] int32 vertex ids -> scalar. Backward sends the
    gradient to the maximising lip vertex of each frame (the first one on an exact tie; torch's amax
    splits it between tied vertices, which matters only for exactly tied non-zero errors)."""

    @staticmethod
    def forward(ctx, pred, target, lip, out_dtype, block_f):
        n_frames, n_verts = pred.shape[0], pred.shape[1]
        acc = torch.float64 if out_dtype == torch.float64 else torch.float32
        n_blocks = triton.cdiv(n_frames, block_f)
        partial = torch.zeros(n_blocks, 2, dtype=acc, device=pred.device)  # [blocks, 2]: column 1 stays 0
        best = torch.empty(n_frames, dtype=torch.int32, device=pred.device)
        block_l = min(128, max(16, triton.next_power_of_2(lip.numel())))
        _lve_kernel[(n_blocks,)](pred, target, lip, partial, best, n_frames, n_verts, lip.numel(),
                                 ACC=_TL_DTYPE[acc], BLOCK_F=block_f, BLOCK_L=block_l, num_warps=4)
        norm = torch.full((2,), float(n_frames), dtype=acc, device=pred.device)
        out = torch.empty(2, dtype=acc, device=pred.device)
        _reduce_kernel[(1,)](partial, norm, out, n_blocks, 1, ACC=_TL_DTYPE[acc], BLOCK_B=256, BLOCK_K=2,
                             num_warps=4)
        ctx.save_for_backward(pred, target, lip, best)
        ctx.acc = acc
        return out[0].to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        pred, target, lip, best = ctx.saved_tensors
        n_frames = pred.shape[0]
        frames = torch.arange(n_frames, device=pred.device)
        vert = lip.long()[best.long()]
        diff = pred[frames, vert].to(ctx.acc) - target[frames, vert].to(ctx.acc)      # [N, 3]
        g = diff * (2.0 * grad_out.to(ctx.acc) / n_frames)
        grads = []
        for x, sign, need in ((pred, 1.0, ctx.needs_input_grad[0]), (target, -1.0, ctx.needs_input_grad[1])):
            if need:
                gx = torch.zeros_like(x)
                gx[frames, vert] = (sign * g).to(x.dtype)
                grads.append(gx)
            else:
                grads.append(None)
        return grads[0], grads[1], None, None, None


def triton_lip_vertex_error(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor,
                            block_frames: Optional[int] = None) -> torch.Tensor:
    """Lip vertex error with ``torch_lip_vertex_error``'s contract: ``pred, target [..., V, 3]``,
    ``lip_mask [V]`` (non-zero = lip vertex) -> scalar in the inputs' promoted dtype: per frame the
    maximum over lip vertices of the squared L2 error, averaged over frames. Accumulates in fp32
    (fp64 for float64). Differentiable in pred and target. Inputs are checked by the reference's rules
    (``check_lve_inputs``: NaN/inf refused, not propagated into the metric).
    """
    from meshtalk_fast.ops.vertex_losses import check_lve_inputs

    sel = check_lve_inputs(pred, target, lip_mask)
    n_verts = target.shape[-2]
    if pred.device != target.device:
        raise ValueError(f"pred must be on target's device {target.device}, got {pred.device}")
    lip = torch.nonzero(sel.to(target.device)).flatten().to(torch.int32)
    # 16 frames x 128 lip vertices per program on CUDA: 64 frames took 255 registers per thread and spilled
    # 580 B (sm_90, 4 warps, benchmarks/gpu_compile.py); 16 take 116 and do not spill. Not timed yet.
    block_frames = block_frames or (16 if target.device.type == "cuda" else 256)
    if block_frames < 2 or block_frames & (block_frames - 1):
        raise ValueError(f"block_frames must be a power of two >= 2, got {block_frames}")
    out_dtype = torch.promote_types(pred.dtype, target.dtype)
    return _LipVertexError.apply(pred.reshape(-1, n_verts, 3).contiguous(),
                                 target.reshape(-1, n_verts, 3).contiguous(), lip, out_dtype, block_frames)
