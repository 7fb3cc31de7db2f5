"""Issue 16: what a hostile or careless user found, one test per case (each failed before its fix).

Grouped by the rule that now owns it: mask weights (``_checks.check_mask_weights``), mesh and data
files, model files (``checkpoint.inspect_model_file``), one-line CLI errors (``cli.main``).
Temporary files are tested in test_tempfiles.py."""
import os

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli


def _fails(argv, capsys, *needles, code=2):
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mf.MeshTalk(40, heads=2, classes=4).eval()


# ------------------------------------------------------------------------------------------------
# mask weights: one rule (finite, in [0, 1]) for animate, stream, post_smooth, training, mask files
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1.0, 2.5, float("nan")])
def test_mask_weights_outside_0_1_are_refused_everywhere(tiny, tmp_path, bad):
    from meshtalk_fast.data import FaceMasks
    from meshtalk_fast.training.trainer import TrainingMasks

    V = 40
    good = torch.full((V,), 0.5)
    wrong = good.clone()
    wrong[7] = bad
    template = torch.randn(V, 3)
    geom = torch.randn(5, V, 3)
    with pytest.raises(ValueError, match=r"forehead_mask must hold weights in \[0, 1\].*index 7"):
        mf.post_smooth(geom, wrong, good)
    with pytest.raises(ValueError, match=r"neck_mask must hold weights in \[0, 1\]"):
        mf.post_smooth(geom, good, wrong, backend="torch")
    with pytest.raises(ValueError, match=r"smooth_masks forehead mask must hold weights in \[0, 1\]"):
        mf.animate(torch.randn(16000), template, tiny, smooth_masks=(wrong, good))
    with pytest.raises(ValueError, match=r"smooth_masks neck mask must hold weights in \[0, 1\]"):
        mf.StreamingAnimator(tiny, template, smooth_masks=(good, wrong))
    with pytest.raises(ValueError, match=r"FaceMasks.eye must hold weights in \[0, 1\]"):
        FaceMasks(good, wrong, good, good, good, good, good)
    with pytest.raises(ValueError, match=r"training mask lips must hold weights in \[0, 1\]"):
        TrainingMasks(good, good, good, wrong, good)
    path = tmp_path / "forehead_mask.txt"
    np.savetxt(path, wrong.numpy())
    with pytest.raises(ValueError, match=r"mask file .*forehead_mask.txt.* must hold weights in \[0, 1\]"):
        mf.load_mask(path, V)


def test_weights_at_the_bounds_are_accepted():
    V = 6
    m = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 1e-12])
    out = mf.post_smooth(torch.randn(3, V, 3), m, m, backend="torch")
    assert out.shape == (3, V, 3)


def test_mask_files_under_both_names(tmp_path, assets):
    """The quick start writes forehead.txt / neck.txt, the release forehead_mask.txt / neck_mask.txt:
    both are read wherever masks are read."""
    from meshtalk_fast.mesh import load_smoothing_masks

    ours, released = tmp_path / "ours", tmp_path / "released"
    ours.mkdir()
    released.mkdir()
    for key in ("forehead", "neck"):
        data = (assets / f"{key}_mask.txt").read_text()
        (ours / f"{key}.txt").write_text(data)
        (released / f"{key}_mask.txt").write_text(data)
    a, b = load_smoothing_masks(ours, 6172), load_smoothing_masks(released, 6172)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(FileNotFoundError, match="neck.txt or neck_mask.txt"):
        os.remove(ours / "neck.txt")
        load_smoothing_masks(ours, 6172)


# ------------------------------------------------------------------------------------------------
# mesh files
# ------------------------------------------------------------------------------------------------
def test_obj_with_two_material_groups_keeps_the_v_lines(tmp_path, assets):
    """Faces under two ``usemtl`` groups, with normals and texture coordinates: vertex count and order
    are still the file's ``v`` lines (a general loader duplicated them: 12,344 instead of 6172)."""
    v, f = mf.load_obj(assets / "face_template.obj")
    lines = ["mtllib face.mtl", "o face"] + ["v %.9g %.9g %.9g" % tuple(p) for p in v.tolist()]
    lines += ["vt 0.5 0.5", "vn 0 0 1", "g first", "usemtl skin"]
    half = f.shape[0] // 2
    lines += ["f %d/1/1 %d/1/1 %d/1/1" % tuple(t) for t in (f[:half] + 1).tolist()]
    lines += ["g second", "usemtl lips", "s 1"]
    lines += ["f %d//1 %d//1 %d//1" % tuple(t) for t in (f[half:] + 1).tolist()]
    path = tmp_path / "grouped.obj"
    path.write_text("\n".join(lines) + "\n")
    v2, f2 = mf.load_obj(path)
    assert v2.shape == (6172, 3) and torch.equal(v2, v)
    assert torch.equal(f2, f)


def test_obj_polygons_negative_indices_and_errors(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf -4 -3 -2 -1\n")
    v, f = mf.load_obj(path)
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3]]
    path.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="vertex 2 .*non-finite"):
        mf.load_obj(path)
    path.write_text("v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    with pytest.raises(ValueError, match="line 3: face index 9 is outside the 2 vertices"):
        mf.load_obj(path)
    points = tmp_path / "points.obj"
    points.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    v, f = mf.load_obj(points)  # vertices, but no triangles: the caller decides (animate refuses)
    assert v.shape == (3, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="is not a regular file"):
        mf.load_obj(tmp_path)
