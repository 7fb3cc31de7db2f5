"""The C++ core's step API (ops "sample_step" / "decode_step", backend "cpp"): SamplerState and
DecoderState stepped frame by frame equal the whole-sequence C++ sampler and decoder, for one stream
and for several streams that join and leave at different times; StreamingAnimator on the C++ core
equals the offline C++ pipeline; bad input raises errors naming argument, expected and found."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import sharpened_prior
from meshtalk_fast.backends import cpp as _cpp
from meshtalk_fast.base.dispatch import resolve
from meshtalk_fast.models.incremental import PriorStepper

_core = pytest.importorskip("meshtalk_fast._core", reason="the C++ extension meshtalk_fast._core is not built")

CPU = torch.device("cpu")
SIZES = {"odd": dict(heads=3, classes=5, context_hidden=6), "small": dict(heads=4, classes=8, context_hidden=16),
         "released": dict(heads=16, classes=128, context_hidden=64)}
T = 37  # > the receptive field (1 + 1+2+4+8 = 16 steps): every ring wraps


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Many tiny torch ops on a busy 2-core machine: one intra-op thread."""


def prior_model(heads, classes, context_hidden, V=300, seed=0, scale=2.0, **config):
    return sharpened_prior(V, heads, classes, context_hidden, seed=seed, scale=scale, **config)


def codes(B, n, seed):
    return torch.randn(B, n, 128, generator=torch.Generator().manual_seed(seed)).numpy()


def alone(weights, audio, seed, argmax):
    """The whole-sequence C++ sampler on one sequence: labels [n, H]."""
    return _core.sample(weights, audio[None], argmax=argmax, seeds=np.array([seed], np.uint64))[0]


# ------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("size", ["odd", "small", "released", "odd-inclusive"])
@pytest.mark.parametrize("argmax", [True, False])
def test_sampler_steps_equal_sample_b1(size, argmax):
    model = prior_model(**SIZES[size.split("-")[0]], prior_head_masks="inclusive" if "-" in size else "released")
    w = _cpp.context_weights(model)
    a = codes(1, T, seed=1)
    ref = _core.sample(w, a, argmax=argmax, seeds=np.array([2 ** 64 - 7], np.uint64))
    state = _core.SamplerState(w, 1)
    state.reset(0, 2 ** 64 - 7, argmax)
    got = np.stack([state.step([0], a[:, t]) for t in range(T)], axis=1)
    assert got.shape == ref.shape == (1, T, model.config.heads)
    mismatch = np.argwhere(got != ref)
    assert mismatch.size == 0, f"{size}: first (b, t, h) mismatches {mismatch[:5].tolist()}"
    assert state.steps(0) == T


