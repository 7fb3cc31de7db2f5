"""The saturation diagnostic of the expression groups (``saturation_group{g}`` in the stage-1 losses): each
group's heads' mean largest class probability, ~1/C for a flat softmax, ~1 for one stuck on a class."""
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
    assert set(got) == {"saturation_group0", "saturation_group1"}
    assert float(got["saturation_group0"]) == pytest.approx(1 / 8)
    assert float(got["saturation_group1"]) == pytest.approx(1.0)
    assert group_saturation(torch.zeros(1, 1, 4, 8), mf.MeshTalk(V, heads=4, classes=8).encoder.fusion_model) == {}


def test_the_trainer_logs_each_groups_saturation(tmp_path):
    import json

    from meshtalk_fast.training.trainer import Trainer
    from test_training import masks, small_config, synthetic_clips

    Trainer(grouped_model(), synthetic_clips(), masks(), small_config(steps=1), str(tmp_path), progress=False).fit(1)
    record = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert 0 < record["saturation_group0"] <= 1 and 0 < record["saturation_group1"] <= 1
