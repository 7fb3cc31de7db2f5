"""The upper face: the metrics that say whether a model blinks and raises its brows (region motion, events,
rates, closure, timing), the levers that make stage 1 learn it (expression heads, loss-term weights,
event crops), and the pictures (eye colours, side-by-side preview, plots). Known answers throughout:
the evaluation is checked with stand-in animations whose blinks are known."""
import math

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.evaluation import evaluate as ev
from meshtalk_fast.evaluation.metrics import (event_scale, event_spans, lip_vertex_error_l2, region_error,
                                   region_motion)
from meshtalk_fast.models.encoders import FusionMlp
from meshtalk_fast.ops.smoothing import post_smooth
from meshtalk_fast.training import align
from meshtalk_fast.training.batches import CropSampler, upper_face_events

V = 12
EYE = torch.tensor([1.0, 1.0] + [0.0] * (V - 2))       # two lid keypoints
BROW = torch.tensor([0.0] * 2 + [1.0] * 3 + [0.0] * (V - 5))  # a forehead of three vertices
LIPS = torch.tensor([0.0] * 8 + [1.0] * 4)


# ------------------------------------------------------------------------------------------ metrics
def test_region_motion_and_error_known_answers():
    template = torch.zeros(V, 3)
    geom = torch.zeros(2, V, 3)
    geom[1, 0, 1] = -3.0  # a lid vertex 3 down in frame 1
    geom[1, 2, 1] = 1.5   # one forehead vertex 1.5 up
    assert region_motion(geom, template, EYE, "max").tolist() == [0.0, 3.0]
    assert region_motion(geom, template, BROW, "mean").tolist() == pytest.approx([0.0, 0.5])
    assert region_error(geom, torch.zeros_like(geom), EYE).tolist() == [0.0, 3.0]
    batch = torch.stack([geom, geom])  # [B, T, V, 3] with a [B, V, 3] template
    assert region_motion(batch, torch.zeros(2, V, 3), EYE).shape == (2, 2)
    with pytest.raises(ValueError, match="selects no vertex"):
        region_motion(geom, template, torch.zeros(V))
    with pytest.raises(ValueError, match=r"mask must have shape \[V=12\]"):
        region_motion(geom, template, torch.ones(V + 1))
    with pytest.raises(ValueError, match="reduce must be"):
        region_motion(geom, template, EYE, "median")


def test_event_signals_are_the_one_event_rule():
    """region_motion -> above_rest per sequence, event_scale over all of them: the rule the evaluation, the
    trainer's event crops and the quick start's preview share."""
    from meshtalk_fast.evaluation.metrics import event_signals

    template = torch.zeros(V, 3)
    a = torch.zeros(40, V, 3)
    a[10:13, 0, 1] = -4.0          # one blink
    b = torch.zeros(30, V, 3) + 0.5  # a constant offset: no event
    signals, scale = event_signals([(a, template), (b, template)], EYE, "max")
    assert [s.shape[0] for s in signals] == [40, 30] and float(signals[1].abs().max()) == 0.0
    assert scale == pytest.approx(4.0) and event_spans(signals[0], 0.5 * scale) == [(10, 13)]
    assert event_signals([(b, template)], EYE, "max")[1] is None  # never moves: nothing to measure


def test_event_spans_merge_flickers_and_close_at_the_end():
    s = torch.tensor([0, 5, 5, 0, 5, 0, 0, 0, 5, 5], dtype=torch.float32)
    assert event_spans(s, 1.0) == [(1, 5), (8, 10)]           # the 1-frame dip at 3 is one blink
    assert event_spans(s, 1.0, min_gap=1) == [(1, 3), (4, 5), (8, 10)]
    assert event_spans(torch.zeros(4), 1.0) == []
    with pytest.raises(ValueError, match=r"signal must have shape \[T\]"):
        event_spans(torch.zeros(2, 2), 1.0)


def test_a_constant_offset_is_not_an_event():
    from meshtalk_fast.evaluation.metrics import above_rest

    offset = torch.full((30,), 0.7)  # a face whose brows sit 0.7 above the template, never moving
    assert event_spans(offset, 0.5) == [(0, 30)] and event_spans(above_rest(offset), 0.5) == []
    raised = offset.clone()
    raised[10:14] += 2.0
    assert event_spans(above_rest(raised), 0.5) == [(10, 14)]
    with pytest.raises(ValueError, match=r"signal must have shape \[T > 0\]"):
        above_rest(torch.zeros(0))


def test_event_scale_refuses_to_measure_nothing():
    assert event_scale([torch.zeros(50), torch.zeros(20)]) is None
    x = torch.zeros(1000)
    x[100:130] = 8.0
    assert event_scale([x]) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="non-empty and finite"):
        event_scale([torch.tensor([float("nan")])])


