"""The C++ core's AudioEncoder (backend "cpp") against the PyTorch reference: the window framing
(MeshTalk.encode_audio), the stream framing (encode_speech / op encode_stream), the streaming encoder
(PCM in, codes out) against the batched path, weights from memory and from MeshTalk.save files, the
checkpoint's melspec buffers, dispatch, and hostile input raised as Python errors.

Tolerance: both paths compute in float32; on these models the codes (|code| up to ~2) differ by ~1e-6
and each lies ~1e-6 from a float64 evaluation of the reference. We require atol 2e-5 against the
float32 reference and that the C++ codes are no less accurate than it against float64 (2x + 1e-6).
The streaming encoder runs the same kernels on the same values as the batched path: equal bit for bit.
"""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import meshtalk_fast as mf
from helpers import assert_close, push_in_chunks
from meshtalk_fast import _core
from meshtalk_fast.backends import cpp as _cpp
from meshtalk_fast.ops.frame_clock import STREAM_PAD, stream_positions

ATOL = 2e-5


@pytest.fixture(scope="module")
def model(face_model):
    return face_model(3)


@pytest.fixture(scope="module")
def narrow(face_model):
    """An odd code size (A = 13) and stream framing."""
    return face_model(4, audio_dim=13, framing="stream")


def check_close(name, cpp, ref32, ref64):
    assert_close(f"{name}: cpp against torch", cpp, ref32, atol=ATOL)
    err_cpp, err_ref = float((cpp.double() - ref64).abs().max()), float((ref32.double() - ref64).abs().max())
    assert err_cpp <= 2 * err_ref + 1e-6, f"{name}: cpp is {err_cpp:.2e} from float64, torch float32 {err_ref:.2e}"


_COPIES64 = {}


def reference64(model, fn):
    """``fn(model)`` evaluated on a float64 copy of ``model`` (the float64 truth)."""
    import copy

    if _COPIES64.get("of") is not model:
        _COPIES64.update(of=model, copy=copy.deepcopy(model).double())
    with torch.no_grad():
        return fn(_COPIES64["copy"])


def windows_of(speech, B, T, offset=0):
    w = mf.audio_windows(speech[offset:offset + 16000 + 533 * (B * T + 3)])
    return w[:B * T].reshape(B, T, 16000).contiguous()


# ------------------------------------------------------------------------------------------ window framing
@pytest.mark.parametrize("B,T", [(1, 1), (1, 7), (2, 5)])
def test_window_framing_matches_reference(model, speech, B, T):
    windows = windows_of(speech, B, T, offset=1234)
    with torch.no_grad():
        ref = model.encode_audio(windows, backend="torch")
        cpp = model.encode_audio(windows, backend="cpp")
    assert cpp.shape == (B, T, 128) and cpp.dtype == torch.float32
    check_close(f"B={B} T={T}", cpp, ref, reference64(model, lambda m: m.encode_audio(windows.double(), backend="torch")))


def test_window_framing_threads_batch_and_auto(model, speech):
    windows = windows_of(speech, 2, 5)
    with torch.no_grad():
        one = model.encode_audio(windows, backend="cpp", threads=1)
        assert torch.equal(one, model.encode_audio(windows, backend="cpp", threads=2))
        assert torch.equal(one[1:], model.encode_audio(windows[1:], backend="cpp"))  # independent of the batch
        assert torch.equal(one, model.encode_audio(windows))  # auto picks the core outside grad mode
    graded = model.encode_audio(windows[:, :2])  # in grad mode auto keeps the differentiable reference
    assert graded.requires_grad
    with pytest.raises(mf.BackendUnavailable, match="computes no gradients and grad mode is on"):
        model.encode_audio(windows, backend="cpp")


def test_window_framing_uses_the_checkpoint_melspec_buffers(face_model, speech):
    model = face_model(5)
    windows = windows_of(speech, 1, 3)
    with torch.no_grad():
        before = model.encode_audio(windows, backend="cpp")
        model.encoder.audio_encoder.melspec.mel_scale.fb.mul_(torch.linspace(0.5, 2.0, 80))  # in place: cache notices
        ref = model.encode_audio(windows, backend="torch")
        cpp = model.encode_audio(windows, backend="cpp")
    assert float((cpp - before).abs().max()) > 1e-3
    torch.testing.assert_close(cpp, ref, rtol=0, atol=ATOL)
    assert np.array_equal(_cpp.audio_encoder_weights(model).mel_filterbank,
                          model.encoder.audio_encoder.melspec.mel_scale.fb.numpy())


