"""Blendshape solve (op "solve_blendshapes"): known weights recovered, bounds, smoothing, vertex weights,
dependent shapes, every backend against the reference, an independent bounded least-squares solver
(scipy's BVLS) as the judge of optimality, the basis's files and errors."""
import math
import warnings

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.ops.blendshapes import condition_number

BACKENDS = ["torch", "cpp"]


def _basis(V, K, seed=0, faces=False):
    g = torch.Generator().manual_seed(seed)
    f = torch.randint(0, V, (2 * V, 3), generator=g) if faces else None
    return mf.BlendshapeBasis([f"shape{k}" for k in range(K)], torch.randn(V, 3, generator=g),
                              torch.randn(K, V, 3, generator=g), f)


def _backend_or_skip(backend):
    reason = mf.available_backends("solve_blendshapes", torch.device("cpu"))[backend]
    if reason is not None:
        pytest.skip(f"backend {backend!r} of solve_blendshapes cannot run here: {reason}")


def _bvls(basis, meshes, lo, hi, smoothing=0.0, mask=None):
    """Independent judge: scipy's bounded-variable least squares on the stacked objective, frame by frame."""
    from scipy.optimize import lsq_linear

    K, V = basis.n_shapes, basis.n_vertices
    m = np.ones(V) if mask is None else mask.double().numpy()
    sw = np.sqrt(np.repeat(m, 3) / m.sum())
    A = basis.deltas.double().numpy().reshape(K, -1).T * sw[:, None]
    out, prev = [], None
    for t in range(meshes.shape[0]):
        r = (meshes[t].double() - basis.neutral.double()).numpy().reshape(-1) * sw
        if prev is not None and smoothing > 0:
            A_t = np.vstack([A, math.sqrt(smoothing) * np.eye(K)])
            r = np.concatenate([r, math.sqrt(smoothing) * prev])
        else:
            A_t = A
        prev = lsq_linear(A_t, r, bounds=(lo, hi), method="bvls", tol=1e-14).x
        out.append(prev)
    return torch.tensor(np.array(out))


def _objective(basis, meshes, w, mask=None):
    m = torch.ones(basis.n_vertices, dtype=torch.float64) if mask is None else mask.double()
    e = (basis.reconstruct(w.float()).double() - meshes.double()).square().sum(-1)
    return (e * m).sum(-1) / m.sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V,K,T", [(300, 1, 1), (300, 52, 7), (301, 256, 3), (6172, 52, 2)])
def test_known_weights_are_recovered(backend, V, K, T):
    _backend_or_skip(backend)
    basis = _basis(V, K)
    g = torch.Generator().manual_seed(1)
    w = 0.05 + 0.9 * torch.rand(T, K, generator=g)  # inside the bounds
    got = mf.solve_blendshapes(basis.reconstruct(w), basis, backend=backend)
    assert got.shape == (T, K) and got.dtype == torch.float32
    assert (got - w).abs().max().item() < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V,K,T,smoothing", [(300, 13, 9, 0.0), (97, 40, 6, 0.3), (300, 52, 5, 2.0)])
def test_bounds_are_respected_and_the_solution_is_optimal(backend, V, K, T, smoothing):
    _backend_or_skip(backend)
    basis = _basis(V, K, seed=2)
    g = torch.Generator().manual_seed(3)
    meshes = basis.reconstruct(1.5 * torch.randn(T, K, generator=g)) + 0.1 * torch.randn(T, V, 3, generator=g)
    lo, hi = -0.5, 0.7
    got = mf.solve_blendshapes(meshes, basis, bounds=(lo, hi), smoothing=smoothing, backend=backend)
    assert got.min().item() >= lo - 1e-7 and got.max().item() <= hi + 1e-7
    assert bool(((got <= lo + 1e-6) | (got >= hi - 1e-6)).any())  # the bounds were active somewhere
    judge = _bvls(basis, meshes, lo, hi, smoothing)
    assert (got.double() - judge).abs().max().item() < 1e-4
    ref = mf.torch_solve_blendshapes(meshes, basis.neutral, basis.deltas, None, lo, hi, smoothing)
    assert (got - ref).abs().max().item() < 1e-4