def test_lve_conventions_differ_and_match_direct_computations():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(5, V, 3, generator=g), torch.randn(5, V, 3, generator=g)
    d = (pred - target).norm(dim=-1)[:, LIPS > 0]
    assert float(lip_vertex_error_l2(pred, target, LIPS)) == pytest.approx(float(d.amax(-1).mean()), rel=1e-6)
    assert float(mf.lip_vertex_error(pred, target, LIPS, backend="torch")) == pytest.approx(
        float(d.square().amax(-1).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        lip_vertex_error_l2(pred, target[:4], LIPS)


# ------------------------------------------------------------------------------------------ levers
def test_expression_heads_see_the_expression_code_alone():
    torch.manual_seed(0)
    fusion = FusionMlp(classes=6, heads=5, expression_dim=7, audio_dim=4, hidden=9, expression_heads=2)
    e, a = torch.randn(2, 3, 7), torch.randn(2, 3, 4)
    one, other = fusion(e, a), fusion(e, torch.randn(2, 3, 4))
    torch.testing.assert_close(one[:, :, :2], other[:, :, :2])         # audio cannot move heads 0, 1
    assert (one[:, :, 2:] - other[:, :, 2:]).abs().max() > 1e-3          # but moves the others
    assert (fusion(torch.randn(2, 3, 7), a)[:, :, :2] - one[:, :, :2]).abs().max() > 1e-3
    released = FusionMlp(classes=6, heads=5, expression_dim=7, audio_dim=4, hidden=9)
    assert set(released.state_dict()) == {k for k in fusion.state_dict() if not k.startswith("expression_mlp.")}
    released.load_state_dict({k: v for k, v in fusion.state_dict().items() if k.startswith("mlp.")})
    direct = released.mlp(torch.cat([e, a], -1)).view(2, 3, 5, 6).log_softmax(-1)
    torch.testing.assert_close(released(e, a), direct)  # k = 0: the released computation
    torch.testing.assert_close(one[:, :, 2:], direct[:, :, 2:])  # the audio heads: the released MLP
    alone = fusion.expression_mlp(e).view(2, 3, 2, 6).log_softmax(-1)
    torch.testing.assert_close(one[:, :, :2], alone)  # the expression heads: their own MLP
    with pytest.raises(ValueError, match=r"expression_heads must be in \[0, heads=5\)"):
        FusionMlp(heads=5, expression_heads=5)


def test_expression_heads_config_round_trip(tmp_path):
    model = mf.MeshTalk(V, heads=4, classes=8, expression_heads=2, expression_input="offset")
    model.save(tmp_path / "m.safetensors")
    assert mf.MeshTalk.load(tmp_path / "m.safetensors").config.expression_heads == 2
    for bad in (-1, 4, 1.5, True):
        with pytest.raises(ValueError, match="expression_heads must be an integer"):
            mf.MeshTalk(V, heads=4, classes=8, expression_heads=bad)


def _blinking_clip(name, blinks, frames=90, seed=0, audio_seed=None):
    """A clip whose two lid keypoints close by 8 (units) at the given frames (a 5-frame blink each) and
    whose forehead rises by 2 over frames 40-60; the lips move with a sine."""
    g = torch.Generator().manual_seed(seed)
    template = torch.randn(V, 3, generator=g)
    geom = template.repeat(frames, 1, 1)
    for b in blinks:
        shape = torch.tensor([0.4, 0.8, 1.0, 0.8, 0.4])[: max(0, min(5, frames - b))]
        geom[b:b + len(shape), :2, 1] -= 8.0 * shape[:, None]
    geom[40:60, 2:5, 1] += 2.0
    geom[:, 8:, 1] += torch.sin(torch.arange(frames) / 3.0)[:, None]
    ga = torch.Generator().manual_seed(seed if audio_seed is None else audio_seed)
    audio = torch.randn(frames * 16000 // 30, generator=ga) * 0.05
    return align(name, template, geom, audio, 30, "exact")


def test_event_crops_contain_an_event():
    clips = [_blinking_clip("a", [10]), _blinking_clip("b", [], seed=1), _blinking_clip("c", [70], seed=2)]
    blinks, brows = upper_face_events(clips, EYE, BROW)
    assert blinks[0][11:14].all() and not blinks[0][20:40].any() and not blinks[1].any()
    assert brows[1][45:55].all() and not brows[1][:30].any()
    events = [[b | r for b, r in zip(blinks, brows)]]
    sampler = CropSampler(clips, 8, 30, "exact", 8000, seed=3, framing="stream", events=events, event_share=0.5)
    for step in range(20):
        items = sampler.batch(step, 6)
        for i, s in items[:3]:
            assert events[0][i][s:s + 8].any(), (step, i, s)
    assert sampler.batch(7, 6) == sampler.batch(7, 6)  # still a function of (seed, step)
    plain = CropSampler(clips, 8, 30, "exact", 8000, seed=3, framing="stream")
    assert plain.batch(4, 6) != sampler.batch(4, 6)
    with pytest.raises(ValueError, match="events .* are required"):
        CropSampler(clips, 8, 30, "exact", 8000, seed=3, event_share=0.5)
    with pytest.raises(ValueError, match="events must hold one"):
        CropSampler(clips, 8, 30, "exact", 8000, seed=3, events=[blinks[:2]], event_share=0.5)
    # two kinds, one rare: about half the event crops hold the rare kind
    rare = CropSampler(clips, 8, 30, "exact", 8000, seed=3, framing="stream", events=[blinks, brows], event_share=1.0)
    crops = [c for step in range(50) for c in rare.batch(step, 4)]
    with_blink = sum(bool(blinks[i][s:s + 8].any()) for i, s in crops) / len(crops)
    assert 0.35 < with_blink < 0.75
    with pytest.raises(ValueError, match="event_share must be in"):
        CropSampler(clips, 8, 30, "exact", 8000, seed=3, events=events, event_share=1.5)
    assert upper_face_events(clips, torch.zeros(V), torch.zeros(V)) == []


def test_stage1_term_weights():
    from meshtalk_fast.training import TrainConfig
    from meshtalk_fast.training.objectives import Stage1Objective, diversity_loss

    torch.manual_seed(0)
    model = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset")
    clip = _blinking_clip("a", [5])
    geom = torch.stack([clip.geom[:10], clip.geom[10:20]])
    template = torch.stack([clip.template, clip.template])
    windows = torch.stack([model.config.windows(clip.audio)[:10]] * 2)
    weights = {"recon": 0.5, "landmarks": 20.0, "mouth": 2.0, "eye": 0.0}
    args = (model.encoder, model.vertex_unet, EYE, BROW, EYE)
    plain = Stage1Objective(*args, codes="argmax")(template, geom, torch.Generator().manual_seed(1), windows=windows)
    weighted = Stage1Objective(*args, codes="argmax", weights=weights)(
        template, geom, torch.Generator().manual_seed(1), windows=windows)
    plain = {k: v.detach() for k, v in plain.items()}
    weighted = {k: v.detach() for k, v in weighted.items()}
    assert float(plain["total"]) == pytest.approx(float(plain["recon"] + plain["landmarks"] + plain["mouth"]
                                                        + plain["eye"]), rel=1e-5)
    assert float(weighted["total"]) == pytest.approx(sum(w * float(weighted[k]) for k, w in weights.items()), rel=1e-5)
    with pytest.raises(ValueError, match="unknown terms"):
        Stage1Objective(*args, weights={"lips": 1.0})
    # the brow term: the forehead-masked reconstruction error, in the total only with a weight
    brow = Stage1Objective(*args, codes="argmax", weights={"brow": 3.0}, forehead=BROW)(
        template, geom, torch.Generator().manual_seed(1), windows=windows)
    brow = {k: v.detach() for k, v in brow.items()}
    assert float(brow["total"]) == pytest.approx(float(brow["recon"] + brow["landmarks"] + brow["mouth"]
                                                       + brow["eye"] + 3.0 * brow["brow"]), rel=1e-5)
    assert "brow" not in plain
    with pytest.raises(ValueError, match="needs a forehead mask"):
        Stage1Objective(*args, weights={"brow": 1.0})
    # code usage split between the expression heads and the others
    model2 = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset", expression_heads=1)
    split = Stage1Objective(model2.encoder, model2.vertex_unet, EYE, BROW, EYE, codes="argmax", diversity=1.0,
                            expression_diversity=0.5)(template, geom, torch.Generator().manual_seed(1),
                                                      windows=windows)
    assert {"diversity", "expression_diversity"} <= set(split)
    torch.testing.assert_close(split["expression_diversity"].detach(), diversity_loss(
        model2.encoder.fusion_model(model2.encoder.expression_encoder(geom, template),
                                    model2.encoder.audio_encoder(windows))[..., :1, :]).detach())
    cfg = TrainConfig()
    cfg.stage1.landmarks_weight = -1.0
    with pytest.raises(ValueError, match="stage1.landmarks_weight must be a finite number >= 0"):
        cfg.validate()
    cfg.stage1.landmarks_weight, cfg.stage1.event_crops = 1.0, 2.0
    with pytest.raises(ValueError, match=r"stage1.event_crops must be a number in \[0, 1\]"):
        cfg.validate()
    cfg.stage1.event_crops, cfg.stage1.clip_grad_norm = 0.5, -1.0
    with pytest.raises(ValueError, match="stage1.clip_grad_norm must be a finite number >= 0"):
        cfg.validate()
    cfg.stage1.clip_grad_norm, cfg.stage1.adam_beta2 = 1.0, 1.0
    with pytest.raises(ValueError, match=r"stage1.adam_beta2 must be a number in \(0, 1\)"):
        cfg.validate()
    cfg.stage1.adam_beta2, cfg.stage1.expression_diversity = 0.99, -0.5
    with pytest.raises(ValueError, match="stage1.expression_diversity must be -1"):
        cfg.validate()


# ------------------------------------------------------------------------------------------ evaluation
@pytest.fixture()
def stand_ins(monkeypatch):
    """Replace the model's reconstruction and sampling by known animations: ``set(recon, sample)`` where
    each maps (clip, seed) -> meshes."""
    state = {}

    def set_(recon, sample):
        state.update(recon=recon, sample=sample)

    monkeypatch.setattr(ev, "reconstruct_clip", lambda model, clip: state["recon"](clip))
    def sample(model, clip, seed=0, argmax=False, smooth_masks=None):  # what animate_clip does after decoding
        geom = state["sample"](clip, seed)
        return geom if smooth_masks is None else post_smooth(geom, *smooth_masks, backend="torch")

    monkeypatch.setattr(ev, "animate_clip", sample)
    return set_


def _clips():
    return [_blinking_clip("a", [5, 50]), _blinking_clip("b", [20, 70], seed=1),
            _blinking_clip("c", [33], seed=2)]


def test_a_perfect_model_measures_perfect(stand_ins):
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()
    by_name = {c.name: c for c in clips}
    # reconstruction = truth; samples = truth delayed by a seed-dependent number of frames (same blinks,
    # other times: speech-independent timing)
    stand_ins(lambda c: c.geom, lambda c, s: by_name[c.name].geom.roll(3 + 4 * (s % 1000), 0))
    r = ev.upper_face(model, clips, EYE, BROW, seeds=(0, 1, 2))
    assert r["missing"] == []
    assert r["eyelid_error_ratio"] == 0.0 and r["brow_error_ratio"] == 0.0
    minutes = sum(c.frames for c in clips) / 30 / 60
    assert r["blink_rate_gt"] == pytest.approx(5 / minutes)
    assert r["blink_rate_ratio"] == pytest.approx(1.0) and r["brow_rate_ratio"] == pytest.approx(1.0)
    assert r["blink_closure_ratio"] == pytest.approx(1.0)
    assert r["blink_timing_lift"] < 1.0  # the seeds never blink together here


def test_a_frozen_upper_face_measures_frozen(stand_ins):
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()
    still = lambda c, *_: c.template.expand_as(c.geom)  # noqa: E731
    stand_ins(still, still)
    r = ev.upper_face(model, clips, EYE, BROW, seeds=(0, 1))
    assert r["eyelid_error_ratio"] == pytest.approx(1.0) and r["brow_error_ratio"] == pytest.approx(1.0)
    assert r["blink_rate"] == 0.0 and r["blink_rate_ratio"] == 0.0 and r["brow_rate_ratio"] == 0.0
    assert r["blink_closure_ratio"] is None and r["blink_timing_lift"] is None


def test_upper_face_errors_on_known_and_new_faces_apart(stand_ins):
    """One clip on a face the model never saw, reconstructed perfectly; the known faces' clips frozen: the
    known-face ratio is 1, the new-face ratio 0, and the overall one sits between, weighted by event frames."""
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()
    new = clips[2]
    new.template, new.geom = new.template + 0.5, new.geom + 0.5  # the same motion on another face
    stand_ins(lambda c: c.geom if c is new else c.template.expand_as(c.geom), lambda c, s: c.geom)
    r = ev.upper_face(model, clips, EYE, BROW, seeds=(0,), known_faces=[clips[0].template, clips[1].template])
    assert r["eyelid_error_ratio_known_faces"] == pytest.approx(1.0)
    assert r["brow_error_ratio_known_faces"] == pytest.approx(1.0)
    assert r["eyelid_error_ratio_new_faces"] == 0.0 and r["brow_error_ratio_new_faces"] == 0.0
    assert 0 < r["eyelid_error_ratio"] < 1 and 0 < r["brow_error_ratio"] < 1
    # no new face: None, not a ratio of nothing; no known_faces: no split at all
    r = ev.upper_face(model, clips[:2], EYE, BROW, seeds=(0,), known_faces=[clips[0].template, clips[1].template])
    assert r["eyelid_error_ratio_new_faces"] is None and r["brow_error_ratio_known_faces"] == pytest.approx(1.0)
    assert "brow_error_ratio_new_faces" not in ev.upper_face(model, clips, EYE, BROW, seeds=(0,))
    text = ev.format_report({**r, "brow_error_ratio_new_faces": 0.5})
    assert ("on the training faces' held-out sentences: eyelid 1.00, brow 1.00; on faces new to the model: "
            "eyelid n/a, brow 0.50") in text


def test_blinks_that_follow_the_speech_are_caught(stand_ins):
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()
    stand_ins(lambda c: c.geom, lambda c, s: c.geom)  # every seed blinks exactly where the data did
    r = ev.upper_face(model, clips, EYE, BROW, seeds=(0, 1, 2))
    blink_share = 15 / sum(c.frames for c in clips)  # 3 frames of each of the 5 blinks pass half closure
    assert r["blink_timing_lift"] == pytest.approx(1 / blink_share, rel=0.05)
    assert r["blink_gt_lift"] == pytest.approx(1 / blink_share, rel=0.05)


def test_missing_masks_give_no_rates_and_say_why(stand_ins):
    model = mf.MeshTalk(V, heads=4, classes=8)
    stand_ins(lambda c: c.geom, lambda c, s: c.geom)
    r = ev.upper_face(model, _clips(), torch.zeros(V), BROW)
    assert r["blink_rate"] is None and r["eyelid_error_ratio"] is None and r["blink_rate_ratio"] is None
    # with known faces asked for, the missing region's split numbers are there too, as None
    r = ev.upper_face(model, _clips(), torch.zeros(V), BROW, seeds=(0,), known_faces=[_clips()[0].template])
    assert r["eyelid_error_ratio_known_faces"] is None and r["eyelid_error_ratio_new_faces"] is None
    assert r["brow_error_ratio_known_faces"] == 0.0
    assert r["brow_rate_ratio"] == pytest.approx(1.0)
    assert any("eye_keypoints mask is missing or empty" in m for m in r["missing"])
    still = [align(c.name, c.template, c.template.expand_as(c.geom).clone(), c.audio, 30, "exact") for c in _clips()]
    r = ev.upper_face(model, still, EYE, BROW)
    assert r["blink_rate"] is None and r["brow_rate"] is None
    assert any("no blink events" in m for m in r["missing"])
    with pytest.raises(ValueError, match="at least one seed"):
        ev.upper_face(model, still, EYE, BROW, seeds=())


def test_event_rates_count_the_ground_truth_as_upper_face_does(stand_ins):
    """event_rates: the clips' own events per minute, the same count upper_face reports for its ground
    truth; None (not a rate of nothing) for an empty mask; bad arguments named."""
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()
    stand_ins(lambda c: c.geom, lambda c, s: c.geom)
    minutes = sum(c.frames for c in clips) / 30 / 60
    r = ev.event_rates(clips, EYE, BROW, 30)
    assert r["blink_events"] == 5 and r["blink_rate"] == pytest.approx(5 / minutes)
    assert r["brow_events"] == 3 and r["brow_rate"] == pytest.approx(3 / minutes)  # one raise per clip
    u = ev.upper_face(model, clips, EYE, BROW, seeds=(0, 1))
    assert (u["blink_events_gt"], u["brow_events_gt"]) == (5, 3)
    assert u["blink_rate_gt"] == pytest.approx(r["blink_rate"]) and u["brow_rate_gt"] == pytest.approx(r["brow_rate"])
    assert (u["blink_events"], u["brow_events"]) == (10, 6)  # every seed blinks as the data: 2 x the events
    assert ev.event_rates(clips[:1], EYE, BROW, 15)["blink_rate"] == pytest.approx(2 / (90 / 15 / 60))  # at 15 fps
    empty = ev.event_rates(clips, torch.zeros(V), BROW, 30)
    assert empty["blink_rate"] is None and empty["blink_events"] is None and empty["brow_events"] == 3
    with pytest.raises(ValueError, match="fps must be positive, got 0"):
        ev.event_rates(clips, EYE, BROW, 0)
    with pytest.raises(ValueError, match="at least one sequence"):
        ev.event_rates([], EYE, BROW, 30)


def test_rates_are_counted_over_rate_clips_and_errors_over_clips(stand_ins):
    """rate_clips: the sampled and true rates (and the closure and timing numbers) come from those clips alone;
    the reconstruction errors stay on ``clips``."""
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()
    frozen = clips[2]  # its reconstruction never blinks; the other clips' are perfect
    stand_ins(lambda c: c.template.expand_as(c.geom) if c is frozen else c.geom,
              lambda c, s: c.geom if c is not frozen else c.template.expand_as(c.geom))
    whole = ev.upper_face(model, clips, EYE, BROW, seeds=(0, 1))
    part = ev.upper_face(model, clips, EYE, BROW, seeds=(0, 1), rate_clips=clips[:2])
    for key in ("eyelid_error_ratio", "brow_error_ratio"):
        assert part[key] == pytest.approx(whole[key]) and 0 < part[key] < 1
    minutes = sum(c.frames for c in clips[:2]) / 30 / 60
    assert part["blink_events_gt"] == 4 and part["blink_rate_gt"] == pytest.approx(4 / minutes)
    assert part["blink_events"] == 8 and part["blink_rate_ratio"] == pytest.approx(1.0)  # both seeds as the data
    assert whole["blink_events_gt"] == 5 and whole["blink_rate_ratio"] == pytest.approx(0.8)  # 4 of 5 sampled
    assert part["brow_rate_ratio"] == pytest.approx(1.0) and whole["brow_rate_ratio"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="rate_clips must hold at least one sequence"):
        ev.upper_face(model, clips, EYE, BROW, rate_clips=[])


def test_post_smoothing_merges_a_flickering_brow_raise(stand_ins):
    """A sampled brow raise that dips under the event threshold for 3 frames counts as two raises on the
    decoder's raw output and as one after the released post-processing (``smooth_masks``), which is what
    ``animate`` writes; the eyes, outside the forehead mask, are not touched by it."""
    model = mf.MeshTalk(V, heads=4, classes=8)
    clips = _clips()

    def flicker(c, s):
        geom = c.geom.clone()
        geom[49:52, 2:5, 1] = c.template[2:5, 1]  # the raise of frames 40-60 drops to rest for 3 frames
        return geom

    stand_ins(lambda c: c.geom, flicker)
    raw = ev.upper_face(model, clips, EYE, BROW, seeds=(0,))
    smooth = ev.upper_face(model, clips, EYE, BROW, seeds=(0,), smooth_masks=(BROW, torch.zeros(V)))
    assert raw["brow_events"] == 6 and raw["brow_rate_ratio"] == pytest.approx(2.0) and not raw["post_smoothed"]
    assert smooth["brow_events"] == 3 and smooth["brow_rate_ratio"] == pytest.approx(1.0) and smooth["post_smoothed"]
    for key in ("blink_events", "blink_rate_ratio", "blink_closure_ratio"):
        assert smooth[key] == raw[key]


def test_animate_clip_smooths_as_animate_does():
    torch.manual_seed(0)
    model = mf.MeshTalk(V, heads=4, classes=8).eval()
    clip = _clips()[0]
    masks = (BROW * 0.7, torch.zeros(V).index_fill_(0, torch.tensor([9, 10]), 1.0))
    raw = ev.animate_clip(model, clip, seed=3)
    torch.testing.assert_close(ev.animate_clip(model, clip, seed=3, smooth_masks=masks),
                               post_smooth(raw, *masks, backend="torch"), rtol=1e-5, atol=1e-5)
    assert not torch.equal(ev.animate_clip(model, clip, seed=3, smooth_masks=masks), raw)


def test_prior_cross_entropy_is_the_teacher_forced_loss_per_head_group():
    """prior_cross_entropy: the prior's mean negative log-probability of the encoders' argmax codes over
    the clips' frames, all heads and the expression / audio groups apart; the groups average to the whole."""
    torch.manual_seed(1)
    model = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset", expression_heads=1).eval()
    clips = _clips()
    r = ev.prior_cross_entropy(model, clips)
    per_head, frames = torch.zeros(4, dtype=torch.float64), 0
    for clip in clips:  # the direct computation (no_grad: the model's parameters require grad)
        with torch.no_grad():
            e, a = ev._codes(model, clip)
            one_hot = model.quantize(model.fuse(e, a), argmax=True)
            per_head += -(model.context_model(one_hot, a).double() * one_hot).sum(-1)[0].sum(0)
        frames += clip.frames
    per_head /= frames
    assert r["cross_entropy"] == pytest.approx(float(per_head.mean()), rel=1e-9)
    assert r["cross_entropy_expression"] == pytest.approx(float(per_head[0]), rel=1e-9)
    assert r["cross_entropy_audio"] == pytest.approx(float(per_head[1:].mean()), rel=1e-9)
    assert (r["cross_entropy_expression"] + 3 * r["cross_entropy_audio"]) / 4 == pytest.approx(r["cross_entropy"])
    assert 0 < r["cross_entropy"] < 2 * math.log(8)  # near log(classes) at initialisation
    released = mf.MeshTalk(V, heads=4, classes=8).eval()  # no expression heads: no such group
    assert ev.prior_cross_entropy(released, clips)["cross_entropy_expression"] is None
    with pytest.raises(ValueError, match="at least one sequence"):
        ev.prior_cross_entropy(model, [])


def test_report_of_a_small_model_has_every_number():
    torch.manual_seed(0)
    model = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset", expression_heads=1).eval()
    from meshtalk_fast.data import FaceMasks

    masks = FaceMasks(mouth=LIPS, eye=EYE, eye_keypoints=EYE, forehead=BROW, neck=torch.zeros(V), lips=LIPS,
                      upper_face=EYE + BROW)
    r = ev.report(model, _clips(), masks, seeds=(0, 1))
    for key in ("lve", "lve_l2", "lve_ratio", "lve_l2_ratio", "disentanglement_expression",
                "disentanglement_audio", "eyelid_error_ratio", "brow_error_ratio", "blink_rate_ratio",
                "brow_rate_ratio", "code_sensitivity"):
        assert key in r and (r[key] is None or math.isfinite(r[key])), key
    text = ev.format_report(r)
    assert "squared-max" in text and "blinks/min" in text
    assert "blink_rate_ratio_train" not in r and "against the training split" not in text
    # with the training split as reference: its rates, and the sampled rates over them
    reference = [_blinking_clip("t", [10, 40, 70], seed=5)]  # 3 blinks and 1 brow raise in 3 s
    r = ev.report(model, _clips(), masks, seeds=(0, 1), reference_clips=reference)
    assert r["blink_events_train"] == 3 and r["blink_rate_train"] == pytest.approx(60.0)
    assert r["brow_events_train"] == 1 and r["brow_rate_train"] == pytest.approx(20.0)
    assert r["blink_rate_ratio_train"] == pytest.approx(r["blink_rate"] / 60.0)
    assert r["brow_rate_ratio_train"] == pytest.approx(r["brow_rate"] / 20.0)
    assert "against the training split's 60.0 blinks/min (3 blinks)" in ev.format_report(r)
    assert r["post_smoothed"] and r["rate_sequences"] == 3 and r["rate_minutes"] == pytest.approx(270 / 30 / 60)
    assert "events counted over 3 held-out sequences (0.1 min, post-smoothed)" in ev.format_report(r)
    r = ev.report(model, _clips(), masks, seeds=(0,), rate_clips=_clips()[:1], post_smoothed=False)
    assert r["rate_sequences"] == 1 and not r["post_smoothed"] and r["blink_events_gt"] == 2


# ------------------------------------------------------------------------------------------ pictures
def test_eye_colours_paint_the_opening(tmp_path):
    from meshtalk_fast.io.render import EYE as EYE_RGB, SKIN, eye_colours, probe_mp4, save_preview_mp4

    xs, ys = torch.meshgrid(torch.linspace(-2, 2, 9), torch.linspace(-1, 1, 5), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten(), torch.zeros(45)], 1)
    kp = torch.zeros(45)
    for x in (-1.5, -0.5, 0.5, 1.5):  # two eyes, lid corners at y = +-0.5
        for y in (-0.5, 0.5):
            kp[((grid[:, 0] - x).abs() < 1e-6) & ((grid[:, 1] - y).abs() < 1e-6)] = 1
    col = eye_colours(grid, kp)
    inside = ((grid[:, 0].abs() - 1).abs() < 0.3) & (grid[:, 1].abs() < 0.1)
    assert (col[inside.numpy()] == EYE_RGB).all() and (col[(grid[:, 0].abs() > 1.9).numpy()] == SKIN).all()
    assert (eye_colours(grid, torch.zeros(45)) == SKIN).all()
    with pytest.raises(ValueError, match="must agree"):
        eye_colours(grid, torch.zeros(44))
    faces = torch.tensor([[i * 5 + j, (i + 1) * 5 + j, (i + 1) * 5 + j + 1] for i in range(8) for j in range(4)])
    frames = grid.repeat(3, 1, 1)
    path = tmp_path / "p.mp4"
    save_preview_mp4(path, [frames, frames], faces, 30, size=(64, 48), colours=col, labels=["a", "b"])
    info = probe_mp4(path)
    assert (info["width"], info["height"], info["frames"]) == (128, 48, 3)
    with pytest.raises(ValueError, match="labels must name each"):
        save_preview_mp4(path, [frames, frames], faces, 30, size=(64, 48), labels=["a"])


def test_plots_write_pictures(tmp_path):
    import json

    from PIL import Image

    from meshtalk_fast.evaluation.plots import plot_training_curves, plot_upper_face

    log = tmp_path / "metrics.jsonl"
    with open(log, "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"stage": 1, "step": step, "split": "train", "recon": 1.0 / step, "landmarks": 0.5,
                                "mouth": 2.0, "eye": 0.1, "total": 3.0, "code_perplexity": 100.0}) + "\n")
        f.write(json.dumps({"stage": 2, "step": 1, "split": "train", "cross_entropy": 4.0}) + "\n")
    drawn = plot_training_curves(str(log), str(tmp_path / "c.png"))
    assert Image.open(tmp_path / "c.png").size[0] > 500
    assert drawn == {"panels": ["stage 1: reconstruction", "stage 1: modality crossing", "stage 1: codes",
                                "stage 2: prior"], "locks": []}
    # the expression groups' diagnostics get panels of their own, and the lock watch's firings are marked
    with open(log, "a") as f:
        for step in range(6, 9):
            f.write(json.dumps({"stage": 1, "step": step, "split": "train", "recon": 0.1, "saturation_group0": 0.5,
                                "saturation_group1": 1.0, "classes_group0": 3.0, "classes_group1": 1.0}) + "\n")
        f.write(json.dumps({"stage": 1, "step": 8, "split": "lock", "group": 1, "temperature": 10.0}) + "\n")
    drawn = plot_training_curves(str(log), str(tmp_path / "c.png"))
    assert drawn["locks"] == [8] and drawn["panels"][3:5] == [
        "stage 1: expression groups, largest class probability",
        "stage 1: expression groups, classes per batch (1: locked)"]
    plot_upper_face(str(tmp_path / "u.png"), 30, {"eye closure": [0, 1, 0]}, {"eye closure": [[0, 0, 1]]},
                    {"eye closure": 0.5})
    assert Image.open(tmp_path / "u.png").size[0] > 500
    with pytest.raises(ValueError, match="at least one signal"):
        plot_upper_face(str(tmp_path / "v.png"), 30, {}, {})


