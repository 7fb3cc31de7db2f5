"""The MeshTalk object end to end on the real template and recording, and its argument checks."""
import pytest
import torch

import meshtalk_fast as mf


@pytest.fixture(scope="module")
def model(assets):
    import numpy as np

    mean = torch.from_numpy(np.load(assets / "face_mean.npy"))
    std = torch.from_numpy(np.load(assets / "face_std.npy"))
    torch.manual_seed(0)
    return mf.MeshTalk(6172, mean=mean, stddev=std).eval()


def test_speech_to_meshes(model, speech, template, assets):
    windows = mf.audio_windows(speech[:16000 * 2])[None]  # 2 s of the real sentence
    T = windows.shape[1]
    with torch.no_grad():
        audio_code = model.encode_audio(windows)
        one_hot = model.sample(audio_code, generator=torch.Generator().manual_seed(0))
        geom = model.decode(template, one_hot)
        batched = model.decode(template[None].expand(2, -1, -1), one_hot.expand(2, -1, -1, -1))
    assert audio_code.shape == (1, T, 128) and one_hot.shape == (1, T, 16, 128) and geom.shape == (1, T, 6172, 3)
    torch.testing.assert_close(batched[1], geom[0], rtol=1e-5, atol=1e-5)
    smoothed = mf.post_smooth(geom[0], mf.load_mask(assets / "forehead_mask.txt", 6172),
                              mf.load_mask(assets / "neck_mask.txt", 6172))
    assert smoothed.shape == (T, 6172, 3) and torch.isfinite(smoothed).all()


def test_training_forward_is_differentiable(model, speech, template):
    windows = mf.audio_windows(speech[:16000])[None, :4]
    geom = template.expand(1, 4, -1, -1) + 0.01 * torch.randn(1, 4, 6172, 3)
    logprobs = model.fuse(model.encode_expression(geom), model.encode_audio(windows))
    one_hot = model.quantize(logprobs)
    recon = model.decode(template, one_hot)
    loss = torch.mean((recon - geom) ** 2)
    loss.backward()
    assert model.encoder.expression_encoder.layers[0].weight.grad.abs().sum() > 0
    assert model.encoder.audio_encoder.convs[0].weight.grad.abs().sum() > 0
    model.zero_grad()


def test_argument_errors(model):
    one_hot = torch.zeros(1, 2, 16, 128)
    with pytest.raises(ValueError, match=r"template must have shape \[V, 3\] or \[B, V, 3\] with V == 6172, "
                                         r"got \[5023, 3\]"):
        model.decode(torch.zeros(5023, 3), one_hot)
    with pytest.raises(ValueError, match=r"template batch must be 1 or B=1"):
        model.decode(torch.zeros(3, 6172, 3), one_hot)
    with pytest.raises(ValueError, match=r"one_hot must have shape \[\*, \*, 16, 128\]"):
        model.decode(torch.zeros(6172, 3), torch.zeros(1, 2, 8, 128))
    with pytest.raises(ValueError, match=r"windows must have shape \[\*, \*, 16000\]"):
        model.encode_audio(torch.zeros(1, 2, 8000))
    with pytest.raises(ValueError, match=r"geom must have shape \[\*, \*, 6172, 3\]"):
        model.encode_expression(torch.zeros(1, 2, 6171, 3))
    with pytest.raises(ValueError, match="must agree in"):
        model.fuse(torch.zeros(1, 3, 128), torch.zeros(1, 2, 128))
    with pytest.raises(ValueError, match=r"one_hot and audio_code must agree"):
        model.context_logprobs(torch.zeros(1, 3, 16, 128), torch.zeros(1, 2, 128))
    with pytest.raises(TypeError, match="unknown MeshTalk config keys"):
        mf.MeshTalk(10, hiden=3)
    with pytest.raises(ValueError, match="heads must be an integer"):
        mf.MeshTalk(10, heads=0)
    with pytest.raises(ValueError, match=r"mean must have shape \[10, 3\]"):
        mf.MeshTalk(10, mean=torch.zeros(11, 3))
    with pytest.raises(ValueError, match="stddev must be > 0"):
        mf.MeshTalk(10, stddev=torch.zeros(10, 3))
