"""Helpers shared by the tests (one place): model factories, per-dtype tolerances, and a mismatch report
that says where and how much two tensors differ. Import as ``from helpers import ...`` (tests/ is on the
path: conftest.py sits beside this file)."""
from __future__ import annotations

from typing import Tuple

import torch

import meshtalk_fast as mf

# (atol, rtol) per dtype for a fast path against the reference, relative to the reference's largest value
TOLERANCES = {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2),
              torch.float16: (2e-3, 2e-3)}


def tolerance(dtype: torch.dtype) -> Tuple[float, float]:
    """The (atol, rtol) the tests use for ``dtype``."""
    return TOLERANCES[dtype]


def sharpened_prior(n_vertices: int = 30, heads: int = 16, classes: int = 128, context_hidden: int = 64,
                    seed: int = 0, scale: float = 3.0, **config) -> mf.MeshTalk:
    """A MeshTalk (eval mode) whose prior is sharper than the init (context weights * ``scale``), so the
    argmax of every step is well separated and samples differ clearly between seeds."""
    torch.manual_seed(seed)
    model = mf.MeshTalk(n_vertices, heads=heads, classes=classes, context_hidden=context_hidden, **config).eval()
    with torch.no_grad():
        for p in model.context_model.parameters():
            p.mul_(scale)
    return model


def mismatch_report(what: str, actual: torch.Tensor, expected: torch.Tensor) -> str:
    """Where and how much ``actual`` differs from ``expected``: the largest difference, its index, both
    values there, and how many elements differ at all."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        return f"{what}: shapes differ, got {list(a.shape)}, expected {list(e.shape)}"
    diff = (a - e).abs()
    if diff.numel() == 0:
        return f"{what}: empty tensors"
    flat = int(diff.reshape(-1).nan_to_num(float("inf")).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return (f"{what}: max |actual - expected| = {float(diff.reshape(-1)[flat]):.3e} at {list(index)} "
            f"(actual {float(a[index]):.6g}, expected {float(e[index]):.6g}); "
            f"{int((diff > 0).sum())} of {diff.numel()} elements differ")


def assert_close(what: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    """``|actual - expected| <= atol + rtol * |expected|`` everywhere, else the mismatch report."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    ok = a.shape == e.shape and bool(((a - e).abs() <= atol + rtol * e.abs()).all())
    assert ok, mismatch_report(what, actual, expected)


# The prior sizes the sampler and decoder tests use: the released ones and odd ones (nothing a multiple of 8)
RELEASED = dict(heads=16, classes=128, hidden=64)
ODD = dict(heads=3, classes=5, hidden=6)


def prior_model(heads: int, classes: int, hidden: int, seed: int = 0, V: int = 30, scale: float = 3.0) -> mf.MeshTalk:
    """``sharpened_prior`` with the sizes of ``RELEASED`` / ``ODD`` (``hidden`` is the context width)."""
    return sharpened_prior(V, heads, classes, hidden, seed=seed, scale=scale)


def audio_codes(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Random audio codes ``[B, T, 128]``."""
    return torch.randn(B, T, 128, generator=torch.Generator().manual_seed(seed))


def labels_of(one_hot: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, C]`` -> ``[B, T, H]`` labels, -1 where the row is all zero."""
    lab = one_hot.argmax(-1)
    lab[one_hot.sum(-1) == 0] = -1
    return lab
