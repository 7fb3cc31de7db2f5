"""The expression heads' model options, each checked against what it promises:

- ``audio_heads = "audio"``: the other heads' logits do not change with the expression code;
- ``prior_expression = "free"``: the prior's expression heads see neither the speech nor the other
  heads, their masked weights stay exactly zero through training, and every sampler (reference,
  incremental, C++ core) draws the same expression codes whatever the audio;
- ``stage1.upper_face_codes = "split"``: the eyelid term reaches only the first half of the expression
  heads, the brow term only the second half;
- ``expression_groups = 2``: two expression encoders, each reading its own region (eyes, forehead) and
  feeding its own half of the expression heads; nothing of one group reaches the other's heads;
- ``expression_logit_scale``: the expression heads' logits bounded (centred, norm s): the same argmax, a
  softmax that cannot saturate, so the gradient reaches the MLP where a saturated one passes none.
"""
import math

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training import TrainConfig

V, H, C, A, K = 20, 4, 8, 16, 2
EYE = torch.tensor([1.0, 1.0] + [0.0] * (V - 2))
BROW = torch.tensor([0.0] * 2 + [1.0] * 3 + [0.0] * (V - 5))


def _model(seed=0, **config):
    torch.manual_seed(seed)
    model = mf.MeshTalk(V, heads=H, classes=C, audio_dim=A, context_hidden=8, expression_heads=K,
                        expression_input="offset", **config)
    with torch.no_grad():  # sharper than the init so the samples depend visibly on the inputs
        for p in model.context_model.parameters():
            p.mul_(3.0)
    return model.eval()


def test_audio_heads_read_the_audio_code_alone():
    fuse = _model(audio_heads="audio").encoder.fusion_model
    audio = torch.randn(2, 7, A)
    a, b = fuse(torch.randn(2, 7, 128), audio), fuse(torch.randn(2, 7, 128), audio)
    assert torch.equal(a[:, :, K:], b[:, :, K:])       # the audio heads ignore the expression
    assert not torch.equal(a[:, :, :K], b[:, :, :K])   # the expression heads do not
    fused = _model(audio_heads="fused").encoder.fusion_model
    assert not torch.equal(fused(torch.randn(2, 7, 128), audio)[:, :, K:], fused(torch.randn(2, 7, 128), audio)[:, :, K:])
    # same parameter names and shapes as the released fusion: a checkpoint loads either way
    assert {k: v.shape for k, v in fuse.state_dict().items()} == {k: v.shape for k, v in fused.state_dict().items()}


@pytest.mark.parametrize("head_masks", ["released", "inclusive"])
def test_free_prior_heads_stay_free_through_training(head_masks):
    model = _model(prior_expression="free", prior_head_masks=head_masks)
    cm = model.context_model
    opt = torch.optim.AdamW(cm.parameters(), lr=1e-2, weight_decay=0.1)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, C, (2, 30, H)), C).float()
    audio = torch.randn(2, 30, A)
    for _ in range(4):
        loss = -(cm(one_hot, audio) * one_hot).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for i, layer in enumerate(cm.context_layers):
        layer = layer.requires_grad_(False)
        # the first layer's history may read the embedding of head K too: it holds the labels of heads < K
        rows, cols = K * layer.ch_out, (K + (i == 0)) * layer.ch_in
        assert float(layer.unmasked_linear.weight[:rows].abs().max()) == 0.0
        assert float(layer.historic.weight[:rows, cols:].abs().max()) == 0.0
        assert float(layer.historic.weight[:rows, :cols].abs().max()) > 0.0   # their own history trains
        assert float(layer.unmasked_linear.weight[rows:].abs().max()) > 0.0   # the audio heads keep the audio
    # teacher forced: the free heads' log-probabilities do not move with the audio or the other heads
    other = one_hot.clone()
    other[:, :, K:] = torch.nn.functional.one_hot(torch.randint(0, C, (2, 30, H - K)), C).float()
    a, b = cm(one_hot, audio), cm(other, torch.randn(2, 30, A))
    assert torch.allclose(a[:, :, :K], b[:, :, :K], atol=1e-6)
    assert not torch.allclose(a[:, :, K:], b[:, :, K:], atol=1e-3)
    # the last free head's own earlier label reaches the free heads' later steps (through the embedding of
    # head K in the first layer's history)
    last = one_hot.clone()
    last[:, 10, K - 1] = last[:, 10, K - 1].roll(1, -1)
    with torch.no_grad():
        moved = (cm(last, audio)[:, 11:, :K] - a[:, 11:, :K]).abs().max()
    assert float(moved) > 1e-4