def test_initial_model_is_seeded_and_uses_the_motion_normaliser():
    from meshtalk_fast.training.quickstart import initial_model, motion_normalisation, normalisation
    from meshtalk_fast.training import TrainConfig

    clips = _clips()
    cfg = TrainConfig(seed=5)
    cfg.model.heads, cfg.model.classes, cfg.model.expression_input = 4, 8, "offset"
    a, b = initial_model(clips, cfg), initial_model(clips, cfg)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k  # the initial weights come from the config's seed
    mean, std = normalisation(clips)
    torch.testing.assert_close(a.encoder.expression_encoder.stddev[0, 0], std)
    cfg.model.expression_std = "motion"
    m = initial_model(clips, cfg)
    torch.testing.assert_close(m.encoder.expression_encoder.stddev[0, 0], motion_normalisation(clips))
    torch.testing.assert_close(m.vertex_unet.stddev[0, 0], std)  # the decoder keeps the data's std
    cfg.seed = 6
    assert not torch.equal(initial_model(clips, cfg).vertex_unet.fusion.weight, a.vertex_unet.fusion.weight)


def test_trainer_runs_the_upper_face_recipe(tmp_path):
    """The quick start's stage-1 levers through the trainer: event crops, the brow term, the split code
    usage and gradient clipping (grad_norm logged as measured before clipping)."""
    import json

    from meshtalk_fast.training.quickstart import initial_model
    from meshtalk_fast.training import TrainConfig
    from meshtalk_fast.training.trainer import Trainer, TrainingMasks

    clips = _clips()
    cfg = TrainConfig(seed=1)
    cfg.model.heads, cfg.model.classes, cfg.model.expression_input = 4, 8, "offset"
    cfg.model.expression_heads, cfg.model.expression_std, cfg.model.clock = 1, "motion", "exact"
    st = cfg.stage1
    st.batch_size, st.segment_frames, st.steps, st.codes, st.diversity = 4, 8, 2, "argmax", 1.0
    st.expression_diversity, st.event_crops, st.brow_weight, st.landmarks_weight = 0.2, 0.5, 5.0, 10.0
    st.clip_grad_norm, st.adam_beta2 = 1e-3, 0.99
    cfg.log_every, cfg.val_every, cfg.checkpoint_every = 1, 100, 100
    masks = TrainingMasks(LIPS, EYE, EYE, LIPS, EYE + BROW, BROW)
    trainer = Trainer(initial_model(clips, cfg.validate()), clips, masks, cfg, str(tmp_path), progress=False)
    trainer.fit(1)
    log = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"brow", "expression_diversity", "diversity", "grad_norm"} <= set(log[-1])
    assert all(r["grad_norm"] > 1e-3 for r in log)  # the norm before clipping
    assert trainer.optimizer.defaults["betas"] == (0.9, 0.99)


