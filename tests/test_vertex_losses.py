"""The vertex losses (op "masked_vertex_losses", with ``step1_losses`` on it) and the lip vertex error (op
"lip_vertex_error"): every backend against the PyTorch reference, outputs AND gradients, and the reference
against re-statements of the release; odd shapes, dtypes, non-contiguous inputs, bad input.

Triton runs on the GPU where there is one, else on the CPU through the interpreter (conftest.py sets
TRITON_INTERPRET=1 once, before triton is imported)."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import assert_close, backends_of, device_of, require_backend, tolerance
from meshtalk_fast.base import dispatch as _dispatch
from meshtalk_fast.ops.vertex_losses import torch_lip_vertex_error, torch_masked_vertex_losses

LOSSES = backends_of("masked_vertex_losses")
LVE = backends_of("lip_vertex_error")
FAST_LOSSES = [b for b in LOSSES if b != "torch"]


def backend_device(op, backend, dtype=torch.float32):
    """The device of ``backend``'s inputs, after skipping where it cannot run ``op``."""
    device = device_of(backend)
    require_backend(op, backend, device, dtype, grad=True)
    return device


def make_case(V, B, T, dtype, device, template=None, masks=None, seed=0):
    """target [B, T, V, 3], three preds, masks [4, V] (ones, landmarks, mouth, eye) as in step 1."""
    g = torch.Generator().manual_seed(seed)
    base = template if template is not None else 50.0 * torch.randn(V, 3, generator=g)  # mm, like the template
    target = base + torch.randn(B, T, V, 3, generator=g)
    preds = [(target + 0.5 * torch.randn(B, T, V, 3, generator=g)).to(device, dtype).requires_grad_()
             for _ in range(3)]
    if masks is None:
        masks = torch.rand(4, V, generator=g)
        masks[0] = 1.0
        masks[1] = (torch.rand(V, generator=g) < 0.1).float()
        masks[1, 0] = 1.0
        masks[2:, ::5] = 0.0
    return preds, target.to(device, dtype), masks.to(device)


@pytest.fixture(scope="module")
def real_masks(assets):
    V = 6172
    return torch.stack([torch.ones(V), mf.load_mask(assets / "eye_keypoints.txt", V),
                        mf.load_mask(assets / "weighted_mouth_mask.txt", V),
                        mf.load_mask(assets / "weighted_eye_mask.txt", V)])


def losses_and_grads(backend, preds, target, masks, distance, grad_out, index=(0, 0, 1, 2)):
    """``backend``'s losses (``None``: the reference function itself) and their gradients in preds (and in
    target where it requires grad)."""
    if backend is None:
        out = torch_masked_vertex_losses(preds, target, masks, list(index), distance)
    else:
        out = mf.masked_vertex_losses(preds, target, masks, list(index), distance, backend=backend)
    leaves = (list(preds) if isinstance(preds, list) else [preds]) + ([target] if target.requires_grad else [])
    return out, torch.autograd.grad(out, leaves, grad_out)


# ------------------------------------------------------------------------------------------ the reference
def released_terms(recon, cross_a, cross_e, geom, lmk, mouth, eye):
    """The released step-1 loss terms, restated from their description."""
    B, T = geom.shape[:2]
    return {
        "recon": torch.mean((recon - geom) ** 2),
        "landmarks": torch.sum(((recon - geom) ** 2) * lmk[None, None, :, None]) / (B * T * lmk.sum() * 3),
        "mouth": torch.sum(((cross_a - geom) ** 2) * mouth[None, None, :, None]) / (B * T * mouth.sum() * 3),
        "eye": torch.sum(((cross_e - geom) ** 2) * eye[None, None, :, None]) / (B * T * eye.sum() * 3),
    }


@pytest.mark.parametrize("backend", LOSSES)
def test_step1_matches_release(backend, real_masks):
    device = backend_device("masked_vertex_losses", backend, torch.float64)
    lmk, mouth, eye = (m.double().to(device) for m in real_masks[1:])
    assert int(lmk.sum()) == 62
    g = torch.Generator().manual_seed(0)
    geom = torch.randn(2, 3, 6172, 3, generator=g, dtype=torch.float64).to(device)
    preds = [torch.randn(2, 3, 6172, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
             for _ in range(3)]
    ours = mf.step1_losses(*preds, geom, lmk, mouth, eye, backend=backend)
    ref = released_terms(*preds, geom, lmk, mouth, eye)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-12, atol=0)
    torch.testing.assert_close(ours["total"], sum(ref.values()), rtol=1e-12, atol=0)
    g_ours = torch.autograd.grad(ours["total"], preds)
    g_ref = torch.autograd.grad(sum(ref.values()), preds)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(7, 300, 3), (2, 3, 5, 3)])
