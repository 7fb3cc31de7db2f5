"""The 600 ms audio context (``MeshTalkConfig.audio_context_ms = 600``, the seed's a_t) beside the released
1 s: the encoder's receptive field is exactly one 600 ms window (61 mel frames), both framings agree as they
do for 1 s, training runs with it, the C++ core computes what the torch reference does (offline and in a
session, frame for frame), the session's latency is 300 ms + one frame, and a model file of the other
context is refused by name (Python loaders, released loader, core model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from helpers import assert_close, core_module
from meshtalk_fast.models.checkpoint import CheckpointError
from meshtalk_fast.models.encoders import AudioEncoder
from meshtalk_fast.models.released import load_model_any
from meshtalk_fast.ops.frame_clock import (AUDIO_CONTEXTS, STREAM_PAD, context_mel_frames, context_window,
                                           frame_centres, stream_positions)

CONTEXTS = [(1000, 16000, 101), (600, 9600, 61)]


def randomized(context_ms: int, seed: int = 0) -> AudioEncoder:
    enc = AudioEncoder(latent_dim=12, context_ms=context_ms)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return enc.eval().double()


# ------------------------------------------------------------------------------------------ the option
def test_config_defaults_and_derived_sizes():
    released = mf.MeshTalkConfig()
    assert (released.audio_context_ms, released.lookahead, released.window_samples, released.mel_window) == \
        (1000, 8000, 16000, 101)
    short = mf.MeshTalkConfig(audio_context_ms=600).validate()
    assert (short.lookahead, short.window_samples, short.mel_window) == (4800, 9600, 61)  # centred: 300 ms ahead
    assert mf.MeshTalkConfig(audio_context_ms=600, lookahead=1000).validate().lookahead == 1000
    for ms, window, frames in CONTEXTS:
        assert context_window(ms) == window and context_mel_frames(ms) == frames
        k = 5
        assert k + sum((k - 1) * d for d in AUDIO_CONTEXTS[ms]) == frames
    with pytest.raises(ValueError, match=r"audio_context_ms must be one of \[1000, 600\].*got 500"):
        mf.MeshTalkConfig(audio_context_ms=500).validate()
    with pytest.raises(ValueError, match=r"lookahead must be an integer in \[0, 9600\] samples \(audio_context_ms=600\), "
                                         r"got 9601"):
        mf.MeshTalkConfig(audio_context_ms=600, lookahead=9601).validate()
    with pytest.raises(ValueError, match=r"audio_context_ms must be one of"):
        mf.MeshTalk(5, heads=2, classes=3, audio_context_ms=True)


def test_training_config_centres_the_window_of_its_context(tmp_path):
    from meshtalk_fast.training import load_config
    from meshtalk_fast.training.quickstart import quickstart_config

    p = tmp_path / "c.toml"
    p.write_text("[model]\naudio_context_ms = 600\n")
    cfg = load_config(str(p))
    assert (cfg.model.audio_context_ms, cfg.model.lookahead) == (600, 4800)
    p.write_text("[model]\naudio_context_ms = 600\nlookahead = 2000\n")
    assert load_config(str(p)).model.lookahead == 2000
    assert load_config(None).model.lookahead == 8000
    q = quickstart_config(0, audio_context_ms=600)
    assert (q.model.audio_context_ms, q.model.lookahead, q.model.framing) == (600, 4800, "stream")
    released = quickstart_config(0)
    assert (released.model.audio_context_ms, released.model.lookahead) == (1000, 8000)


# ------------------------------------------------------------------------------------------ receptive field
@pytest.mark.parametrize("ms,window,frames", CONTEXTS)
def test_encoder_receptive_field_is_exactly_one_window(ms, window, frames):
    """Conv-stack output j sees mel frames j .. j + R - 1 and nothing else (R = 61 at 600 ms)."""
    enc = randomized(ms)
    assert enc.receptive_field == frames and enc.window_samples == window
    mel = torch.randn(1, 80, frames + 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    base = enc._conv_stack(mel)
    assert base.shape[-1] == 21
    j = 7
    for f, inside in [(j - 1, False), (j, True), (j + frames // 2, True), (j + frames - 1, True),
                      (j + frames, False)]:
        poked = mel.clone()
        poked[0, :, f] += 1.0
        changed = bool((enc._conv_stack(poked)[..., j] - base[..., j]).abs().max() > 1e-12)
        assert changed == inside, (ms, f, inside)
    assert enc.encode_mel(mel[..., :frames]).shape == (1, 12)  # one window: one position


@pytest.mark.parametrize("ms,window,frames", CONTEXTS)
def test_frame_code_depends_on_its_window_samples_only(ms, window, frames):
    """Through the whole front end (window framing): frame k's code changes with a sample inside its window
    ``[c_k + lookahead - W, c_k + lookahead)`` and not with one just outside."""
    torch.manual_seed(0)
    model = mf.MeshTalk(5, heads=2, classes=3, audio_context_ms=ms).eval()
    c = model.config
    audio = 0.1 * torch.randn(3 * 16000, generator=torch.Generator().manual_seed(2))
    k = 40
    centre = int(frame_centres(k + 1, c.fps, c.clock)[k])
    lo, hi = centre + c.lookahead - window, centre + c.lookahead
    assert hi - lo == window and c.lookahead == window // 2

    def code(a):
        with torch.no_grad():
            return model.encode_speech(a, backend="torch")[0, k]

    base = code(audio)
    for s, inside in [(lo - 1, False), (lo, True), (centre, True), (hi - 1, True), (hi, False)]:
        poked = audio.clone()
        poked[s] += 0.5
        assert bool((code(poked) - base).abs().max() > 0) == inside, (ms, s - centre, inside)


# ------------------------------------------------------------------------------------------ the two framings
@pytest.mark.parametrize("ms,window,frames", CONTEXTS)
def test_window_and_stream_framings_agree(speech, ms, window, frames):
    """As for 1 s: the stream framing reads, per frame, the R mel frames of the utterance's one log-mel whose
    middle is within 80 samples (half a hop) of the frame's window centre, and equals the encoder on exactly
    those frames; on the 10 ms grid the mel frames of a window's own log-mel that lie inside it are the
    utterance's mel frames."""
    enc = randomized(ms, seed=3)
    audio = speech[:16000 + 2345].double()
    mel = mf.torch_log_mel(torch.nn.functional.pad(audio, (STREAM_PAD, STREAM_PAD)))[None]
    for clock, lookahead in [("released", window // 2), ("exact", 0), ("exact", window), ("exact", 4321)]:
        T = mf.num_frames(audio.shape[0], 30, clock)
        pos = stream_positions(T, 30, clock, lookahead, window)
        assert int(pos.min()) >= 0 and int(pos.max()) <= mel.shape[-1] - frames
        out = enc.encode_stream(mel, pos)
        for k in (0, T // 2, T - 1):
            p = int(pos[k])
            torch.testing.assert_close(out[0, k], enc.encode_mel(mel[..., p:p + frames])[0], rtol=1e-10, atol=1e-10)
        centre = frame_centres(T, 30, clock) + lookahead - window // 2
        assert int(((pos + (frames - 1) // 2) * 160 - STREAM_PAD - centre).abs().max()) <= 80
    # On the grid (exact clock at 100 fps: centres 160 k + 80; a look-ahead of 80 mod 160) a window starts on
    # a hop boundary: its own log-mel's frames that do not reach past its edges are the utterance's.
    lookahead = window // 2 + 80
    windows = mf.audio_windows(audio.float(), 100, "exact", lookahead, window)
    pos = stream_positions(windows.shape[0], 100, "exact", lookahead, window)
    own = mf.torch_log_mel(windows.double()[40:45])  # [5, 80, R]
    assert own.shape[-1] == frames
    inner = slice(3, frames - 3)  # frames whose 800-sample span stays inside the window
    for i, k in enumerate(range(40, 45)):
        start = int(frame_centres(k + 1, 100, "exact")[k]) + lookahead - window
        assert start % 160 == 0 and (start + STREAM_PAD) // 160 == int(pos[k])
        torch.testing.assert_close(own[i][:, inner], mel[0, :, int(pos[k]):int(pos[k]) + frames][:, inner],
                                   rtol=1e-9, atol=1e-9)


def test_training_batches_of_both_framings(speech):
    """The trainer's crops: window framing gives [B, T, 9600] windows equal to the model's own windows;
    stream framing gives mel spans the encoder reads 61 frames of."""
    from meshtalk_fast.training.batches import Clip, CropSampler

    audio = speech[:3 * 16000]
    T = mf.num_frames(audio.shape[0], 30, "exact")
    clip = Clip("a", torch.zeros(4, 3), torch.zeros(T, 4, 3), audio, T)
    cfg = mf.MeshTalkConfig(n_vertices=4, audio_context_ms=600, clock="exact").validate()
    sampler = CropSampler([clip], 8, 30, "exact", cfg.lookahead, seed=0, window=cfg.window_samples)
    windows = sampler.windows(clip, 10)
    assert windows.shape == (8, 9600)
    assert torch.equal(windows, cfg.windows(audio)[10:18])
    stream = CropSampler([clip], 8, 30, "exact", cfg.lookahead, seed=0, framing="stream", window=cfg.window_samples)
    mel, pos = stream.mel_span(0, 10)
    assert int(pos.max()) + 61 == mel.shape[-1]


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("framing", ["window", "stream"])
def test_a_training_step_runs_with_600ms(tmp_path, framing):
    """Both stages train a 600 ms model ([model] audio_context_ms = 600), and its file keeps the context."""
    from meshtalk_fast.training import TrainConfig, align
    from meshtalk_fast.training.trainer import Trainer, TrainingMasks

    g = torch.Generator().manual_seed(0)
    V = 12
    template = torch.randn(V, 3, generator=g)
    clips = []
    for i in range(3):
        audio = 0.01 * torch.randn(32000, generator=g)
        T = mf.num_frames(audio.shape[0], 30, "exact")
        motion = torch.sin(torch.linspace(0, 6, T) * (i + 1))[:, None, None] * torch.randn(1, V, 3, generator=g) * 0.1
        clips.append(align(f"seq{i}", template, template + motion, audio, 30, "exact"))
    cfg = TrainConfig.from_dict({"model": {"heads": 2, "classes": 4, "audio_context_ms": 600, "clock": "exact",
                                           "framing": framing},
                                 "stage1": {"batch_size": 2, "segment_frames": 6, "steps": 2},
                                 "stage2": {"batch_size": 2, "segment_frames": 6, "steps": 1},
                                 "log_every": 1, "val_every": 1, "checkpoint_every": 1})
    torch.manual_seed(0)
    model = mf.MeshTalk(V, **cfg.model_kwargs())
    assert model.config.lookahead == 4800 and model.encoder.audio_encoder.receptive_field == 61
    m = torch.rand(5, V, generator=g)
    masks = TrainingMasks(m[0], m[1], (m[2] > 0.5).float(), (m[3] > 0.5).float(), (m[4] > 0.5).float())
    trainer = Trainer(model, clips, masks, cfg, str(tmp_path), progress=False)
    before = model.encoder.audio_encoder.convs[0].weight.detach().clone()
    assert trainer.fit(1)["total"] > 0
    assert not torch.equal(before, trainer.model.encoder.audio_encoder.convs[0].weight.detach())
    assert trainer.fit(2)["cross_entropy"] > 0
    trainer.model.save(tmp_path / "trained.safetensors")
    saved = mf.MeshTalk.load(tmp_path / "trained.safetensors", audio_context_ms=600)
    assert (saved.config.audio_context_ms, saved.config.lookahead) == (600, 4800)


# ------------------------------------------------------------------------------------------ files and mismatch
def test_model_files_carry_the_context_and_refuse_the_other(tmp_path):
    torch.manual_seed(0)
    short = mf.MeshTalk(5, heads=2, classes=3, audio_context_ms=600)
    short.save(tmp_path / "short.safetensors")
    loaded = mf.MeshTalk.load(tmp_path / "short.safetensors")
    assert loaded.config == short.config and loaded.encoder.audio_encoder.dilations == [1, 2, 4, 1, 2, 4]
    assert mf.MeshTalk.load(tmp_path / "short.safetensors", audio_context_ms=600).config.audio_context_ms == 600
    with pytest.raises(CheckpointError, match=r"short.safetensors: audio context mismatch: expected "
                                              r"audio_context_ms=1000 \(asked for\), found 600 ms"):
        mf.MeshTalk.load(tmp_path / "short.safetensors", audio_context_ms=1000)
    mf.MeshTalk(5, heads=2, classes=3).save(tmp_path / "released.safetensors")
    with pytest.raises(CheckpointError, match=r"expected audio_context_ms=600 \(asked for\), found 1000 ms"):
        load_model_any(tmp_path / "released.safetensors", audio_context_ms=600)
    with pytest.raises(ValueError, match=r"audio_context_ms must be one of \[1000, 600\]"):
        mf.MeshTalk.load(tmp_path / "released.safetensors", audio_context_ms=700)
    # the released loader keeps 1 s: asking it for 600 ms is refused before any file is read
    folder = tmp_path / "released"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"audio context mismatch: expected audio_context_ms=600 \(asked for\), "
                                              r"found 1000 ms \(the released model"):
        mf.load_official(folder, n_vertices=5, heads=2, classes=3, audio_context_ms=600)
    # a file of the other context in the window the caller computed: the encoder names the shapes
    with pytest.raises(ValueError, match=r"windows.*\[B, T, 9600\] \(audio_context_ms=600\)"):
        short.encode_audio(torch.zeros(1, 2, 16000), backend="torch")


def test_core_model_refuses_the_other_context(tmp_path):
    core = core_module()
    torch.manual_seed(0)
    mf.MeshTalk(5, heads=2, classes=3, audio_context_ms=600).save(tmp_path / "short.safetensors")
    m = core.CoreModel.from_file(str(tmp_path / "short.safetensors"))
    assert (m.audio_context_ms, m.window_samples, m.lookahead_samples) == (600, 9600, 4800)
    core.CoreModel.from_file(str(tmp_path / "short.safetensors"), audio_context_ms=600)
    with pytest.raises(ValueError, match=r"audio context mismatch: expected audio_context_ms=1000 \(asked for\), "
                                         r"found 600 ms in the model file's config \(its audio encoder reads "
                                         r"9600-sample windows\)"):
        core.CoreModel.from_file(str(tmp_path / "short.safetensors"), audio_context_ms=1000)
    with pytest.raises(ValueError, match=r"expected audio_context_ms: expected 0 \(the file's\), 1000 or 600, "
                                         r"found 700"):
        core.CoreModel.from_file(str(tmp_path / "short.safetensors"), audio_context_ms=700)
    # the encoder weights and a frame clock of the other context do not make a stream
    from meshtalk_fast.backends import cpp as _cpp

    released = mf.MeshTalk(5, heads=2, classes=3)
    w = _cpp.audio_encoder_weights(released)
    assert (w.audio_context_ms, w.window_samples, w.receptive_field) == (1000, 16000, 101)
    with pytest.raises(ValueError, match=r"lookahead: expected an integer in \[0, 16000\] samples, found 16001"):
        core.AudioStreamEncoder(w, lookahead=16001)
    with pytest.raises(ValueError, match=r"windows shape: expected \[\*, 9600\], found \[2, 16000\]"):
        core.encode_windows(_cpp.audio_encoder_weights(mf.MeshTalk(5, heads=2, classes=3, audio_context_ms=600)),
                            np.zeros((2, 16000), np.float32))


# ------------------------------------------------------------------------------------------ C++ core = reference
ATOL = 2e-5


@pytest.mark.parametrize("framing", ["window", "stream"])
def test_core_encoder_equals_the_reference(face_model, speech, framing):
    """Offline: the C++ encoder of a 600 ms model equals the torch reference (batched window and stream
    framings), and its streaming encoder equals its batched path bit for bit, for any chunking."""
    core = core_module()
    from meshtalk_fast.backends import cpp as _cpp

    model = face_model(11, audio_context_ms=600, framing=framing, clock="exact")
    audio = torch.stack([speech[:2 * 16000 + 77], speech[5000:5000 + 2 * 16000 + 77]])
    with torch.no_grad():
        ref = model.encode_speech(audio, backend="torch")
        cpp = model.encode_speech(audio, backend="cpp")
    assert cpp.shape == ref.shape == (2, mf.num_frames(audio.shape[1], 30, "exact"), 128)
    assert_close(f"{framing}: cpp against torch", cpp, ref, atol=ATOL)
    enc = core.AudioStreamEncoder(_cpp.audio_encoder_weights(model), batch=2, fps=30, clock="exact",
                                  framing=framing, threads=1)  # lookahead: centred in the weights' window
    for chunks in ([533], [1, 4000, 160, 10 ** 6]):
        enc.reset()
        outs, i, k = [], 0, 0
        while i < audio.shape[1]:
            n = chunks[k % len(chunks)]
            outs.append(enc.push(np.ascontiguousarray(audio[:, i:i + n].numpy())))
            i, k = i + n, k + 1
        outs.append(enc.close())
        assert np.array_equal(np.concatenate(outs, axis=1), cpp.numpy()), chunks
    T, centres, positions = core._testing.clock_frames(audio.shape[1], 30, "exact", -1, 9600)
    assert np.array_equal(positions, stream_positions(T, 30, "exact", 4800, 9600).numpy())


@pytest.mark.parametrize("framing", ["window", "stream"])
def test_session_equals_the_reference_frame_for_frame(tmp_path, framing):
    """The C API's session (``_core.Session`` on the saved file, what ``StreamingAnimator(backend="cpp")``
    runs) of a 600 ms model gives, for pushes of any size, the frames of the Python pipeline on the C++ core;
    each frame comes out once the audio up to its centre + 300 ms is in; the torch reference streaming
    animator gives the same frames to float rounding."""
    core = core_module()
    from meshtalk_fast.ops.frame_clock import frame_centre

    torch.manual_seed(3)
    V = 40
    model = mf.MeshTalk(V, heads=3, classes=8, audio_context_ms=600, framing=framing, clock="exact").eval()
    model.save(tmp_path / "m.safetensors")
    core_model = core.CoreModel.from_file(str(tmp_path / "m.safetensors"), audio_context_ms=600)
    template = torch.randn(V, 3)
    audio = 0.2 * torch.randn(16000 + 9001, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one_hot = model.sample(model.encode_speech(audio, backend="cpp"), backend="cpp", seeds=[11])
        expected = model.decode(template[None], one_hot, backend="cpp")[0]
    for chunk in (1, 533, 4001, audio.numel()):
        s = core.Session(core_model, template.numpy(), seed=11)
        outs = [s.push(audio[i:i + chunk].numpy()) for i in range(0, audio.numel(), chunk)] + [s.finish()]
        torch.testing.assert_close(torch.from_numpy(np.concatenate(outs)), expected, rtol=0, atol=1e-4)
    # readiness: frame k is out once samples up to its centre + 300 ms (+ the mel half window for the
    # stream framing) are in and the utterance is known to have it
    s = core.Session(core_model, template.numpy(), seed=11)
    c = model.config
    got, n = 0, 0
    for k in range(6):
        need = frame_centre(k, c.fps, c.clock) + 4800
        while n < need - 1:
            step = need - 1 - n
            got += s.push(audio[n:n + step].numpy()).shape[0]
            n += step
        assert got <= k, (k, got)
        extra = 480 if framing == "stream" else 0
        while n < need + extra:
            got += s.push(audio[n:n + 1].numpy()).shape[0]
            n += 1
        assert got >= k + 1 or mf.num_frames(n, c.fps, c.clock) <= k, (k, got)
    # the torch reference pipeline streams the same frames (float rounding)
    stream = mf.StreamingAnimator(model, template, seed=0, backend="torch")
    parts = [stream.push(audio[i:i + 777]) for i in range(0, audio.numel(), 777)] + [stream.close()]
    with torch.no_grad():
        ref = mf.animate(audio, template, model, seed=0, backend="torch", normalize=False, progress=False)
    torch.testing.assert_close(torch.cat(parts), ref, rtol=0, atol=1e-4)


def test_session_latency_is_300ms_plus_one_frame(tmp_path):
    """The session's latency (``mt_model_latency_samples``): the look-ahead, 4800 samples (300 ms) instead
    of 8000, plus one frame (plus the smoothing delay's frames), as the streaming reference states it."""
    core = core_module()
    torch.manual_seed(0)
    V = 6
    for ms, lookahead in [(1000, 8000), (600, 4800)]:
        model = mf.MeshTalk(V, heads=2, classes=3, audio_context_ms=ms).eval()
        model.save(tmp_path / f"{ms}.safetensors")
        m = core.CoreModel.from_file(str(tmp_path / f"{ms}.safetensors"))
        assert m.lookahead_samples == lookahead
        assert m.latency_samples() == lookahead + 534          # one frame: 16000 / 30 rounded up
        assert m.latency_samples(4) == lookahead + 2667        # 5 frames
        stream = mf.StreamingAnimator(model, torch.zeros(V, 3), seed=0)
        assert stream.latency_breakdown["lookahead_s"] == lookahead / 16000
        assert m.latency_samples() == int(np.ceil(stream.latency_s * 16000 - 1e-6))
