"""The diagnostics of the expression groups in the stage-1 losses: ``saturation_group{g}``, each group's heads'
mean largest class probability (~1/C for a flat softmax, ~1 for confident frames), and ``classes_group{g}``,
how many classes the batch's frames chose (1 for a head stuck on one class)."""
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training.objectives import group_saturation
from test_training import V


def grouped_model():
    torch.manual_seed(0)
    return mf.MeshTalk(V, heads=4, classes=8, expression_heads=2, expression_groups=2, audio_heads="audio")


def test_group_saturation_reads_each_groups_largest_probability():
    fuse = grouped_model().encoder.fusion_model
    logits = torch.zeros(2, 5, 4, 8)
    logits[..., 1, 3] = 50.0  # head 1 (group 1) on one class; head 0 (group 0) uniform
    got = group_saturation(torch.log_softmax(logits, -1), fuse)
    assert set(got) == {"saturation_group0", "saturation_group1", "classes_group0", "classes_group1"}
    assert float(got["saturation_group0"]) == pytest.approx(1 / 8)
    assert float(got["saturation_group1"]) == pytest.approx(1.0)
    # classes: head 0's frames choose classes (frame index) % 3 -> 3 classes, head 1 stays on one
    frame = torch.arange(10).reshape(2, 5)
    logits[..., 0, :] = 0.0
    logits[..., 0, :].scatter_(-1, (frame % 3)[..., None], 0.5)
    got = group_saturation(torch.log_softmax(logits, -1), fuse)
    assert float(got["classes_group0"]) == 3.0 and float(got["classes_group1"]) == 1.0
    logits[1, :, 1, 3], logits[1, :, 1, 6] = 0.0, 50.0  # the second sequence's frames of head 1 on another class
    assert float(group_saturation(torch.log_softmax(logits, -1), fuse)["classes_group1"]) == 2.0
    assert group_saturation(torch.zeros(1, 1, 4, 8), mf.MeshTalk(V, heads=4, classes=8).encoder.fusion_model) == {}


def test_the_trainer_logs_each_groups_saturation(tmp_path):
    import json

    from meshtalk_fast.training.trainer import Trainer
    from test_training import masks, small_config, synthetic_clips

    Trainer(grouped_model(), synthetic_clips(), masks(), small_config(steps=1), str(tmp_path), progress=False).fit(1)
    record = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert 0 < record["saturation_group0"] <= 1 and 0 < record["saturation_group1"] <= 1
    assert all(1 <= record[f"classes_group{g}"] <= 8 for g in (0, 1))


# ------------------------------------------------------------------ stage1.logit_gap_limit
def test_logit_gap_penalty_known_values_and_a_gradient_where_the_softmax_has_none():
    from meshtalk_fast.training.objectives import diversity_loss, logit_gap_penalty

    z = torch.zeros(1, 2, 2, 8)
    z[0, 0, 0, 3] = 4.0   # gap 4 - 4/8 = 3.5: under a limit of 6, no penalty
    z[0, 1, 1, 5] = 80.0  # a saturated head: gap 80 - 10 = 70
    logprobs = torch.log_softmax(z, -1)
    assert float(logit_gap_penalty(logprobs, 100.0)) == 0.0
    assert float(logit_gap_penalty(logprobs, 6.0)) == pytest.approx((70 - 6) ** 2 / 4, rel=1e-5)
    assert float(logit_gap_penalty(logprobs[:, :1, :1], 6.0)) == 0.0
    # the saturated head: the code-usage term's gradient on its logits vanishes, the gap term's does not
    sat = torch.zeros(4, 1, 8)
    sat[..., 5] = 80.0
    for term, alive in ((lambda x: diversity_loss(torch.log_softmax(x, -1)), False),
                        (lambda x: logit_gap_penalty(torch.log_softmax(x, -1), 6.0), True)):
        x = sat.clone().requires_grad_()
        term(x).backward()
        assert (float(x.grad.abs().max()) > 1.0) == alive
        if alive:  # it lowers the winning logit and raises the others
            assert bool((x.grad[..., 5] > 0).all()) and bool((x.grad[..., :5] < 0).all())


