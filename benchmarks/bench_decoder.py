"""Decoder benchmarks (op "decode"): the VertexUnet decoder, the reference (PyTorch) and the C++ core ("cpp") in
the same groups on the same inputs; sizes as bench_sampler.py (``MESHTALK_BENCH_SIZE=full``: V=6172, T=90).
Run: ``MESHTALK_BENCH_SIZE=full python -m pytest benchmarks/bench_decoder.py --benchmark-enable``.
"""
import pytest
import torch

from bench_sampler import FULL, SIZE, make_model
from common import require_backend

DECODE_BATCHES = [32] if FULL else [2]


def decode_inputs(B: int):
    """One setup for every decoder backend: model, template [V, 3], one-hot codes [B, T, H, C]."""
    g = torch.Generator().manual_seed(B)
    labels = torch.randint(0, SIZE["C"], (B, SIZE["T"], SIZE["H"]), generator=g)
    return make_model(), torch.randn(SIZE["V"], 3, generator=g), torch.nn.functional.one_hot(labels, SIZE["C"]).float()


@pytest.mark.parametrize("B", DECODE_BATCHES)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_decode(benchmark, backend, B):
    model, template, one_hot = decode_inputs(B)
    benchmark.group = f"decode B={B} T={SIZE['T']} V={SIZE['V']}"
    benchmark.extra_info["frames"] = B * SIZE["T"]
    with torch.no_grad():  # the cpp backend computes no gradients: it runs outside grad mode
        require_backend("decode", backend)
        run = lambda: model.decode(template, one_hot, backend=backend)  # noqa: E731
        run()  # warm-up, as for the sampler
        out = benchmark(run)
    assert out.shape == (B, SIZE["T"], SIZE["V"], 3)