@pytest.mark.parametrize("backend", LOSSES)
def test_l2_distance_and_zero_gradient(backend, shape, dtype):
    """The paper's ||.|| against its re-statement, far from and near zero distance; zero distance gives a
    zero loss and a zero gradient, not NaN."""
    device = backend_device("masked_vertex_losses", backend, dtype)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(shape, generator=g, dtype=torch.float64)
    pred = target.clone()
    pred[..., ::4, :] += torch.randn(pred[..., ::4, :].shape, generator=g, dtype=torch.float64)
    pred[..., 2::4, :] += 0.01
    pred, target = pred.to(device, dtype).requires_grad_(), target.to(device, dtype)
    V = shape[-2]
    masks = torch.rand(3, V, generator=g, dtype=torch.float64).to(device, dtype)
    out = mf.masked_vertex_losses([pred, target.clone().requires_grad_()], target, masks, pred_index=[0, 0, 1],
                                  distance="l2", backend=backend)
    frames = int(np.prod(shape[:-2]))
    d = (pred - target).detach().double().norm(dim=-1).reshape(frames, V)
    m = masks[:2].double()
    restated = (d * m[:, None, :]).sum((1, 2)) / (frames * m.sum(1))
    if dtype == torch.float64:
        torch.testing.assert_close(out[:2], restated)
    else:
        assert_close(f"l2 losses {backend}", out[:2], restated, *tolerance(dtype), relative=True)
    assert float(out[2].detach()) == 0.0 and torch.isfinite(out.detach()).all()
    (grad,) = torch.autograd.grad(out.sum(), pred)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[..., 1::2, :] == 0), "zero distance must give a zero gradient"


# ------------------------------------------------------------------------------------------ every backend
@pytest.mark.parametrize("distance", ["squared", "l2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V, B, T", [(300, 3, 1), (300, 3, 7), (6172, 3, 1)])
@pytest.mark.parametrize("backend", LOSSES)
def test_matches_reference(backend, V, B, T, dtype, distance, request):
    device = backend_device("masked_vertex_losses", backend, dtype)
    template, masks = None, None
    if V == 6172:
        template = request.getfixturevalue("template")
        masks = request.getfixturevalue("real_masks")
    preds, target, masks = make_case(V, B, T, dtype, device, template, masks)
    grad_out = torch.tensor([0.7, 1.3, -0.4, 2.0], device=device)
    out, grads = losses_and_grads(backend, preds, target, masks, distance, grad_out)
    ref, ref_grads = losses_and_grads(None, preds, target, masks, distance, grad_out)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert_close(f"losses V={V} T={T} {dtype} {distance}", out, ref, *tolerance(dtype), relative=True)
    for p, (a, b) in enumerate(zip(grads, ref_grads)):
        assert a.dtype == dtype and a.shape == preds[p].shape
        assert_close(f"grad preds[{p}] V={V} T={T} {dtype} {distance}", a, b, *tolerance(dtype, "grad"),
                     relative=True)


@pytest.mark.parametrize("distance", ["squared", "l2"])
@pytest.mark.parametrize("backend", LOSSES)
def test_target_gradient_and_float64(backend, distance):
    device = backend_device("masked_vertex_losses", backend, torch.float64)
    preds, target, masks = make_case(300, 2, 3, torch.float64, device, seed=3)
    target.requires_grad_()
    grad_out = torch.tensor([1.0, -2.0, 0.5, 3.0], device=device, dtype=torch.float64)
    out, grads = losses_and_grads(backend, preds, target, masks, distance, grad_out)
    ref, ref_grads = losses_and_grads(None, preds, target, masks, distance, grad_out)
    assert out.dtype == torch.float64
    assert_close("float64 losses", out, ref, *tolerance(torch.float64), relative=True)
    for name, a, b in zip(["preds[0]", "preds[1]", "preds[2]", "target"], grads, ref_grads):
        assert_close(f"float64 grad {name}", a, b, *tolerance(torch.float64, "grad"), relative=True)


@pytest.mark.parametrize("backend", LOSSES)
def test_stacked_list_noncontiguous_and_default_index(backend):
    device = backend_device("masked_vertex_losses", backend)
    preds, target, masks = make_case(300, 3, 7, torch.float32, device, seed=4)
    grad_out = torch.tensor([0.3, -1.0, 2.0, 1.0], device=device)
    stacked = torch.stack([p.detach() for p in preds]).requires_grad_()
    out_s, (g_s,) = losses_and_grads(backend, stacked, target, masks, "squared", grad_out)
    out_l, g_l = losses_and_grads(backend, preds, target, masks, "squared", grad_out)
    assert g_s.shape == stacked.shape
    assert torch.equal(out_s, out_l)
    for p in range(3):
        assert torch.equal(g_s[p], g_l[p]), f"stacked vs list gradient of pred {p} differ"
    # non-contiguous views: frames taken with a stride, xyz-last layout kept only through a transpose
    big = torch.randn(3, 14, 300, 3, device=device)
    tgt_nc = big[:, ::2]
    pred_nc = torch.randn(3, 300, 7, 3, device=device).transpose(1, 2).requires_grad_()
    assert not tgt_nc.is_contiguous() and not pred_nc.is_contiguous()
    m2 = masks[:1].repeat(2, 1)
    a, (ga,) = losses_and_grads(backend, [pred_nc], tgt_nc, m2, "l2", torch.ones(2, device=device), (0, 0))
    b, (gb,) = losses_and_grads(None, [pred_nc], tgt_nc, m2, "l2", torch.ones(2, device=device), (0, 0))
    assert_close("non-contiguous losses", a, b, *tolerance(torch.float32), relative=True)
    assert_close("non-contiguous grad", ga, gb, *tolerance(torch.float32, "grad"), relative=True)
    # pred_index=None pairs pred k with mask k
    out = mf.masked_vertex_losses(preds[:2], target, masks[2:], backend=backend)
    ref = torch_masked_vertex_losses(preds[:2], target, masks[2:])
    assert_close("default pred_index", out, ref, *tolerance(torch.float32), relative=True)


@pytest.mark.parametrize("distance", ["squared", "l2"])
@pytest.mark.parametrize("backend", FAST_LOSSES)
def test_bf16_gradients_as_precise_as_the_reference(backend, distance):
    """Against float64 on the same bf16 values, the fused gradients are no less precise than the
    reference's (each rounded once to bf16; storing the gradient direction in bf16 in forward, as the
    kernel once did, rounded twice and doubled the error)."""
    device = backend_device("masked_vertex_losses", backend, torch.bfloat16)
    preds, target, masks = make_case(300, 2, 5, torch.bfloat16, device, seed=9)
    grad_out = torch.tensor([0.7, 1.3, -0.4, 2.0], device=device)
    _, fast = losses_and_grads(backend, preds, target, masks, distance, grad_out)
    _, eager = losses_and_grads(None, preds, target, masks, distance, grad_out)
    exact_preds = [p.detach().double().requires_grad_() for p in preds]
    _, exact = losses_and_grads(None, exact_preds, target.double(), masks.double(), distance, grad_out.double())
    for p in range(3):
        scale = float(exact[p].abs().max())
        fast_err = float((fast[p].double() - exact[p]).abs().max()) / scale
        eager_err = float((eager[p].double() - exact[p]).abs().max()) / scale
        assert fast_err <= 1.25 * eager_err + 1e-6, f"pred {p}: fused {fast_err:.3g} vs reference {eager_err:.3g}"


@pytest.mark.parametrize("backend", LOSSES)
def test_deterministic_and_no_grad_path(backend):
    device = backend_device("masked_vertex_losses", backend)
    preds, target, masks = make_case(300, 3, 7, torch.float32, device, seed=6)
    a = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], backend=backend)
    b = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], backend=backend)
    assert torch.equal(a, b)
    with torch.no_grad():
        c = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], backend=backend)
    assert torch.equal(a, c) and c.grad_fn is None