# ------------------------------------------------------------------------------------------ stream framing
@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("n", [16000 + 2345, 3 * 16000 + 77])
def test_stream_framing_matches_reference(narrow, speech, B, n):
    audio = torch.stack([speech[b * 3001:b * 3001 + n] for b in range(B)])
    with torch.no_grad():
        ref = narrow.encode_speech(audio, backend="torch")
        cpp = narrow.encode_speech(audio, backend="cpp")
    assert cpp.shape == ref.shape == (B, mf.num_frames(n), 13)
    check_close(f"B={B} n={n}", cpp, ref, reference64(narrow, lambda m: m.encode_speech(audio.double(), backend="torch")))


def test_encode_stream_op_with_per_sequence_positions(narrow, speech):
    mel = mf.log_mel(torch.stack([speech[:30011], speech[9000:39011]]), backend="torch")  # [2, 80, 188]
    pos = torch.tensor([[0, 5, 6, 50, 87], [87, 1, 1, 40, 2]])
    enc = narrow.encoder.audio_encoder
    with torch.no_grad():
        ref = enc.encode_stream(mel, pos)
        cpp = _cpp.cpp_encode_stream(narrow, mel, pos)
        shared = _cpp.cpp_encode_stream(narrow, mel, pos[0])
    torch.testing.assert_close(cpp, ref, rtol=0, atol=ATOL)
    assert torch.equal(shared[0], cpp[0])
    assert torch.equal(cpp[1], _cpp.cpp_encode_stream(narrow, mel[1:], pos[1])[0])  # sequence 1 read at its own positions
    assert torch.equal(cpp[1, 1], cpp[1, 2])  # the same position gives the same code


# ------------------------------------------------------------------------------------------ streaming encoder
def push_all(enc, audio: np.ndarray, chunks):
    return np.concatenate(push_in_chunks(enc, audio, chunks), axis=1)


@pytest.mark.parametrize("framing", ["window", "stream"])
@pytest.mark.parametrize("clock,lookahead", [("released", 8000), ("exact", 0), ("exact", 16000), ("released", 3001)])
@pytest.mark.parametrize("chunks", [[533], [7777], [1, 4000, 160, 10 ** 6]])
def test_streaming_encoder_equals_batch(face_model, speech, framing, clock, lookahead, chunks):
    model = face_model(6, framing=framing, clock=clock, lookahead=lookahead)
    audio = torch.stack([speech[:2 * 16000 + 77], speech[5000:5000 + 2 * 16000 + 77]])
    with torch.no_grad():
        batch = model.encode_speech(audio, backend="cpp")
    enc = _core.AudioStreamEncoder(_cpp.audio_encoder_weights(model), batch=2, fps=30, clock=clock,
                                   lookahead=lookahead, framing=framing, threads=1)
    out = push_all(enc, audio.numpy(), chunks)
    assert out.shape == tuple(batch.shape)
    assert np.array_equal(out, batch.numpy()), f"max |stream - batch| = {np.abs(out - batch.numpy()).max():.2e}"
    assert enc.frames_emitted == batch.shape[1] and enc.samples_seen == audio.shape[1]
    enc.reset()  # reusable: the same stream again gives the same codes
    assert np.array_equal(push_all(enc, audio.numpy(), [4000]), out)


