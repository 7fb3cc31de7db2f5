"""The decoder (op "decode", backend "cpp"): the batched VertexUnet decoder against the PyTorch reference,
weights from memory and from MeshTalk.save files, dispatch, threads, the GEMM kernels, and bad input
raised as Python errors (the sampler's tests are in test_sampler.py)."""
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
from helpers import ODD, audio_codes as audio, prior_model
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp

CPU = torch.device("cpu")


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
            # reduced weights: refused by name on the baseline kernel, near float32 on the AVX2 kernel
            for weights in ("bf16", "int8"):
                if isa == "baseline":
                    for call in (lambda: m.sample(a, argmax=True, backend="cpp", weights=weights),
                                 lambda: m.decode(t, oh, backend="cpp", weights=weights)):
                        try:
                            call()
                        except ValueError as e:
                            assert "use weights 'f32'" in str(e), e
                        else:
                            raise AssertionError(f"weights {{weights}} ran on the baseline kernel")
                else:
                    exact = m.decode(t, oh, backend="cpp")
                    extent = float(exact.max() - exact.min())
                    assert float((m.decode(t, oh, backend="cpp", weights=weights) - exact).abs().max()) <= 0.02 * extent
        print("ISA", isa)
    """)
    env = dict(os.environ, MESHTALK_GEMM_ISA=isa)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    if isa == "avx2" and "avx2+fma" not in result.stdout:
        pytest.skip(f"this CPU has no AVX2+FMA ({result.stdout.strip()})")


def test_decode_weights_modes_through_python(small_face):
    """model.decode(..., backend="cpp", weights=...): "bf16" / "int8" store the per-frame products' weights
    rounded; the meshes stay within a small fraction of their extent of float32's (odd V); "f32" is exact.
    Bounds ~10x what these models show, as the C API's test (test_capi)."""
    model, template = small_face
    one_hot = codes(2, 9, seed=3)
    with torch.no_grad():
        exact = model.decode(template, one_hot, backend="cpp")
        assert torch.equal(model.decode(template, one_hot, backend="cpp", weights="f32"), exact)
        extent = float(exact.max() - exact.min())
        for weights, bound in (("bf16", 0.01), ("int8", 0.02)):
            try:
                got = model.decode(template, one_hot, backend="cpp", weights=weights)
            except ValueError as e:  # a CPU without AVX2+FMA
                assert "use weights 'f32'" in str(e)
                continue
            assert _cpp.decoder_weights(model, weights=weights).weights == weights
            err = float((got - exact).abs().max())
            assert 0 < err <= bound * extent, (weights, err, extent)
        with pytest.raises(ValueError, match="weights: expected 'f32', 'bf16' or 'int8', found 'half'"):
            model.decode(template, one_hot, backend="cpp", weights="half")
        with pytest.raises(ValueError, match="weights"):
            model.decode(template, one_hot, backend="torch", weights="int8")
