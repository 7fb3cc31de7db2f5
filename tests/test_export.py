"""Exports: the animated .glb (validated against the glTF rules that loaders rely on, opened with
pygltflib and trimesh), the OBJ sequence, meshes.npz, the preview renderer and MP4, and the
all-or-nothing output folder."""
import os

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.io.export import morph_basis, write_outputs
from meshtalk_fast.io.render import Camera, render_frames

COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Thousands of tiny ops: on a busy 2-core machine two intra-op threads mostly wait."""


@pytest.fixture(scope="module")
def faces(assets):
    return mf.load_obj(assets / "face_template.obj")[1]


def motion(template, T, rank=6, noise=0.0, seed=0):
    """A smooth low-rank animation of the template, ``[T, V, 3]``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64)[:, None] / 30
    basis = torch.randn(rank, template.numel(), generator=g, dtype=torch.float64)
    curves = torch.sin(t * torch.arange(1, rank + 1) * 2.1 + torch.arange(rank)) / torch.arange(1, rank + 1)
    d = (curves @ basis).view(T, -1, 3) + noise * torch.randn(T, template.shape[0], 3, generator=g, dtype=torch.float64)
    return (template.double() + d).float()


def read_accessor(gltf, blob, index):
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = np.dtype(COMPONENTS[acc.componentType])
    width = WIDTH[acc.type]
    size = acc.count * width * dtype.itemsize
    start = view.byteOffset + (acc.byteOffset or 0)
    assert (acc.byteOffset or 0) + size <= view.byteLength
    return np.frombuffer(blob[start:start + size], dtype=dtype).reshape(acc.count, width)


def validate_glb(path, T, fps, V, F):
    """The checks a strict loader makes, then the keyframes reconstructed from the file's own bytes."""
    import pygltflib

    gltf = pygltflib.GLTF2.load_binary(str(path))
    blob = gltf.binary_blob()
    assert gltf.asset.version == "2.0"
    assert len(gltf.buffers) == 1 and gltf.buffers[0].byteLength == len(blob)
    for view in gltf.bufferViews:
        assert view.byteOffset % 4 == 0 and view.byteOffset + view.byteLength <= len(blob)
    for i, acc in enumerate(gltf.accessors):  # min/max, where present, are the data's
        data = read_accessor(gltf, blob, i)
        if acc.min or acc.max:  # pygltflib reads an absent min/max as []
            np.testing.assert_array_equal(np.asarray(acc.min, data.dtype), data.min(axis=0))
            np.testing.assert_array_equal(np.asarray(acc.max, data.dtype), data.max(axis=0))
    prim = gltf.meshes[0].primitives[0]
    K = len(prim.targets)
    assert prim.mode == 4 and len(gltf.meshes[0].weights) == K
    target_ids = [t["POSITION"] if isinstance(t, dict) else t.POSITION for t in prim.targets]  # read back as dicts
    for i in target_ids:  # the spec requires min/max on POSITION accessors, morph targets' too
        assert len(gltf.accessors[i].min) == 3 and len(gltf.accessors[i].max) == 3
    base = read_accessor(gltf, blob, prim.attributes.POSITION)
    indices = read_accessor(gltf, blob, prim.indices).reshape(-1, 3)
    assert base.shape == (V, 3) and indices.shape == (F, 3) and indices.max() < V
    targets = np.stack([read_accessor(gltf, blob, i) for i in target_ids])
    anim = gltf.animations[0]
    assert len(anim.channels) == 1 and anim.channels[0].target.path == "weights" and anim.channels[0].target.node == 0
    sampler = anim.samplers[anim.channels[0].sampler]
    times = read_accessor(gltf, blob, sampler.input)[:, 0]
    np.testing.assert_array_equal(times, np.arange(T, dtype=np.float32) / np.float32(fps))
    weights = read_accessor(gltf, blob, sampler.output)
    assert weights.shape == (T * K, 1) and sampler.interpolation == "LINEAR"
    frames = base[None].astype(np.float64) + np.einsum("tk,kvc->tvc", weights.reshape(T, K), targets)
    return gltf, frames


