"""The fused Triton vertex losses and LVE against the PyTorch reference: outputs AND gradients.

On a machine without CUDA the kernels run on the CPU through the Triton interpreter (TRITON_INTERPRET=1
is set once in conftest.py, before triton is imported); with CUDA they run on the GPU.
"""

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

import pytest  # noqa: E402

import meshtalk_fast as mf  # noqa: E402
from meshtalk_fast.base import dispatch as _dispatch  # noqa: E402
from meshtalk_fast.ops.vertex_losses import torch_lip_vertex_error, torch_masked_vertex_losses  # noqa: E402

# (atol, rtol) per dtype; atol is relative to the largest reference magnitude of the compared tensor
TOL = {
    torch.float32: {"loss": (1e-6, 1e-5), "grad": (1e-6, 1e-5)},
    torch.bfloat16: {"loss": (1e-6, 1e-5), "grad": (1e-2, 1e-2)},  # bf16 gradients are rounded twice
    torch.float64: {"loss": (1e-12, 1e-12), "grad": (1e-12, 1e-12)},
}


def assert_close(actual, expected, tol, what):
    atol, rtol = tol
    scale = float(expected.detach().abs().max()) or 1.0
    torch.testing.assert_close(actual.detach().to(expected.dtype), expected.detach(), atol=atol * scale, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


def make_case(V, B, T, dtype, template=None, masks=None, seed=0):
    """target [B, T, V, 3], three preds, masks [4, V] (ones, landmarks, mouth, eye) as in step 1."""
    g = torch.Generator().manual_seed(seed)
    base = template if template is not None else 50.0 * torch.randn(V, 3, generator=g)  # mm, like the template
    target = base + torch.randn(B, T, V, 3, generator=g)
    preds = [(target + 0.5 * torch.randn(B, T, V, 3, generator=g)).to(DEVICE, dtype).requires_grad_()
             for _ in range(3)]
    if masks is None:
        masks = torch.rand(4, V, generator=g)
        masks[0] = 1.0
        masks[1] = (torch.rand(V, generator=g) < 0.1).float()
        masks[1, 0] = 1.0
        masks[2:, ::5] = 0.0
    return preds, target.to(DEVICE, dtype), masks.to(DEVICE)


@pytest.fixture(scope="module")
def real_masks(assets):
    V = 6172
    return torch.stack([torch.ones(V), mf.load_mask(assets / "eye_keypoints.txt", V),
                        mf.load_mask(assets / "weighted_mouth_mask.txt", V),
                        mf.load_mask(assets / "weighted_eye_mask.txt", V)])


def losses_and_grads(backend, preds, target, masks, distance, grad_out, index=(0, 0, 1, 2)):
    if backend == "torch":
        out = torch_masked_vertex_losses(preds, target, masks, list(index), distance)
    else:
        out = mf.masked_vertex_losses(preds, target, masks, list(index), distance, backend=backend)
    leaves = (list(preds) if isinstance(preds, list) else [preds]) + ([target] if target.requires_grad else [])
    return out, torch.autograd.grad(out, leaves, grad_out)


@pytest.mark.parametrize("distance", ["squared", "l2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V, B, T", [(300, 3, 1), (300, 3, 7), (6172, 3, 1)])
def test_matches_reference(V, B, T, dtype, distance, request):
    template, masks = None, None
    if V == 6172:
        template = request.getfixturevalue("template")
        masks = request.getfixturevalue("real_masks")
    preds, target, masks = make_case(V, B, T, dtype, template, masks)
    grad_out = torch.tensor([0.7, 1.3, -0.4, 2.0], device=DEVICE)
    out, grads = losses_and_grads("triton", preds, target, masks, distance, grad_out)
    ref, ref_grads = losses_and_grads("torch", preds, target, masks, distance, grad_out)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert_close(out, ref, TOL[dtype]["loss"], f"losses V={V} T={T} {dtype} {distance}")
    for p, (a, b) in enumerate(zip(grads, ref_grads)):
        assert a.dtype == dtype and a.shape == preds[p].shape
        assert_close(a, b, TOL[dtype]["grad"], f"grad preds[{p}] V={V} T={T} {dtype} {distance}")


@pytest.mark.parametrize("distance", ["squared", "l2"])
def test_target_gradient_and_float64(distance):
    preds, target, masks = make_case(300, 2, 3, torch.float64, seed=3)
    target.requires_grad_()
    grad_out = torch.tensor([1.0, -2.0, 0.5, 3.0], device=DEVICE, dtype=torch.float64)
    out, grads = losses_and_grads("triton", preds, target, masks, distance, grad_out)
    ref, ref_grads = losses_and_grads("torch", preds, target, masks, distance, grad_out)
    assert out.dtype == torch.float64
    assert_close(out, ref, TOL[torch.float64]["loss"], "float64 losses")
    for name, a, b in zip(["preds[0]", "preds[1]", "preds[2]", "target"], grads, ref_grads):
        assert_close(a, b, TOL[torch.float64]["grad"], f"float64 grad {name}")


def test_stacked_list_noncontiguous_and_default_index():
    preds, target, masks = make_case(300, 3, 7, torch.float32, seed=4)
    grad_out = torch.tensor([0.3, -1.0, 2.0, 1.0], device=DEVICE)
    stacked = torch.stack([p.detach() for p in preds]).requires_grad_()
    out_s, (g_s,) = losses_and_grads("triton", stacked, target, masks, "squared", grad_out)
    out_l, g_l = losses_and_grads("triton", preds, target, masks, "squared", grad_out)
    assert g_s.shape == stacked.shape
    assert torch.equal(out_s, out_l)
    for p in range(3):
        assert torch.equal(g_s[p], g_l[p]), f"stacked vs list gradient of pred {p} differ"
    # non-contiguous views: frames taken with a stride, xyz-last layout kept only through a transpose
    big = torch.randn(3, 14, 300, 3, device=DEVICE)
    tgt_nc = big[:, ::2]
    pred_nc = torch.randn(3, 300, 7, 3, device=DEVICE).transpose(1, 2).requires_grad_()
    assert not tgt_nc.is_contiguous() and not pred_nc.is_contiguous()
    m2 = masks[:1].repeat(2, 1)
    a, (ga,) = losses_and_grads("triton", [pred_nc], tgt_nc, m2, "l2", torch.ones(2, device=DEVICE), (0, 0))
    b, (gb,) = losses_and_grads("torch", [pred_nc], tgt_nc, m2, "l2", torch.ones(2, device=DEVICE), (0, 0))
    assert_close(a, b, TOL[torch.float32]["loss"], "non-contiguous losses")
    assert_close(ga, gb, TOL[torch.float32]["grad"], "non-contiguous grad")
    # pred_index=None pairs pred k with mask k
    out = mf.masked_vertex_losses(preds[:2], target, masks[2:], backend="triton")
    ref = torch_masked_vertex_losses(preds[:2], target, masks[2:])
    assert_close(out, ref, TOL[torch.float32]["loss"], "default pred_index")


@pytest.mark.parametrize("distance", ["squared", "l2"])
def test_bf16_gradients_as_precise_as_the_reference(distance):
    """Against float64 on the same bf16 values, the fused gradients are no less precise than the
    reference's (each rounded once to bf16; storing the gradient direction in bf16 in forward, as the
    kernel once did, rounded twice and doubled the error)."""
    preds, target, masks = make_case(300, 2, 5, torch.bfloat16, seed=9)
    grad_out = torch.tensor([0.7, 1.3, -0.4, 2.0], device=DEVICE)
    _, fast = losses_and_grads("triton", preds, target, masks, distance, grad_out)
    _, eager = losses_and_grads("torch", preds, target, masks, distance, grad_out)
    exact_preds = [p.detach().double().requires_grad_() for p in preds]
    _, exact = losses_and_grads("torch", exact_preds, target.double(), masks.double(), distance, grad_out.double())
    for p in range(3):
        scale = float(exact[p].abs().max())
        fast_err = float((fast[p].double() - exact[p]).abs().max()) / scale
        eager_err = float((eager[p].double() - exact[p]).abs().max()) / scale
        assert fast_err <= 1.25 * eager_err + 1e-6, f"pred {p}: fused {fast_err:.3g} vs reference {eager_err:.3g}"


def test_l2_zero_distance_has_zero_gradient():
    preds, target, masks = make_case(300, 1, 7, torch.float32, seed=5)
    pred = target.detach().clone()
    pred[..., ::2, :] += 0.01
    pred.requires_grad_()
    out = mf.masked_vertex_losses([pred, target.detach().clone().requires_grad_()], target, masks[:2],
                                  distance="l2", backend="triton")
    (grad,) = torch.autograd.grad(out.sum(), pred)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[..., 1::2, :] == 0), "zero distance must give a zero gradient"
    assert float(out[1].detach()) == 0.0 and torch.isfinite(out.detach()).all()


def test_deterministic_and_no_grad_path():
    preds, target, masks = make_case(300, 3, 7, torch.float32, seed=6)
    a = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], backend="triton")
    b = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], backend="triton")
    assert torch.equal(a, b)
    with torch.no_grad():
        c = mf.masked_vertex_losses(preds, target, masks, [0, 0, 1, 2], backend="triton")
    assert torch.equal(a, c) and c.grad_fn is None