@pytest.mark.parametrize("size", ["odd", "released"])
@pytest.mark.parametrize("argmax", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_sampler_streams_joining_and_leaving_equal_each_sequence_alone(size, argmax, threads):
    """Four sequences in 3 slots of one state: they start at different steps, the slot of the first is
    reset for the fourth half-way, and the slots are passed in scrambled order; each sequence's labels
    equal the whole-sequence sampler on it alone, bit for bit."""
    model = prior_model(**SIZES[size], seed=1)
    w = _cpp.context_weights(model)
    n = T if size == "odd" else 24
    seqs = [  # (slot, first step, length, seed)
        (2, 0, 13, 5), (0, 3, n - 3, 6), (1, 6, n - 6, 7), (2, 13, n - 13, 2 ** 63 + 1)]
    audio = [codes(1, length, seed=10 + i)[0] for i, (_, _, length, _) in enumerate(seqs)]
    out = [[] for _ in seqs]
    state = _core.SamplerState(w, 3, threads=threads)
    for step in range(n):
        rows = []
        for i, (slot, start, length, seed) in enumerate(seqs):
            if step == start:
                state.reset(slot, seed, argmax)
            if start <= step < start + length:
                rows.append(i)
        rows = rows[::-1] if step % 2 else rows  # any order
        labels = state.step([seqs[i][0] for i in rows], np.stack([audio[i][step - seqs[i][1]] for i in rows]))
        for j, i in enumerate(rows):
            out[i].append(labels[j])
    for i, (slot, start, length, seed) in enumerate(seqs):
        ref = alone(w, audio[i], seed, argmax)
        got = np.stack(out[i])
        mismatch = np.argwhere(got != ref)
        assert mismatch.size == 0, f"{size}: sequence {i} (slot {slot}, from step {start}) differs at (t, h) " \
                                   f"{mismatch[:5].tolist()}"
    assert state.steps(2) == n - 13 and state.steps(1) == n - 6


def test_sampler_one_hot_output_and_idle_slots():
    model = prior_model(**SIZES["small"])
    w = _cpp.context_weights(model)
    a = codes(2, 9, seed=3)
    state = _core.SamplerState(w, 4)
    state.reset(1, 11)
    state.reset(3, 12)
    one_hot = np.full((2, 4, 8), 7.0, np.float32)  # rows are overwritten whole
    for t in range(9):
        labels = state.step(np.array([3, 1], np.int32), np.ascontiguousarray(a[:, t]), one_hot=one_hot)
        assert np.array_equal(one_hot.argmax(-1), labels) and np.all(one_hot.sum(-1) == 1)
        state.step([], np.zeros((0, 128), np.float32))  # no slot: nothing happens
    ref = _core.sample(w, a[[1, 0]], seeds=np.array([11, 12], np.uint64))
    assert np.array_equal(labels, ref[[1, 0], 8])
    assert state.steps(1) == 9 and state.steps(0) == 0 and not state.assigned(0)


@pytest.mark.parametrize("argmax", [True, False])
def test_cpp_sample_step_op_equals_cpp_sample(argmax):
    """The registered "sample_step" cpp factory: seeds drawn from the generator as cpp_sample draws them."""
    model = prior_model(**SIZES["small"])
    a = torch.from_numpy(codes(3, T, seed=4))
    assert resolve("sample_step", "cpp", CPU) is _cpp.CppPriorStepper
    assert resolve("sample_step", "auto", CPU) is _cpp.CppPriorStepper
    stepper = _cpp.CppPriorStepper(model, 3, argmax, torch.Generator().manual_seed(8))
    got = torch.stack([stepper.step(a[:, t]) for t in range(T)], dim=1)
    ref = model.sample(a, argmax=argmax, generator=torch.Generator().manual_seed(8), backend="cpp")
    assert torch.equal(got, ref)
    seeded = _cpp.CppPriorStepper(model, 3, argmax, seeds=[4, 5, 6])
    got = torch.stack([seeded.step(a[:, t]) for t in range(T)], dim=1)
    assert torch.equal(got, model.sample(a, argmax=argmax, seeds=[4, 5, 6], backend="cpp"))
    # the dtype of the audio code is the dtype of the codes, as the torch step
    assert seeded.step(a[:, 0].double()).dtype == torch.float64


def test_cpp_and_torch_steps_sample_the_same_distribution():
    """Same prior, other noise: the first head's label frequencies over 2000 seeded streams agree with
    the torch step's within 5 binomial sigmas per class."""
    model = prior_model(heads=2, classes=4, context_hidden=8, scale=1.0)
    a = torch.from_numpy(codes(1, 1, seed=5)).expand(2000, -1, -1).contiguous()
    cpp = _cpp.CppPriorStepper(model, 2000, seeds=1000).step(a[:, 0])[:, 0].mean(0)
    ref = PriorStepper(model, 2000, generator=torch.Generator().manual_seed(1)).step(a[:, 0])[:, 0].mean(0)
    p = (cpp + ref) / 2
    assert torch.all((cpp - ref).abs() <= 5 * torch.sqrt(2 * p * (1 - p) / 2000) + 1e-3), (cpp, ref)


# ------------------------------------------------------------------------------------------ decoder
def one_hots(B, n, H, C, seed):
    labels = torch.randint(0, C, (B, n, H), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(labels, C).float()


@pytest.mark.parametrize("size", ["small", "released"])
def test_decoder_streams_equal_decode(size):
    """Three sequences in 3 slots with two templates (one shared), starting at different frames, the
    slot of the first reset half-way for a fourth; each equals decode of it alone (cpp: the same
    operations, so bit for bit; torch reference: float rounding)."""
    V = 300 if size == "small" else 6172
    torch.manual_seed(2)
    cfg = SIZES[size]
    model = mf.MeshTalk(V, heads=cfg["heads"], classes=cfg["classes"]).eval()
    H, C = cfg["heads"], cfg["classes"]
    g = torch.Generator().manual_seed(3)
    templates = [100 * torch.randn(V, 3, generator=g), 100 * torch.randn(V, 3, generator=g)]
    n = 12
    seqs = [(2, 0, 5, 0), (0, 2, n - 2, 1), (1, 3, n - 3, 0), (2, 5, n - 5, 1)]  # (slot, start, length, template)
    frames = [one_hots(1, length, H, C, seed=20 + i)[0] for i, (_, _, length, _) in enumerate(seqs)]
    state = _core.DecoderState(_cpp.decoder_weights(model), 3, threads=2)
    encoded = [state.encode_template(t.numpy()) for t in templates]
    out = [[] for _ in seqs]
    for step in range(n):
        rows = []
        for i, (slot, start, length, tp) in enumerate(seqs):
            if step == start:
                state.reset(slot, encoded[tp])
            if start <= step < start + length:
                rows.append(i)
        meshes = state.step([seqs[i][0] for i in rows], np.stack([frames[i][step - seqs[i][1]].numpy() for i in rows]))
        for j, i in enumerate(rows):
            out[i].append(meshes[j])
    with torch.no_grad():
        for i, (slot, start, length, tp) in enumerate(seqs):
            got = torch.from_numpy(np.stack(out[i]))
            cpp = model.decode(templates[tp], frames[i][None], backend="cpp")[0]
            ref = model.decode(templates[tp], frames[i][None], backend="torch")[0]
            torch.testing.assert_close(got, cpp, atol=1e-5, rtol=0, msg=lambda m: f"sequence {i}: {m}")
            assert torch.equal(got, cpp), f"sequence {i}: equal to 1e-5 but not bit for bit"
            torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-5, msg=lambda m: f"sequence {i} vs torch: {m}")


def test_decoder_labels_equal_one_hot_and_stepper_op_equals_decode():
    torch.manual_seed(4)
    model = mf.MeshTalk(300, heads=4, classes=8).eval()
    template = 100 * torch.randn(300, 3)
    oh = one_hots(2, 11, 4, 8, seed=5)
    state = _core.DecoderState(_cpp.decoder_weights(model), 2)
    tp = state.encode_template(template.numpy())
    for slot in (0, 1):
        state.reset(slot, tp)
    labels = oh.argmax(-1).to(torch.int32).numpy()
    by_labels = np.stack([state.step_labels([0, 1], labels[:, t]) for t in range(11)], axis=1)
    with torch.no_grad():
        ref = model.decode(template, oh, backend="cpp")
    assert np.array_equal(by_labels, ref.numpy())
    assert resolve("decode_step", "auto", CPU) is _cpp.CppDecoderStepper
    stepper = _cpp.CppDecoderStepper(model, template)
    got = torch.cat([stepper.step(oh[:, s:s + 4]) for s in range(0, 11, 4)], dim=1)
    assert got.shape == (2, 11, 300, 3) and torch.equal(got, ref)
    assert stepper.step(oh[:, :0]).shape == (2, 0, 300, 3)


# ------------------------------------------------------------------------------------------ StreamingAnimator
@pytest.fixture(scope="module")
def stream_setup():
    torch.manual_seed(0)
    model = mf.MeshTalk(300, heads=4, classes=16).eval()
    g = torch.Generator().manual_seed(1)
    template = 100 * torch.randn(300, 3, generator=g)
    masks = (torch.rand(300, generator=g), torch.rand(300, generator=g))
    audio = 0.01 * torch.randn(16000, generator=g)  # 1 s -> 30 frames
    return model, template, masks, audio


@pytest.mark.parametrize("delay,chunk", [(4, 533), (8, 4000), (8, 16000)])
def test_streaming_animator_cpp_equals_offline_cpp(stream_setup, delay, chunk):
    model, template, masks, audio = stream_setup
    s = mf.StreamingAnimator(model, template, seed=3, smooth_masks=masks, backend="cpp", smoothing_delay=delay)
    assert isinstance(s._session, _cpp.CppLiveSession)  # the C API's own session (issue #15)
    got = torch.cat([s.push(audio[i:i + chunk]) for i in range(0, audio.shape[0], chunk)] + [s.close()])
    # offline: the seed StreamingAnimator(seed=3) draws, then the whole-sequence C++ sampler and decoder
    seed = int(torch.randint(0, 2 ** 63 - 1, (1,), generator=torch.Generator().manual_seed(3))[0])
    with torch.no_grad():
        code = model.encode_audio(model.config.windows(audio)[None])
        one_hot = model.sample(code, backend="cpp", seeds=[seed])
        raw = model.decode(template, one_hot, backend="cpp")[0]
    offline = mf.post_smooth(raw, *masks, backend="torch")
    assert got.shape == offline.shape == (30, 300, 3) and s.frames_emitted == 30
    if delay == 8:
        torch.testing.assert_close(got, offline, atol=1e-4, rtol=0)
    else:  # delay 4: exact up to the documented bound where both masks are nonzero
        spread = max(float((raw[t + 5:t + 9] - raw[t + 4]).abs().max()) for t in range(raw.shape[0] - 8))
        bound = float((masks[0] * masks[1]).max()) * mf.streaming.animator.smoothing_tail() * spread
        assert float((got - offline).abs().max()) <= bound + 1e-4
    animated = mf.animate(audio, template, model, seed=3, backend="cpp", smooth_masks=masks, normalize=False,
                          progress=False)
    if delay == 8:
        torch.testing.assert_close(got, animated, atol=1e-4, rtol=0)


def test_streaming_animator_auto_on_cpu_is_cpp(stream_setup):
    model, template, masks, audio = stream_setup
    auto = mf.StreamingAnimator(model, template, seed=5, backend="auto")
    assert isinstance(auto._session, _cpp.CppLiveSession)
    got = torch.cat([auto.push(audio[:9000]), auto.push(audio[9000:]), auto.close()])
    cpp = mf.StreamingAnimator(model, template, seed=5, backend="cpp")
    assert torch.equal(got, torch.cat([cpp.push(audio), cpp.close()]))
    assert isinstance(mf.StreamingAnimator(model, template, backend="torch")._sampler, PriorStepper)


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs_name_argument_expected_and_found():
    torch.manual_seed(0)
    model = mf.MeshTalk(300, heads=4, classes=8).eval()
    w = _cpp.context_weights(model)
    with pytest.raises(ValueError, match=r"capacity: expected at least 1 slot, found 0"):
        _core.SamplerState(w, 0)
    state = _core.SamplerState(w, 4)
    with pytest.raises(ValueError, match=r"slot: expected a slot in \[0, capacity=4\), found 4"):
        state.reset(4, 1)
    state.reset(0, 1)
    state.reset(2, 1)
    a = np.zeros((2, 128), np.float32)
    with pytest.raises(ValueError, match=r"slots\[1\]: expected an assigned slot .*found 1"):
        state.step([0, 1], a)
    with pytest.raises(ValueError, match=r"slots\[1\]: expected each slot at most once per step, found 0"):
        state.step([0, 0], a)
    with pytest.raises(ValueError, match=r"slots\[0\]: expected a slot in \[0, capacity=4\), found -1"):
        state.step([-1, 0], a)
    with pytest.raises(ValueError, match=r"audio_code shape: expected \[2, 128\], found \[2, 127\]"):
        state.step([0, 2], np.zeros((2, 127), np.float32))
    with pytest.raises(ValueError, match=r"audio_code dtype: expected float32, found float64"):
        state.step([0, 2], np.zeros((2, 128)))
    with pytest.raises(ValueError, match=r"one_hot shape: expected \[2, 4, 8\], found \[2, 4, 9\]"):
        state.step([0, 2], a, one_hot=np.zeros((2, 4, 9), np.float32))
    with pytest.raises(ValueError, match=r"n \(slots to step\): expected a count in \[0, capacity=4\], found 5"):
        state.step([0, 1, 2, 3, 0], np.zeros((5, 128), np.float32))
    assert state.steps(0) == 0 and state.steps(2) == 0  # nothing changed
    state.release(2)
    with pytest.raises(ValueError, match=r"slots\[0\]: expected an assigned slot"):
        state.step([2], a[:1])
    stepper = _cpp.CppPriorStepper(model, 2, seeds=[1, 2])
    with pytest.raises(ValueError, match=r"audio_code must have shape \[2, 128\] \[B, A\], got \[3, 128\]"):
        stepper.step(torch.zeros(3, 128))
    with pytest.raises(ValueError, match=r"seeds must be an int or \[B=2\] ints, got shape \[3\]"):
        _cpp.CppPriorStepper(model, 2, seeds=[1, 2, 3])

    dw = _cpp.decoder_weights(model)
    dec = _core.DecoderState(dw, 2)
    with pytest.raises(ValueError, match=r"template shape: expected \[300, 3\], found \[299, 3\]"):
        dec.encode_template(np.zeros((299, 3), np.float32))
    tp = dec.encode_template(np.zeros((300, 3), np.float32))
    other = _core.DecoderState(_cpp.decoder_weights(mf.MeshTalk(300, heads=4, classes=8)), 1)
    with pytest.raises(ValueError, match=r"template: expected a template encoded with this state's weights"):
        other.reset(0, tp)
    with pytest.raises(ValueError, match=r"slot: expected a slot in \[0, capacity=2\), found 2"):
        dec.reset(2, tp)
    dec.reset(0, tp)
    with pytest.raises(ValueError, match=r"one_hot shape: expected \[1, 4, 8\], found \[1, 4, 7\]"):
        dec.step([0], np.zeros((1, 4, 7), np.float32))
    with pytest.raises(ValueError, match=r"slots\[0\]: expected an assigned slot .*found 1"):
        dec.step([1], np.zeros((1, 4, 8), np.float32))
    with pytest.raises(ValueError, match=r"labels\[0, 2\]: expected a class in \[0, C=8\), found 8"):
        dec.step_labels([0], np.array([[0, 1, 8, 0]], np.int32))
    with pytest.raises(ValueError, match=r"labels dtype: expected int32, found int64"):
        dec.step_labels([0], np.zeros((1, 4), np.int64))
    with pytest.raises(ValueError, match=r"out shape: expected \[1, 300, 3\], found \[1, 300, 4\]"):
        dec.step([0], np.zeros((1, 4, 8), np.float32), out=np.zeros((1, 300, 4), np.float32))
    assert dec.steps(0) == 0
    ds = _cpp.CppDecoderStepper(model, torch.zeros(300, 3))
    ds.step(torch.zeros(1, 2, 4, 8))
    with pytest.raises(ValueError, match=r"batch size B=1"):
        ds.step(torch.zeros(2, 1, 4, 8))
    with pytest.raises(ValueError, match=r"template must have shape \[300, 3\]"):
        _cpp.CppDecoderStepper(model, torch.zeros(30, 3))
