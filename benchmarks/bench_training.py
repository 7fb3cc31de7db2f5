"""Stage-1 training throughput: one optimizer step (encoders + decoder, the four released loss terms,
forward + backward), the losses through the fused Triton kernel vs the PyTorch reference, same inputs,
with the trainer's bf16 autocast on and off (autocast is CUDA-only in the trainer, so "on" skips on
the CPU).

``MESHTALK_BENCH_SIZE=full``: the released sizes (V=6172, H=16, C=128, batch 8 x 32 frames); the
default "smoke" size is tiny. ``extra_info["frames"]`` gives frames per step for frames/s.
"""
import os

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.training.objectives import Stage1Objective
from common import device_label, skip_triton_without_gpu

FULL = os.environ.get("MESHTALK_BENCH_SIZE", "smoke") == "full"
SIZE = dict(V=6172, H=16, C=128, B=8, T=32) if FULL else dict(V=60, H=4, C=8, B=2, T=3)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def step_inputs():
    """One setup for both loss backends: objective, optimizer and a batch on DEVICE."""
    torch.manual_seed(0)
    V, B, T = SIZE["V"], SIZE["B"], SIZE["T"]
    model = mf.MeshTalk(V, heads=SIZE["H"], classes=SIZE["C"]).to(DEVICE).train()
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(3, V, generator=g)
    objective = Stage1Objective(model.encoder, model.vertex_unet, (masks[0] > 0.9).float(), masks[1], masks[2]).to(DEVICE)
    template = torch.randn(B, V, 3, generator=g)
    batch = dict(template=template.to(DEVICE),
                 geom=(template[:, None] + 0.01 * torch.randn(B, T, V, 3, generator=g)).to(DEVICE),
                 windows=(0.01 * torch.randn(B, T, 16000, generator=g)).to(DEVICE))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return objective, optimizer, batch