@pytest.mark.parametrize("backend", LOSSES)
def test_step1_losses_match_reference(backend, template, real_masks):
    device = backend_device("masked_vertex_losses", backend)
    preds, target, masks = make_case(6172, 1, 2, torch.float32, device, template, real_masks, seed=7)
    ours = mf.step1_losses(*preds, target, masks[1], masks[2], masks[3], backend=backend)
    ref = mf.step1_losses(*preds, target, masks[1], masks[2], masks[3], backend="torch")
    for key in ref:
        assert_close(f"step1 {key}", ours[key], ref[key], *tolerance(torch.float32), relative=True)
    g = torch.autograd.grad(ours["total"], preds)
    g_ref = torch.autograd.grad(ref["total"], preds)
    for p in range(3):
        assert_close(f"step1 total grad preds[{p}]", g[p], g_ref[p], *tolerance(torch.float32, "grad"),
                     relative=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(masks=-torch.ones(1, 9)), "masks must be non-negative"),
    (dict(masks=torch.zeros(1, 9)), "masks must not be all zero"),
    (dict(masks=torch.ones(1, 8)), r"masks must have shape \[K, V=9\]"),
    (dict(masks=torch.ones(2, 9)), "pred_index is needed"),
    (dict(preds=[torch.ones(4, 8, 3)]), r"preds\[0\] must have target's shape \[4, 9, 3\]"),
    (dict(target=torch.zeros(4, 9, 2)), r"target must have shape \[..., V, 3\]"),
    (dict(preds=[torch.full((4, 9, 3), float("nan"))]), r"preds\[0\] must be finite"),
    (dict(target=torch.full((4, 9, 3), float("inf"))), "target must be finite"),
    (dict(pred_index=[3]), r"pred_index entries must be in \[0, 1\)"),
    (dict(distance="l1"), "distance must be one of"),
])
@pytest.mark.parametrize("backend", LOSSES)
def test_loss_bad_input(backend, kwargs, match):
    device = backend_device("masked_vertex_losses", backend)
    args = dict(preds=[torch.ones(4, 9, 3, device=device)], target=torch.zeros(4, 9, 3, device=device),
                masks=torch.ones(1, 9, device=device))
    args.update({k: (v.to(device) if isinstance(v, torch.Tensor) else
                     [t.to(device) for t in v] if k == "preds" else v) for k, v in kwargs.items()})
    with pytest.raises(ValueError, match=match):
        mf.masked_vertex_losses(**args, backend=backend)