def test_smoothing_known_answer():
    """One shape, one vertex: frame 0 sits at w=1; then the mesh rests, so frame t minimises
    w^2 + s (w - w_{t-1})^2, i.e. w_t = s / (1 + s) * w_{t-1}: with s = 1, 1, 1/2, 1/4."""
    basis = mf.BlendshapeBasis(["a"], torch.zeros(1, 3), torch.tensor([[[1.0, 0.0, 0.0]]]))
    meshes = torch.tensor([[[1.0, 0, 0]], [[0.0, 0, 0]], [[0.0, 0, 0]]])
    got = mf.solve_blendshapes(meshes, basis, smoothing=1.0, backend="torch")
    assert got[:, 0].tolist() == pytest.approx([1.0, 0.5, 0.25], abs=1e-6)
    assert mf.solve_blendshapes(meshes, basis, backend="torch")[:, 0].tolist() == pytest.approx([1, 0, 0], abs=1e-7)
    # causal: frame 1 does not depend on frame 2
    assert mf.solve_blendshapes(meshes[:2], basis, smoothing=1.0, backend="torch")[1, 0].item() == \
        pytest.approx(0.5, abs=1e-6)


def test_weights_mask_ignores_masked_vertices():
    basis = _basis(200, 10, seed=4)
    w = 0.1 + 0.8 * torch.rand(3, 10, generator=torch.Generator().manual_seed(5))
    meshes = basis.reconstruct(w)
    mask = torch.ones(200)
    mask[:50] = 0.0
    meshes[:, :50] += 5.0  # garbage where the mask is 0
    got = mf.solve_blendshapes(meshes, basis, weights_mask=mask, backend="torch")
    assert (got - w).abs().max().item() < 1e-4
    assert (mf.solve_blendshapes(meshes, basis, backend="torch") - w).abs().max().item() > 1e-2
    soft = torch.rand(200, generator=torch.Generator().manual_seed(6))
    meshes = basis.reconstruct(2 * torch.randn(2, 10, generator=torch.Generator().manual_seed(7)))
    got = mf.solve_blendshapes(meshes, basis, weights_mask=soft, backend="torch")
    assert (got.double() - _bvls(basis, meshes, 0.0, 1.0, mask=soft)).abs().max().item() < 1e-4


def test_linearly_dependent_shapes_solve_anyway_and_warn():
    basis = _basis(150, 6, seed=8)
    d = basis.deltas.clone()
    d[5] = d[0] + d[1]  # the last shape is the sum of the first two
    dep = mf.BlendshapeBasis(basis.names, basis.neutral, d)
    assert condition_number(dep) > 1e10 and condition_number(basis) < 1e4
    w = torch.tensor([[0.3, 0.2, 0.5, 0.1, 0.4, 0.2]])
    meshes = dep.reconstruct(w)
    with pytest.warns(RuntimeWarning, match="condition number"):
        got = mf.solve_blendshapes(meshes, dep, bounds=(-2, 2), backend="torch")
    assert _objective(dep, meshes, got).item() < 1e-9  # still a perfect fit, with other weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mf.solve_blendshapes(basis.reconstruct(w), basis, backend="torch")  # independent: no warning


def test_residual_share():
    basis = _basis(120, 5, seed=9)
    w = torch.full((2, 5), 0.5)
    meshes = basis.reconstruct(w)
    assert mf.blendshape_residual(meshes, basis, w).tolist() == pytest.approx([0, 0], abs=1e-6)
    assert mf.blendshape_residual(meshes, basis, torch.zeros(2, 5)).tolist() == pytest.approx([1, 1], abs=1e-6)
    noise = torch.randn(2, 120, 3, generator=torch.Generator().manual_seed(1))
    noisy = meshes + noise
    w_fit = mf.solve_blendshapes(noisy, basis, bounds=(-5, 5), backend="torch")
    share = mf.blendshape_residual(noisy, basis, w_fit)
    assert bool(((share > 0.3) & (share < 1)).all())  # most of random noise is beyond 5 shapes
    still = basis.neutral[None].expand(1, 120, 3)
    assert mf.blendshape_residual(still, basis, torch.zeros(1, 5)).item() == 0.0


