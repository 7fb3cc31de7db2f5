"""Stage 1's lock watch (``stage1.expression_lock_steps``, training/locks.py): a group of expression heads whose
batches chose one class with a saturated softmax in most of its last N steps gets its straight-through temperature
back, annealed again from there; runs without a lock are the schedule's, step for step."""
import json

import pytest
import torch

from meshtalk_fast.training.locks import LOCK_SATURATION, LockWatch, annealed_temperature
from test_group_saturation import grouped_model
from test_training import V, masks, small_config, synthetic_clips


def locked(g0=(3.0, 0.5), g1=(3.0, 0.5)) -> dict:
    """Step terms: (classes, saturation) per group."""
    return {"classes_group0": g0[0], "saturation_group0": g0[1], "classes_group1": g1[0], "saturation_group1": g1[1]}


def test_a_group_locked_in_most_of_its_last_n_steps_is_annealed_again_and_the_other_is_not():
    watch = LockWatch(groups=2, steps=5, start=10.0, share=0.4)  # locked: at least ceil(0.8 * 5) = 4 of the last 5
    assert watch.need == 4
    assert watch.temperatures(0.0) == (10.0, 10.0)
    assert watch.temperatures(0.2) == (pytest.approx(10 ** 0.5),) * 2
    stuck = locked(g1=(1.0, 0.999))
    soft = locked(g1=(1.0, LOCK_SATURATION - 1e-3))  # one class, softmax below LOCK_SATURATION: not a locked step
    two = locked(g1=(1.5, 1.0))  # saturated, but one head chose two classes
    for step, terms in enumerate([stuck, soft, stuck, two, stuck, stuck]):  # 3 of the last 5 at most
        assert watch.observe(terms, 0.30 + step / 100) == []
    assert watch.temperatures(0.35) == (annealed_temperature(10.0, 0.35 / 0.4),) * 2
    assert watch.observe(stuck, 0.36) == [1]  # stuck, two, stuck, stuck, stuck: 4 of 5
    assert watch.since == [None, 0.36] and len(watch.window[1]) == 0 and len(watch.window[0]) == 5
    t0, t1 = watch.temperatures(0.36)
    assert t0 == pytest.approx(10 ** (1 - 0.36 / 0.4)) and t1 == 10.0
    t0, t1 = watch.temperatures(0.56)  # group 1 re-anneals over the same share: halfway at 0.36 + 0.2
    assert t0 == 1.0 and t1 == pytest.approx(10 ** 0.5)
    assert watch.temperatures(0.76) == (1.0, 1.0) and watch.temperatures(1.0) == (1.0, 1.0)
    # a group that stays locked at the raised temperature is raised again once its window has filled
    for f in (0.37, 0.38, 0.39, 0.40):
        assert watch.observe(stuck, f) == []
    assert watch.observe(stuck, 0.41) == [1] and watch.temperatures(0.41)[1] == 10.0


