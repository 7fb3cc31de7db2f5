"""Live Link Face formats and live weights: the UDP packet layout (bytes checked by hand), a receiver on
127.0.0.1 parsing what is sent, CSV timecodes, StreamingAnimator's weights equal the offline solve for any
chunking, and `meshtalk-fast stream --blendshapes --livelink` end to end."""
import socket
import struct

import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast import cli
from meshtalk_fast.streaming.livelink import (DEFAULT_PORT, LIVELINK_CURVES, LiveLinkSender, arkit_frame, livelink_packet,
                                    parse_livelink_packet, parse_target, timecode)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Small ops on a busy 2-core machine."""


def _receiver():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5.0)
    return rx


def test_packet_layout_by_hand():
    curves = np.arange(61, dtype=np.float32) / 100
    data = livelink_packet(curves, frame=42, fps=30, subject="Face", device="dev1")
    assert data[0] == 6
    assert data[1:5] == struct.pack(">I", 4) and data[5:9] == b"dev1"
    assert data[9:13] == struct.pack(">I", 4) and data[13:17] == b"Face"
    assert struct.unpack(">ifiiB", data[17:34]) == (42, 0.0, 30, 1, 61)
    assert np.array_equal(np.frombuffer(data[34:], ">f4"), curves)
    assert len(data) == 34 + 61 * 4
    back = parse_livelink_packet(data)
    assert back["subject"] == "Face" and back["device"] == "dev1" and back["frame"] == 42 and back["fps"] == (30, 1)
    with pytest.raises(ValueError, match="truncated Live Link packet"):
        parse_livelink_packet(data[:20])
    with pytest.raises(ValueError, match="curves must hold 61 values, got 52"):
        livelink_packet(np.zeros(52), 0, 30)


def test_a_receiver_on_localhost_parses_what_is_sent():
    rx = _receiver()
    try:
        sent = np.random.default_rng(0).random((3, 61)).astype(np.float32)
        with LiveLinkSender("127.0.0.1", rx.getsockname()[1], fps=60, subject="meshtalk") as tx:
            for row in sent:
                tx.send(row)
        for k in range(3):
            p = parse_livelink_packet(rx.recv(2048))
            assert p["frame"] == k and p["fps"] == (60, 1) and p["subject"] == "meshtalk"
            np.testing.assert_array_equal(p["curves"], sent[k])
    finally:
        rx.close()


def test_targets_and_unresolvable_hosts():
    assert parse_target("10.0.0.5") == ("10.0.0.5", DEFAULT_PORT) == ("10.0.0.5", 11111)
    assert parse_target("studio-pc:12000") == ("studio-pc", 12000)
    with pytest.raises(ValueError, match="port must be an integer in"):
        parse_target("host:99999")
    with pytest.raises(ValueError, match="Live Link target 'no-such-host.invalid' .* cannot be resolved"):
        LiveLinkSender("no-such-host.invalid")


def test_curves_and_timecodes():
    assert LIVELINK_CURVES[:2] == ("EyeBlinkLeft", "EyeLookDownLeft") and LIVELINK_CURVES[17] == "JawOpen"
    assert len(LIVELINK_CURVES) == 61 and LIVELINK_CURVES[-1] == "RightEyeRoll"
    assert timecode(0, 30) == "00:00:00:00.000" and timecode(31, 30) == "00:00:01:01.000"
    assert timecode(30 * 3725 + 7, 30) == "01:02:05:07.000"
    frame = arkit_frame(np.array([[0.25, 0.5]]), {"jawOpen": 1, "eyeBlinkRight": 0})
    assert frame.shape == (1, 61) and frame[0, 17] == 0.5 and frame[0, 7] == 0.25 and frame.sum() == 0.75


@pytest.mark.parametrize("chunk", [700, 4000])
def test_streaming_weights_equal_the_offline_solve(chunk):
    V = 40
    torch.manual_seed(0)
    model = mf.MeshTalk(V, heads=2, classes=8).eval()
    g = torch.Generator().manual_seed(1)
    template = torch.randn(V, 3, generator=g)
    basis = mf.BlendshapeBasis([f"s{k}" for k in range(6)], template, 0.01 * torch.randn(6, V, 3, generator=g))
    audio = 0.05 * torch.randn(16000, generator=g)
    anim = mf.StreamingAnimator(model, template, seed=0, backend="torch", blendshapes=basis, blendshape_smoothing=0.5)
    frames, weights = [], []
    for s in range(0, audio.shape[0], chunk):
        frames.append(anim.push(audio[s:s + chunk]))
        weights.append(anim.pop_weights())
    frames.append(anim.close())
    weights.append(anim.pop_weights())
    frames, weights = torch.cat(frames), torch.cat(weights)
    assert weights.shape == (frames.shape[0], 6) and frames.shape[0] == anim.frames_emitted
    offline = mf.solve_blendshapes(frames, basis, smoothing=0.5, backend="torch")
    assert (weights - offline).abs().max().item() < 1e-6
    with pytest.raises(RuntimeError, match="pop_weights\\(\\) needs a StreamingAnimator made with blendshapes"):
        mf.StreamingAnimator(model, template).pop_weights()
    wrong = mf.BlendshapeBasis(["a"], torch.zeros(7, 3), torch.ones(1, 7, 3))
    with pytest.raises(ValueError, match="basis has V=7 vertices but the model has 40"):
        mf.StreamingAnimator(model, template, blendshapes=wrong)


def test_cli_stream_sends_live_link_packets(rig_files, tmp_path, capsys):
    rx = _receiver()
    try:
        port = rx.getsockname()[1]
        out = tmp_path / "frames.npz"
        argv = ["stream", "--model", str(rig_files / "small.safetensors"), "--template", str(rig_files / "face.obj"),
                "--audio", str(rig_files / "speech.wav"), "--seed", "2", "--out", str(out),
                "--blendshapes", str(rig_files / "face.glb"), "--livelink", f"127.0.0.1:{port}"]
        assert cli.main(argv) == 0
        printed = capsys.readouterr().out
        assert "rig residual" in printed and "Live Link packets" in printed
        with np.load(out) as z:
            vertices, weights, names = z["vertices"], z["weights"], list(z["weight_names"])
        T = vertices.shape[0]
        basis = mf.BlendshapeBasis.load(rig_files / "face.glb")
        assert names == list(basis.names) and weights.shape == (T, basis.n_shapes)
        np.testing.assert_allclose(weights, mf.solve_blendshapes(torch.from_numpy(vertices), basis).numpy(),
                                   atol=1e-4)
        packets = [parse_livelink_packet(rx.recv(2048)) for _ in range(T)]
        assert [p["frame"] for p in packets] == list(range(T))
        jaw = basis.names.index("jawOpen")
        np.testing.assert_allclose([p["curves"][17] for p in packets], weights[:, jaw], atol=1e-6)
    finally:
        rx.close()


def test_cli_stream_live_link_errors(rig_files, tmp_path, capsys):
    base = ["stream", "--model", str(rig_files / "small.safetensors"), "--template", str(rig_files / "face.obj"),
            "--audio", str(rig_files / "speech.wav"), "--out", str(tmp_path / "f.npz")]
    assert cli.main(base + ["--livelink", "127.0.0.1"]) == 2
    assert "--livelink needs --blendshapes" in capsys.readouterr().err
    assert cli.main(base + ["--blendshapes", str(rig_files / "face.glb"), "--livelink", "no-such-host.invalid:9"]) == 2
    assert "Live Link target 'no-such-host.invalid' (port 9) cannot be resolved" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
