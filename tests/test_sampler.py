"""The reference sampler: self-consistency with the teacher-forced prior, batching, randomness."""
import pytest
import torch

import meshtalk_fast as mf


def small_model(seed=0, heads=16, classes=128):
    torch.manual_seed(seed)
    model = mf.MeshTalk(30, heads=heads, classes=classes).eval()
    with torch.no_grad():  # sharper distributions than the init so argmax is well separated
        for p in model.context_model.parameters():
            p.mul_(3.0)
    return model


@pytest.mark.parametrize("B", [1, 3])
def test_argmax_sample_is_self_consistent(B):
    model = small_model()
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