@pytest.mark.parametrize("T", [1, 7, 64])
def test_glb_exact_one_target_per_frame(tmp_path, template, faces, T):
    seq = motion(template, T)
    extras = mf.save_glb(tmp_path / "a.glb", seq, template, faces, fps=30)
    gltf, frames = validate_glb(tmp_path / "a.glb", T, 30, 6172, 12294)
    assert extras["mode"] == "exact" and extras["targets"] == T and gltf.extras["mode"] == "exact"
    np.testing.assert_allclose(frames, seq.numpy(), atol=2e-5, rtol=0)
    assert extras["max_vertex_error"] < 2e-5


def test_glb_long_sequences_use_a_pca_basis_with_a_stated_error(tmp_path, template, faces):
    T = 150
    seq = motion(template, T, rank=80, noise=0.01)
    extras = mf.save_glb(tmp_path / "a.glb", seq, template, faces, fps=25)
    gltf, frames = validate_glb(tmp_path / "a.glb", T, 25, 6172, 12294)
    assert extras["mode"] == "pca" and extras["targets"] == 64 and gltf.extras == extras
    dist = np.linalg.norm(frames - seq.numpy().astype(np.float64), axis=-1)
    assert extras["max_vertex_error"] == pytest.approx(dist.max(), rel=1e-3, abs=1e-6)
    assert extras["rms_vertex_error"] == pytest.approx(np.sqrt(np.mean(dist ** 2)), rel=1e-3, abs=1e-6)
    d = (seq.double() - template.double()).reshape(T, -1)
    s = torch.linalg.svdvals(d)
    optimal_rms = float(torch.sqrt((s[64:] ** 2).sum() / (T * 6172)))
    assert 0 < optimal_rms <= extras["rms_vertex_error"] <= 1.02 * optimal_rms  # near the best rank-64 fit
    low_rank = motion(template, T, rank=10)
    extras = mf.save_glb(tmp_path / "b.glb", low_rank, template, faces, fps=30)
    assert extras["max_vertex_error"] < 1e-4  # rank 10 < 64: reproduced up to float32


def test_glb_opens_in_trimesh(tmp_path, template, faces):
    import trimesh

    mf.save_glb(tmp_path / "a.glb", motion(template, 80), template, faces, fps=30)
    scene = trimesh.load(tmp_path / "a.glb")
    (mesh,) = scene.geometry.values()
    assert mesh.vertices.shape == (6172, 3) and mesh.faces.shape == (12294, 3)
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(template.numpy(), axis=0), atol=1e-5)


def test_morph_basis_without_motion_is_finite():
    targets, weights, mode = morph_basis(np.zeros((70, 30)), 64)
    assert mode == "pca" and np.isfinite(targets).all() and np.abs(weights).max() == 0


def test_glb_and_sequence_argument_errors(tmp_path, template, faces):
    with pytest.raises(ValueError, match=r"template must have shape \[V=6172, 3\]"):
        mf.save_glb(tmp_path / "a.glb", motion(template, 3), template[:10], faces, fps=30)
    with pytest.raises(ValueError, match=r"vertices must have shape \[T > 0, V > 0, 3\]"):
        mf.save_npz(tmp_path / "a.npz", torch.zeros(0, 6172, 3), faces, 30)
    with pytest.raises(ValueError, match=r"faces must index vertices in \[0, 6172\)"):
        mf.save_obj_sequence(tmp_path / "obj", motion(template, 2), faces + 6172)
    assert not (tmp_path / "a.glb").exists()


def test_obj_sequence_and_npz_round_trip(tmp_path, template, faces):
    import trimesh

    seq = motion(template, 3)
    assert mf.save_obj_sequence(tmp_path / "obj", seq, faces) == 3
    assert sorted(os.listdir(tmp_path / "obj")) == ["frame_00000.obj", "frame_00001.obj", "frame_00002.obj"]
    for t in range(3):
        m = trimesh.load(tmp_path / "obj" / f"frame_{t:05d}.obj", process=False, maintain_order=True)
        np.testing.assert_array_equal(np.asarray(m.vertices, np.float32), seq[t].numpy())  # exact float32
        np.testing.assert_array_equal(m.faces, faces.numpy())
    mf.save_npz(tmp_path / "m.npz", seq, faces, 30)
    with np.load(tmp_path / "m.npz") as z:
        assert sorted(z.files) == ["faces", "fps", "vertices"]
        np.testing.assert_array_equal(z["vertices"], seq.numpy())
        assert int(z["fps"]) == 30 and z["faces"].shape == (12294, 3)


