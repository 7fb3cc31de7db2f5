"""Reference losses, the released step-1 terms, LVE and post-smoothing against re-statements."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf


def released_terms(recon, cross_a, cross_e, geom, lmk, mouth, eye):
    """The released step-1 loss terms, restated from their description."""
    B, T = geom.shape[:2]
    return {
        "recon": torch.mean((recon - geom) ** 2),
        "landmarks": torch.sum(((recon - geom) ** 2) * lmk[None, None, :, None]) / (B * T * lmk.sum() * 3),
        "mouth": torch.sum(((cross_a - geom) ** 2) * mouth[None, None, :, None]) / (B * T * mouth.sum() * 3),
        "eye": torch.sum(((cross_e - geom) ** 2) * eye[None, None, :, None]) / (B * T * eye.sum() * 3),
    }


def test_step1_matches_release(assets):
    V = 6172
    lmk = mf.load_mask(assets / "eye_keypoints.txt", V).double()
    mouth = mf.load_mask(assets / "weighted_mouth_mask.txt", V).double()
    eye = mf.load_mask(assets / "weighted_eye_mask.txt", V).double()
    assert int(lmk.sum()) == 62
    g = torch.Generator().manual_seed(0)
    geom = torch.randn(2, 3, V, 3, generator=g, dtype=torch.float64)
    preds = [torch.randn(2, 3, V, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    ours = mf.step1_losses(*preds, geom, lmk, mouth, eye, backend="torch")
    ref = released_terms(*preds, geom, lmk, mouth, eye)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-12, atol=0)
    torch.testing.assert_close(ours["total"], sum(ref.values()), rtol=1e-12, atol=0)
    g_ours = torch.autograd.grad(ours["total"], preds)
    g_ref = torch.autograd.grad(sum(ref.values()), preds)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("shape", [(7, 300, 3), (2, 3, 5, 3)])
def test_l2_distance_and_zero_gradient(shape):
    g = torch.Generator().manual_seed(1)
    target = torch.randn(shape, generator=g, dtype=torch.float64)
    pred = target.clone()
    pred[..., ::2, :] += torch.randn(pred[..., ::2, :].shape, generator=g, dtype=torch.float64)
    pred.requires_grad_()
    V = shape[-2]
    masks = torch.rand(2, V, generator=g, dtype=torch.float64)
    out = mf.masked_vertex_losses([pred], target, masks, pred_index=[0, 0], distance="l2", backend="torch")
    frames = int(np.prod(shape[:-2]))
    d = (pred - target).detach().norm(dim=-1).reshape(frames, V)
    torch.testing.assert_close(out, (d * masks[:, None, :]).sum((1, 2)) / (frames * masks.sum(1)))
    (grad,) = torch.autograd.grad(out.sum(), pred)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[..., 1::2, :] == 0)  # zero distance -> zero gradient, not NaN


def test_stacked_and_list_preds_agree():
    target = torch.randn(4, 9, 3)
    preds = torch.randn(2, 4, 9, 3)
    masks = torch.rand(3, 9)
    a = mf.masked_vertex_losses(preds, target, masks, pred_index=[1, 0, 1])
    b = mf.masked_vertex_losses(list(preds), target, masks, pred_index=[1, 0, 1])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(masks=-torch.ones(1, 9)), "non-negative"),
    (dict(masks=torch.zeros(1, 9)), "must not be all zero"),
    (dict(masks=torch.ones(1, 8)), r"masks must have shape \[K, V=9\]"),
    (dict(preds=[torch.ones(4, 8, 3)]), r"preds\[0\] must have target's shape"),
    (dict(preds=[torch.full((4, 9, 3), float("nan"))]), "must be finite"),
    (dict(pred_index=[3]), r"pred_index entries must be in \[0, 1\)"),
    (dict(distance="l1"), "distance must be one of"),
    (dict(masks=torch.ones(2, 9)), "pred_index is needed"),
])
def test_loss_bad_input(kwargs, match):
    args = dict(preds=[torch.ones(4, 9, 3)], target=torch.zeros(4, 9, 3), masks=torch.ones(1, 9))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mf.masked_vertex_losses(**args)


def test_lip_vertex_error():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(5, 20, 3, generator=g), torch.randn(5, 20, 3, generator=g)
    lips = torch.zeros(20)
    lips[[3, 7, 11]] = 1
    expected = np.mean([max(float(((pred[t, v] - target[t, v]) ** 2).sum()) for v in (3, 7, 11)) for t in range(5)])
    assert float(mf.lip_vertex_error(pred, target, lips)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="select at least one vertex"):
        mf.lip_vertex_error(pred, target, torch.zeros(20))


def test_smoothing_matches_restatement(assets):
    V = 6172
    forehead = mf.load_mask(assets / "forehead_mask.txt", V)
    neck = mf.load_mask(assets / "neck_mask.txt", V)
    geom = torch.randn(11, V, 3, dtype=torch.float64)
    taps = np.exp(-0.5 * np.arange(-4, 5) ** 2 / 4.0)
    taps /= taps.sum()

    def smooth(x, m):
        x_np = x.numpy()
        padded = np.concatenate([x_np[:1].repeat(4, 0), x_np, x_np[-1:].repeat(4, 0)])
        s = sum(taps[i] * padded[i:i + x_np.shape[0]] for i in range(9))
        m = m.double().numpy()[None, :, None]
        return torch.from_numpy(s * m + x_np * (1 - m))

    ref = smooth(smooth(geom, forehead), neck)
    torch.testing.assert_close(mf.post_smooth(geom, forehead, neck), ref, rtol=1e-12, atol=1e-12)
    const = torch.ones(6, 4, 3)
    torch.testing.assert_close(mf.smooth_geom(const), const)  # constant motion is kept
    with pytest.raises(ValueError, match=r"mask must have shape \[V=4\]"):
        mf.smooth_geom(const, torch.ones(5))
