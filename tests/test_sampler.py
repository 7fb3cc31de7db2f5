"""The sampler (op "sample"): the reference's self-consistency with the teacher-forced prior, batching and
randomness; the C++ core's sampler against it (seeded Gumbel noise, lengths, threads, weights cache, bad input)."""
import numpy as np
import pytest
import torch

from helpers import ODD, RELEASED, audio_codes as audio, labels_of, prior_model, sharpened_prior
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp


def small_model(seed=0, heads=16, classes=128):
    return sharpened_prior(30, heads, classes, seed=seed)


@pytest.mark.parametrize("head_masks", ["released", "inclusive"])
@pytest.mark.parametrize("B", [1, 3])
def test_argmax_sample_is_self_consistent(B, head_masks):
    model = sharpened_prior(30, 16, 128, seed=0, prior_head_masks=head_masks)
    audio_code = torch.randn(B, 27, 128, generator=torch.Generator().manual_seed(B))
    one_hot = model.sample(audio_code, argmax=True, backend="torch")
    assert one_hot.shape == (B, 27, 16, 128)
    assert torch.all(one_hot.sum(-1) == 1)
    logprobs = model.context_logprobs(one_hot, audio_code)
    assert torch.equal(logprobs.argmax(-1), one_hot.argmax(-1))


def test_batch_rows_are_independent():
    model = small_model(1, heads=4, classes=16)
    audio_code = torch.randn(3, 25, 128)
    batched = model.sample(audio_code, argmax=True)
    for b in range(3):
        assert torch.equal(model.sample(audio_code[b:b + 1], argmax=True)[0], batched[b])


def test_gumbel_sampling_is_seeded_and_follows_the_prior():
    model = small_model(2, heads=2, classes=6)
    audio_code = torch.randn(1, 3, 128)
    a = model.sample(audio_code, generator=torch.Generator().manual_seed(5))
    b = model.sample(audio_code, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # step 0, head 0 has no context: its label frequencies over many samples follow the prior
    n = 4000
    samples = model.sample(audio_code.expand(n, -1, -1).contiguous(), generator=torch.Generator().manual_seed(6))
    freq = samples[:, 0, 0].mean(0)
    probs = model.context_logprobs(samples[:1], audio_code)[0, 0, 0].exp()
    # 5 standard errors of a binomial proportion
    tol = 5 * torch.sqrt(probs * (1 - probs) / n) + 1e-3
    assert torch.all((freq - probs).abs() <= tol), (freq, probs)
    # and every sampled sequence is self-consistent with teacher forcing under Gumbel noise: the
    # sample's log-probability under the prior is finite
    lp = model.context_logprobs(samples[:50], audio_code.expand(50, -1, -1))
    assert torch.isfinite((lp * samples[:50]).sum()).item()


def test_sample_bad_input():
    model = small_model(3, heads=2, classes=4)
    with pytest.raises(ValueError, match=r"audio_code must have shape \[\*, \*, 128\]"):
        model.sample(torch.zeros(1, 5, 64))
    with pytest.raises(ValueError, match="B > 0 and T > 0"):
        model.sample(torch.zeros(0, 5, 128))
    with pytest.raises(ValueError, match="B > 0 and T > 0"):
        model.sample(torch.zeros(2, 0, 128))
    with pytest.raises(ValueError, match="backend must be one of"):
        model.sample(torch.zeros(1, 5, 128), backend="gpu")


# ------------------------------------------------------------------------------------------------------
# The C++ core's sampler (backend "cpp"): the batched sampler against the reference, seeded Gumbel noise,
# lengths, threads, the weights cache, and bad input raised as Python errors.
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["released", "odd", "released-inclusive", "odd-inclusive"])
def case(request):
    sizes = RELEASED if request.param.startswith("released") else ODD
    model = prior_model(**sizes, prior_head_masks="inclusive" if request.param.endswith("inclusive") else "released")
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
    u = np.array([_core._testing.gumbel_uniform(5, t, h, c) for t in range(10) for h in range(10) for c in range(100)])
    assert u.min() >= 0.0 and u.max() < 1.0
    n = u.size
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    chi2 = ((hist - n / 10) ** 2 / (n / 10)).sum()
    assert chi2 < 40, f"chi-square {chi2:.1f} of 10 bins (9 dof; 40 is p < 1e-5)"
    # neighbours in (seed, t, h, c) are not correlated
    v = np.array([_core._testing.gumbel_uniform(6, t, h, c) for t in range(10) for h in range(10) for c in range(100)])
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


