"""StreamingAnimator and the step-at-a-time sampler/decoder: equal to the offline path, whatever the
chunking; readiness, latency and the smoothing delay as documented; the `stream` CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli
from meshtalk_fast.models.incremental import DecoderStepper, PriorStepper
from meshtalk_fast.ops.frame_clock import frame_centre, frame_centres
from meshtalk_fast.streaming.animator import smoothing_tail

ATOL = 1e-4  # coordinates are ~100 (float32 ulp ~1e-5); one different code moves vertices by ~1


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Thousands of tiny ops: on a busy 2-core machine two intra-op threads mostly wait."""


@pytest.fixture(scope="module")
def model(face_model):
    """Real topology and normalisation, fewer heads/classes so the sampler is quick."""
    return face_model(0, heads=4, classes=16)


@pytest.fixture(scope="module")
def masks(released_masks):
    return released_masks


@pytest.fixture(scope="module")
def audio(speech):
    return speech[:16000].clone()  # 1 s of the real sentence, normalised as released -> 30 frames


def run_stream(model, template, audio, chunk, **kw):
    s = mf.StreamingAnimator(model, template, backend="torch", **kw)
    outs = [s.push(audio[i:i + chunk]) for i in range(0, audio.shape[0], chunk)]
    outs.append(s.close())
    return torch.cat(outs), s


# ------------------------------------------------------------------------------------------------
# step-at-a-time parts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head_masks", ["released", "inclusive"])
@pytest.mark.parametrize("B,argmax", [(1, False), (3, False), (2, True)])
def test_prior_stepper_is_the_reference_sampler(B, argmax, head_masks):
    torch.manual_seed(1)
    m = mf.MeshTalk(50, heads=4, classes=8, prior_head_masks=head_masks).eval()
    code = torch.randn(B, 37, 128)  # 37 > the receptive field (20): the rings wrap
    ref = m.sample(code, argmax=argmax, generator=torch.Generator().manual_seed(7), backend="torch")
    exact = PriorStepper(m, B, argmax, torch.Generator().manual_seed(7), exact=True)
    got = torch.stack([exact.step(code[:, t]) for t in range(37)], dim=1)
    assert torch.equal(got, ref)  # bit for bit
    assert all(len(h) <= l.dilation + 1 for h, l in zip(exact.history, exact.layers))
    fast = PriorStepper(m, B, argmax, torch.Generator().manual_seed(7))
    got = torch.stack([fast.step(code[:, t]) for t in range(37)], dim=1)
    assert torch.equal(got, ref)  # float rounding only: no near-tie in these 37 x 4 x B draws


def test_decoder_stepper_carries_the_lstm_state(template, model):
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 16, (1, 23, 4), generator=torch.Generator().manual_seed(2)),
                                          16).float()
    with torch.no_grad():
        ref = model.decode(template, one_hot, backend="torch")
    stepper = DecoderStepper(model, template)
    got = torch.cat([stepper.step(one_hot[:, s:s + 5]) for s in range(0, 23, 5)], dim=1)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"batch size B=1"):
        stepper.step(one_hot.expand(2, -1, -1, -1)[:, :1])


# ------------------------------------------------------------------------------------------------
# equal to offline animate
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def offline(model, template, audio, masks):
    return mf.animate(audio, template, model, seed=3, backend="torch", smooth_masks=masks, normalize=False,
                      progress=False)


@pytest.mark.parametrize("chunk", [1, 533, 4000, 16000])
def test_stream_equals_offline_for_any_chunking(model, template, audio, masks, offline, chunk):
    got, s = run_stream(model, template, audio, chunk, seed=3, smooth_masks=masks, exact_sampler=chunk == 533)
    assert got.shape == offline.shape == (30, 6172, 3)
    torch.testing.assert_close(got, offline, atol=ATOL, rtol=0)
    assert s.frames_emitted == 30 and s.samples_seen == 16000


def test_a_different_seed_is_far_from_the_tolerance(model, template, audio, masks, offline):
    got, _ = run_stream(model, template, audio, 4000, seed=4, smooth_masks=masks)
    assert (got - offline).abs().max() > 100 * ATOL


def test_exact_clock_short_lookahead_without_smoothing(assets, template, audio):
    torch.manual_seed(0)
    m = mf.MeshTalk(6172, heads=2, classes=8, clock="exact", lookahead=2000,
                    mean=torch.from_numpy(np.load(assets / "face_mean.npy")),
                    stddev=torch.from_numpy(np.load(assets / "face_std.npy"))).eval()
    ref = mf.animate(audio[:11111], template, m, seed=5, backend="torch", normalize=False, progress=False)
    for chunk in (1, 700, 11111):
        got, s = run_stream(m, template, audio[:11111], chunk, seed=5)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    assert s.latency_s == pytest.approx(2000 / 16000 + 1 / 30)


