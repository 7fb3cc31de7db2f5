"""Every model part against an independent NumPy re-statement written from the model description
(docs/meshtalk-model.md), on odd shapes. The re-statements read only the parameters."""
import numpy as np
import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.models import AudioEncoder, ContextModel, ExpressionEncoder, FusionMlp, VertexUnet

SLOPE = 0.2


def P(t):
    return t.detach().double().numpy()


def leaky(x):
    return np.where(x > 0, x, SLOPE * x)


def linear(x, layer):
    return x @ P(layer.weight).T + P(layer.bias)


def conv1d(x, w, b, dilation=1):
    """x [N, Cin, L], w [Cout, Cin, K] -> [N, Cout, L - dilation*(K-1)] (valid)."""
    K = w.shape[-1]
    L = x.shape[-1] - dilation * (K - 1)
    out = np.zeros((x.shape[0], w.shape[0], L)) + b[None, :, None]
    for k in range(K):
        out += np.einsum("oc,ncl->nol", w[:, :, k], x[:, :, k * dilation:k * dilation + L])
    return out


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm(x, lstm_module, layer):
    """One LSTM layer, gates ordered (input, forget, cell, output), zero initial state."""
    w_ih, w_hh = P(getattr(lstm_module, f"weight_ih_l{layer}")), P(getattr(lstm_module, f"weight_hh_l{layer}"))
    b = P(getattr(lstm_module, f"bias_ih_l{layer}")) + P(getattr(lstm_module, f"bias_hh_l{layer}"))
    B, T, _ = x.shape
    Hd = w_hh.shape[1]
    h, c, out = np.zeros((B, Hd)), np.zeros((B, Hd)), []
    for t in range(T):
        g = x[:, t] @ w_ih.T + h @ w_hh.T + b
        i, f, gg, o = sigmoid(g[:, :Hd]), sigmoid(g[:, Hd:2 * Hd]), np.tanh(g[:, 2 * Hd:3 * Hd]), sigmoid(g[:, 3 * Hd:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval().double()


def test_audio_encoder(speech):
    enc = randomize(AudioEncoder(latent_dim=24), 1)
    windows = mf.audio_windows(speech)[[3, 40, 77]].double().view(1, 3, 16000)
    ours = P(enc(windows))
    # log-mel (tested against librosa elsewhere) with the encoder's own checkpoint buffers
    mel = P(mf.torch_log_mel(windows.view(3, 16000), enc.melspec.spectrogram.window, enc.melspec.mel_scale.fb))
    assert enc.receptive_field == 101 and mel.shape[-1] == 101
    x = leaky(conv1d(mel, P(enc.convert_dimensions.weight), P(enc.convert_dimensions.bias)))
    for conv, d in zip(enc.convs, [2, 4, 6, 2, 4, 6]):
        y = leaky(conv1d(x, P(conv.weight), P(conv.bias), d))
        crop = (x.shape[-1] - y.shape[-1]) // 2
        x = (x[..., crop:x.shape[-1] - crop] + y) / 2
    assert x.shape[-1] == 1  # exactly one position per 1 s window
    ref = linear(x.mean(-1), enc.code).reshape(1, 3, 24)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_audio_encoder_release_init():
    enc = AudioEncoder()
    for conv in [enc.convert_dimensions, *enc.convs]:
        fan_in, fan_out = conv.weight.shape[1] * conv.weight.shape[2], conv.weight.shape[0] * conv.weight.shape[2]
        bound = (6 / (fan_in + fan_out)) ** 0.5  # Xavier uniform
        assert float(conv.weight.detach().abs().max()) <= bound
        assert float(conv.weight.detach().std()) == pytest.approx(bound / 3 ** 0.5, rel=0.05)
        assert torch.all(conv.bias == 0.01)


@pytest.mark.parametrize("B,T,V", [(1, 1, 7), (2, 5, 11)])
def test_expression_encoder(B, T, V):
    g = torch.Generator().manual_seed(2)
    mean, std = torch.randn(V, 3, generator=g), torch.rand(V, 3, generator=g) + 0.5
    enc = randomize(ExpressionEncoder(latent_dim=9, n_vertices=V, mean=mean, stddev=std, hidden=13, bottleneck=6), 3)
    geom = torch.randn(B, T, V, 3, generator=g, dtype=torch.float64)
    x = ((P(geom) - P(mean)) / P(std)).reshape(B, T, V * 3)
    for layer in enc.layers:
        x = leaky(linear(x, layer))
    ref = linear(lstm(x, enc.lstm, 0), enc.code)
    np.testing.assert_allclose(P(enc(geom)), ref, rtol=1e-9, atol=1e-9)


def test_expression_encoder_offset_input():
    """input="offset" reads (geom - template) / std: the released input of geom - template + mean, and a
    template is required with the right shape."""
    V, g = 7, torch.Generator().manual_seed(5)
    mean, std = torch.randn(V, 3, generator=g), torch.rand(V, 3, generator=g) + 0.5
    released = randomize(ExpressionEncoder(latent_dim=9, n_vertices=V, mean=mean, stddev=std, hidden=13,
                                           bottleneck=6), 3)
    offset = ExpressionEncoder(latent_dim=9, n_vertices=V, mean=mean, stddev=std, hidden=13, bottleneck=6,
                               input="offset")
    offset.load_state_dict(released.state_dict())
    geom = torch.randn(2, 5, V, 3, generator=g, dtype=torch.float64)
    template = torch.randn(2, V, 3, generator=g, dtype=torch.float64)
    ref = P(released.double()(geom - template[:, None] + mean.double()))
    np.testing.assert_allclose(P(offset.double()(geom, template)), ref, rtol=1e-9, atol=1e-9)
    assert not np.allclose(P(released(geom)), ref)  # the template matters
    with pytest.raises(ValueError, match="template is required"):
        offset(geom)
    with pytest.raises(ValueError, match=r"template must have shape \[2, 7, 3\].*got \[1, 7, 3\]"):
        offset(geom, template[:1])
    with pytest.raises(ValueError, match="input must be one of 'mesh', 'offset', got 'identity'"):
        ExpressionEncoder(n_vertices=V, input="identity")


def test_fusion_mlp():
    fus = randomize(FusionMlp(classes=5, heads=3, expression_dim=4, audio_dim=6, hidden=7), 4)
    e, a = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    x = np.concatenate([P(e), P(a)], -1)
    lin = [m for m in fus.mlp if isinstance(m, torch.nn.Linear)]
    x = leaky(linear(leaky(linear(x, lin[0])), lin[1]))
    ref = log_softmax(linear(x, lin[2]).reshape(2, 3, 3, 5))
    np.testing.assert_allclose(P(fus(e, a)), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("B,T", [(1, 1), (3, 7)])
def test_vertex_unet(B, T):
    V, H, C = 9, 3, 5
    g = torch.Generator().manual_seed(5)
    mean, std = torch.randn(V, 3, generator=g), torch.rand(V, 3, generator=g) + 0.5
    unet = randomize(VertexUnet(classes=C, heads=H, n_vertices=V, mean=mean, stddev=std), 6)
    tmpl = torch.randn(B, 1, V, 3, generator=g, dtype=torch.float64)
    codes = torch.nn.functional.one_hot(torch.randint(0, C, (B, T, H), generator=g), C).double()
    x = ((P(tmpl) - P(mean)) / P(std)).reshape(B, 1, V * 3).repeat(T, axis=1)
    skips = []
    for layer in unet.encoder:
        skips = [x] + skips
        x = leaky(linear(x, layer))
    x = leaky(linear(np.concatenate([x, P(codes).reshape(B, T, H * C)], -1), unet.fusion))
    x = lstm(lstm(x, unet.temporal, 0), unet.temporal, 1)
    for layer, skip in zip(unet.decoder, skips):
        x = skip + leaky(linear(x, layer))
    ref = (x + P(unet.vertex_bias)).reshape(B, T, V, 3) * P(std) + P(mean)
    np.testing.assert_allclose(P(unet(tmpl, codes)), ref, rtol=1e-9, atol=1e-9)


def context_reference(cm, one_hot, audio):
    """Teacher-forced prior, one (t, head) at a time with explicit head masks built here: the embedding
    reads strictly earlier heads of the same step; the later layers too ("released") or the same head as
    well ("inclusive")."""
    B, T, H, C = one_hot.shape
    hidden, own = cm.hidden, int(cm.head_masks == "inclusive")

    def layer_out(layer, x, t, h, ch_in, ch_out, with_audio, dilation):
        rows = slice(h * ch_out, (h + 1) * ch_out)
        w = P(layer.masked_linear.weight)[rows, :, 0]
        visible = np.arange(H * ch_in) // ch_in < h + (0 if layer is cm.embedding else own)
        y = P(layer.masked_linear.bias)[rows] + x[:, t][:, visible] @ w[:, visible].T
        if with_audio:
            y = y + audio[:, t] @ P(layer.unmasked_linear.weight)[rows, :, 0].T + P(layer.unmasked_linear.bias)[rows]
            wh = P(layer.historic.weight)[rows]
            y = y + P(layer.historic.bias)[rows]
            for tap, lag in ((1, 1), (0, 1 + dilation)):  # tap 1 reads t-1, tap 0 reads t-1-dilation
                if t - lag >= 0:
                    y = y + x[:, t - lag] @ wh[:, :, tap].T
        return y

    x = P(one_hot).reshape(B, T, H * C)
    acts = []
    specs = [(cm.embedding, C, hidden, False, 0)] + [(l, hidden, hidden, True, d) for l, d in
                                                      zip(cm.context_layers, [1, 2, 4, 8])]
    for layer, ci, co, aud, d in specs:
        y = np.zeros((B, T, H * co))
        for t in range(T):
            for h in range(H):
                y[:, t, h * co:(h + 1) * co] = layer_out(layer, x, t, h, ci, co, aud, d)
        x = leaky(y) if aud else y
        acts.append(x)
    logits = np.zeros((B, T, H, C))
    for t in range(T):
        for h in range(H):
            logits[:, t, h] = layer_out(cm.logits, x, t, h, hidden, C, False, 0)
    return log_softmax(logits)


@pytest.mark.parametrize("head_masks", ["released", "inclusive"])
@pytest.mark.parametrize("B,T", [(1, 1), (2, 23)])
def test_context_model_teacher_forced(B, T, head_masks):
    H, C, A = 3, 5, 4
    cm = randomize(ContextModel(classes=C, heads=H, audio_dim=A, hidden=6, head_masks=head_masks), 7)
    assert cm.receptive_field() == 20
    g = torch.Generator().manual_seed(8)
    codes = torch.nn.functional.one_hot(torch.randint(0, C, (B, T, H), generator=g), C).double()
    audio = torch.randn(B, T, A, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(P(cm(codes, audio)), context_reference(cm, codes, P(audio)), rtol=1e-9, atol=1e-9)


def test_context_model_is_causal():
    """Changing the code at (t, h) changes no log-probability at an earlier step or earlier head.

    Every one of the six layers masks strictly earlier heads, so within a step the dependence moves
    one head per layer: the log-probabilities of head j see this step's codes of heads < j - 5 only
    (a property of the released model)."""
    H, C = 9, 3
    cm = randomize(ContextModel(classes=C, heads=H, audio_dim=2, hidden=5), 9)
    g = torch.Generator().manual_seed(10)
    codes = torch.nn.functional.one_hot(torch.randint(0, C, (1, 40, H), generator=g), C).double()
    audio = torch.randn(1, 40, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        base = cm(codes, audio)
    t, h = 12, 1
    changed = codes.clone()
    changed[0, t, h] = changed[0, t, h].roll(1)
    with torch.no_grad():
        diff = (cm(changed, audio) - base).abs().amax(-1)[0]  # [T, H]
    assert float(diff[:t].max()) == 0
    assert float(diff[t, :h + 6].max()) == 0 and float(diff[t, h + 6:].min()) > 0
    assert float(diff[t + 20:].max()) == 0  # receptive field of 20 steps
    assert float(diff[t + 19].max()) > 0


def test_released_masks_give_head_0_one_distribution_and_inclusive_masks_its_history():
    """With the released masks head 0's log-probabilities are its logits' bias at every step, whatever
    the codes and the audio (its samples are independent from frame to frame); with "inclusive" masks
    they follow the earlier steps' codes, and a change at (t, h) still reaches no earlier step, nor this
    step's heads <= h, and reaches every later head of the step (none is 6 heads away any more)."""
    H, C, T = 9, 3, 40
    g = torch.Generator().manual_seed(12)
    codes = torch.nn.functional.one_hot(torch.randint(0, C, (1, T, H), generator=g), C).double()
    audio = torch.randn(1, T, 2, generator=g, dtype=torch.float64)
    released = randomize(ContextModel(classes=C, heads=H, audio_dim=2, hidden=5), 9)
    inclusive = randomize(ContextModel(classes=C, heads=H, audio_dim=2, hidden=5, head_masks="inclusive"), 9)
    with torch.no_grad():
        head0 = released(codes, audio)[0, :, 0]
        assert torch.equal(head0, head0[:1].expand(T, -1))
        base = inclusive(codes, audio)
        assert float((base[0, 1:, 0] - base[0, :1, 0]).abs().max()) > 1e-3
        t, h = 12, 1
        changed = codes.clone()
        changed[0, t, h] = changed[0, t, h].roll(1)
        diff = (inclusive(changed, audio) - base).abs().amax(-1)[0]  # [T, H]
    assert float(diff[:t].max()) == 0
    assert float(diff[t, :h + 1].max()) == 0 and float(diff[t, h + 1:].min()) > 0
    assert float(diff[t + 1, 0]) > 0  # head 0 reads the step before
    assert float(diff[t + 20:].max()) == 0 and float(diff[t + 19].max()) > 0


def test_head_masks_refuse_unknown_values():
    with pytest.raises(ValueError, match=r"head_masks must be one of \('released', 'inclusive'\), got 'B'"):
        ContextModel(classes=3, heads=2, audio_dim=2, hidden=4, head_masks="B")
    with pytest.raises(ValueError, match="prior_head_masks must be one of 'released', 'inclusive', got 'pixelcnn'"):
        mf.MeshTalkConfig(prior_head_masks="pixelcnn").validate()


def test_quantize_straight_through():
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    logprobs = torch.randn(2, 3, 4, 6, dtype=torch.float64).log_softmax(-1).requires_grad_()
    out = mf.quantize(logprobs, generator=g1)
    u = torch.rand(logprobs.shape, generator=g2, dtype=torch.float64).clamp(1e-10, 1)
    noisy = logprobs.detach() - torch.log(-torch.log(u))
    assert torch.equal(out.detach(), torch.nn.functional.one_hot(noisy.argmax(-1), 6).double())
    w = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * w).sum(), logprobs)
    soft = torch.softmax(noisy, -1)
    expected = soft * (w - (soft * w).sum(-1, keepdim=True))  # softmax Jacobian-vector product
    torch.testing.assert_close(grad, expected)
    hard = mf.quantize(logprobs.detach(), argmax=True)
    assert torch.equal(hard, torch.nn.functional.one_hot(logprobs.detach().argmax(-1), 6).double())


def test_audio_encoder_stream_framing(speech):
    """Streaming framing reads the conv stack at one position per frame of the utterance's mel: each
    output equals the encoder on exactly the 101 mel frames of that position."""
    from meshtalk_fast.ops.frame_clock import STREAM_PAD, stream_mel_frames, stream_positions

    enc = randomize(AudioEncoder(latent_dim=12), 12)
    audio = speech[:16000 + 2345].double()
    for clock, lookahead in [("released", 8000), ("exact", 0), ("exact", 16000), ("exact", 4321)]:
        T = mf.num_frames(audio.shape[0], 30, clock)
        pos = stream_positions(T, 30, clock, lookahead)
        mel = mf.torch_log_mel(torch.nn.functional.pad(audio, (STREAM_PAD, STREAM_PAD)))[None]
        assert mel.shape[-1] == stream_mel_frames(audio.shape[0])
        assert int(pos.min()) >= 0 and int(pos.max()) <= mel.shape[-1] - 101
        out = enc.encode_stream(mel, pos)
        for k in (0, T // 2, T - 1):
            p = int(pos[k])
            np.testing.assert_allclose(P(out[0, k]), P(enc.encode_mel(mel[..., p:p + 101])[0]), rtol=1e-10, atol=1e-10)
        # the window centre it stands for is within 80 samples (half a hop) of the frame's window centre
        centre = mf.ops.frame_clock.frame_centres(T, 30, clock) + lookahead - 8000
        assert int(((pos + 50) * 160 - STREAM_PAD - centre).abs().max()) <= 80