def test_the_lock_watch_state_round_trips_and_bad_input_is_named():
    watch = LockWatch(groups=2, steps=2, start=8.0, share=0.5)
    stuck = locked(g0=(1.0, 1.0))
    assert watch.observe(stuck, 0.1) == [] and watch.observe(stuck, 0.2) == [0]
    assert watch.observe(stuck, 0.3) == []  # one locked step in the emptied window
    state = json.loads(json.dumps(watch.state_dict()))  # it travels as JSON in the checkpoint's metadata
    again = LockWatch(groups=2, steps=2, start=8.0, share=0.5)
    again.load_state_dict(state)
    assert again.state_dict() == watch.state_dict() and again.temperatures(0.4) == watch.temperatures(0.4)
    assert again.observe(stuck, 0.4) == [0]  # the window came along too
    with pytest.raises(ValueError, match="holds 1 / 1 groups, expected 2"):
        again.load_state_dict({"window": [[1, 0]], "since": [None]})
    with pytest.raises(KeyError, match="needs the stage-1 diagnostics classes_group0"):
        watch.observe({"total": 1.0}, 0.5)
    for kwargs, message in [({"steps": 0}, "steps must be an integer >= 1"),
                            ({"steps": True}, "steps must be an integer >= 1"),
                            ({"start": 1.0}, "start > 1"), ({"share": 0.0}, "share in"),
                            ({"groups": 0}, "groups must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            LockWatch(**{"groups": 2, "steps": 3, "start": 10.0, "share": 0.4, **kwargs})


def test_stage1_with_one_temperature_per_group_reaches_only_that_groups_saturated_heads():
    from meshtalk_fast.training.objectives import Stage1Objective

    m = masks()
    template = torch.randn(2, V, 3)
    geom = template[:, None] + 0.1 * torch.randn(2, 6, V, 3)
    windows = 0.1 * torch.randn(2, 6, grouped_model().config.window_samples)
    grads = {}
    for temps in ((1.0, 1.0), (1.0, 10.0), 1.0):
        model = grouped_model().eval()
        objective = Stage1Objective(model.encoder, model.vertex_unet, m.eye_keypoints, m.mouth, m.eye, codes="argmax")
        objective.expression_st_temperature = temps
        logits = {}
        fuse = model.encoder.fusion_model
        forward = fuse.forward

        def saturated(*args, **kwargs):  # both expression heads' softmax saturated on one class (gap 40)
            z = forward(*args, **kwargs)
            z = z.clone()
            z[..., :2, :] = torch.log_softmax(torch.zeros_like(z[..., :2, :]).index_fill(-1, torch.tensor([2]), 40.0),
                                              -1)
            z = z.detach().requires_grad_()
            logits["z"] = z
            return z

        fuse.forward = saturated
        terms = objective(template, geom, torch.Generator().manual_seed(0), windows=windows)
        terms["total"].backward()
        grads[temps] = logits["z"].grad
    # a tuple of ones is the plain estimate; T = 10 on group 1 (head 1) gives it a gradient, head 0 still has none
    torch.testing.assert_close(grads[(1.0, 1.0)], grads[1.0])
    torch.testing.assert_close(grads[(1.0, 10.0)][..., 0, :], grads[1.0][..., 0, :])
    cold, warm = (float(grads[t][..., 1, :].abs().max()) for t in ((1.0, 1.0), (1.0, 10.0)))
    assert warm > 1e8 * cold  # softmax(gap 40) passes ~e^-40 of the decoder's gradient, softmax(gap 4) ~e^-4
    torch.testing.assert_close(grads[(1.0, 10.0)][..., 2:, :], grads[1.0][..., 2:, :])  # audio heads unchanged
    objective.expression_st_temperature = (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match=r"one per expression group \(2\) expected, got 3"):
        objective(template, geom, torch.Generator().manual_seed(0), windows=windows)


def lock_config(steps: int, lock_steps: int):
    cfg = small_config(steps=steps, expression_st_temperature=8.0, expression_st_anneal=0.5,
                       expression_lock_steps=lock_steps)
    cfg.model.expression_heads, cfg.model.expression_groups, cfg.model.audio_heads = 2, 2, "audio"  # grouped_model()
    cfg.checkpoint_every = 1
    return cfg.validate()


def test_the_trainer_raises_a_locked_groups_temperature_logs_it_and_resumes_with_it(tmp_path, monkeypatch):
    from meshtalk_fast.training.objectives import Stage1Objective
    from meshtalk_fast.training.trainer import Trainer

    seen = []
    forward = Stage1Objective.forward

    def recording(self, *args, **kwargs):  # the temperatures used, and group 1 reported stuck at every step
        seen.append(self.expression_st_temperature)
        terms = forward(self, *args, **kwargs)
        terms["classes_group1"], terms["saturation_group1"] = torch.tensor(1.0), torch.tensor(1.0)
        return terms

    monkeypatch.setattr(Stage1Objective, "forward", recording)
    trainer = Trainer(grouped_model(), synthetic_clips(), masks(), lock_config(4, 2), str(tmp_path), progress=False)
    trainer.fit(1)
    schedule = [annealed_temperature(8.0, s / 4 / 0.5) for s in range(4)]
    # group 1 locked in both of its last 2 steps at step 2 (progress 0.5): from step 2 on its temperature is 8 again
    assert [t[0] for t in seen] == pytest.approx(schedule)
    assert [t[1] for t in seen] == pytest.approx(schedule[:2] + [8.0, annealed_temperature(8.0, 0.25 / 0.5)])
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    locks = [r for r in records if r.get("split") == "lock"]
    assert [(r["step"], r["group"], r["temperature"]) for r in locks] == [(2, 1, 8.0), (4, 1, 8.0)]
    # the checkpoint carries the watch: resumed at step 4 of 6, group 1 re-annealing from progress 4/6 ... on
    from meshtalk_fast.training.state import load_train_state

    saved = load_train_state(str(tmp_path / "checkpoint.safetensors"))["extra"]["locks"]
    assert saved["since"] == [None, pytest.approx(4 / 4)] and saved["window"] == [[0, 0], []]
    seen.clear()
    resumed = Trainer(grouped_model(), synthetic_clips(), masks(), lock_config(6, 2), str(tmp_path / "r"),
                      progress=False)
    resumed.resume(str(tmp_path / "checkpoint.safetensors"))
    resumed.fit(1)
    # the resumed run's log goes on: group 1's emptied window fills again at steps 5-6, and it locks at step 6
    records = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert [(r["step"], r["group"]) for r in records if r.get("split") == "lock"] == [(6, 1)]
    assert resumed._locks.since == [None, pytest.approx(6 / 6)]
    assert seen[0][1] == pytest.approx(max(annealed_temperature(8.0, 4 / 6 / 0.5),
                                           annealed_temperature(8.0, (4 / 6 - 1.0) / 0.5)))


def test_without_a_lock_the_watch_changes_nothing(tmp_path):
    """A run in which no group locks trains step for step as one without the watch."""
    from meshtalk_fast.training.trainer import Trainer

    losses = []
    for lock_steps in (0, 2):
        out = tmp_path / str(lock_steps)
        Trainer(grouped_model(), synthetic_clips(), masks(), lock_config(3, lock_steps), str(out), progress=False,
                prefetch=False).fit(1)
        records = [json.loads(line) for line in open(out / "metrics.jsonl")]
        assert not [r for r in records if r.get("split") == "lock"]
        losses.append([r["total"] for r in records if r.get("split") == "train"])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("changes, message", [
    ({"expression_lock_steps": -1}, "expression_lock_steps must be an integer >= 0"),
    ({"expression_lock_steps": 2.0}, "expression_lock_steps must be an integer >= 0"),
    ({"expression_lock_steps": True}, "expression_lock_steps must be an integer >= 0"),
    ({"expression_lock_steps": 5, "expression_st_anneal": 0.0}, "needs expression_st_temperature > 1 and "
                                                                 "expression_st_anneal > 0"),
    ({"expression_lock_steps": 5, "expression_st_temperature": 1.0}, "needs expression_st_temperature > 1"),
])
def test_the_lock_watch_config_is_checked(changes, message):
    from meshtalk_fast.training.config import TrainConfig

    cfg = TrainConfig()
    cfg.model.expression_heads = 2
    cfg.stage1.expression_st_temperature, cfg.stage1.expression_st_anneal = 10.0, 0.4
    for k, v in changes.items():
        setattr(cfg.stage1, k, v)
    with pytest.raises(ValueError, match=message):
        cfg.validate()


@pytest.mark.parametrize("extra, message", [("[1]", "metadata 'extra' must be a JSON object, got list"),
                                            ("{not json", "the optimizer state, step or extra state")])
def test_a_checkpoint_with_a_malformed_extra_state_is_refused(tmp_path, extra, message):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from meshtalk_fast.models.checkpoint import CheckpointError
    from meshtalk_fast.training.state import load_train_state
    from meshtalk_fast.training.trainer import Trainer

    trainer = Trainer(grouped_model(), synthetic_clips(), masks(), lock_config(1, 2), str(tmp_path), progress=False)
    trainer.fit(1)
    path = str(tmp_path / "checkpoint.safetensors")
    assert load_train_state(path)["extra"] == {"locks": {"window": [[0], [0]], "since": [None, None]}}
    with safe_open(path, framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, path, {**meta, "extra": extra})
    with pytest.raises(CheckpointError, match=message):
        load_train_state(path)