# framing "stream": one log-mel of the (zero-padded) utterance, read at one position per frame
@pytest.mark.parametrize("clock,lookahead", [("exact", 8000), ("exact", 2000), ("released", 4000)])
def test_stream_framing_equals_offline_for_any_chunking(clock, lookahead):
    torch.manual_seed(0)
    m = mf.MeshTalk(300, heads=2, classes=8, framing="stream", clock=clock, lookahead=lookahead).eval()
    template = torch.randn(300, 3)
    audio = torch.randn(11111, generator=torch.Generator().manual_seed(1)) * 0.01
    ref = mf.animate(audio, template, m, seed=5, backend="torch", normalize=False, progress=False)
    assert ref.shape[0] == mf.num_frames(11111, 30, clock)
    for chunk in (1, 160, 700, 11111):
        got, s = run_stream(m, template, audio, chunk, seed=5)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    other, _ = run_stream(m, template, audio, 700, seed=6)
    assert not torch.allclose(other, ref, atol=ATOL, rtol=0)  # another seed: the comparison can fail


def test_stream_framing_frame_is_ready_when_its_last_mel_frame_is():
    """Frame k reads mel frames p_k .. p_k+100 of the padded utterance; the last is final once original
    sample 160 p_k + 400 is in (the padding's 16000 cancels): the frame comes out on exactly that sample,
    and latency_s is the worst such wait over the frame clock, at most look-ahead + 30 ms + one frame."""
    torch.manual_seed(0)
    m = mf.MeshTalk(300, heads=2, classes=8, framing="stream", clock="exact", lookahead=2000).eval()
    c = m.config
    positions = mf.ops.frame_clock.stream_positions(40, c.fps, c.clock, c.lookahead)
    need = (160 * positions + 400).tolist()
    s = mf.StreamingAnimator(m, torch.zeros(300, 3), seed=0, backend="torch")
    audio = torch.randn(need[3]) * 0.01
    assert s.push(audio[:need[0] - 1]).shape[0] == 0
    assert s.push(audio[need[0] - 1:need[0]]).shape[0] == 1
    assert s.push(audio[need[0]:need[3] - 1]).shape[0] == 2
    assert s.push(audio[need[3] - 1:]).shape[0] == 1
    waits = [n - int(ck) for n, ck in zip(need, frame_centres(40, c.fps, c.clock))]
    assert s.latency_breakdown["mel_s"] == pytest.approx((max(waits) - c.lookahead) / 16000)
    assert 0 < s.latency_breakdown["mel_s"] <= 480 / 16000
    assert s.latency_s == pytest.approx(max(waits) / 16000 + 1 / 30)


def test_a_frame_comes_out_as_soon_as_its_window_is_complete(model, template, audio):
    c = model.config
    s = mf.StreamingAnimator(model, template, seed=0, backend="torch")
    need = [frame_centre(k, c.fps, c.clock) + c.lookahead for k in range(3)]  # 8267, 8800, 9333
    assert s.push(audio[:need[0] - 1]).shape[0] == 0
    assert s.push(audio[need[0] - 1:need[0]]).shape[0] == 1
    assert s.push(audio[need[0]:need[2]]).shape[0] == 2
    assert s.latency_s == pytest.approx(0.5 + 1 / 30)


def test_smoothing_delay_and_latency(model, template, audio, masks):
    c = model.config
    for delay in (4, 8):
        s = mf.StreamingAnimator(model, template, seed=0, smooth_masks=masks, backend="torch", smoothing_delay=delay)
        k = 6 + delay  # frames 0..k ready in the decoder -> frames 0..k-delay out
        got = s.push(audio[:frame_centre(k, c.fps, c.clock) + c.lookahead])
        assert got.shape[0] == k + 1 - delay
        assert s.latency_s == pytest.approx(0.5 + 1 / 30 + delay / 30)
        assert s.latency_breakdown["smoothing_s"] == pytest.approx(delay / 30)


def test_delay_4_is_exact_where_the_masks_do_not_overlap_and_bounded_elsewhere(model, template, audio):
    ones = torch.ones(6172)
    overlapping = (ones, ones)  # every vertex smoothed twice: reaches 8 frames ahead
    ref = mf.animate(audio, template, model, seed=3, backend="torch", smooth_masks=overlapping, normalize=False,
                     progress=False)
    exact, _ = run_stream(model, template, audio, 533, seed=3, smooth_masks=overlapping, smoothing_delay=8)
    torch.testing.assert_close(exact, ref, atol=ATOL, rtol=0)
    short, _ = run_stream(model, template, audio, 533, seed=3, smooth_masks=overlapping, smoothing_delay=4)
    error = (short - ref).norm(dim=-1).max()
    raw = mf.animate(audio, template, model, seed=3, backend="torch", normalize=False, progress=False)
    spread = max(float((raw[t + 5:t + 9] - raw[t + 4]).norm(dim=-1).max()) for t in range(raw.shape[0] - 8))
    assert error > 10 * ATOL  # the approximation is real with overlapping masks ...
    assert error <= smoothing_tail() * spread * 1.01 + ATOL  # ... and within the documented bound
    disjoint = (torch.cat([ones[:3000], torch.zeros(3172)]), torch.cat([torch.zeros(3000), ones[3000:]]))
    ref = mf.animate(audio, template, model, seed=3, backend="torch", smooth_masks=disjoint, normalize=False,
                     progress=False)
    short, _ = run_stream(model, template, audio, 533, seed=3, smooth_masks=disjoint, smoothing_delay=4)
    torch.testing.assert_close(short, ref, atol=ATOL, rtol=0)


