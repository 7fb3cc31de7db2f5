"""Stuck expression groups (``stage1.revive_after``): an expression group whose softmax stays saturated on
one class gets its fusion MLP drawn afresh, the same way on every run, and the trainer logs it."""
import json

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training.objectives import group_saturation
from meshtalk_fast.training.trainer import Trainer
from test_training import V, masks, small_config, synthetic_clips


def grouped_model():
    torch.manual_seed(0)
    return mf.MeshTalk(V, heads=4, classes=8, expression_heads=2, expression_groups=2, audio_heads="audio")


def test_group_saturation_reads_each_groups_largest_probability():
    fuse = grouped_model().encoder.fusion_model
    logits = torch.zeros(2, 5, 4, 8)
    logits[..., 1, 3] = 50.0  # head 1 (group 1) on one class; head 0 (group 0) uniform
    got = group_saturation(torch.log_softmax(logits, -1), fuse)
    assert set(got) == {"saturation_group0", "saturation_group1"}
    assert float(got["saturation_group0"]) == pytest.approx(1 / 8)
    assert float(got["saturation_group1"]) == pytest.approx(1.0)
    assert group_saturation(torch.zeros(1, 1, 4, 8), mf.MeshTalk(V, heads=4, classes=8).encoder.fusion_model) == {}


def _stuck(model, group):
    """Saturate one group's softmax: its last layer's bias puts class 0 far ahead of the rest."""
    last = model.encoder.fusion_model.expression_mlp[group][-1]
    with torch.no_grad():
        last.bias.zero_()
        last.bias.view(-1, 8)[:, 0] = 100.0
    return last


def _records(path, split):
    return [r for r in map(json.loads, open(path / "metrics.jsonl")) if r["split"] == split]


def test_a_saturated_group_is_drawn_afresh_after_its_patience(tmp_path):
    clips = synthetic_clips()
    model = grouped_model()
    last = _stuck(model, 1)
    group0 = [p.detach().clone() for p in model.encoder.fusion_model.expression_mlp[0].parameters()]
    trainer = Trainer(model, clips, masks(), small_config(steps=4, revive_after=2), str(tmp_path), progress=False)
    trainer.fit(1)
    revived = _records(tmp_path, "revive")
    assert [(r["step"], r["group"]) for r in revived] == [(2, 1)] and revived[0]["saturation"] > 0.99
    train = _records(tmp_path, "train")
    assert train[0]["saturation_group1"] > 0.99 and train[-1]["saturation_group1"] < 0.5  # unsaturated after
    assert float(last.bias.abs().max()) < 1.0  # redrawn (PyTorch's Linear init: |b| <= 1/sqrt(fan_in)), then 2 steps
    # group 0 was never saturated: trained as usual (4 Adam steps at lr 1e-3 move a weight by ~0.004), not redrawn
    for before, after in zip(group0, model.encoder.fusion_model.expression_mlp[0].parameters()):
        assert float((after.detach() - before).abs().max()) < 0.05


def test_revival_is_reproducible_and_off_by_default(tmp_path):
    clips = synthetic_clips()
    runs = []
    for name, patience in (("a", 2), ("b", 2), ("off", 0)):
        model = grouped_model()
        _stuck(model, 1)
        Trainer(model, clips, masks(), small_config(steps=3, revive_after=patience), str(tmp_path / name),
                progress=False).fit(1)
        runs.append(model.state_dict())
    for k, v in runs[0].items():
        assert torch.equal(v, runs[1][k]), k
    assert _records(tmp_path / "off", "revive") == []
    assert _records(tmp_path / "off", "train")[-1]["saturation_group1"] > 0.99  # without it, it stays stuck


def test_revive_after_is_checked():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="stage1.revive_after must be an integer >= 0"):
            small_config(revive_after=bad).validate()
