"""Helpers shared by the tests (one place): model factories, per-dtype tolerances, the backends a test of
an op is parametrised over, and a mismatch report that says where and how much two tensors differ. Import
as ``from helpers import ...`` (tests/ is on the path: conftest.py sits beside this file)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch

import meshtalk_fast as mf

CPU = torch.device("cpu")
# Where a backend's inputs live in the tests: Triton on the GPU where there is one, else on the CPU through
# the interpreter (conftest.py sets TRITON_INTERPRET=1); the reference and the C++ core on the CPU.
GPU_OR_CPU = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# (atol, rtol) per input dtype for a fast path against the reference; atol is relative to the reference's
# largest magnitude (``assert_close(..., relative=True)``). "value": outputs reduced in float32 or wider (a
# 16-bit input is exact in float32, so only the order of the sums differs); "grad": gradients, returned in the
# input's dtype (a 16-bit gradient is rounded once more).
TOLERANCES = {
    torch.float64: {"value": (1e-12, 1e-12), "grad": (1e-12, 1e-12)},
    torch.float32: {"value": (1e-6, 1e-5), "grad": (1e-6, 1e-5)},
    torch.bfloat16: {"value": (1e-6, 1e-5), "grad": (1e-2, 1e-2)},
    torch.float16: {"value": (1e-6, 1e-5), "grad": (2e-3, 2e-3)},
}


def tolerance(dtype: torch.dtype, what: str = "value") -> Tuple[float, float]:
    """The (atol, rtol) the tests use for ``dtype`` inputs: ``what`` is "value" or "grad"."""
    return TOLERANCES[dtype][what]


def backends_of(op: str) -> List[str]:
    """The backends whose table holds ``op`` (the reference, "torch", first): what a test of ``op`` against
    the reference is parametrised over."""
    from meshtalk_fast import backends

    return [name for name, table in backends.tables().items() if op in table]


def device_of(backend: str) -> torch.device:
    """Where the tests put ``backend``'s inputs (see ``GPU_OR_CPU``)."""
    return GPU_OR_CPU if backend == "triton" else CPU


def _core_unavailable():
    from meshtalk_fast.backends import cpp

    return cpp.core_unavailable(CPU)


def core_module():
    """``meshtalk_fast._core``, or skip the calling test naming why it cannot be imported (not built)."""
    try:
        from meshtalk_fast import _core
    except ImportError as e:  # a checkout without the extension
        pytest.skip(f"the C++ extension meshtalk_fast._core is not built: {e}")
    return _core


# A test of the C++ core's own interface (``meshtalk_fast._core``): skipped where the core is not built.
needs_core = pytest.mark.skipif(_core_unavailable() is not None, reason="the C++ core (meshtalk_fast._core) is not built")


def require_backend(op: str, backend: str, device: torch.device = CPU, dtype: torch.dtype = torch.float32,
                    grad: bool = False) -> None:
    """Skip the calling test, with the reason, where ``backend`` cannot run ``op`` on such inputs."""
    reason = mf.available_backends(op, device, dtype, grad)[backend]
    if reason is not None:
        pytest.skip(f"backend {backend!r} of {op} cannot run here: {reason}")


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


def assert_close(what: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0,
                 relative: bool = False) -> None:
    """``|actual - expected| <= atol + rtol * |expected|`` everywhere, else the mismatch report. ``relative``:
    ``atol`` is relative to ``expected``'s largest magnitude (as ``TOLERANCES`` are)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if relative and e.numel():
        atol *= float(e.abs().max()) or 1.0
    ok = a.shape == e.shape and bool(((a - e).abs() <= atol + rtol * e.abs()).all())
    assert ok, mismatch_report(what, actual, expected)


# The prior sizes the sampler and decoder tests use: the released ones and odd ones (nothing a multiple of 8)
RELEASED = dict(heads=16, classes=128, hidden=64)
ODD = dict(heads=3, classes=5, hidden=6)


def prior_model(heads: int, classes: int, hidden: int, seed: int = 0, V: int = 30, scale: float = 3.0,
                **config) -> mf.MeshTalk:
    """``sharpened_prior`` with the sizes of ``RELEASED`` / ``ODD`` (``hidden`` is the context width) and
    any other ``MeshTalkConfig`` field (``prior_head_masks``...)."""
    return sharpened_prior(V, heads, classes, hidden, seed=seed, scale=scale, **config)


def audio_codes(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Random audio codes ``[B, T, 128]``."""
    return torch.randn(B, T, 128, generator=torch.Generator().manual_seed(seed))


def labels_of(one_hot: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, C]`` -> ``[B, T, H]`` labels, -1 where the row is all zero."""
    lab = one_hot.argmax(-1)
    lab[one_hot.sum(-1) == 0] = -1
    return lab


def blendshape_basis(V: int, K: int, seed: int = 0, faces: bool = False) -> mf.BlendshapeBasis:
    """A random basis of ``K`` shapes (named shape0, shape1, ...) on ``V`` vertices; random triangles with
    ``faces``."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randint(0, V, (2 * V, 3), generator=g) if faces else None
    return mf.BlendshapeBasis([f"shape{k}" for k in range(K)], torch.randn(V, 3, generator=g),
                              torch.randn(K, V, 3, generator=g), f)


def push_in_chunks(stream, x, chunks: Sequence[int]) -> list:
    """Push ``x`` (a tensor or a numpy array) into ``stream`` along its last axis in chunks of the given sizes
    (cycled; numpy chunks made contiguous), then close it: the outputs of every push and of ``close()``."""
    outs, i, k = [], 0, 0
    while i < x.shape[-1]:
        n = chunks[k % len(chunks)]
        piece = x[..., i:i + n]
        outs.append(stream.push(np.ascontiguousarray(piece) if isinstance(piece, np.ndarray) else piece))
        i, k = i + n, k + 1
    outs.append(stream.close())
    return outs