def test_stage1_adds_the_logit_gap_term_on_the_expression_heads_only():
    from meshtalk_fast.training.objectives import Stage1Objective, logit_gap_penalty
    from test_training import masks

    model = grouped_model()
    m = masks()
    template = torch.randn(2, V, 3)
    geom = template[:, None] + 0.1 * torch.randn(2, 6, V, 3)
    windows = 0.1 * torch.randn(2, 6, model.config.window_samples)

    def terms(**kw):
        objective = Stage1Objective(model.encoder, model.vertex_unet, m.eye_keypoints, m.mouth, m.eye, codes="argmax",
                                    **kw)
        return objective(template, geom, torch.Generator().manual_seed(0), windows=windows)

    off, on = terms(), terms(logit_gap=(0.5, 2.0))
    assert "logit_gap" not in off
    own = model.fuse(model.encoder.expression_encoder(geom, template), model.encoder.audio_encoder(windows))
    expected = logit_gap_penalty(own[..., :2, :], 0.5)
    torch.testing.assert_close(on["logit_gap"], expected)
    torch.testing.assert_close(on["total"], off["total"] + 2.0 * expected)
    with pytest.raises(ValueError, match="needs expression heads"):
        Stage1Objective(mf.MeshTalk(V, heads=4, classes=8).encoder, model.vertex_unet, m.eye_keypoints, m.mouth,
                        m.eye, logit_gap=(6.0, 0.01))
    with pytest.raises(ValueError, match="logit_gap must be"):
        terms(logit_gap=(-1.0, 0.01))


@pytest.mark.parametrize("field, value, needs, checked, bads, message", [
    ("logit_gap_limit", 6.0, r"stage1.logit_gap_limit > 0 needs model.expression_heads > 0", "logit_gap_weight",
     (-1.0, float("inf"), True, "6"), "stage1.logit_gap_weight must be a finite number >= 0"),
    ("expression_st_temperature", 10.0, r"stage1.expression_st_temperature = 10.0 needs model.expression_heads",
     "expression_st_temperature", (0, -2.0, float("nan"), True, "10"),
     "stage1.expression_st_temperature must be a finite number > 0"),
])
def test_expression_head_options_are_checked(field, value, needs, checked, bads, message):
    """An option for the expression heads needs them, and refuses values out of its range, naming the field."""
    from meshtalk_fast.training.config import TrainConfig

    cfg = TrainConfig()
    setattr(cfg.stage1, field, value)
    with pytest.raises(ValueError, match=needs):
        cfg.validate()
    cfg.model.expression_heads = 2
    cfg.validate()
    for bad in bads:
        setattr(cfg.stage1, checked, bad)
        with pytest.raises(ValueError, match=message):
            cfg.validate()


# ------------------------------------------------------------------ stage1.expression_st_temperature
def test_quantize_with_a_temperature_per_head_changes_the_gradient_only():
    from meshtalk_fast.models.quantize import quantize

    torch.manual_seed(0)
    z = torch.randn(3, 5, 4, 8)
    z[..., 1, 2] += 70.0  # head 1 saturated on class 2
    tau = torch.tensor([[1.0], [10.0], [10.0], [1.0]])
    weights = torch.randn(4, 8)  # a stand-in for what the decoder does with each class
    grads = []
    for t in (1.0, tau):
        x = z.clone().requires_grad_()
        codes = quantize(torch.log_softmax(x, -1), argmax=True, tau=t)
        assert torch.equal(codes.detach(), torch.nn.functional.one_hot(z.argmax(-1), 8).float())
        (codes * weights).sum().backward()
        grads.append(x.grad)
    # heads at temperature 1 get the same gradient; the saturated head gets none at 1 and one at 10
    for h in (0, 3):
        torch.testing.assert_close(grads[0][..., h, :], grads[1][..., h, :])
    assert float(grads[0][..., 1, :].abs().max()) < 1e-20
    assert float(grads[1][..., 1, :].abs().max()) > 1e-5
    # at temperature T the gradient is that of softmax(logprobs / T) (the straight-through estimate)
    x = z.clone().requires_grad_()
    soft = torch.softmax(torch.log_softmax(x, -1) / tau, -1)
    (soft * weights).sum().backward()
    torch.testing.assert_close(grads[1], x.grad)