def test_step1_losses_with_triton(template, real_masks):
    preds, target, masks = make_case(6172, 1, 2, torch.float32, template, real_masks, seed=7)
    ours = mf.step1_losses(*preds, target, masks[1], masks[2], masks[3], backend="triton")
    ref = mf.step1_losses(*preds, target, masks[1], masks[2], masks[3], backend="torch")
    for key in ref:
        assert_close(ours[key], ref[key], TOL[torch.float32]["loss"], f"step1 {key}")
    g = torch.autograd.grad(ours["total"], preds)
    g_ref = torch.autograd.grad(ref["total"], preds)
    for p in range(3):
        assert_close(g[p], g_ref[p], TOL[torch.float32]["grad"], f"step1 total grad preds[{p}]")


@pytest.mark.parametrize("kwargs, match", [
    (dict(masks=-torch.ones(1, 9)), "masks must be non-negative"),
    (dict(masks=torch.zeros(1, 9)), "masks must not be all zero"),
    (dict(preds=[torch.ones(4, 8, 3)]), r"preds\[0\] must have target's shape \[4, 9, 3\]"),
    (dict(target=torch.zeros(4, 9, 2)), r"target must have shape \[..., V, 3\]"),
    (dict(preds=[torch.full((4, 9, 3), float("nan"))]), r"preds\[0\] must be finite"),
    (dict(target=torch.full((4, 9, 3), float("inf"))), "target must be finite"),
    (dict(pred_index=[3]), r"pred_index entries must be in \[0, 1\)"),
    (dict(masks=torch.ones(1, 9, requires_grad=True)), "masks must not require grad"),
])
def test_loss_bad_input(kwargs, match):
    args = dict(preds=[torch.ones(4, 9, 3, device=DEVICE)], target=torch.zeros(4, 9, 3, device=DEVICE),
                masks=torch.ones(1, 9, device=DEVICE))
    args.update({k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else
                     [t.to(DEVICE) for t in v] if k == "preds" else v) for k, v in kwargs.items()})
    with pytest.raises(ValueError, match=match):
        mf.masked_vertex_losses(**args, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V, shape", [(300, (7,)), (6172, (3, 1))])
def test_lip_vertex_error_matches_reference(V, shape, dtype, request):
    g = torch.Generator().manual_seed(8)
    if V == 6172:
        lips = mf.load_mask(request.getfixturevalue("assets") / "weighted_mouth_mask.txt", V) > 0.5
    else:
        lips = torch.rand(V, generator=g) < 0.3
    target = torch.randn(*shape, V, 3, generator=g).to(DEVICE, dtype)
    pred = (target.float() + torch.randn(target.shape, generator=g).to(DEVICE)).to(dtype).requires_grad_()
    out = mf.lip_vertex_error(pred, target, lips.to(DEVICE), backend="triton")
    ref = torch_lip_vertex_error(pred, target, lips.to(DEVICE))
    assert out.shape == () and out.dtype == ref.dtype
    assert_close(out.float(), ref.float(), TOL[dtype]["grad"], f"LVE V={V} {dtype}")
    (ga,) = torch.autograd.grad(out, pred)
    (gb,) = torch.autograd.grad(ref, pred)
    assert_close(ga.float(), gb.float(), TOL[dtype]["grad"], f"LVE grad V={V} {dtype}")


def test_lip_vertex_error_bad_input():
    pred, target, lips = torch.zeros(2, 9, 3), torch.ones(2, 9, 3), torch.ones(9)
    with pytest.raises(ValueError, match=r"lip_mask must have shape \[V=9\], got \[8\]"):
        mf.lip_vertex_error(pred, target, torch.ones(8), backend="triton")
    with pytest.raises(ValueError, match="select at least one vertex"):
        mf.lip_vertex_error(pred, target, torch.zeros(9), backend="triton")
    with pytest.raises(ValueError, match="same shape"):
        mf.lip_vertex_error(pred, target[:, :8], lips, backend="triton")
    with pytest.raises(ValueError, match="pred must be finite"):
        mf.lip_vertex_error(torch.full((2, 9, 3), float("nan")), target, lips, backend="triton")


def test_auto_keeps_the_reference_on_cpu():
    cpu = torch.device("cpu")
    assert _dispatch.resolve("masked_vertex_losses", "auto", cpu) is torch_masked_vertex_losses
    assert _dispatch.resolve("lip_vertex_error", "auto", cpu) is torch_lip_vertex_error
    # log_mel has a CPU fast path: the C++ core where it is built, else the reference
    from meshtalk_fast.backends import cpp as _cpp
    from meshtalk_fast.backends.cpp import core_unavailable

    expected = mf.torch_log_mel if core_unavailable(cpu) else _cpp.cpp_log_mel
    assert _dispatch.resolve("log_mel", "auto", cpu) is expected