def test_model_file_carries_the_head_masks_to_the_core(tmp_path):
    """A file saved with ``prior_head_masks = "inclusive"`` is sampled by the core with those masks (its
    config says so; the masks themselves are not stored for the core); an unknown value in a file is a
    clear error naming the entry."""
    model = prior_model(**ODD, V=10, seed=4, prior_head_masks="inclusive")
    path = str(tmp_path / "inclusive.safetensors")
    model.save(path)
    weights = _core.ContextWeights.from_file(path)
    assert weights.config["prior_head_masks"] == "inclusive"
    a = audio(1, 25, seed=5)
    np.testing.assert_array_equal(_core.sample(weights, a.numpy(), argmax=True)[0],
                                  model.sample(a, argmax=True, backend="torch")[0].argmax(-1).numpy())
    # the same weights read with the released masks sample something else: the option is not ignored
    released = prior_model(**ODD, V=10, seed=4)
    weights_only = {k: v for k, v in model.context_model.state_dict().items() if not k.endswith(".mask")}
    released.context_model.load_state_dict(weights_only, strict=False)
    assert not torch.equal(released.sample(a, argmax=True, backend="cpp"), model.sample(a, argmax=True, backend="cpp"))
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = meta["config"].replace('"inclusive"', '"pixelcnn"')
    bad = str(tmp_path / "bad.safetensors")
    save_file(tensors, bad, metadata=meta)
    with pytest.raises(ValueError, match=r"'prior_head_masks': expected \"released\" or \"inclusive\", found \"pixelcnn"):
        _core.ContextWeights.from_file(bad)
    # and from a config dict (the path of backend "cpp" on a Python model)
    config = dict(_core.ContextWeights.from_file(path).config, prior_head_masks="pixelcnn")
    with pytest.raises(ValueError, match=r"config 'prior_head_masks': expected 'released' or 'inclusive', found 'pixelcnn'"):
        _core.ContextWeights(config, _cpp._arrays(model.context_model, "context_model."))


def test_sampler_weights_modes_through_python():
    """model.sample(..., backend="cpp", weights=...): "f32" is the default and exact; "bf16" and "int8" store
    the prior's weights rounded and give (almost) the same argmax codes on a sharpened prior; the layout is
    cached per mode; the option is the cpp backend's alone, and an unknown mode is refused by name."""
    model = small_model(3, heads=5, classes=16)
    a = audio(2, 40, seed=4)
    with torch.no_grad():
        exact = model.sample(a, argmax=True, backend="cpp")
        assert torch.equal(model.sample(a, argmax=True, backend="cpp", weights="f32"), exact)
        for weights in ("bf16", "int8"):
            try:
                got = model.sample(a, argmax=True, backend="cpp", weights=weights)
            except ValueError as e:  # a CPU without AVX2+FMA: refused, naming the mode that runs
                assert "use weights 'f32'" in str(e)
                continue
            assert _cpp.context_weights(model, weights=weights).weights == weights
            assert _cpp.context_weights(model, weights=weights).nbytes < _cpp.context_weights(model).nbytes
            agree = float((labels_of(got) == labels_of(exact)).float().mean())
            assert agree >= 0.95, (weights, agree)
        with pytest.raises(ValueError, match="weights: expected 'f32', 'bf16' or 'int8', found 'fp16'"):
            model.sample(a, argmax=True, backend="cpp", weights="fp16")
        with pytest.raises(ValueError, match="weights"):  # the reference has no such option
            model.sample(a, argmax=True, backend="torch", weights="bf16")
