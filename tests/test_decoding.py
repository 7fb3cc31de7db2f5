"""The C++ core's decoding (backend "cpp"): the batched sampler and the VertexUnet decoder against
the PyTorch reference, seeded Gumbel sampling, weights from memory and from MeshTalk.save files,
dispatch, caching, threads, and bad input raised as Python errors."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import meshtalk_fast as mf
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp

CPU = torch.device("cpu")
RELEASED = dict(heads=16, classes=128, hidden=64)
ODD = dict(heads=3, classes=5, hidden=6)


def prior_model(heads, classes, hidden, seed=0, V=30, scale=3.0):
    """A MeshTalk whose prior is sharper than the init (weights * scale) so argmax is well separated."""
    torch.manual_seed(seed)
    model = mf.MeshTalk(V, heads=heads, classes=classes, context_hidden=hidden).eval()
    with torch.no_grad():
        for p in model.context_model.parameters():
            p.mul_(scale)
    return model


def audio(B, T, seed=0):
    return torch.randn(B, T, 128, generator=torch.Generator().manual_seed(seed))


def labels_of(one_hot):
    """[B, T, H, C] -> [B, T, H] labels, -1 where the row is all zero."""
    lab = one_hot.argmax(-1)
    lab[one_hot.sum(-1) == 0] = -1
    return lab


@pytest.fixture(scope="module", params=["released", "odd"])
def case(request):
    sizes = RELEASED if request.param == "released" else ODD
    model = prior_model(**sizes)
    a = audio(3, 30, seed=1)
    lengths = [7, 23, 1]
    with torch.no_grad():
        # the reference on each sequence alone, on its own prefix
        alone = [model.sample(a[b:b + 1, :n], argmax=True, backend="torch")[0] for b, n in enumerate(lengths)]
        full = model.sample(a[:1], argmax=True, backend="torch")[0]
    return dict(model=model, audio=a, lengths=lengths, alone=alone, full=full, name=request.param)


# ------------------------------------------------------------------------------------------ sampler: argmax
def test_argmax_b1_equals_reference(case):
    cpp = case["model"].sample(case["audio"][:1], argmax=True, backend="cpp")
    assert cpp.shape == case["full"][None].shape
    mismatch = (labels_of(cpp[0]) != labels_of(case["full"])).nonzero()
    assert mismatch.numel() == 0, f"{case['name']}: first mismatches at (t, h) {mismatch[:5].tolist()}"


@pytest.mark.parametrize("threads", [1, 2])
def test_argmax_mixed_lengths_equal_reference_alone(case, threads):
    model, a, lengths = case["model"], case["audio"], case["lengths"]
    cpp = model.sample(a, argmax=True, backend="cpp", lengths=lengths, threads=threads)
    for b, n in enumerate(lengths):
        assert torch.equal(cpp[b, :n], case["alone"][b]), f"{case['name']}: sequence {b} (length {n}) differs"
        assert torch.all(cpp[b, n:] == 0), f"sequence {b}: outputs past its length {n} must be zero"


def test_labels_from_core_and_lengths_zero(case):
    model, a, alone = case["model"], case["audio"], case["alone"]
    H = model.config.heads
    lab = _core.sample(_cpp.context_weights(model), a.numpy(), argmax=True, lengths=np.array([0, 30, 5]))
    assert lab.dtype == np.int32 and lab.shape == (3, 30, H)
    assert np.all(lab[0] == -1) and np.all(lab[2, 5:] == -1)
    np.testing.assert_array_equal(lab[1, :23], alone[1].argmax(-1).numpy())  # a prefix of sequence 1
    np.testing.assert_array_equal(lab[2, :1], alone[2].argmax(-1).numpy())


def test_blas_backend_sampler_matches_reference(case):
    if not _core.gemm_info()["blas_available"]:
        pytest.skip("this core was built without OpenBLAS (MESHTALK_BLAS=OFF or scipy-openblas32 missing)")
    model, a = case["model"], case["audio"]
    w = _cpp.context_weights(model, gemm="blas")
    assert w.gemm == "blas"
    lab = _core.sample(w, a[:1].numpy(), argmax=True)
    np.testing.assert_array_equal(lab[0], case["full"].argmax(-1).numpy())


# ------------------------------------------------------------------------------------------ sampler: Gumbel
def test_gumbel_seeded_and_independent_of_batch():
    model = prior_model(**RELEASED, scale=1.0)
    a = audio(3, 24, seed=2)
    seeds = [11, 2 ** 64 - 5, 7]  # any 64-bit value
    one = model.sample(a, backend="cpp", seeds=seeds)
    again = model.sample(a, backend="cpp", seeds=seeds, threads=1)
    assert torch.equal(one, again)
    # sequence 1 alone, and in another batch position with other lengths, gives the same sample
    alone = model.sample(a[1:2], backend="cpp", seeds=[seeds[1]])
    assert torch.equal(alone[0], one[1])
    swapped = model.sample(a[[2, 1]], backend="cpp", seeds=[seeds[2], seeds[1]], lengths=[3, 24])
    assert torch.equal(swapped[1], one[1])
    assert torch.equal(swapped[0, :3], one[2, :3])
    # an int seed s means s + b (mod 2**64) for sequence b
    base = model.sample(a, backend="cpp", seeds=100)
    assert torch.equal(model.sample(a[2:3], backend="cpp", seeds=102)[0], base[2])
    wrapped = model.sample(a, backend="cpp", seeds=2 ** 64 - 1)
    assert torch.equal(model.sample(a[1:2], backend="cpp", seeds=0)[0], wrapped[1])
    # other seeds give other samples (16 heads x 24 steps of a soft prior cannot all agree)
    assert not torch.equal(model.sample(a, backend="cpp", seeds=[12, 13, 14]), one)
    # without seeds, B seeds come from the generator: same generator state, same sample
    g1 = model.sample(a, backend="cpp", generator=torch.Generator().manual_seed(3))
    g2 = model.sample(a, backend="cpp", generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2)


def test_gumbel_uniforms_are_uniform():
    u = np.array([_core.gumbel_uniform(5, t, h, c) for t in range(10) for h in range(10) for c in range(100)])
    assert u.min() >= 0.0 and u.max() < 1.0
    n = u.size
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    chi2 = ((hist - n / 10) ** 2 / (n / 10)).sum()
    assert chi2 < 40, f"chi-square {chi2:.1f} of 10 bins (9 dof; 40 is p < 1e-5)"
    # neighbours in (seed, t, h, c) are not correlated
    v = np.array([_core.gumbel_uniform(6, t, h, c) for t in range(10) for h in range(10) for c in range(100)])
    assert abs(np.corrcoef(u, v)[0, 1]) < 5 / np.sqrt(n)


def test_gumbel_frequencies_follow_the_prior():
    """Labels of 4000 seeded sequences vs the teacher-forced probabilities (5-sigma binomial bounds per
    class) and vs the reference sampler's frequencies, for step 0 head 0 and a later head."""
    model = prior_model(heads=4, classes=8, hidden=16, seed=3, scale=1.5)
    n, T = 4000, 2
    a = audio(1, T, seed=4).expand(n, -1, -1).contiguous()
    cpp = model.sample(a, backend="cpp", seeds=1000)
    ref = model.sample(a, backend="torch", generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        probs = model.context_logprobs(cpp, a).exp()  # conditionals of each sampled sequence
    for t, h in [(0, 0), (1, 3)]:
        observed = cpp[:, t, h].sum(0)
        expected = probs[:, t, h].sum(0)
        sigma = torch.sqrt((probs[:, t, h] * (1 - probs[:, t, h])).sum(0))
        assert torch.all((observed - expected).abs() <= 5 * sigma + 2), (t, h, observed, expected)
        f_cpp, f_ref = cpp[:, t, h].mean(0), ref[:, t, h].mean(0)
        p = (f_cpp + f_ref) / 2
        assert torch.all((f_cpp - f_ref).abs() <= 5 * torch.sqrt(p * (1 - p) * 2 / n) + 1e-3), (t, h, f_cpp, f_ref)
    assert len(torch.unique(cpp[:, 0, 0].argmax(-1))) > 1


# ------------------------------------------------------------------------------------------ decoder
def decoder_model(V, seed=0, mean=None, std=None):
    torch.manual_seed(seed)
    return mf.MeshTalk(V, heads=16, classes=128, mean=mean, stddev=std).eval()


def codes(B, T, seed=0, H=16, C=128):
    labels = torch.randint(0, C, (B, T, H), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(labels, C).float()


@pytest.fixture(scope="module")
def face(assets, template):
    mean = torch.from_numpy(np.load(assets / "face_mean.npy"))
    std = torch.from_numpy(np.load(assets / "face_std.npy"))
    return decoder_model(6172, mean=mean, std=std), template


@pytest.fixture(scope="module")
def small_face():
    g = torch.Generator().manual_seed(5)
    mean, std = torch.randn(300, 3, generator=g), torch.rand(300, 3, generator=g) + 0.5
    return decoder_model(300, mean=mean, std=std), torch.randn(300, 3, generator=g) * 2 + mean


@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("which", ["small", "face"])
def test_decode_matches_reference(which, T, request):
    model, template = request.getfixturevalue("small_face" if which == "small" else "face")
    one_hot = codes(3, T, seed=T)
    per_sequence = template[None] + 0.01 * torch.randn(3, *template.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for tp in (template, per_sequence):
            ref = model.decode(tp, one_hot, backend="torch")
            cpp = model.decode(tp, one_hot, backend="cpp")
            torch.testing.assert_close(cpp, ref, rtol=1e-5, atol=1e-5)


def test_decode_soft_codes_and_blas(small_face):
    model, template = small_face
    soft = torch.softmax(torch.randn(2, 5, 16, 128, generator=torch.Generator().manual_seed(2)), -1)
    straight_through = mf.quantize(torch.randn(2, 5, 16, 128).log_softmax(-1), argmax=True)
    with torch.no_grad():
        for one_hot in (soft, straight_through):
            torch.testing.assert_close(model.decode(template, one_hot, backend="cpp"),
                                       model.decode(template, one_hot, backend="torch"), rtol=1e-4, atol=1e-5)
        if _core.gemm_info()["blas_available"]:
            one_hot = codes(2, 5)
            out = _core.decode(_cpp.decoder_weights(model, gemm="blas"), template[None].numpy(), one_hot.numpy())
            torch.testing.assert_close(torch.from_numpy(out), model.decode(template, one_hot, backend="torch"),
                                       rtol=1e-5, atol=1e-5)


def test_decode_threads_give_identical_results(small_face):
    model, template = small_face
    one_hot = codes(3, 9, seed=4)
    with torch.no_grad():
        a = model.decode(template, one_hot, backend="cpp", threads=1)
        b = model.decode(template, one_hot, backend="cpp", threads=2)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------ weights
def test_weights_from_file_round_trip(tmp_path, small_face):
    model, template = small_face
    with torch.no_grad():
        for p in model.context_model.parameters():
            p.mul_(3.0)
    path = tmp_path / "model.safetensors"
    model.save(path)
    cw = _core.ContextWeights.from_file(path)
    dw = _core.DecoderWeights.from_file(str(path))
    assert cw.config == _cpp.context_weights(model).config and cw.config["heads"] == 16
    assert dw.config["n_vertices"] == 300 and dw.nbytes > 0 and cw.gemm == "builtin"
    a = audio(2, 25, seed=6)
    ref = model.sample(a, argmax=True, backend="torch").argmax(-1).numpy()
    np.testing.assert_array_equal(_core.sample(cw, a.numpy(), argmax=True), ref)
    one_hot = codes(2, 4)
    with torch.no_grad():
        expected = model.decode(template, one_hot, backend="cpp")
    assert torch.equal(torch.from_numpy(_core.decode(dw, template[None].numpy(), one_hot.numpy())), expected)


def rewrite(src, dst, drop=None, reshape=None, metadata=None):
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != drop}
    if reshape:
        tensors[reshape] = tensors[reshape][..., :-1].contiguous()
    save_file(tensors, str(dst), metadata=meta if metadata is None else metadata)


def test_bad_weight_files(tmp_path):
    model = prior_model(**ODD, V=10)
    good = tmp_path / "good.safetensors"
    model.save(good)
    bad = tmp_path / "bad.safetensors"
    rewrite(good, bad, drop="context_model.context_layers.2.historic.weight")
    with pytest.raises(KeyError, match=r"missing tensor 'context_model\.context_layers\.2\.historic\.weight'"):
        _core.ContextWeights.from_file(bad)
    rewrite(good, bad, reshape="vertex_unet.fusion.weight")
    with pytest.raises(ValueError, match=r"'vertex_unet\.fusion\.weight': expected shape \[128, 143\], "
                                         r"found \[128, 142\]"):
        _core.DecoderWeights.from_file(bad)
    rewrite(good, bad, metadata={"format": "meshtalk_fast"})
    with pytest.raises(ValueError, match="no metadata entry 'config'"):
        _core.ContextWeights.from_file(bad)
    rewrite(good, bad, metadata={"config": '{"heads": 3, "classes": "five"}'})
    with pytest.raises(ValueError, match="entry 'classes': expected a non-negative integer"):
        _core.ContextWeights.from_file(bad)
    with pytest.raises(FileNotFoundError):
        _core.ContextWeights.from_file(tmp_path / "missing.safetensors")


def test_bad_weight_buffers():
    model = prior_model(**ODD, V=10)
    config = _cpp._config(model)
    arrays = _cpp._arrays(model.context_model, "context_model.")
    missing = {k: v for k, v in arrays.items() if k != "context_model.logits.masked_linear.bias"}
    with pytest.raises(KeyError, match=r"missing tensor 'context_model\.logits\.masked_linear\.bias'"):
        _core.ContextWeights(config, missing)
    wrong = dict(arrays, **{"context_model.embedding.masked_linear.weight": np.zeros((18, 14, 1), np.float32)})
    with pytest.raises(ValueError, match=r"embedding\.masked_linear\.weight': expected shape \[18, 15, 1\], "
                                         r"found \[18, 14, 1\]"):
        _core.ContextWeights(config, wrong)
    f64 = dict(arrays, **{"context_model.logits.masked_linear.bias": np.zeros(15)})
    with pytest.raises(ValueError, match=r"masked_linear\.bias' dtype: expected float32, found float64"):
        _core.ContextWeights(config, f64)
    with pytest.raises(KeyError, match="config: missing 'audio_dim'"):
        _core.ContextWeights({k: v for k, v in config.items() if k != "audio_dim"}, arrays)
    with pytest.raises(ValueError, match=r"config heads: expected an integer in \[1, 1048576\], found 0"):
        _core.ContextWeights(dict(config, heads=0), arrays)
    with pytest.raises(ValueError, match="gemm: expected 'builtin' or 'blas', found 'fast'"):
        _core.ContextWeights(config, arrays, gemm="fast")


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def odd():
    model = prior_model(**ODD, V=10)
    return model, _cpp.context_weights(model), _cpp.decoder_weights(model)


def test_bad_sampler_input(odd):
    model, w, _ = odd
    a = audio(3, 5).numpy()
    cases = [
        (dict(audio_code=np.zeros((1, 5, 64), np.float32)), r"audio_code shape: expected \[\*, \*, 128\], found \[1, 5, 64\]"),
        (dict(audio_code=np.zeros((5, 128), np.float32)), r"audio_code shape: expected 3 dimensions"),
        (dict(audio_code=np.zeros((0, 5, 128), np.float32)), r"with B >= 1 and T >= 1, found \[0, 5, 128\]"),
        (dict(audio_code=np.zeros((2, 0, 128), np.float32)), r"with B >= 1 and T >= 1, found \[2, 0, 128\]"),
        (dict(audio_code=a.astype(np.float64)), r"audio_code dtype: expected float32, found float64"),
        (dict(audio_code=np.zeros((3, 10, 128), np.float32)[:, ::2]), r"audio_code layout: expected a C-contiguous"),
        (dict(lengths=np.array([1, 6, 2])), r"lengths\[1\]: expected a length in \[0, T=5\], found 6"),
        (dict(lengths=np.array([1, -1, 2])), r"lengths\[1\]: expected a length in \[0, T=5\], found -1"),
        (dict(lengths=np.array([1, 2])), r"lengths shape: expected \[3\], found \[2\]"),
        (dict(lengths=np.array([1.0, 2.0, 3.0])), r"lengths dtype: expected an integer dtype, found float64"),
        (dict(argmax=False, seeds=np.array([1, 2], np.uint64)), r"seeds shape: expected \[3\], found \[2\]"),
        (dict(argmax=False, seeds=None), r"seeds: expected an array of 3 seeds"),
        (dict(argmax=False, seeds=np.array([1, -2, 3])), r"seeds: expected non-negative integers, found -2"),
        (dict(threads=-1), r"threads: expected 0 \(all cores\) or a thread count in \[1, 4096\], found -1"),
        (dict(one_hot=np.zeros((3, 5, 3, 4), np.float32)), r"one_hot shape: expected \[3, 5, 3, 5\], found \[3, 5, 3, 4\]"),
    ]
    for override, message in cases:
        kwargs = dict(audio_code=a, argmax=True)
        kwargs.update(override)
        with pytest.raises(ValueError, match=message):
            _core.sample(w, **kwargs)
    read_only = np.zeros((3, 5, 3, 5), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="one_hot: expected a writable array"):
        _core.sample(w, a, argmax=True, one_hot=read_only)
    with pytest.raises(TypeError, match="audio_code: expected a numpy float32 array"):
        _core.sample(w, a.tolist(), argmax=True)
    # through the API
    with pytest.raises(ValueError, match=r"lengths\[0\]: expected a length in \[0, T=5\], found 9"):
        model.sample(audio(3, 5), backend="cpp", lengths=[9, 1, 1])
    with pytest.raises(ValueError, match=r"seeds shape: expected \[3\], found \[4\]"):
        model.sample(audio(3, 5), backend="cpp", seeds=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*64\), got -1"):
        model.sample(audio(3, 5), backend="cpp", seeds=-1)


def test_bad_decoder_input(odd):
    model, _, dw = odd
    tp = np.zeros((1, 10, 3), np.float32)
    oh = codes(2, 3, H=3, C=5).numpy()
    cases = [
        (dict(one_hot=np.zeros((2, 3, 8, 5), np.float32)), r"one_hot shape: expected \[\*, \*, 3, 5\], found \[2, 3, 8, 5\]"),
        (dict(one_hot=np.zeros((0, 3, 3, 5), np.float32)), r"with B >= 1 and T >= 1, found \[0, 3, 3, 5\]"),
        (dict(one_hot=np.zeros((2, 0, 3, 5), np.float32)), r"with B >= 1 and T >= 1, found \[2, 0, 3, 5\]"),
        (dict(one_hot=oh.astype(np.float16)), r"one_hot dtype: expected float32, found float16"),
        (dict(template=np.zeros((1, 11, 3), np.float32)), r"template shape: expected \[\*, 10, 3\], found \[1, 11, 3\]"),
        (dict(template=np.zeros((3, 10, 3), np.float32)), r"template shape: expected \[1 or B=2, V=10, 3\]"),
        (dict(template=np.zeros((1, 10, 6), np.float32)[..., ::2]), r"template layout: expected a C-contiguous"),
        (dict(out=np.zeros((2, 3, 10, 2), np.float32)), r"out shape: expected \[2, 3, 10, 3\], found \[2, 3, 10, 2\]"),
        (dict(threads=-3), r"threads: expected 0 \(all cores\)"),
    ]
    for override, message in cases:
        kwargs = dict(template=tp, one_hot=oh)
        kwargs.update(override)
        with pytest.raises(ValueError, match=message):
            _core.decode(dw, **kwargs)


# ------------------------------------------------------------------------------------------ API plumbing
def test_cpp_backend_reports_a_missing_extension(monkeypatch):
    monkeypatch.setattr(_cpp, "_core", None)
    monkeypatch.setattr(_cpp, "_IMPORT_ERROR", "the C++ extension meshtalk_fast._core cannot be imported (test)")
    model = prior_model(**ODD, V=10)
    assert "cannot be imported (test)" in mf.available_backends("sample", CPU)["cpp"]
    with pytest.raises(mf.BackendUnavailable, match=r"sample: backend 'cpp' cannot run .*cannot be imported \(test\)"):
        model.sample(audio(1, 2), backend="cpp")
    assert model.sample(audio(1, 2), argmax=True).shape == (1, 2, 3, 5)  # auto falls to the reference


def test_dispatch_and_grad_mode(odd, caplog):
    model, _, _ = odd
    assert mf.available_backends("sample", CPU)["cpp"] is None
    with caplog.at_level("DEBUG", logger="meshtalk_fast"):
        model.sample(audio(1, 3), argmax=True)
    assert "picked 'cpp'" in caplog.text
    template, one_hot = torch.zeros(10, 3), codes(1, 2, H=3, C=5)
    # grad mode: cpp computes no gradients, so auto keeps the differentiable reference ...
    assert model.decode(template, one_hot).requires_grad
    with pytest.raises(mf.BackendUnavailable, match="computes no gradients"):
        model.decode(template, one_hot, backend="cpp")
    # ... and under no_grad auto picks cpp
    with torch.no_grad(), caplog.at_level("DEBUG", logger="meshtalk_fast"):
        caplog.clear()
        model.decode(template, one_hot)
    assert "decode: backend='auto' picked 'cpp'" in caplog.text


def test_weights_cache_follows_parameter_changes():
    model = prior_model(**ODD, V=10, seed=7)
    first = _cpp.context_weights(model)
    assert _cpp.context_weights(model) is first  # no copy on repeated calls
    a = audio(1, 12, seed=8)
    with torch.no_grad():
        model.context_model.logits.masked_linear.bias[2] += 50.0  # in place: bumps the version counter
    assert _cpp.context_weights(model) is not first
    assert torch.equal(model.sample(a, argmax=True, backend="cpp"), model.sample(a, argmax=True, backend="torch"))
    model.context_model.load_state_dict(prior_model(**ODD, V=10, seed=9).context_model.state_dict())
    assert torch.equal(model.sample(a, argmax=True, backend="cpp"), model.sample(a, argmax=True, backend="torch"))


def test_sampler_threads_give_identical_results():
    model = prior_model(**RELEASED, scale=1.0)
    a = audio(5, 12, seed=9)
    runs = [model.sample(a, backend="cpp", seeds=3, lengths=[12, 4, 9, 12, 1], threads=t) for t in (1, 2, 3)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    single = [model.sample(a[:1], backend="cpp", seeds=3, threads=t) for t in (1, 2)]
    assert torch.equal(single[0], single[1]) and torch.equal(single[0][0], runs[0][0])


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_other_builtin_kernels(isa):
    """The AVX2 and baseline builtin kernels (capped with MESHTALK_GEMM_ISA) give the reference results."""
    script = textwrap.dedent(f"""
        import torch, meshtalk_fast as mf
        from meshtalk_fast import _core
        isa = _core.gemm_info()["builtin_isa"]
        if "{isa}" == "avx2" and isa != "avx2+fma":
            print("ISA", isa); raise SystemExit(0)
        assert isa == ("avx2+fma" if "{isa}" == "avx2" else "baseline"), isa
        torch.manual_seed(0)
        m = mf.MeshTalk(50, heads=5, classes=24, context_hidden=20).eval()
        with torch.no_grad():
            for p in m.context_model.parameters():
                p.mul_(3.0)
            a = torch.randn(3, 22, 128)
            assert torch.equal(m.sample(a, argmax=True, backend="cpp", lengths=[22, 9, 14]),
                               torch.cat([m.sample(a[:1], argmax=True, backend="torch"),
                                          torch.nn.functional.pad(m.sample(a[1:2, :9], argmax=True, backend="torch"),
                                                                  (0, 0, 0, 0, 0, 13)),
                                          torch.nn.functional.pad(m.sample(a[2:3, :14], argmax=True, backend="torch"),
                                                                  (0, 0, 0, 0, 0, 8))]))
            oh = torch.nn.functional.one_hot(torch.randint(0, 24, (2, 6, 5)), 24).float()
            t = torch.randn(50, 3)
            torch.testing.assert_close(m.decode(t, oh, backend="cpp"), m.decode(t, oh, backend="torch"),
                                       rtol=1e-5, atol=1e-5)
        print("ISA", isa)
    """)
    env = dict(os.environ, MESHTALK_GEMM_ISA=isa)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    if isa == "avx2" and "avx2+fma" not in result.stdout:
        pytest.skip(f"this CPU has no AVX2+FMA ({result.stdout.strip()})")