@pytest.mark.parametrize("head_masks", ["released", "inclusive"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_free_prior_heads_are_sampled_independently_of_the_speech(backend, head_masks):
    """Same seed, two different audio codes: the expression heads' samples are identical (the Gumbel
    noise is the same and nothing else reaches them); the audio heads' are not. ``auto`` is the C++
    core's sampler on the CPU, which reads the same weights."""
    if backend == "auto":
        pytest.importorskip("meshtalk_fast._core", reason="the C++ core (meshtalk_fast._core) is not built, "
                            "so the cpp sampler is unavailable")
    model = _model(1, prior_expression="free", prior_head_masks=head_masks)
    audio = torch.randn(2, 40, A)
    other = torch.randn(2, 40, A)
    kwargs = {"generator": torch.Generator().manual_seed(3)} if backend == "torch" else {"seeds": 3}
    s1 = model.sample(audio, backend=backend, **kwargs)
    kwargs = {"generator": torch.Generator().manual_seed(3)} if backend == "torch" else {"seeds": 3}
    s2 = model.sample(other, backend=backend, **kwargs)
    assert torch.equal(s1[:, :, :K], s2[:, :, :K])
    assert not torch.equal(s1[:, :, K:], s2[:, :, K:])
    released = _model(1)  # the released prior: the speech reaches every head
    kwargs = {"generator": torch.Generator().manual_seed(3)} if backend == "torch" else {"seeds": 3}
    r1 = released.sample(audio, backend=backend, **kwargs)
    kwargs = {"generator": torch.Generator().manual_seed(3)} if backend == "torch" else {"seeds": 3}
    assert not torch.equal(r1[:, :, :K], released.sample(other, backend=backend, **kwargs)[:, :, :K])


def test_free_prior_refuses_weights_that_would_let_the_speech_in(tmp_path):
    free, released = _model(prior_expression="free"), _model()
    state = released.context_model.state_dict()
    with pytest.raises(ValueError, match=r"context_layers\.0\.unmasked_linear\.weight: a prior with free_heads=2"):
        free.context_model.load_state_dict(state)
    path = tmp_path / "free.safetensors"
    free.save(str(path))
    again = mf.MeshTalk.load(str(path))
    assert again.config.prior_expression == "free" and again.context_model.free_heads == K
    assert torch.equal(again.context_model.context_layers[2].historic.weight,
                       free.context_model.context_layers[2].historic.weight)


@pytest.mark.parametrize("field, value, match", [
    ("prior_expression", "free", "prior_expression = 'free' needs expression heads"),
    ("audio_heads", "audio", "audio_heads = 'audio' needs expression heads"),
    ("prior_expression", "speech", "prior_expression must be one of 'audio', 'free', got 'speech'"),
    ("audio_heads", "mixed", "audio_heads must be one of 'fused', 'audio', got 'mixed'"),
    ("expression_logit_scale", -1.0, r"expression_logit_scale must be a finite number >= 0 \(0: off\), got -1.0"),
    ("expression_logit_scale", float("inf"), "expression_logit_scale must be a finite number >= 0"),
    ("expression_logit_scale", True, "expression_logit_scale must be a finite number >= 0"),
    ("expression_logit_scale", 6.0,
     r"expression_logit_scale = 6.0 needs expression heads \(expression_heads > 0\)"),
    ("audio_logit_scale", -2.0, r"audio_logit_scale must be a finite number >= 0 \(0: off\), got -2.0"),
])
def test_model_options_refuse_bad_values(field, value, match):
    cfg = TrainConfig()
    setattr(cfg.model, field, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_split_upper_face_codes_give_eyes_and_brows_their_own_heads():
    """The eyelid (landmark) term's gradient reaches the first expression head only, the brow term's the
    second only; the values are those of the plain reconstruction."""
    from meshtalk_fast.training.objectives import Stage1Objective

    T = 10
    template = torch.randn(2, V, 3)
    geom = template[:, None] + 0.3 * torch.randn(2, T, V, 3)
    windows = torch.randn(2, T, 16000) * 0.1
    grads = {}
    for term in ("landmarks", "brow"):
        model = _model(audio_heads="audio")
        model.train()
        weights = {"recon": 0.0, "mouth": 0.0, "eye": 0.0, "landmarks": 0.0, "brow": 0.0, term: 1.0}
        objective = Stage1Objective(model.encoder, model.vertex_unet, EYE, BROW, EYE, codes="argmax",
                                    weights=weights, forehead=BROW, upper_face_codes="split")
        one_hot = {}

        def keep(module, inputs, output):
            output.retain_grad()
            one_hot.setdefault("logprobs", output)

        model.encoder.fusion_model.register_forward_hook(keep)
        terms = objective(template, geom, torch.Generator().manual_seed(1), windows=windows)
        terms["total"].backward()
        g = one_hot["logprobs"].grad.abs().sum((0, 1, 3))  # [H]: gradient per head of the own codes
        grads[term] = g
    assert grads["landmarks"][0] > 0 and float(grads["landmarks"][1:].sum()) == 0.0
    assert grads["brow"][1] > 0 and float(grads["brow"][0]) == 0.0 and float(grads["brow"][K:].sum()) == 0.0
    cfg = TrainConfig()
    cfg.model.expression_heads, cfg.stage1.upper_face_codes = 1, "split"
    with pytest.raises(ValueError, match="upper_face_codes = 'split' needs model.expression_heads >= 2, got 1"):
        cfg.validate()


def test_upper_expression_input_reads_the_upper_face_alone():
    """``expression_std = "upper"``: the normaliser is each vertex's largest motion over the upper-face mask
    (a rare event and a frequent one both peak at 1), ~infinite elsewhere, so moving the mouth leaves the
    expression code unchanged."""
    from meshtalk_fast.training.quickstart import initial_model, motion_range
    from meshtalk_fast.training import align

    template = torch.zeros(V, 3)
    geom = torch.zeros(30, V, 3)
    geom[3, 0, 1] = -4.0            # a rare blink: one frame
    geom[5:25, 2, 1] = 2.0          # a frequent brow raise: 20 frames
    geom[:, -1, 1] = torch.linspace(0, 1, 30)  # the mouth
    clip = align("s", template, geom, torch.zeros(16000), 30, "exact")
    largest = motion_range([clip])
    assert largest[0, 1] == 4.0 and largest[2, 1] == 2.0 and largest[-1, 1] == 1.0
    assert float(largest.min()) == pytest.approx(0.05 * 4.0 + 1e-8)  # floored at 5 % of the largest
    upper = torch.zeros(V)
    upper[:5] = 1.0
    cfg = TrainConfig()
    cfg.model.expression_input, cfg.model.expression_std = "offset", "upper"
    cfg.model.heads, cfg.model.classes, cfg.model.expression_heads = H, C, K
    model = initial_model([clip], cfg, upper).eval()
    moved = geom.clone()
    moved[:, -1, 1] += 3.0  # the mouth moves more, the upper face is the same
    enc = model.encoder.expression_encoder
    with torch.no_grad():
        a, b = enc(geom[None], template[None]), enc(moved[None], template[None])
        brow = geom.clone()
        brow[:, 2, 1] += 1.0
        c = enc(brow[None], template[None])
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-3)
    with pytest.raises(ValueError, match="expression_std = 'upper' needs the data's upper-face mask"):
        initial_model([clip], cfg)
    with pytest.raises(ValueError, match="got an empty mask"):
        initial_model([clip], cfg, torch.zeros(V))


def test_relaxed_expression_codes_warm_up_then_turn_hard():
    """``stage1.relaxed_expression``: for that share of stage 1 the expression heads' codes reach the decoder
    as softmax(logprobs / tau), tau going 1 -> 0.1; then hard one-hots. The other heads stay hard."""
    from meshtalk_fast.training.objectives import Stage1Objective
    from meshtalk_fast.training.trainer import RELAXED_TAU_END, Trainer

    model = _model()
    objective = Stage1Objective(model.encoder, model.vertex_unet, EYE, BROW, EYE, codes="argmax")
    logprobs = torch.log_softmax(torch.randn(2, 5, H, C), -1)
    hard = objective._quantize(logprobs, None)
    assert torch.equal(hard.detach().sum(-1), torch.ones(2, 5, H)) and set(hard.detach().unique().tolist()) == {0.0, 1.0}
    objective.expression_tau = 0.5
    relaxed = objective._quantize(logprobs, None)
    assert torch.allclose(relaxed[:, :, :K], torch.softmax(logprobs[:, :, :K] / 0.5, -1))
    assert torch.equal(relaxed[:, :, K:], hard[:, :, K:])
    # the trainer's schedule over stage 1's steps
    cfg = TrainConfig()
    cfg.model.heads, cfg.model.classes, cfg.model.expression_heads = H, C, K
    cfg.stage1.relaxed_expression, cfg.stage1.steps, cfg.stage1.warmup_steps = 0.5, 101, 1
    cfg.validate()
    trainer = Trainer.__new__(Trainer)  # only the schedule is exercised: no data needed
    trainer.config, trainer._budget_frac = cfg, None
    taus = [trainer._expression_tau(step) for step in (0, 1, 26, 50, 51, 100)]
    assert taus[0] == 1.0 and taus[1] == 1.0 and taus[2] == pytest.approx(RELAXED_TAU_END ** 0.5)
    assert taus[3] == pytest.approx(RELAXED_TAU_END ** (49 / 50)) and taus[4] is None and taus[5] is None
    cfg.stage1.relaxed_expression = 1.5
    with pytest.raises(ValueError, match=r"stage1.relaxed_expression must be a number in \[0, 1\], got 1.5"):
        cfg.validate()
    cfg.stage1.relaxed_expression, cfg.model.expression_heads = 0.2, 0
    with pytest.raises(ValueError, match="relaxed_expression > 0 needs model.expression_heads > 0"):
        cfg.validate()


def test_expression_groups_keep_eyes_and_brows_apart():
    """``expression_groups = 2`` with ``expression_std = "upper"``: group 0's encoder reads the eye region
    only and computes the first half of the expression heads, group 1 the forehead and the second half, so
    a blink moves only the eye heads' logits and a brow raise only the brow heads'; the stage-1 gradient of
    the eyelid term reaches group 0's parameters only (``upper_face_codes = "split"``). Saved and loaded,
    the model keeps its groups."""
    from meshtalk_fast.models.encoders import GroupedExpressionEncoder, group_heads
    from meshtalk_fast.training import align
    from meshtalk_fast.training.objectives import Stage1Objective
    from meshtalk_fast.training.quickstart import initial_model

    assert group_heads(4, 2) == [(0, 2), (2, 4)] and group_heads(3, 2) == [(0, 2), (2, 3)]
    template = torch.zeros(V, 3)
    geom = torch.zeros(30, V, 3)
    geom[3:5, 0, 1] = -4.0                        # a blink
    geom[10:20, 3, 1] = 2.0                       # a brow raise
    geom[:, -1, 1] = torch.linspace(0, 1, 30)     # the mouth
    clip = align("s", template, geom, torch.zeros(16000), 30, "exact")
    cfg = TrainConfig()
    cfg.model.expression_input, cfg.model.expression_std, cfg.model.expression_groups = "offset", "upper", 2
    cfg.model.heads, cfg.model.classes, cfg.model.expression_heads, cfg.model.audio_dim = H, C, K, A
    cfg.model.audio_heads = "audio"
    model = initial_model([clip], cfg, EYE + BROW, (EYE, BROW)).eval()
    enc = model.encoder.expression_encoder
    assert isinstance(enc, GroupedExpressionEncoder) and len(enc.groups) == 2
    fuse, audio = model.encoder.fusion_model, torch.randn(1, 30, A)
    with torch.no_grad():
        base = fuse(enc(geom[None], template[None]), audio)
        blink, brow = geom.clone(), geom.clone()
        blink[:, 1, 1] -= 3.0
        brow[:, 2, 1] += 1.0
        after_blink = fuse(enc(blink[None], template[None]), audio)
        after_brow = fuse(enc(brow[None], template[None]), audio)
        mouth = geom.clone()
        mouth[:, -1, 1] += 3.0
        assert torch.allclose(enc(mouth[None], template[None]), enc(geom[None], template[None]), atol=1e-5)
    # (the other region's vertices reach an encoder divided by 10^6: "unchanged" is to 1e-5)
    assert torch.allclose(after_blink[..., 1:, :], base[..., 1:, :], atol=1e-5)   # eyes: head 0 only
    assert not torch.allclose(after_blink[..., 0, :], base[..., 0, :], atol=1e-3)
    assert torch.allclose(after_brow[..., 0, :], base[..., 0, :], atol=1e-5)      # brows: head 1 only
    assert torch.equal(after_brow[..., 2:, :], base[..., 2:, :])                  # audio heads: exactly
    assert not torch.allclose(after_brow[..., 1, :], base[..., 1, :], atol=1e-3)

    # the eyelid term's gradient reaches group 0 only (the brow term is off)
    model.train()
    objective = Stage1Objective(model.encoder, model.vertex_unet, EYE, EYE, EYE, codes="argmax",
                                weights={"recon": 0.0, "mouth": 0.0, "eye": 0.0, "landmarks": 1.0},
                                upper_face_codes="split")
    batch = geom[None].repeat(2, 1, 1, 1) + 0.1 * torch.randn(2, 30, V, 3)
    terms = objective(template[None].repeat(2, 1, 1), batch, torch.Generator().manual_seed(0),
                      windows=torch.randn(2, 30, 16000))
    terms["total"].backward()
    grads = [sum(float(p.grad.abs().sum()) for p in g.parameters() if p.grad is not None) for g in enc.groups]
    mlp_grads = [sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)
                 for m in fuse.expression_mlp]
    assert grads[0] > 0 and grads[1] == 0 and mlp_grads[0] > 0 and mlp_grads[1] == 0

    with pytest.raises(ValueError, match=r"needs 2 region masks \(regions\), got none"):
        initial_model([clip], cfg, EYE + BROW)
    with pytest.raises(ValueError, match=r"regions\[1\] mask with weights > 0"):
        initial_model([clip], cfg, EYE + BROW, (EYE, torch.zeros(V)))
    with pytest.raises(ValueError, match="expression_groups = 2 needs at least 2 expression heads"):
        mf.MeshTalk(V, heads=H, classes=C, expression_heads=1, expression_groups=2)


def test_expression_groups_save_and_load(tmp_path):
    model = _model(expression_groups=2, audio_heads="audio")
    path = str(tmp_path / "m.safetensors")
    model.save(path)
    loaded = mf.MeshTalk.load(path)
    assert loaded.config.expression_groups == 2
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    geom, template = torch.randn(1, 6, V, 3), torch.randn(1, V, 3)
    torch.testing.assert_close(loaded.encode_expression(geom, template), model.encode_expression(geom, template),
                               rtol=0, atol=0)


def test_bounded_logits_keep_the_order_and_cap_the_largest_probability():
    from meshtalk_fast.models.encoders import bounded_logits

    g = torch.Generator().manual_seed(0)
    for classes, scale in ((8, 2.0), (128, 6.0), (37, 0.5)):
        logits = torch.randn(5, 3, classes, generator=g) * torch.tensor([0.01, 1.0, 300.0])[:, None]
        out = bounded_logits(logits, scale)
        torch.testing.assert_close(out.norm(dim=-1), torch.full(out.shape[:-1], scale), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.mean(-1), torch.zeros(out.shape[:-1]), rtol=0, atol=1e-5)
        assert torch.equal(out.argmax(-1), logits.argmax(-1))
        assert torch.equal(out.argsort(-1), (logits - logits.mean(-1, keepdim=True)).argsort(-1))
        # the largest probability any row can reach: all the centred mass on one class
        cap = 1 / (1 + (classes - 1) * math.exp(-scale * math.sqrt(classes / (classes - 1))))
        assert float(torch.softmax(out, -1).max()) <= cap + 1e-6
        one_hot = torch.nn.functional.one_hot(torch.tensor([3]), classes).float() * 1e4
        assert abs(float(torch.softmax(bounded_logits(one_hot, scale), -1).max()) - cap) < 1e-5
    assert torch.equal(bounded_logits(torch.full((2, 6), 4.0), 3.0), torch.zeros(2, 6))


def test_bounded_expression_logits_pass_the_gradient_a_saturated_softmax_stops():
    """With the MLP's logits far apart (a saturated softmax), the code-usage term gives the expression heads'
    MLP no gradient at all; bounded, it does. The audio heads and every argmax are unchanged."""
    from meshtalk_fast.training.objectives import diversity_loss

    plain, bounded = _model(audio_heads="audio"), _model(audio_heads="audio", expression_logit_scale=4.0)
    bounded.load_state_dict(plain.state_dict())
    for model in (plain, bounded):
        with torch.no_grad():  # saturate: the last layer's outputs ~1e3 apart
            model.encoder.fusion_model.expression_mlp[-1].weight.mul_(1e4)
    expression, audio = torch.randn(2, 9, 128), torch.randn(2, 9, A)
    a, b = plain.encoder.fusion_model(expression, audio), bounded.encoder.fusion_model(expression, audio)
    assert torch.equal(a[:, :, K:], b[:, :, K:])
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert float(a[:, :, :K].detach().exp().amax(-1).min()) > 0.999   # saturated
    assert float(b[:, :, :K].detach().exp().amax(-1).max()) < 0.9     # capped
    grads = []
    for model, lp in ((plain, a), (bounded, b)):
        model.zero_grad()
        diversity_loss(lp[:, :, :K]).backward()
        grads.append(float(model.encoder.fusion_model.expression_mlp[0].weight.grad.norm()))
    assert grads[0] < 1e-6 < 1e-3 < grads[1], grads


def test_expression_logit_scale_saves_and_loads(tmp_path):
    model = _model(audio_heads="audio", expression_logit_scale=6.0)
    path = str(tmp_path / "m.safetensors")
    model.save(path)
    loaded = mf.MeshTalk.load(path)
    assert loaded.config.expression_logit_scale == 6.0 and loaded.encoder.fusion_model.expression_logit_scale == 6.0
    expression, audio = torch.randn(1, 5, 128), torch.randn(1, 5, A)
    torch.testing.assert_close(loaded.encoder.fusion_model(expression, audio),
                               model.encoder.fusion_model(expression, audio), rtol=0, atol=0)


def test_audio_logit_scale_bounds_the_other_heads_alone():
    plain = _model(audio_heads="audio")
    both = _model(audio_heads="audio", expression_logit_scale=3.0, audio_logit_scale=5.0)
    audio_only = _model(audio_heads="audio", audio_logit_scale=5.0)
    for m in (both, audio_only):
        m.load_state_dict(plain.state_dict())
    expression, audio = torch.randn(2, 6, 128), torch.randn(2, 6, A) * 50
    p, b, a = (m.encoder.fusion_model(expression, audio).detach() for m in (plain, both, audio_only))
    centred_norm = lambda lp: (lp - lp.mean(-1, keepdim=True)).norm(dim=-1)  # noqa: E731 (log_softmax shifts only)
    torch.testing.assert_close(centred_norm(b[:, :, K:]), torch.full((2, 6, H - K), 5.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(centred_norm(b[:, :, :K]), torch.full((2, 6, K), 3.0), rtol=1e-5, atol=1e-5)
    assert torch.equal(a[:, :, :K], p[:, :, :K])  # the expression heads untouched by the audio bound
    assert torch.equal(p.argmax(-1), b.argmax(-1)) and torch.equal(p.argmax(-1), a.argmax(-1))
    released = mf.MeshTalk(V, heads=H, classes=C, audio_dim=A, audio_logit_scale=2.0)  # no expression heads: all
    lp = released.encoder.fusion_model(torch.randn(1, 3, 128), torch.randn(1, 3, A)).detach()
    torch.testing.assert_close(centred_norm(lp), torch.full((1, 3, H), 2.0), rtol=1e-5, atol=1e-5)
