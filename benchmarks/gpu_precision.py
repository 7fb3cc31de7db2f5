"""Precision of each fast path against float64, beside the eager PyTorch reference in the same dtype
(``gpu_check.py``'s "precision" phase).

For every case the same inputs go through the Triton kernel ("fast"), the eager reference in the
inputs' own dtype ("eager"), and the reference in float64 on the same values upcast ("exact"), on the
same device. Errors are measured against "exact", so they are the computation's error, not the
rounding of the inputs. The target (issue 18): the fast path no worse than the eager reference. A case
passes when ``fast_error <= SLACK * eager_error + floor``: the slack and the floor keep two equally
good float32 summation orders from failing each other.
"""
from __future__ import annotations

from typing import Dict, List

import torch

SLACK = 1.25
FLOOR = {"log-mel": 1e-5, "relative": 1e-6}  # log units; relative to the largest exact value


def _max_rel(a: torch.Tensor, exact: torch.Tensor) -> float:
    """max |a - exact| / max |exact| (0 when exact is all zero and a equals it)."""
    scale = float(exact.abs().max()) or 1.0
    return float((a.double() - exact).abs().max()) / scale


def _case(name: str, unit: str, fast: float, eager: float) -> Dict:
    floor = FLOOR["log-mel" if unit == "log-mel" else "relative"]
    return {"case": name, "unit": unit, "fast_error": fast, "eager_error": eager,
            "fast_over_eager": fast / eager if eager > 0 else None, "within_reference": fast <= SLACK * eager + floor}


def _mel_cases(device, full: bool) -> List[Dict]:
    import meshtalk_fast as mf

    g = torch.Generator().manual_seed(0)
    B, T = (8, 32) if full else (1, 2)
    seconds = 60 if full else 0.25
    inputs = {"log_mel per-window": 0.01 * torch.randn(B, T, 16000, generator=g),
              "log_mel streamed": 0.01 * torch.randn(int(seconds * 16000), generator=g)}
    out = []
    for name, x in inputs.items():
        x = x.to(device)
        exact = mf.torch_log_mel(x.double())
        fast = mf.log_mel(x, backend="triton")
        eager = mf.log_mel(x, backend="torch")
        err = [float((y.double() - exact).abs().max()) for y in (fast, eager)]
        out.append(_case(f"{name} [{', '.join(map(str, x.shape))}]", "log-mel", *err))
    return out


def _loss_inputs(dtype, device, full: bool, seed: int = 0):
    """As benchmarks/bench_vertex_losses.py: target ~50 mm, preds 1 mm off, masks [4, V]."""
    B, T, V = (8, 32, 6172) if full else (1, 2, 300)
    g = torch.Generator().manual_seed(seed)
    target = 50.0 * torch.randn(B, T, V, 3, generator=g)
    preds = [(target + torch.randn(B, T, V, 3, generator=g)).to(dtype) for _ in range(3)]
    landmarks = torch.zeros(V)
    landmarks[torch.randperm(V, generator=g)[:62]] = 1.0
    masks = torch.stack([torch.ones(V), landmarks, torch.rand(V, generator=g), torch.rand(V, generator=g)])
    return [p.to(device) for p in preds], target.to(dtype).to(device), masks.to(device)


def _losses_and_grads(fn, preds, target, masks, distance):
    leaves = [p.detach().clone().requires_grad_() for p in preds]
    out = fn(leaves, target, masks, [0, 0, 1, 2], distance)
    grads = torch.autograd.grad(out.sum(), leaves)
    return out.detach(), grads


def _loss_cases(device, full: bool) -> List[Dict]:
    import meshtalk_fast as mf
    from meshtalk_fast.ops.vertex_losses import torch_masked_vertex_losses

    def triton(*args):
        return mf.masked_vertex_losses(*args, backend="triton")

    out = []
    for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        preds, target, masks = _loss_inputs(dtype, device, full)
        for distance in ("squared", "l2"):
            exact = _losses_and_grads(torch_masked_vertex_losses, [p.double() for p in preds], target.double(),
                                      masks.double(), distance)
            fast = _losses_and_grads(triton, preds, target, masks, distance)
            eager = _losses_and_grads(torch_masked_vertex_losses, preds, target, masks, distance)
            label = f"masked_vertex_losses {distance} {dname} [{', '.join(map(str, target.shape))}]"
            loss_err = [float(((y.double() - exact[0]).abs() / exact[0].abs()).max()) for y in (fast[0], eager[0])]
            out.append(_case(f"{label}: the 4 losses", "relative, per loss", *loss_err))
            grad_err = [max(_max_rel(g, e) for g, e in zip(y[1], exact[1])) for y in (fast, eager)]
            out.append(_case(f"{label}: gradients", "relative to the largest gradient", *grad_err))
    return out


def _lve_cases(device, full: bool) -> List[Dict]:
    import meshtalk_fast as mf
    from meshtalk_fast.ops.vertex_losses import torch_lip_vertex_error

    preds, target, masks = _loss_inputs(torch.float32, device, full, seed=1)
    lips = masks[2] > 0.9

    def run(fn, pred, tgt):
        leaf = pred.detach().clone().requires_grad_()
        value = fn(leaf, tgt, lips)
        return value.detach(), torch.autograd.grad(value, leaf)[0]

    exact = run(torch_lip_vertex_error, preds[0].double(), target.double())
    fast = run(lambda p, t, m: mf.lip_vertex_error(p, t, m, backend="triton"), preds[0], target)
    eager = run(torch_lip_vertex_error, preds[0], target)
    shape = ", ".join(map(str, target.shape))
    return [_case(f"lip_vertex_error fp32 [{shape}]: value", "relative",
                  *[_max_rel(y[0], exact[0]) for y in (fast, eager)]),
            _case(f"lip_vertex_error fp32 [{shape}]: gradient", "relative to the largest gradient",
                  *[_max_rel(y[1], exact[1]) for y in (fast, eager)])]


def precision_cases(mode: str) -> Dict:
    device = torch.device("cuda" if mode == "gpu" else "cpu")
    full = mode == "gpu"
    cases = _mel_cases(device, full) + _loss_cases(device, full) + _lve_cases(device, full)
    return {"rule": f"fast_error <= {SLACK} x eager_error + floor {FLOOR}; errors vs float64 on the same inputs",
            "cases": cases, "all_within_reference": all(c["within_reference"] for c in cases)}
