"""The blendshape basis (``BlendshapeBasis``, ops/blendshapes.py; the solve is in test_blendshapes.py): its
checks, its files (npz, glb, gltf with an external buffer, sparse morph targets) read back exactly and
written for viewers, errors that name the file, the ARKit names."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import blendshape_basis


def test_basis_errors():
    n, d = torch.zeros(10, 3), torch.zeros(2, 10, 3)
    with pytest.raises(ValueError, match="names are missing"):
        mf.BlendshapeBasis(None, n, d)
    with pytest.raises(ValueError, match=r"names must be distinct, got duplicates \['a'\]"):
        mf.BlendshapeBasis(["a", "a"], n, d)
    with pytest.raises(ValueError, match="names must hold K=2 names"):
        mf.BlendshapeBasis(["a"], n, d)
    with pytest.raises(ValueError, match=r"deltas must have shape \[K > 0, V=10, 3\]"):
        mf.BlendshapeBasis(["a", "b"], n, torch.zeros(2, 9, 3))
    bad = d.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="deltas must be finite"):
        mf.BlendshapeBasis(["a", "b"], n, bad)
    with pytest.raises(ValueError, match=r"basis has V=10 vertices but the model has 6172"):
        mf.BlendshapeBasis(["a", "b"], n, d).check_vertices(6172)


@pytest.mark.parametrize("ext", ["npz", "glb"])
def test_save_load_round_trip(tmp_path, ext):
    basis = blendshape_basis(64, 7, seed=11, faces=True)
    path = tmp_path / f"rig.{ext}"
    basis.save(path)
    back = mf.BlendshapeBasis.load(path)
    assert back.names == basis.names
    assert torch.equal(back.neutral, basis.neutral) and torch.equal(back.deltas, basis.deltas)
    assert torch.equal(back.faces, basis.faces)
    assert [p.name for p in tmp_path.iterdir()] == [f"rig.{ext}"]  # no temporary file left


def test_glb_written_for_viewers_reads_with_pygltflib(tmp_path):
    from pygltflib import GLTF2

    basis = blendshape_basis(30, 3, seed=12, faces=True)
    basis.save(tmp_path / "rig.glb")
    g = GLTF2().load(str(tmp_path / "rig.glb"))
    assert g.meshes[0].extras["targetNames"] == list(basis.names)
    assert len(g.meshes[0].primitives[0].targets) == 3 and g.meshes[0].primitives[0].mode == 4


def test_file_errors_name_the_file(tmp_path):
    from meshtalk_fast.io.export import save_glb

    with pytest.raises(FileNotFoundError, match="blendshape file .*nope.glb.* does not exist"):
        mf.BlendshapeBasis.load(tmp_path / "nope.glb")
    np.savez(tmp_path / "partial.npz", names=np.array(["a"]), neutral=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"partial.npz' lacks the arrays \['deltas'\]"):
        mf.BlendshapeBasis.load(tmp_path / "partial.npz")
    np.savez(tmp_path / "dup.npz", names=np.array(["a", "a"]), neutral=np.zeros((3, 3)), deltas=np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"dup.npz.*names must be distinct"):
        mf.BlendshapeBasis.load(tmp_path / "dup.npz")
    np.savez(tmp_path / "nan.npz", names=np.array(["a"]), neutral=np.full((3, 3), np.nan), deltas=np.ones((1, 3, 3)))
    with pytest.raises(ValueError, match=r"nan.npz.*neutral must be finite"):
        mf.BlendshapeBasis.load(tmp_path / "nan.npz")
    # a glb whose mesh has no morph targets: one frame -> save_glb writes 1 target, so build a plain one
    from pygltflib import GLTF2

    save_glb(tmp_path / "anim.glb", torch.zeros(1, 3, 3), torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 30)
    g = GLTF2().load(str(tmp_path / "anim.glb"))
    g.meshes[0].primitives[0].targets = []
    g.save_binary(str(tmp_path / "plain.glb"))
    with pytest.raises(ValueError, match=r"plain.glb' has no mesh with morph targets"):
        mf.BlendshapeBasis.load(tmp_path / "plain.glb")
    g = GLTF2().load(str(tmp_path / "anim.glb"))
    g.meshes[0].extras = {}
    g.save_binary(str(tmp_path / "unnamed.glb"))
    with pytest.raises(ValueError, match=r"unnamed.glb.*no names \(mesh.extras.targetNames is missing\)"):
        mf.BlendshapeBasis.load(tmp_path / "unnamed.glb")
    with pytest.raises(ValueError, match="expected a .npz, .glb or .gltf file"):
        (tmp_path / "rig.txt").write_text("x")
        mf.BlendshapeBasis.load(tmp_path / "rig.txt")
    with pytest.raises(ValueError, match="path must end in .npz or .glb"):
        blendshape_basis(5, 1).save(tmp_path / "rig.fbx")


def test_arkit_names():
    assert len(mf.ARKIT_NAMES) == 52 == len(set(mf.ARKIT_NAMES))
    assert mf.ARKIT_NAMES[0] == "eyeBlinkLeft" and mf.ARKIT_NAMES[17] == "jawOpen"
    assert mf.ARKIT_NAMES[-1] == "tongueOut"


def test_gltf_with_an_external_buffer_and_animating_it(tmp_path):
    """A .gltf + .bin rig reads like the .glb, and its animated copy is one self-contained .glb."""
    from pygltflib import GLTF2, BufferFormat

    from meshtalk_fast.io.gltf import add_weights_animation

    basis = blendshape_basis(20, 3, seed=13, faces=True)
    basis.save(tmp_path / "rig.glb")
    g = GLTF2().load(str(tmp_path / "rig.glb"))
    g.convert_buffers(BufferFormat.BINFILE)
    g.save(str(tmp_path / "rig.gltf"))
    assert any(p.suffix == ".bin" for p in tmp_path.iterdir())
    back = mf.BlendshapeBasis.load(tmp_path / "rig.gltf")
    assert back.names == basis.names and torch.equal(back.deltas, basis.deltas)
    w = torch.rand(5, 3, generator=torch.Generator().manual_seed(0)).numpy()
    assert add_weights_animation(tmp_path / "rig.gltf", tmp_path / "anim.glb", w, 30) == [0]
    g = GLTF2().load(str(tmp_path / "anim.glb"))
    acc = g.accessors[g.animations[-1].samplers[0].output]
    view = g.bufferViews[acc.bufferView]
    got = np.frombuffer(g.binary_blob(), np.float32, acc.count, view.byteOffset + (acc.byteOffset or 0))
    np.testing.assert_array_equal(got.reshape(5, 3), w)
    assert torch.equal(mf.BlendshapeBasis.load(tmp_path / "anim.glb").deltas, basis.deltas)
    with pytest.raises(ValueError, match=r"weights must have shape \[T > 0, K=3\], got \[5, 2\]"):
        add_weights_animation(tmp_path / "rig.gltf", tmp_path / "x.glb", w[:, :2], 30)


def test_sparse_morph_target(tmp_path):
    """A target stored as a sparse accessor (only the moved vertices), as some exporters write them."""
    from pygltflib import (FLOAT, GLTF2, UNSIGNED_INT, VEC3, Accessor, AccessorSparseIndices, AccessorSparseValues,
                           Attributes, Buffer, BufferView, Mesh, Node, Primitive, Scene, Sparse)

    neutral = np.arange(12, dtype=np.float32).reshape(4, 3)
    idx = np.array([1, 3], np.uint32)
    val = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    blob = neutral.tobytes() + idx.tobytes() + val.tobytes()
    g = GLTF2(scene=0, scenes=[Scene(nodes=[0])], nodes=[Node(mesh=0)], buffers=[Buffer(byteLength=len(blob))],
              bufferViews=[BufferView(buffer=0, byteOffset=0, byteLength=48),
                           BufferView(buffer=0, byteOffset=48, byteLength=8),
                           BufferView(buffer=0, byteOffset=56, byteLength=24)],
              accessors=[Accessor(bufferView=0, componentType=FLOAT, count=4, type=VEC3, min=[0, 1, 2],
                                  max=[9, 10, 11]),
                         Accessor(componentType=FLOAT, count=4, type=VEC3, min=[0, 0, 0], max=[4, 5, 6],
                                  sparse=Sparse(count=2, indices=AccessorSparseIndices(bufferView=1,
                                                                                       componentType=UNSIGNED_INT),
                                                values=AccessorSparseValues(bufferView=2)))],
              meshes=[Mesh(primitives=[Primitive(attributes=Attributes(POSITION=0), targets=[Attributes(POSITION=1)],
                                                 mode=0)], extras={"targetNames": ["jawOpen"]})])
    g.set_binary_blob(blob)
    g.save_binary(str(tmp_path / "sparse.glb"))
    basis = mf.BlendshapeBasis.load(tmp_path / "sparse.glb")
    expected = np.zeros((1, 4, 3), np.float32)
    expected[0, [1, 3]] = val
    np.testing.assert_array_equal(basis.deltas.numpy(), expected)
    np.testing.assert_array_equal(basis.neutral.numpy(), neutral)
    assert basis.faces is None