def test_upper_face_terms_can_stay_off_the_audio_heads():
    """stage1.upper_face_codes = "expression": the eyelid and brow terms have the same values, but no
    gradient reaches the audio heads' fusion MLP or the audio encoder through them."""
    from meshtalk_fast.training import TrainConfig
    from meshtalk_fast.training.objectives import Stage1Objective

    clip = _blinking_clip("a", [5])
    geom = torch.stack([clip.geom[:10], clip.geom[10:20]])
    template = torch.stack([clip.template, clip.template])
    grads, values = {}, {}
    for mode in ("all", "expression"):
        torch.manual_seed(0)
        model = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset", expression_heads=1)
        windows = torch.stack([model.config.windows(clip.audio)[:10]] * 2)
        objective = Stage1Objective(model.encoder, model.vertex_unet, EYE, BROW, EYE, codes="argmax",
                                    weights={"recon": 0.0, "mouth": 0.0, "eye": 0.0, "landmarks": 1.0, "brow": 1.0},
                                    forehead=BROW, upper_face_codes=mode)
        terms = objective(template, geom, torch.Generator().manual_seed(1), windows=windows)
        terms["total"].backward()
        values[mode] = (float(terms["landmarks"].detach()), float(terms["brow"].detach()))
        grads[mode] = [sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)
                       for module in (model.encoder.fusion_model.mlp, model.encoder.audio_encoder,
                                      model.encoder.fusion_model.expression_mlp)]
    assert values["all"] == pytest.approx(values["expression"], rel=1e-6)
    assert grads["all"][0] > 0 and grads["all"][1] > 0
    assert grads["expression"][0] == 0.0 and grads["expression"][1] == 0.0 and grads["expression"][2] > 0
    model = mf.MeshTalk(V, heads=4, classes=8)
    with pytest.raises(ValueError, match="needs at least 1 expression heads"):
        Stage1Objective(model.encoder, model.vertex_unet, EYE, BROW, EYE, upper_face_codes="expression")
    cfg = TrainConfig()
    cfg.stage1.upper_face_codes = "expression"
    with pytest.raises(ValueError, match="needs model.expression_heads >= 1, got 0"):
        cfg.validate()


