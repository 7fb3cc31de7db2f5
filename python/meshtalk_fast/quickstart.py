"""The quick start: make the built-in data set, train both stages in a time budget, evaluate on
held-out sentences and a held-out voice, animate a held-out utterance, write everything to one folder.

``meshtalk-fast quickstart --out DIR [--minutes N] [--template T.obj --masks DIR]``

Outputs: ``DIR/data/`` (the data set), ``DIR/model.safetensors``, ``DIR/metrics.json`` (``lve``,
``lve_static``, ``fdd``, the disentanglement numbers, ``code_sensitivity``), ``DIR/metrics.jsonl`` +
``training_curves.png`` (the training log), ``DIR/checkpoint.safetensors`` (resumable) and ``DIR/heldout/``
(the animated held-out utterance: ``meshes.npz``, plus the other export formats when available).
A warning is printed when the codes collapsed (code sensitivity below ``COLLAPSED``): then the LVE
gain is a mean pose, not lip-sync (benchmarks/RESULTS.md, "Why the codes collapse").
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional

import torch

from .meshtalk import MeshTalk
from .training import TrainConfig, align
from .training.batches import Clip

__all__ = ["quickstart", "quickstart_config", "normalisation"]

# Budget split of the training time between the two stages (the rest of the quick start, data and
# evaluation, comes on top and takes about a minute on a 2-core CPU).
STAGE1_SHARE = 0.65
# Below this code sensitivity (evaluate.code_sensitivity) the quick start warns that the codes collapsed:
# with the released stage-1 choices the 8-minute quick-start model measured 0.0, a freshly initialised one
# 7e-4, with quickstart_config's 0.67 (RESULTS.md); a face that moves with its codes as much as the real
# face measures about 1.
COLLAPSED = 0.05


def quickstart_config(seed: int = 0) -> TrainConfig:
    """The released configuration, with what a 10-minute CPU budget needs (each measured in
    benchmarks/RESULTS.md, "What makes the codes train"):

    - the authors' lr (1e-3 rather than the release's 1e-4), shorter crops, the drift-free frame clock and
      the streaming framing of the audio encoder (one log-mel per utterance: ~10x less encoder work);
    - argmax codes in stage 1 (``stage1.codes``): at initialisation the Gumbel noise swamps the logits, so
      sampled codes are noise the decoder learns to ignore;
    - the identity-free expression input (``model.expression_input = "offset"``);
    - the code-usage term (``stage1.diversity``, weight 1), without which the modality-crossing terms
      push every frame to one class within ~150 steps (at weight 0.1 the same happened at step ~920);
    - no weight decay on the decoder: under Adam it shrinks the code columns (each used by a few frames)
      to zero within ~100 steps at this lr;
    - a cosine lr schedule (to 10 %) over each stage's share of the budget: at a constant 1e-3, stage 1
      diverged at step ~1000.
    """
    cfg = TrainConfig(seed=seed)
    cfg.model.clock, cfg.model.framing, cfg.model.expression_input = "exact", "stream", "offset"
    cfg.stage1.lr, cfg.stage1.batch_size, cfg.stage1.segment_frames = 1e-3, 8, 16
    cfg.stage1.codes, cfg.stage1.diversity, cfg.stage1.weight_decay = "argmax", 1.0, 0.0
    cfg.stage1.schedule = cfg.stage2.schedule = "cosine"  # over the time budget (Trainer._lr)
    cfg.stage2.lr, cfg.stage2.batch_size, cfg.stage2.segment_frames = 1e-3, 8, 32
    cfg.stage1.steps = cfg.stage2.steps = 1_000_000  # the time budget ends each stage
    cfg.log_every, cfg.val_every, cfg.checkpoint_every = 10, 100, 100
    return cfg.validate()


def normalisation(clips: List[Clip]) -> tuple:
    """Per-vertex mean and standard deviation ``[V, 3]`` over all training frames (std floored at 1 %
    of its median so vertices that never move do not blow up)."""
    frames = torch.cat([c.geom for c in clips])
    mean, std = frames.mean(0), frames.std(0)
    return mean, std.clamp(min=0.01 * float(std.median()) + 1e-8)


def _clips(sequences, config: TrainConfig) -> List[Clip]:
    return [align(s.name, s.template, s.geom, s.audio, config.model.fps, config.model.clock) for s in sequences]


def quickstart(out_dir: str, minutes: float = 10.0, template: Optional[str] = None, masks: Optional[str] = None,
               seed: int = 0, n_sentences: Optional[int] = None, device: Optional[str] = None,
               progress: bool = True) -> Dict[str, float]:
    from .data import load_folder_masks, load_masks, make_dataset, read_folder
    from .evaluate import animate_clip, code_sensitivity, disentanglement, evaluate
    from .training.trainer import Trainer, TrainingMasks

    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if (template is None) != (masks is None):
        raise ValueError("--template and --masks go together: a user template needs its mask folder")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    data_dir = os.path.join(out_dir, "data")
    kwargs = dict(seed=seed, n_sentences=n_sentences)
    if template is not None:
        kwargs.update(template=template, masks=load_masks(masks))
    if not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        print(f"making the built-in data set in {data_dir} ...", flush=True)
        make_dataset(data_dir, progress=False, **kwargs)
    config = quickstart_config(seed)
    train = _clips(read_folder(data_dir, "train", mmap=False), config)
    val = _clips(read_folder(data_dir, "val", mmap=False), config)
    test = _clips(read_folder(data_dir, "test", mmap=False), config)
    fm = load_folder_masks(data_dir)
    masks_t = TrainingMasks(fm.mouth, fm.eye, fm.eye_keypoints, fm.lips, fm.upper_face)
    mean, std = normalisation(train)
    torch.manual_seed(config.seed)  # the initial weights come from the seed (cli_train does the same)
    model = MeshTalk(train[0].template.shape[0], mean=mean, stddev=std, **config.model_kwargs())
    print(f"data: {len(train)} train, {len(val)} val, {len(test)} test sequences; "
          f"{train[0].template.shape[0]} vertices ({time.perf_counter() - t_start:.0f} s)", flush=True)
    trainer = Trainer(model, train, masks_t, config, out_dir, val_clips=val[:4], device=device, progress=progress)
    budget = 60.0 * minutes
    trainer.fit(1, max_seconds=STAGE1_SHARE * budget)
    trainer.fit(2, max_seconds=(1 - STAGE1_SHARE) * budget)
    model = trainer.model.cpu().eval()

    result = evaluate(model, test, fm.lips, fm.upper_face, mode="audio", seed=seed)
    swap = disentanglement(model, test[0], next(c for c in test[1:] if c.name != test[0].name), fm.mouth,
                           fm.upper_face)
    metrics = {"lve": result["lve"], "lve_static": result["lve_static"], "fdd": result["fdd"],
               "lve_ratio": result["lve"] / result["lve_static"], "test_frames": result["frames"],
               "disentanglement_expression": swap["expression_ratio"], "disentanglement_audio": swap["audio_ratio"],
               "code_sensitivity": code_sensitivity(model, test),
               **{f"swap_{k}": v for k, v in swap.items() if not k.endswith("ratio")},
               "stage1_steps": None, "stage2_steps": trainer.step, "minutes": minutes,
               "seconds_total": time.perf_counter() - t_start}
    log = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    metrics["stage1_steps"] = max((r["step"] for r in log if r["stage"] == 1 and r["split"] == "train"), default=0)

    held = test[-1]
    geom = animate_clip(model, held, seed=seed)
    heldout_dir = os.path.join(out_dir, "heldout")
    os.makedirs(heldout_dir, exist_ok=True)
    _write_heldout(heldout_dir, held, geom, data_dir, model)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    verdict = "yes" if metrics["lve_ratio"] <= 0.5 else "NO"
    print(f"held-out LVE {metrics['lve']:.4g} vs {metrics['lve_static']:.4g} for the unmoving template "
          f"(ratio {metrics['lve_ratio']:.3f}; at most half: {verdict}); FDD {metrics['fdd']:.4g}\n"
          f"disentanglement: swapping expression codes changes the upper face "
          f"{metrics['disentanglement_expression']:.2f}x more than the mouth; swapping audio changes the mouth "
          f"{metrics['disentanglement_audio']:.2f}x more than the upper face\n"
          f"wrote {out_dir}/model.safetensors, metrics.json, training_curves.png, heldout/", flush=True)
    if metrics["code_sensitivity"] < COLLAPSED:
        print(f"WARNING: the decoded face hardly depends on the codes (code sensitivity "
              f"{metrics['code_sensitivity']:.3f}; about 1 when it moves as much as the real face): the codes "
              f"collapsed in stage 1, so the LVE gain is a mean pose rather than lip-sync. A longer budget "
              f"(--minutes) or another seed may help; see benchmarks/RESULTS.md, 'Why the codes collapse'.",
              flush=True)
    return metrics


def _write_heldout(folder: str, clip: Clip, geom: torch.Tensor, data_dir: str, model: MeshTalk) -> None:
    """The animated held-out utterance: meshes.npz always; glb/mp4 through the export module."""
    import numpy as np

    from .data import load_folder_template

    faces = load_folder_template(data_dir)[1]
    from ._tempfiles import temp_path

    with temp_path(folder, "meshes", suffix=".npz") as tmp:
        np.savez(tmp, vertices=geom.numpy(), faces=faces.numpy(), fps=model.config.fps,
                 ground_truth=clip.geom.numpy())
        os.replace(tmp, os.path.join(folder, "meshes.npz"))
    import soundfile as sf

    sf.write(os.path.join(folder, "speech.wav"), clip.audio.numpy(), 16000)