@pytest.mark.parametrize("framing", ["window", "stream"])
def test_streaming_encoder_emits_each_frame_as_soon_as_possible(face_model, framing):
    """Frame k comes out once its inputs are in and the utterance is known to have it."""
    model = face_model(7, framing=framing, clock="exact", lookahead=2000)
    audio = (0.01 * torch.randn(1, 24000, generator=torch.Generator().manual_seed(0))).numpy()
    enc = _core.AudioStreamEncoder(_cpp.audio_encoder_weights(model), fps=30, clock="exact", lookahead=2000,
                                   framing=framing)
    emitted_at = []
    for n in range(1, audio.shape[1] + 1, 10):
        emitted_at += [min(n + 9, audio.shape[1])] * enc.push(audio[:, n - 1:n + 9]).shape[1]
    T, centres, positions = _core._testing.clock_frames(audio.shape[1], 30, "exact", 2000)
    assert np.array_equal(centres, mf.ops.frame_clock.frame_centres(T, 30, "exact").numpy())
    assert np.array_equal(positions, stream_positions(T, 30, "exact", 2000).numpy())
    exists = [next(n for n in range(1, 10 ** 6) if mf.num_frames(n, 30, "exact") > k) for k in range(T)]
    if framing == "window":
        inputs = [int(c) + 2000 for c in centres]  # the end of the frame's window
    else:  # the last of its 101 mel frames of the padded utterance is out
        inputs = [max(1025, 160 * (int(p) + 100) + 400) - STREAM_PAD for p in positions]
    expected = [-(-max(i, e) // 10) * 10 for i, e in zip(inputs, exists)]  # pushes come 10 samples at a time
    assert emitted_at == expected[:len(emitted_at)]
    assert len(emitted_at) + enc.close().shape[1] == T


def test_streaming_encoder_short_utterance_and_latency(model):
    enc = _core.AudioStreamEncoder(_cpp.audio_encoder_weights(model), framing="window")
    assert enc.push(np.zeros((1, 500), np.float32)).shape == (1, 0, 128)
    assert enc.close().shape == (1, 0, 128)  # shorter than one video frame: no frames, as num_frames says
    assert mf.num_frames(500) == 0


# ------------------------------------------------------------------------------------------ files
def test_weights_from_a_saved_model_file(model, speech, tmp_path):
    path = tmp_path / "model.safetensors"
    model.save(path)
    from_file = _core.AudioEncoderWeights.from_file(path)
    from_memory = _cpp.audio_encoder_weights(model)
    assert from_file.mel_from_weights and from_file.audio_dim == 128
    assert np.array_equal(from_file.mel_window, model.encoder.audio_encoder.melspec.spectrogram.window.numpy())
    windows = windows_of(speech, 1, 3).reshape(3, 16000).numpy()
    assert np.array_equal(_core.encode_windows(from_file, windows), _core.encode_windows(from_memory, windows))
    # a saved model's melspec buffers are the standard ones
    window, fb = _core.standard_mel_filters()
    assert np.array_equal(from_file.mel_window, window) and np.array_equal(from_file.mel_filterbank, fb)


def test_file_without_melspec_buffers_uses_the_standard_ones(model, speech, tmp_path):
    from meshtalk_fast.models.checkpoint import FORMAT_NAME, FORMAT_VERSION, saved_state
    import json

    state = {k: v for k, v in saved_state(model).items() if ".melspec." not in k}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.config.__dict__, sort_keys=True)}
    save_file(state, tmp_path / "plain.safetensors", metadata=meta)
    w = _core.AudioEncoderWeights.from_file(tmp_path / "plain.safetensors")
    assert not w.mel_from_weights
    windows = windows_of(speech, 1, 2).reshape(2, 16000).numpy()
    assert np.array_equal(_core.encode_windows(w, windows), _core.encode_windows(_cpp.audio_encoder_weights(model), windows))
    del state["encoder.audio_encoder.code.weight"]
    state["encoder.audio_encoder.melspec.mel_scale.fb"] = model.encoder.audio_encoder.melspec.mel_scale.fb
    save_file(state, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(KeyError, match="missing tensor 'encoder.audio_encoder.code.weight'"):
        _core.AudioEncoderWeights.from_file(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------ hostile input
def encoder_arrays(model):
    return {k: v.copy() for k, v in _cpp._arrays(model.encoder.audio_encoder, "encoder.audio_encoder.").items()}


def test_bad_weights(model):
    arrays = encoder_arrays(model)
    _core.AudioEncoderWeights(128, arrays)  # as given: fine
    bad = dict(arrays, **{"encoder.audio_encoder.convs.2.weight": np.zeros((128, 128, 4), np.float32)})
    with pytest.raises(ValueError, match=r"'encoder.audio_encoder.convs.2.weight': expected shape \[128, 128, 5\], "
                                         r"found \[128, 128, 4\]"):
        _core.AudioEncoderWeights(128, bad)
    with pytest.raises(ValueError, match=r"'encoder.audio_encoder.code.weight': expected shape \[64, 128\]"):
        _core.AudioEncoderWeights(64, arrays)
    only_fb = {k: v for k, v in arrays.items() if not k.endswith("spectrogram.window")}
    with pytest.raises(KeyError, match="melspec.spectrogram.window' is missing while .* is present"):
        _core.AudioEncoderWeights(128, only_fb)
    nan_fb = dict(arrays)
    nan_fb["encoder.audio_encoder.melspec.mel_scale.fb"] = np.full((1025, 80), np.nan, np.float32)
    # every weight file tensor is checked for finite values first, naming the tensor (weights.cpp)
    with pytest.raises(ValueError, match=r"tensor 'encoder.audio_encoder.melspec.mel_scale.fb' holds a non-finite "
                                         r"weight \(nan at flat index 0\)"):
        _core.AudioEncoderWeights(128, nan_fb)
    with pytest.raises(ValueError, match=r"config audio_dim: expected an integer in \[1, 1048576\], found 0"):
        _core.AudioEncoderWeights(0, arrays)


def test_bad_encoder_input(model):
    w = _cpp.audio_encoder_weights(model)
    with pytest.raises(ValueError, match=r"windows shape: expected \[\*, 16000\], found \[2, 15999\]"):
        _core.encode_windows(w, np.zeros((2, 15999), np.float32))
    with pytest.raises(ValueError, match="windows dtype: expected float32, found float64"):
        _core.encode_windows(w, np.zeros((2, 16000)))
    mel = np.zeros((1, 80, 120), np.float32)
    with pytest.raises(ValueError, match=r"positions\[0, 2\]: expected in \[0, F - 101 = 19\], found 20"):
        _core.encode_stream(w, mel, np.array([0, 19, 20]))
    with pytest.raises(ValueError, match=r"positions\[0, 0\]: expected in \[0, F - 101 = 19\], found -1"):
        _core.encode_stream(w, mel, np.array([-1]))
    with pytest.raises(ValueError, match="positions dtype: expected an integer dtype, found float32"):
        _core.encode_stream(w, mel, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"positions shape: expected \[T\] or \[B=1, T\], found \[3, 2\]"):
        _core.encode_stream(w, mel, np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"mel frames F: expected F >= 101 \(one conv-stack output\), found 100"):
        _core.encode_stream(w, np.zeros((1, 80, 100), np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"mel shape: expected \[\*, 80, \*\], found \[1, 79, 120\]"):
        _core.encode_stream(w, np.zeros((1, 79, 120), np.float32), np.zeros(1, np.int64))


def test_bad_streaming_encoder_use(model):
    w = _cpp.audio_encoder_weights(model)
    for kwargs, message in [(dict(fps=0), r"fps: expected an integer in \[1, 8000\], found 0"),
                            (dict(lookahead=16001), r"lookahead: expected an integer in \[0, 16000\] samples"),
                            (dict(clock="drift"), "clock: expected 'released' or 'exact', found 'drift'"),
                            (dict(framing="frames"), "framing: expected 'window' or 'stream', found 'frames'"),
                            (dict(batch=0), r"batch: expected an integer in \[1, 4096\], found 0"),
                            (dict(threads=-2), "threads: expected 0 \\(all cores\\) or a thread count")]:
        with pytest.raises(ValueError, match=message):
            _core.AudioStreamEncoder(w, **kwargs)
    enc = _core.AudioStreamEncoder(w, batch=2, framing="stream")
    with pytest.raises(ValueError, match=r"samples shape: expected \[2, \*\], found \[1, 100\]"):
        enc.push(np.zeros((1, 100), np.float32))
    enc.push(np.zeros((2, 100), np.float32))
    enc.close()
    with pytest.raises(ValueError, match=r"push\(\) called after close\(\)"):
        enc.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match=r"close\(\) called twice"):
        enc.close()


def test_weights_cache_follows_the_parameters(face_model):
    model = face_model(8)
    first = _cpp.audio_encoder_weights(model)
    assert _cpp.audio_encoder_weights(model) is first
    with torch.no_grad():
        model.encoder.audio_encoder.code.bias.add_(1.0)
    assert _cpp.audio_encoder_weights(model) is not first
