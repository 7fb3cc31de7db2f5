"""Code-health diagnostics: the statistics of the fusion's code distributions (logged every stage-1
step) and the code sensitivity of a model (validation, evaluate, quick start), on cases whose answer
is known: uniform, saturated-and-collapsed, saturated-but-diverse codes; a decoder that ignores its
codes and one that depends on them."""
import math

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.evaluation.evaluate import code_sensitivity
from meshtalk_fast.models.quantize import code_statistics
from meshtalk_fast.training import align

V = 30


@pytest.mark.parametrize("shape", [(3, 5, 4, 7), (1, 1, 1, 3), (6, 2, 9)])
def test_uniform_codes_carry_nothing(shape):
    C = shape[-1]
    stats = code_statistics(torch.full(shape, -math.log(C)))
    assert stats["code_entropy"].item() == pytest.approx(math.log(C), rel=1e-6)
    assert stats["code_perplexity"].item() == pytest.approx(C, rel=1e-5)


def test_saturated_codes():
    H, C, N = 3, 8, 16
    collapsed = torch.full((N, H, C), -1e4)
    collapsed[..., 2] = 0.0  # every frame, every head: class 2
    s = code_statistics(collapsed.log_softmax(-1))
    assert s["code_entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert s["code_perplexity"].item() == pytest.approx(1.0, abs=1e-5)
    diverse = torch.full((N, H, C), -float("inf"))
    diverse[torch.arange(N), :, torch.arange(N) % C] = 0.0  # frame n uses class n mod C: all classes equally
    s = code_statistics(diverse)
    assert s["code_entropy"].item() == 0.0  # -inf log-probabilities count 0, not nan
    assert s["code_perplexity"].item() == pytest.approx(C, rel=1e-5)


def test_statistics_of_a_mixture_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    lp = (torch.randn(4, 7, 3, 11, generator=g) * 2).log_softmax(-1).double()
    s = code_statistics(lp)
    p = lp.exp()
    ent = float(-(p * lp).sum(-1).mean())
    avg = p.reshape(-1, 3, 11).mean(0)
    ppl = float(torch.exp(-(avg * avg.log()).sum(-1)).mean())
    assert s["code_entropy"].item() == pytest.approx(ent, rel=1e-5)
    assert s["code_perplexity"].item() == pytest.approx(ppl, rel=1e-5)


def test_diversity_loss_known_answers_and_gradient():
    """0 when the batch uses every class equally (even if each frame is sure of its class), 1 - 1/C when
    every frame picks the same class; its gradient pushes the favoured class down."""
    from meshtalk_fast.training.objectives import diversity_loss

    H, C = 3, 8
    spread = torch.full((C, H, C), -1e4)
    for k in range(C):
        spread[k, :, k] = 0.0  # frame k picks class k in every head
    assert diversity_loss(spread.log_softmax(-1)).item() == pytest.approx(0.0, abs=1e-6)
    assert diversity_loss(torch.full((2, 5, H, C), -math.log(C))).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.zeros(4, 6, H, C)
    logits[..., 5] = 3.0  # all frames favour class 5
    logits.requires_grad_(True)
    loss = diversity_loss(logits.log_softmax(-1))
    p = torch.softmax(torch.tensor([0.0] * 5 + [3.0] + [0.0] * 2), 0)
    assert loss.item() == pytest.approx(1 - math.exp(-(p * p.log()).sum().item()) / C, rel=1e-5)
    loss.backward()
    assert bool((logits.grad[..., 5] > 0).all())  # gradient descent lowers the favoured logit
    collapsed = torch.full((4, H, C), -1e4)
    collapsed[..., 1] = 0.0
    assert diversity_loss(collapsed.log_softmax(-1)).item() == pytest.approx(1 - 1 / C, rel=1e-5)


def test_one_diversity_term_over_all_heads_is_the_head_weighted_split():
    """One code-usage term over all H heads (stage1.diversity == stage1.expression_diversity) is the mean over
    heads, so it weighs the k expression heads k / H and the others (H - k) / H: the quick start's earlier joint
    weight 1 was 0.25 on its 4 expression heads and 0.75 on the other 12 (quickstart_config sets them apart)."""
    from meshtalk_fast.training.objectives import diversity_loss

    torch.manual_seed(0)
    H, k, C = 16, 4, 128
    lp = (3 * torch.randn(5, 7, H, C)).log_softmax(-1)
    joint = diversity_loss(lp)
    split = (H - k) / H * diversity_loss(lp[..., k:, :]) + k / H * diversity_loss(lp[..., :k, :])
    assert joint.item() == pytest.approx(split.item(), rel=1e-5)
    assert diversity_loss(lp[..., :k, :]).item() != pytest.approx(diversity_loss(lp[..., k:, :]).item(), rel=1e-3)


def test_statistics_errors():
    with pytest.raises(ValueError, match=r"logprobs must have shape \[\.\.\., H, C\]"):
        code_statistics(torch.zeros(5))
    with pytest.raises(ValueError, match="at least one frame"):
        code_statistics(torch.zeros(0, 2, 3))


def _clip(seed=0, frames=None, still=False, amplitude=1.0):
    g = torch.Generator().manual_seed(seed)
    envelope = torch.sin(torch.linspace(0, 40, 16000 * 2)).abs()  # loud and quiet stretches: codes vary
    audio = torch.randn(16000 * 2, generator=g) * 0.05 * envelope
    T = mf.num_frames(audio.shape[0])
    template = torch.randn(V, 3, generator=g)
    motion = torch.zeros(T, 1, 1) if still else torch.sin(torch.linspace(0, 9, T))[:, None, None] * torch.randn(1, V, 3, generator=g) * amplitude
    clip = align(f"s{seed}", template, template + motion, audio, 30, "released")
    if frames is not None:
        clip.frames, clip.geom = frames, clip.geom[:frames]
    return clip


def _model():
    torch.manual_seed(0)
    return mf.MeshTalk(V, heads=4, classes=8).eval()


def test_a_decoder_that_ignores_its_codes_measures_zero():
    model = _model()
    with torch.no_grad():
        model.vertex_unet.fusion.weight[:, 128:] = 0.0  # the code columns (after the 128 template features)
    assert code_sensitivity(model, [_clip(0), _clip(1)]) == 0.0


def test_a_decoder_that_uses_its_codes_measures_well_above_the_collapse_threshold():
    from meshtalk_fast.training.quickstart import COLLAPSED

    # small real motion, codes that change with the audio's loudness, a decoder with large code columns
    model = _model()
    clips = [_clip(0, amplitude=0.01), _clip(1, amplitude=0.01)]
    before = code_sensitivity(model, clips)
    with torch.no_grad():
        model.encoder.fusion_model.mlp[4].weight *= 50.0
        model.vertex_unet.fusion.weight[:, 128:] *= 30.0
    after = code_sensitivity(model, clips)
    assert before < COLLAPSED < after  # a fresh model barely depends on its codes (RESULTS.md)


def test_sensitivity_errors():
    model = _model()
    with pytest.raises(ValueError, match="at least one sequence"):
        code_sensitivity(model, [])
    with pytest.raises(ValueError, match="at least 2 frames"):
        code_sensitivity(model, [_clip(0, frames=1)])
    with pytest.raises(ValueError, match="never move"):
        code_sensitivity(model, [_clip(0, still=True)])