@pytest.mark.parametrize("backend", LOSSES)
def test_masks_requiring_grad(backend):
    """The reference differentiates the masks; the fused kernel takes them as fixed weights and says so."""
    device = backend_device("masked_vertex_losses", backend)
    pred, target = torch.ones(4, 9, 3, device=device), torch.zeros(4, 9, 3, device=device)
    masks = torch.ones(1, 9, device=device, requires_grad=True)
    if backend != "torch":
        with pytest.raises(ValueError, match="masks must not require grad"):
            mf.masked_vertex_losses([pred], target, masks, backend=backend)
        return
    (grad,) = torch.autograd.grad(mf.masked_vertex_losses([pred], target, masks, backend=backend).sum(), masks)
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------ lip vertex error
@pytest.mark.parametrize("backend", LVE)
def test_lip_vertex_error_matches_restatement(backend):
    device = backend_device("lip_vertex_error", backend)
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(5, 20, 3, generator=g), torch.randn(5, 20, 3, generator=g)
    lips = torch.zeros(20)
    lips[[3, 7, 11]] = 1
    expected = np.mean([max(float(((pred[t, v] - target[t, v]) ** 2).sum()) for v in (3, 7, 11)) for t in range(5)])
    got = mf.lip_vertex_error(pred.to(device), target.to(device), lips.to(device), backend=backend)
    assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V, shape", [(300, (7,)), (6172, (3, 1))])
@pytest.mark.parametrize("backend", LVE)
def test_lip_vertex_error_matches_reference(backend, V, shape, dtype, request):
    device = backend_device("lip_vertex_error", backend, dtype)
    g = torch.Generator().manual_seed(8)
    if V == 6172:
        lips = mf.load_mask(request.getfixturevalue("assets") / "weighted_mouth_mask.txt", V) > 0.5
    else:
        lips = torch.rand(V, generator=g) < 0.3
    target = torch.randn(*shape, V, 3, generator=g).to(device, dtype)
    pred = (target.float() + torch.randn(target.shape, generator=g).to(device)).to(dtype).requires_grad_()
    out = mf.lip_vertex_error(pred, target, lips.to(device), backend=backend)
    ref = torch_lip_vertex_error(pred, target, lips.to(device))
    assert out.shape == () and out.dtype == ref.dtype
    assert_close(f"LVE V={V} {dtype}", out.float(), ref.float(), *tolerance(dtype, "grad"), relative=True)
    (ga,) = torch.autograd.grad(out, pred)
    (gb,) = torch.autograd.grad(ref, pred)
    assert_close(f"LVE grad V={V} {dtype}", ga.float(), gb.float(), *tolerance(dtype, "grad"), relative=True)


@pytest.mark.parametrize("backend", LVE)
def test_lip_vertex_error_bad_input(backend):
    device = backend_device("lip_vertex_error", backend)
    pred, target = torch.zeros(2, 9, 3, device=device), torch.ones(2, 9, 3, device=device)
    lips = torch.ones(9, device=device)
    with pytest.raises(ValueError, match=r"lip_mask must have shape \[V=9\], got \[8\]"):
        mf.lip_vertex_error(pred, target, lips[:8], backend=backend)
    with pytest.raises(ValueError, match="lip_mask must select at least one vertex"):
        mf.lip_vertex_error(pred, target, torch.zeros_like(lips), backend=backend)
    with pytest.raises(ValueError, match="same shape"):
        mf.lip_vertex_error(pred, target[:, :8], lips, backend=backend)
    with pytest.raises(ValueError, match="pred must be finite"):
        mf.lip_vertex_error(torch.full((2, 9, 3), float("nan"), device=device), target, lips, backend=backend)


def test_auto_keeps_the_reference_on_cpu():
    cpu = torch.device("cpu")
    assert _dispatch.resolve("masked_vertex_losses", "auto", cpu) is torch_masked_vertex_losses
    assert _dispatch.resolve("lip_vertex_error", "auto", cpu) is torch_lip_vertex_error