def test_stage1_st_temperature_keeps_the_terms_and_the_audio_gradients():
    from meshtalk_fast.training.objectives import Stage1Objective
    from test_training import masks

    m = masks()
    template = torch.randn(2, V, 3)
    geom = template[:, None] + 0.1 * torch.randn(2, 6, V, 3)
    windows = 0.1 * torch.randn(2, 6, grouped_model().config.window_samples)
    out = []
    for t in (1.0, 10.0):
        model = grouped_model().eval()  # the same weights each time; no dropout
        objective = Stage1Objective(model.encoder, model.vertex_unet, m.eye_keypoints, m.mouth, m.eye, codes="argmax",
                                    diversity=0.5, expression_st_temperature=t)
        terms = objective(template, geom, torch.Generator().manual_seed(0), windows=windows)
        terms["total"].backward()
        out.append((terms, model))
    (plain, a), (warm, b) = out
    for k in ("total", "recon", "landmarks", "mouth", "eye"):  # the same codes, so the same terms
        torch.testing.assert_close(plain[k], warm[k])
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if name.startswith(("encoder.audio_encoder", "vertex_unet")):  # not behind an expression head's softmax
            torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    changed = [name for (name, pa), pb in zip(a.named_parameters(), b.parameters())
               if name.startswith("encoder.expression_encoder") and pa.grad is not None
               and not torch.allclose(pa.grad, pb.grad)]
    assert changed  # the expression encoders' gradient came through the tempered estimate
    with pytest.raises(ValueError, match="needs expression heads"):
        Stage1Objective(mf.MeshTalk(V, heads=4, classes=8).encoder, a.vertex_unet, m.eye_keypoints, m.mouth, m.eye,
                        expression_st_temperature=10.0)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="expression_st_temperature must be a finite number > 0"):
            Stage1Objective(a.encoder, a.vertex_unet, m.eye_keypoints, m.mouth, m.eye, expression_st_temperature=bad)


def test_expression_st_temperature_schedule():
    """``stage1.expression_st_anneal = s``: T falls geometrically to 1 over the first s of stage 1, 1 after;
    0 keeps T for the whole stage."""
    from meshtalk_fast.training.config import TrainConfig
    from meshtalk_fast.training.trainer import Trainer

    cfg = TrainConfig()
    cfg.model.expression_heads = 2
    cfg.stage1.expression_st_temperature, cfg.stage1.expression_st_anneal, cfg.stage1.steps = 16.0, 0.5, 100
    cfg.validate()
    trainer = Trainer.__new__(Trainer)  # only the schedule is exercised: no data needed
    trainer.config, trainer._budget_frac, trainer._locks = cfg, None, None
    got = [trainer._expression_st_temperature(step) for step in (0, 25, 49, 50, 99)]
    assert got[0] == 16.0 and got[1] == pytest.approx(4.0) and got[2] == pytest.approx(16 ** (1 - 0.49 / 0.5))
    assert got[3] == 1.0 and got[4] == 1.0
    trainer._budget_frac = 0.375  # under a time budget, whichever of steps and time is further
    assert trainer._expression_st_temperature(0) == pytest.approx(16 ** 0.25)
    cfg.stage1.expression_st_anneal, trainer._budget_frac = 0.0, None
    assert {trainer._expression_st_temperature(s) for s in (0, 50, 99)} == {16.0}
    for bad in (-0.1, 1.5, "0.5", True):
        cfg.stage1.expression_st_anneal = bad
        with pytest.raises(ValueError, match=r"stage1.expression_st_anneal must be a number in \[0, 1\]"):
            cfg.validate()


def test_the_trainer_sets_the_temperature_it_schedules(tmp_path):
    from meshtalk_fast.training.objectives import Stage1Objective
    from meshtalk_fast.training.trainer import Trainer
    from test_training import masks, small_config, synthetic_clips

    cfg = small_config(steps=3, expression_st_temperature=8.0, expression_st_anneal=1.0)
    cfg.model.expression_heads = 2  # as grouped_model()
    seen = []
    forward = Stage1Objective.forward

    def recording(self, *args, **kwargs):
        seen.append(self.expression_st_temperature)
        return forward(self, *args, **kwargs)

    Stage1Objective.forward = recording
    try:
        Trainer(grouped_model(), synthetic_clips(), masks(), cfg, str(tmp_path), progress=False).fit(1)
    finally:
        Stage1Objective.forward = forward
    assert seen[:3] == [8.0, pytest.approx(8 ** (2 / 3)), pytest.approx(8 ** (1 / 3))]