@pytest.mark.parametrize("amp", ["fp32", "bf16-autocast"])
@pytest.mark.parametrize("loss_backend", ["torch", "triton"])
def test_stage1_step(benchmark, loss_backend, amp):
    skip_triton_without_gpu(loss_backend, DEVICE)
    if amp != "fp32" and DEVICE != "cuda":
        pytest.skip("needs a CUDA GPU: the trainer's bf16 autocast is CUDA-only (TrainConfig.amp)")
    objective, optimizer, batch = step_inputs()
    objective.loss_backend = loss_backend
    benchmark.group = f"stage-1 step B={SIZE['B']} T={SIZE['T']} V={SIZE['V']} ({device_label(DEVICE)})"
    benchmark.extra_info["frames"] = SIZE["B"] * SIZE["T"]

    def step():
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=amp != "fp32"):  # as Trainer._train_step
            terms = objective(batch["template"], batch["geom"], gen, windows=batch["windows"])
        terms["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return terms["total"].item()  # the trainer reads every step's losses: the step ends synchronised

    loss = benchmark(step)
    assert torch.isfinite(torch.tensor(loss))


def quickstart_step_inputs(decode_rows: bool):
    """The quick start's stage-1 objective (2 expression groups, split eyelid/brow terms, brow term) on
    masks of the released template's proportions (eye keypoints 0.5 %, mouth 12 %, eye 5 %, forehead 23 %
    of the vertices), crops of 16 frames as the quick start's."""
    torch.manual_seed(0)
    V, B, T = SIZE["V"], SIZE["B"], max(SIZE["T"] // 2, 3)
    model = mf.MeshTalk(V, heads=SIZE["H"], classes=SIZE["C"], expression_heads=4 if FULL else 2,
                        expression_input="offset", expression_groups=2, audio_heads="audio").to(DEVICE).train()
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(V, generator=g)

    def mask(lo, hi):
        m = torch.zeros(V)
        m[order[int(lo * V):max(int(hi * V), int(lo * V) + 1)]] = 1.0
        return m

    objective = Stage1Objective(model.encoder, model.vertex_unet, mask(0, 0.005), mask(0.01, 0.13), mask(0.13, 0.18),
                                codes="argmax", diversity=1.0, expression_diversity=0.2, forehead=mask(0.2, 0.43),
                                weights={"landmarks": 20.0, "brow": 20.0, "mouth": 3.0}, upper_face_codes="split",
                                decode_rows=decode_rows).to(DEVICE)
    template = torch.randn(B, V, 3, generator=g)
    # the quick start's streaming framing: one log-mel per crop, the encoder read at one position per frame
    positions = torch.arange(T) * 10 // 3
    batch = dict(template=template.to(DEVICE),
                 geom=(template[:, None] + 0.01 * torch.randn(B, T, V, 3, generator=g)).to(DEVICE),
                 mel=torch.randn(B, 80, int(positions[-1]) + 101, generator=g).to(DEVICE),
                 positions=positions[None].expand(B, -1).to(DEVICE))
    return objective, torch.optim.Adam(model.parameters(), lr=1e-4), batch


@pytest.mark.parametrize("decode_rows", [True, False], ids=["mask-rows", "whole-decodings"])
def test_quickstart_stage1_step(benchmark, decode_rows):
    """The quick start's step with the masked terms decoded on their masks' rows (what the trainer runs) vs
    whole decodings (the reference), same inputs."""
    objective, optimizer, batch = quickstart_step_inputs(decode_rows)
    T = batch["geom"].shape[1]
    benchmark.group = f"quick-start stage-1 step B={SIZE['B']} T={T} V={SIZE['V']} ({device_label(DEVICE)})"
    benchmark.extra_info["frames"] = SIZE["B"] * T

    def step():
        terms = objective(batch["template"], batch["geom"], torch.Generator(device=DEVICE).manual_seed(0),
                          mel=batch["mel"], positions=batch["positions"])
        terms["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return terms["total"].item()

    assert torch.isfinite(torch.tensor(benchmark(step)))


@pytest.fixture
def one_thread_no_flush():
    """One thread (torch's workers keep the denormal mode they were made with; the calling thread's is set
    per case) and denormals back on afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("flush", ["denormals", "flushed"])
def test_stage2_step_of_a_confident_prior(benchmark, one_thread_no_flush, flush):
    """A stage-2 step (the prior, forward + backward + Adam) whose softmax rules classes out as a trained
    prior's does (logits falling by 120 over the classes: the gradient of the loss reaches the logits with
    probabilities / frames down to e^-120 / N, many of them denormal in float32), with denormal floats kept
    (IEEE) vs flushed to zero (``TrainConfig.flush_denormal``, the trainer's default on the CPU), same inputs.
    On one thread, the one whose mode is set here."""
    from meshtalk_fast.training.objectives import Stage2Objective

    torch.manual_seed(0)
    H, C, B, T = SIZE["H"], SIZE["C"], SIZE["B"], SIZE["T"]
    model = mf.MeshTalk(SIZE["V"], heads=H, classes=C).train()
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, C, (B, T, H), generator=g)
    one_hot = torch.nn.functional.one_hot(labels, C).float()
    audio = torch.randn(B, T, 128, generator=g)
    with torch.no_grad():  # every frame's logits fall from class 0 to class C-1 by 120 in all
        model.context_model.logits.masked_linear.bias.view(H, C).add_(torch.linspace(0.0, -120.0, C))
    objective = Stage2Objective(model.context_model)
    optimizer = torch.optim.Adam(model.context_model.parameters(), lr=1e-4)
    torch.set_flush_denormal(flush == "flushed")
    benchmark.group = f"stage-2 step, confident prior, 1 thread, B={B} T={T} H={H} C={C} (cpu)"
    benchmark.extra_info["frames"] = B * T

    def step():
        terms = objective(one_hot, audio)
        terms["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return terms["total"].item()

    assert torch.isfinite(torch.tensor(benchmark(step)))
