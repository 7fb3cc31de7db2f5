"""The stage-1 objective's row-restricted decodings (``Stage1Objective(decode_rows=True)``, what the
trainer runs) against whole decodings (``decode_rows=False``, the reference): the decoder's rows equal
the same rows of a whole decoding, and every loss term and every parameter's gradient agree, for each way
the eyelid and brow terms reach the codes."""
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training.objectives import Stage1Objective

V, H, C, A = 24, 4, 8, 16
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _mask(*rows, weight=1.0):
    m = torch.zeros(V)
    m[list(rows)] = weight
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decoder_rows_equal_the_whole_decoding(dtype):
    torch.manual_seed(0)
    unet = mf.MeshTalk(V, heads=H, classes=C, audio_dim=A).vertex_unet.to(dtype)
    template = torch.randn(2, 1, V, 3, dtype=dtype)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, C, (2, 5, H)), C).to(dtype).requires_grad_()
    rows = torch.tensor([17, 3, 4, 22])  # unsorted, odd count
    whole = unet(template, one_hot)
    part = unet(template, one_hot, vertices=rows)
    assert part.shape == (2, 5, 4, 3)
    torch.testing.assert_close(part, whole[:, :, rows], **TOL[dtype])
    w = torch.randn_like(part)
    g_part = torch.autograd.grad((part * w).sum(), [one_hot, *unet.parameters()], allow_unused=True)
    g_whole = torch.autograd.grad((whole[:, :, rows] * w).sum(), [one_hot, *unet.parameters()], allow_unused=True)
    for a, b in zip(g_part, g_whole):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("codes,groups,upper", [("argmax", 2, "split"), ("gumbel", 1, "expression"),
                                                ("argmax", 1, "all")])
def test_row_terms_equal_whole_terms(codes, groups, upper):
    torch.manual_seed(1)
    model = mf.MeshTalk(V, heads=H, classes=C, audio_dim=A, expression_heads=2, expression_input="offset",
                        expression_groups=groups, audio_heads="audio")
    landmarks, mouth, eye, forehead = _mask(1, 2), _mask(10, 11, 12, weight=0.5), _mask(0, 1, 2, 3), _mask(4, 5, 6)
    mouth[13] = 2.0  # uneven weights
    weights = {"landmarks": 20.0, "brow": 5.0, "mouth": 3.0}
    objectives = [Stage1Objective(model.encoder, model.vertex_unet, landmarks, mouth, eye, codes=codes,
                                  diversity=1.0, expression_diversity=0.2, weights=weights, forehead=forehead,
                                  upper_face_codes=upper, decode_rows=rows) for rows in (True, False)]
    template, geom = torch.randn(3, V, 3), torch.randn(3, 6, V, 3)
    mel, positions = torch.randn(3, 80, 140), torch.tensor([[10, 15, 20, 25, 30, 35]] * 3)  # positions <= 140 - 101
    results = []
    for objective in objectives:
        model.zero_grad()
        torch.manual_seed(7)  # the same dropout
        terms = objective(template, geom, torch.Generator().manual_seed(3), mel=mel, positions=positions)
        terms["total"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((terms, grads))
    (rows, g_rows), (whole, g_whole) = results
    assert set(rows) == set(whole) and set(g_rows) == set(g_whole)
    for key in whole:
        torch.testing.assert_close(rows[key], whole[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    for name in g_whole:
        torch.testing.assert_close(g_rows[name], g_whole[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert float(whole["brow"].detach()) > 0 and float(whole["landmarks"].detach()) > 0