# ------------------------------------------------------------------------------------------------
# rendering and video
# ------------------------------------------------------------------------------------------------
def test_render_shows_a_shaded_face(template, faces):
    (img,) = render_frames(template[None], faces, size=(96, 128))
    assert img.shape == (128, 96, 3) and img.dtype == np.uint8
    face = (np.abs(img.astype(int) - [28, 30, 36]).sum(-1) > 30)
    assert 0.2 < face.mean() < 0.8  # the head fills the frame, with background around it
    assert len(np.unique(img[face].reshape(-1, 3), axis=0)) > 30  # Lambert shading varies over the face
    tri = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])  # counter-clockwise seen from the camera (+z)
    (front,) = render_frames(tri, torch.tensor([[0, 1, 2]]), size=(32, 32))
    (back,) = render_frames(tri, torch.tensor([[0, 2, 1]]), size=(32, 32))  # clockwise: culled
    assert (np.abs(front.astype(int) - [28, 30, 36]).sum(-1) > 30).mean() > 0.3
    assert (np.abs(back.astype(int) - [28, 30, 36]).sum(-1) > 30).sum() == 0


def test_frame_grid_tiles_row_major():
    from meshtalk_fast.io.render import frame_grid

    images = [np.full((4, 6, 3), i, np.uint8) for i in range(5)]
    grid = frame_grid(images, columns=2)
    assert grid.shape == (12, 12, 3)
    assert grid[0, 6, 0] == 1 and grid[4, 0, 0] == 2 and grid[8, 0, 0] == 4
    assert tuple(grid[8, 6]) == (28, 30, 36)  # the empty cell is background


def test_camera_frames_the_whole_sequence(template):
    seq = torch.stack([template, template + torch.tensor([50.0, 0, 0])])
    cam = Camera(seq.numpy(), 100, 100)
    xy = cam.project(seq.numpy())
    assert xy.min() >= 0 and xy.max() <= 100


def test_preview_mp4_frames_rate_and_audio(tmp_path, template, faces, speech):
    seq = motion(template, 20, rank=3)
    audio = speech[:12000]
    mf.save_preview_mp4(tmp_path / "p.mp4", seq, faces, fps=25, audio=audio, size=(64, 80))
    info = mf.probe_mp4(tmp_path / "p.mp4")
    assert info["frames"] == 20 and info["fps"] == 25 and (info["width"], info["height"]) == (64, 80)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac" and info["audio_rate"] == 16000
    assert info["audio_seconds"] == pytest.approx(0.75, abs=0.03)
    assert [f for f in os.listdir(tmp_path)] == ["p.mp4"]  # the temporary wav is gone
    with pytest.raises(ValueError, match="multiples of 16"):
        mf.save_preview_mp4(tmp_path / "q.mp4", seq, faces, fps=25, size=(60, 80))


# ------------------------------------------------------------------------------------------------
# all-or-nothing outputs
# ------------------------------------------------------------------------------------------------
def test_write_outputs_all_or_nothing(tmp_path):
    out = tmp_path / "out"

    def good(tmp):
        open(os.path.join(tmp, "a.txt"), "w").write("new")
        os.mkdir(os.path.join(tmp, "d"))

    def bad(tmp):
        open(os.path.join(tmp, "a.txt"), "w").write("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_outputs(out, ["a.txt", "d"], bad)
    assert os.listdir(tmp_path) == []  # neither out/ nor the temporary folder
    write_outputs(out, ["a.txt", "d"], good)
    assert sorted(os.listdir(out)) == ["a.txt", "d"]
    with pytest.raises(FileExistsError, match="already holds a.txt, d"):
        write_outputs(out, ["a.txt", "d"], good)
    (out / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        write_outputs(out, ["a.txt", "d"], bad, force=True)
    assert (out / "a.txt").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out"]
    write_outputs(out, ["a.txt", "d"], good, force=True)
    assert (out / "a.txt").read_text() == "new"
    with pytest.raises(FileNotFoundError, match="is not an existing folder"):
        write_outputs(tmp_path / "missing" / "out", ["a.txt"], good)