def test_the_readme_recipe_is_the_quick_starts():
    """The TOML in the README's Training section trains what quickstart_config trains (model, stage-1 and
    stage-2 choices), so a user who copies it gets the measured recipe."""
    import pathlib
    import re
    import sys

    from meshtalk_fast.training.quickstart import quickstart_config
    from meshtalk_fast.training import TrainConfig

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n\s*(\[model\].*?)```", readme, re.S).group(1)
    block = "\n".join(line.strip() for line in block.splitlines())
    cfg, qs = TrainConfig.from_dict(tomllib.loads(block)), quickstart_config(0)
    for section in ("model", "stage1", "stage2"):
        for key, value in tomllib.loads(block)[section].items():
            assert getattr(getattr(cfg, section), key) == getattr(getattr(qs, section), key), (section, key)
    for key in ("expression_heads", "expression_std", "expression_input"):
        assert getattr(cfg.model, key) == getattr(qs.model, key), key
    for key in ("landmarks_weight", "brow_weight", "mouth_weight", "event_crops", "expression_diversity",
                "upper_face_codes", "adam_beta2", "codes", "diversity", "ema", "expression_st_temperature",
                "expression_st_anneal"):
        assert getattr(cfg.stage1, key) == getattr(qs.stage1, key), key
    assert cfg.stage2.prior_calibration == qs.stage2.prior_calibration > 0


def test_expression_head_classes_finds_a_head_stuck_on_one_code():
    torch.manual_seed(0)
    model = mf.MeshTalk(V, heads=4, classes=8, expression_input="offset", expression_heads=2, expression_groups=2,
                        audio_heads="audio").eval()
    with torch.no_grad():  # group 1 (head 1) saturated: zero weights, one class's bias far above the rest
        last = model.encoder.fusion_model.expression_mlp[1][-1]
        last.weight.zero_()
        last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(5), 8).float() * 100)
        model.encoder.fusion_model.expression_mlp[0][-1].weight.mul_(50)  # group 0 reads its input sharply
    classes = ev.expression_head_classes(model, _clips())
    assert classes[1] == 1 and classes[0] > 1, classes
    assert ev.expression_head_classes(mf.MeshTalk(V, heads=4, classes=8), _clips()) == []
    with pytest.raises(ValueError, match="at least one sequence"):
        ev.expression_head_classes(model, [])


def test_the_quick_start_warns_for_each_stuck_group():
    from meshtalk_fast.training.quickstart import stuck_heads_warning

    [line] = stuck_heads_warning([12, 9, 1, 1], 2)
    assert line.startswith("WARNING: expression head(s) [2, 3] (the brows) gave every test frame one code")
    assert "saturation_group1 near 1" in line and "classes_group1 1" in line
    assert "stage1.expression_st_temperature" in line and "stage1.logit_gap_limit" in line
    assert len(stuck_heads_warning([1, 4, 1, 3], 2)) == 2 and "(the eyes)" in stuck_heads_warning([1, 4, 5, 3], 2)[0]
    assert stuck_heads_warning([12, 9, 3, 2], 2) == [] and stuck_heads_warning([], 1) == []
    assert "(group 0)" in stuck_heads_warning([1, 1], 1)[0]


def test_the_quick_start_warns_when_the_upper_face_is_not_reconstructed():
    from meshtalk_fast.training.quickstart import NOT_LEARNT, unlearnt_upper_face_warning

    [line] = unlearnt_upper_face_warning({"eyelid_error_ratio": 0.09, "brow_error_ratio": 0.80})
    assert line.startswith("WARNING: the model does not reconstruct the brow raises: brow_error_ratio 0.80")
    both = unlearnt_upper_face_warning({"eyelid_error_ratio": NOT_LEARNT + 0.01, "brow_error_ratio": 0.9})
    assert len(both) == 2 and "the blinks" in both[0]
    assert unlearnt_upper_face_warning({"eyelid_error_ratio": 0.25, "brow_error_ratio": NOT_LEARNT}) == []
    # a data set without an eye or forehead mask has no ratio: no warning
    assert unlearnt_upper_face_warning({"eyelid_error_ratio": None, "brow_error_ratio": None}) == []


def test_the_quick_start_warns_when_the_mouth_ignores_the_speech():
    from meshtalk_fast.training.quickstart import speech_ignored_warning

    line = speech_ignored_warning(0.0)
    assert line.startswith("WARNING: swapping the audio moves the mouth 0.00x as much as the upper face")
    assert "code_perplexity" in line
    assert speech_ignored_warning(0.7) is not None
    assert speech_ignored_warning(1.0) is None and speech_ignored_warning(34.0) is None
    assert speech_ignored_warning(None) is None  # a data set without an upper-face mask: no ratio, no warning