def test_released_masks_overlap_by_at_most_1e_6(masks):
    assert float((masks[0] * masks[1]).max()) < 2e-6  # why delay 4 matches offline with these masks


# ------------------------------------------------------------------------------------------------
# edges and errors
# ------------------------------------------------------------------------------------------------
def test_short_and_closed_streams(model, template):
    s = mf.StreamingAnimator(model, template, backend="torch")
    assert s.push(torch.zeros(0)).shape == (0, 6172, 3)
    assert s.close().shape == (0, 6172, 3)
    with pytest.raises(RuntimeError, match="after close"):
        s.push(torch.zeros(10))
    with pytest.raises(RuntimeError, match="twice"):
        s.close()


def test_bad_arguments(model, template):
    with pytest.raises(ValueError, match=r"template must have shape \[V, 3\] with V == 6172"):
        mf.StreamingAnimator(model, template[:100])
    with pytest.raises(ValueError, match="smoothing_delay"):
        mf.StreamingAnimator(model, template, smooth_masks=(torch.ones(6172),) * 2, smoothing_delay=5)
    with pytest.raises(mf.BackendUnavailable, match="sample_step has no 'triton' backend"):
        mf.StreamingAnimator(model, template, backend="triton")
    s = mf.StreamingAnimator(model, template, backend="torch")
    with pytest.raises(ValueError, match=r"samples must have 1 dimensions"):
        s.push(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="finite"):
        s.push(torch.tensor([0.0, float("nan")]))


# ------------------------------------------------------------------------------------------------
# the `stream` command
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "model.safetensors"
    model.save(path)
    return path


def test_cli_stream_file_and_stdin_give_the_same_frames(model, model_file, assets, template, tmp_path, capsys):
    import soundfile as sf

    raw = mf.load_audio(assets / "example_sentence.wav", normalize=False)[:12000]
    wav = tmp_path / "speech.wav"
    sf.write(wav, raw.numpy(), 16000, subtype="FLOAT")
    out = tmp_path / "frames.npz"
    gain = 2.5
    args = ["stream", "--model", str(model_file), "--template", str(assets / "face_template.obj"), "--seed", "2",
            "--backend", "torch", "--gain", str(gain), "--chunk", "700", "--threads", "1"]
    assert cli.main(args + ["--audio", str(wav), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "latency 0.533 s" in printed and "(no smoothing)" in printed
    with np.load(out) as z:
        frames, fps, latency = z["vertices"], int(z["fps"]), float(z["latency_s"])
    ref = mf.animate(raw * np.float32(gain), template, model, seed=2, backend="torch", normalize=False, progress=False)
    assert fps == 30 and latency == pytest.approx(0.5 + 1 / 30)
    np.testing.assert_allclose(frames, ref.numpy(), atol=ATOL, rtol=0)
    assert cli.main(args + ["--audio", str(wav), "--out", str(out)]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err

    proc = subprocess.run([sys.executable, "-m", "meshtalk_fast.cli"] + args + ["--audio", "-", "--out", "-"],
                          input=raw.numpy().astype("<f4").tobytes(), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    streamed = np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, 6172, 3)
    np.testing.assert_allclose(streamed, frames, atol=ATOL, rtol=0)
    assert b"latency" in proc.stderr


def test_cli_stream_errors(model_file, assets, tmp_path, monkeypatch, capsys):
    import io

    class Stdin:
        def __init__(self, data):
            self.buffer = io.BytesIO(data)

    base = ["stream", "--model", str(model_file), "--template", str(assets / "face_template.obj"), "--audio", "-",
            "--out", str(tmp_path / "f.npz")]
    monkeypatch.setattr(sys, "stdin", Stdin(b"\0" * 4001))
    assert cli.main(base + ["--gain", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stdin: 1 trailing bytes" in err[0]
    monkeypatch.setattr(sys, "stdin", Stdin(b"\0" * 4000))
    assert cli.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "silent" in err[0] and "--gain" in err[0]
    assert cli.main(base[:-1] + [str(tmp_path / "f.npy")]) == 2
    assert "--out must be a .npz file or '-'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_default_gain_is_from_the_first_second(capsys):
    from meshtalk_fast.cli.animate import _gained

    x = np.concatenate([np.full(16000, 0.5, np.float32), np.full(8000, 2.0, np.float32)])
    out = np.concatenate(list(_gained(iter(np.split(x, 6)), None, "test")))
    np.testing.assert_allclose(out, x * (0.01 / 0.5), rtol=1e-6)
    late = np.concatenate([np.zeros(16000, np.float32), np.full(4000, 0.25, np.float32)])
    out = np.concatenate(list(_gained(iter(np.split(late, 5)), None, "test")))
    np.testing.assert_allclose(out, late * (0.01 / float(np.abs(late).mean())), rtol=1e-6)