def test_solver_errors():
    basis = _basis(50, 4)
    meshes = basis.reconstruct(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="meshes must be finite, got 1 NaN"):
        bad = meshes.clone()
        bad[1, 3, 2] = float("nan")
        mf.solve_blendshapes(bad, basis)
    with pytest.raises(ValueError, match=r"bounds must have lo <= hi, got lo=1.0 > hi=0.0"):
        mf.solve_blendshapes(meshes, basis, bounds=(1, 0))
    with pytest.raises(ValueError, match="bounds must be finite"):
        mf.solve_blendshapes(meshes, basis, bounds=(float("nan"), 1))
    with pytest.raises(ValueError, match="bounds must be a pair"):
        mf.solve_blendshapes(meshes, basis, bounds=0.5)
    with pytest.raises(ValueError, match="basis has V=50 vertices but meshes has 49"):
        mf.solve_blendshapes(meshes[:, :49], basis)
    with pytest.raises(ValueError, match="smoothing must be a finite number >= 0"):
        mf.solve_blendshapes(meshes, basis, smoothing=-1)
    with pytest.raises(ValueError, match=r"weights_mask must have shape \[50\]"):
        mf.solve_blendshapes(meshes, basis, weights_mask=torch.ones(3))
    with pytest.raises(ValueError, match="weights_mask must be >= 0"):
        mf.solve_blendshapes(meshes, basis, weights_mask=torch.zeros(50))
    with pytest.raises(TypeError, match="basis must be a BlendshapeBasis"):
        mf.solve_blendshapes(meshes, "rig.glb")
    with pytest.raises(ValueError, match="backend must be one of"):
        mf.solve_blendshapes(meshes, basis, backend="gpu")
    with pytest.raises(ValueError, match="smoothing must be a finite number"):
        mf.solve_blendshapes(meshes, basis, smoothing=float("nan"))
    with pytest.raises(ValueError, match="weights must be finite, got 1 NaN"):
        basis.reconstruct(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))


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
    basis = _basis(64, 7, seed=11, faces=True)
    path = tmp_path / f"rig.{ext}"
    basis.save(path)
    back = mf.BlendshapeBasis.load(path)
    assert back.names == basis.names
    assert torch.equal(back.neutral, basis.neutral) and torch.equal(back.deltas, basis.deltas)
    assert torch.equal(back.faces, basis.faces)
    assert [p.name for p in tmp_path.iterdir()] == [f"rig.{ext}"]  # no temporary file left


def test_glb_written_for_viewers_reads_with_pygltflib(tmp_path):
    from pygltflib import GLTF2

    basis = _basis(30, 3, seed=12, faces=True)
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
        _basis(5, 1).save(tmp_path / "rig.fbx")


def test_arkit_names():
    assert len(mf.ARKIT_NAMES) == 52 == len(set(mf.ARKIT_NAMES))
    assert mf.ARKIT_NAMES[0] == "eyeBlinkLeft" and mf.ARKIT_NAMES[17] == "jawOpen"
    assert mf.ARKIT_NAMES[-1] == "tongueOut"


def test_gltf_with_an_external_buffer_and_animating_it(tmp_path):
    """A .gltf + .bin rig reads like the .glb, and its animated copy is one self-contained .glb."""
    from pygltflib import GLTF2, BufferFormat

    from meshtalk_fast.io.gltf import add_weights_animation

    basis = _basis(20, 3, seed=13, faces=True)
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


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_rank_deficient_bases_reach_the_optimum(smoothing):
    """More shapes than coordinates (K = 100 > 3V = 60) with the box active: the solve ends (no cycling
    between equally good faces of the box) at BVLS's objective."""
    basis = _basis(20, 100, seed=14)
    g = torch.Generator().manual_seed(15)
    meshes = basis.reconstruct(2 * torch.randn(4, 100, generator=g)) + 0.3 * torch.randn(4, 20, 3, generator=g)
    with pytest.warns(RuntimeWarning, match="condition number"):
        got = mf.solve_blendshapes(meshes, basis, smoothing=smoothing, backend="torch")
    assert got.min().item() >= 0 and got.max().item() <= 1
    if smoothing == 0.0:  # frames are independent: compare the fit itself
        judge = _bvls(basis, meshes, 0.0, 1.0).float()
        excess = _objective(basis, meshes, got) - _objective(basis, meshes, judge)
        assert excess.max().item() < 1e-8 * _objective(basis, meshes, judge).max().item()
