"""Identity mixing (``stage1.identity_mix``, ``batches.IdentityMix``): crops moved to another face."""
import pytest
import torch

from meshtalk_fast.training import TrainConfig
from meshtalk_fast.training.batches import IdentityMix, distinct_templates
from meshtalk_fast.training.trainer import Trainer

from test_training import V, make_model, masks, small_config, synthetic_clips


def _faces(k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(V, 3, generator=g) for _ in range(k)]


def _batch(b=6, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    template = torch.randn(b, V, 3, generator=g)
    return {"template": template, "geom": template[:, None] + 0.1 * torch.randn(b, t, V, 3, generator=g),
            "mel": torch.randn(b, 80, 9, generator=g)}


def test_mixed_crops_keep_their_motion_and_move_within_the_identities_span():
    faces = _faces(4)
    mix = IdentityMix(faces, 0.5, seed=7)
    batch = _batch(b=64)
    out = mix(batch, step=3, micro=1)
    moved = (out["template"] - batch["template"]).flatten(1).norm(dim=1) > 0
    assert 16 < int(moved.sum()) < 48, int(moved.sum())  # about half the crops
    # the motion (frames minus template) is the crop's own; only the face moved
    torch.testing.assert_close(out["geom"] - out["template"][:, None], batch["geom"] - batch["template"][:, None],
                               rtol=0, atol=1e-5)
    assert torch.equal(out["mel"], batch["mel"])
    # every displacement is a combination of the faces' differences from their mean
    directions = (torch.stack(faces) - torch.stack(faces).mean(0)).flatten(1)      # [K, V*3]
    delta = (out["template"] - batch["template"]).flatten(1)                        # [B, V*3]
    coeffs = torch.linalg.lstsq(directions.T, delta.T).solution                    # [K, B]
    torch.testing.assert_close(coeffs.T @ directions, delta, rtol=0, atol=1e-4)
    # and about as large as one face's difference from the mean (c ~ N(0, 1/K))
    ratio = delta[moved].norm(dim=1).mean() / directions.norm(dim=1).mean()
    assert 0.5 < float(ratio) < 1.6, float(ratio)


def test_draws_depend_on_seed_step_and_micro_batch_only():
    faces, batch = _faces(), _batch()
    a = IdentityMix(faces, 0.7, seed=1)
    same = a(batch, 5, 0)
    assert torch.equal(same["template"], IdentityMix(faces, 0.7, seed=1)(batch, 5, 0)["template"])
    for other in (a(batch, 6, 0), a(batch, 5, 1), IdentityMix(faces, 0.7, seed=2)(batch, 5, 0)):
        assert not torch.equal(same["template"], other["template"])
    assert IdentityMix(faces, 0.0, seed=1)(batch, 5, 0) is batch
    everyone = IdentityMix(faces, 1.0, seed=1)(batch, 5, 0)
    assert bool(((everyone["template"] - batch["template"]).flatten(1).norm(dim=1) > 0).all())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"identity_mix must be a number in \[0, 1\], got 1.5"):
        IdentityMix(_faces(), 1.5, seed=0)
    with pytest.raises(ValueError, match="stage1.identity_mix > 0 needs training data with at least 2 identities"
                                         r".*got 1"):
        IdentityMix(_faces(1), 0.5, seed=0, name="stage1.identity_mix")
    with pytest.raises(ValueError, match=r"templates of one shape"):
        IdentityMix([torch.zeros(V, 3), torch.zeros(V + 1, 3)], 0.5, seed=0)
    with pytest.raises(ValueError, match=rf"batch template must have shape \[B, {V}, 3\], got \[6, {V + 2}, 3\]"):
        IdentityMix(_faces(), 0.5, seed=0)({"template": torch.zeros(6, V + 2, 3), "geom": torch.zeros(6, 2, V + 2, 3)},
                                           0, 0)
    cfg = TrainConfig()
    cfg.stage1.identity_mix = -0.1
    with pytest.raises(ValueError, match=r"stage1.identity_mix must be a number in \[0, 1\], got -0.1"):
        cfg.validate()


def test_distinct_templates_keeps_first_appearances():
    a, b = _faces(2)
    clips = synthetic_clips(n=2)
    clips[0].template, clips[1].template = a, b
    extra = synthetic_clips(n=1)[0]
    extra.template = a.clone()
    found = distinct_templates(clips + [extra])
    assert len(found) == 2 and torch.equal(found[0], a) and torch.equal(found[1], b)


def _two_face_clips():
    clips = synthetic_clips()
    shift = torch.linspace(0, 1, V)[:, None] * torch.tensor([0.5, -0.2, 0.3])
    for c in clips[2:]:  # the second face: the same motions on a moved template
        c.template, c.geom = c.template + shift, c.geom + shift
    return clips


def test_trainer_mixes_identities_and_stays_bit_exact_on_resume(tmp_path):
    clips = _two_face_clips()
    plain = Trainer(make_model(), clips, masks(), small_config(), str(tmp_path / "p"), progress=False)
    plain.fit(1)
    full = Trainer(make_model(), clips, masks(), small_config(steps=4, identity_mix=0.5), str(tmp_path / "a"),
                   progress=False)
    full.fit(1)
    differs = any(not torch.equal(v, full.model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    assert differs  # the mixed crops changed what was learnt
    half = Trainer(make_model(), clips, masks(), small_config(steps=2, identity_mix=0.5), str(tmp_path / "b"),
                   progress=False)
    half.fit(1)
    resumed = Trainer(make_model(), clips, masks(), small_config(steps=4, identity_mix=0.5), str(tmp_path / "b"),
                      progress=False)
    resumed.resume(str(tmp_path / "b" / "checkpoint.safetensors"))
    resumed.fit(1)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_trainer_refuses_identity_mix_on_one_face(tmp_path):
    trainer = Trainer(make_model(), synthetic_clips(), masks(), small_config(identity_mix=0.5), str(tmp_path),
                      progress=False)
    with pytest.raises(ValueError, match=r"stage1.identity_mix > 0 needs training data with at least 2 "
                                         r"identities \(distinct templates\), got 1"):
        trainer.fit(1)
