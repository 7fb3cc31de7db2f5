"""``meshtalk-fast`` subcommands for data, training and evaluation.

  make-dataset   write the built-in SpeechFace data set in the plain folder format
  train          train stage 1 (encoders + decoder) or stage 2 (the prior) on a plain-folder data set;
                 ``torchrun --nproc_per_node N -m meshtalk_fast.cli train ...`` runs it data-parallel
  evaluate       LVE (both conventions), FDD, disentanglement and upper-face numbers of a model on a split
  quickstart     make a small data set, train both stages in a time budget, evaluate, animate
"""
from __future__ import annotations

import atexit
import json
import os

__all__ = ["add_parsers"]


def _make_dataset(args) -> int:
    from ..data import make_dataset
    from ..training.setup import dataset_options

    kwargs, _ = dataset_options(args.seed, args.sentences, args.template, args.masks, args.rig, args.rig_map,
                                faces_per_voice=args.faces_per_voice)
    info = make_dataset(args.out, overwrite=args.overwrite, progress=True, **kwargs)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in info["splits"].items()))
    return 0


def _setup_distributed():
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(_teardown_distributed)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


def _teardown_distributed():
    """The process group ``_setup_distributed`` made, torn down at exit (every rank leaves ``Trainer.fit``
    together, so none is left waiting on a collective)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _train(args) -> int:
    import torch

    from ..models.meshtalk import MeshTalk
    from ..training.quickstart import initial_model
    from ..training import load_config
    from ..training.setup import folder_clips, folder_masks, has_split, training_masks
    from ..training.trainer import Trainer, flush_denormals

    config = load_config(args.config)
    device = _setup_distributed() or args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    flush_denormals(config, device)  # before any torch work, so torch's worker threads inherit it
    train = folder_clips(args.data, "train", config)
    val = folder_clips(args.data, "val", config) if has_split(args.data, "val") else []
    fm = folder_masks(args.data)
    masks = training_masks(fm)
    if args.model:
        model = MeshTalk.load(args.model)
    elif args.stage == 2 and not args.resume:
        raise ValueError("--stage 2 needs --model (the stage-1 model.safetensors) or --resume")
    else:
        model = initial_model(train, config, fm.upper_face, (fm.eye, fm.forehead))
    trainer = Trainer(model, train, masks, config, args.out, val_clips=val[:8], device=device)
    if args.resume:
        trainer.resume(args.resume)
    trainer.fit(args.stage, max_seconds=None if args.minutes is None else 60 * args.minutes)
    if trainer.rank == 0:
        print(f"wrote {os.path.join(args.out, 'model.safetensors')} (stage {args.stage}, step {trainer.step})")
    return 0


def _evaluate(args) -> int:
    from ..evaluation.evaluate import format_report, report
    from ..models.meshtalk import MeshTalk
    from ..training.setup import folder_clips, folder_masks, has_split

    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    model = MeshTalk.load(args.model).eval()
    clips = folder_clips(args.data, args.split, model.config)
    known = None  # the training faces, so the upper-face errors are also given on known and new faces apart
    reference = None  # the training split, whose event rates are counted from ~10x more events than held-out clips
    if args.split != "train" and os.path.isdir(os.path.join(args.data, "train")):
        from ..data.folder import folder_templates

        known = folder_templates(args.data, "train") or None
        reference = folder_clips(args.data, "train", model.config) or None
    if args.rate_splits is None:  # as the quick start: every held-out split, validation and test
        held_out = ("val", "test") if args.split != "train" else ()
        rate_splits = [args.split] + [s for s in held_out if s != args.split and has_split(args.data, s)]
    else:
        rate_splits = [s.strip() for s in args.rate_splits.split(",") if s.strip()]
        if not rate_splits:
            raise ValueError(f"--rate-splits must name at least one split, got {args.rate_splits!r}")
        if len(set(rate_splits)) != len(rate_splits):
            raise ValueError(f"--rate-splits must name each split once (its events would count twice), got "
                             f"{args.rate_splits!r}")
        for s in rate_splits:
            if not has_split(args.data, s):
                raise ValueError(f"--rate-splits names split {s!r}, which {args.data} does not have")
    rate_clips = [c for s in rate_splits for c in (clips if s == args.split else
                                                   folder_clips(args.data, s, model.config))]
    result = report(model, clips, folder_masks(args.data), mode=args.mode, seed=args.seed,
                    seeds=tuple(range(args.seed, args.seed + args.samples)), known_faces=known,
                    reference_clips=reference, rate_clips=rate_clips, post_smoothed=not args.no_smoothing)
    result["rate_splits"] = rate_splits
    text = json.dumps(result, indent=1)
    if args.out:
        tmp = f"{args.out}.tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.out)
    print(text)
    print(format_report(result))
    return 0


def _calibrate(args) -> int:
    from ..models.meshtalk import MeshTalk
    from ..training.calibrate import calibrate_free_heads
    from ..training.setup import folder_clips

    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    model = MeshTalk.load(args.model)
    clips = folder_clips(args.data, args.split, model.config)
    print(f"calibrating the prior's free heads on {len(clips)} {args.split} sequences ({args.steps} steps) ...",
          flush=True)
    records = calibrate_free_heads(model, clips, args.steps, seed=args.seed,
                                   log=lambda r: print(f"  pass {r['pass']}: total variation {r['total_variation']} "
                                                       f"({r['seconds']:.1f} s)", flush=True))
    model.save(args.out)
    print(f"wrote {args.out} (total variation {records[0]['total_variation_mean']:.3f} -> "
          f"{records[-1]['total_variation_mean']:.3f})")
    return 0


def _quickstart(args) -> int:
    from ..training.quickstart import quickstart

    quickstart(args.out, minutes=args.minutes, template=args.template, masks=args.masks, seed=args.seed,
               n_sentences=args.sentences, device=args.device, rig=args.rig, rig_map=args.rig_map,
               audio_context_ms=args.audio_context_ms, faces_per_voice=args.faces_per_voice)
    return 0


def _rig_arguments(p) -> None:
    p.add_argument("--rig", help="an ARKit-named blendshape rig (.glb/.gltf morph targets or .npz; at least jawOpen, "
                                 "eyeBlinkLeft, eyeBlinkRight) driven by the speech curves: the data set's meshes "
                                 "are that rig's (masks derived from its shapes unless --masks)")
    p.add_argument("--rig-map", help="mapping file {\"rig target\": \"ARKit name\"} for a rig named otherwise")


def add_parsers(sub) -> None:
    p = sub.add_parser("make-dataset", help="write the built-in SpeechFace data set (plain folder format)")
    p.add_argument("--out", required=True)
    p.add_argument("--sentences", type=int, default=None, help="use the first N built-in sentences (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", help="a user template OBJ (default: procedural faces)")
    p.add_argument("--masks", help="the template's (or rig's) mask folder")
    _rig_arguments(p)
    p.add_argument("--faces-per-voice", type=int, default=None,
                   help="procedural faces per voice (default 1): sentence s is spoken with face s %% N")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=_make_dataset)

    p = sub.add_parser("train", help="train stage 1 or 2 on a plain-folder data set")
    p.add_argument("--data", required=True)
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="TOML config (default: the released values)")
    p.add_argument("--model", help="start from this model.safetensors (stage 2: the stage-1 model)")
    p.add_argument("--resume", help="continue from a checkpoint.safetensors bit for bit")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--device", default=None)
    p.set_defaults(fn=_train)

    p = sub.add_parser("evaluate", help="LVE, FDD and disentanglement of a model on a split")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--mode", choices=("audio", "reconstruct"), default="audio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=3,
                   help="sampled animations per sequence for the blink and brow rates (seeds seed, seed+1, ...)")
    p.add_argument("--rate-splits", default=None,
                   help="comma-separated splits the blink and brow rates are counted over (default: --split and "
                        "the other held-out split, as the quick start: val and test hold twice the events of one)")
    p.add_argument("--no-smoothing", action="store_true",
                   help="count the rates on the decoder's raw output instead of the post-smoothed animation "
                        "`animate` writes")
    p.add_argument("--out", help="also write the numbers to this JSON file")
    p.set_defaults(fn=_evaluate)

    p = sub.add_parser("calibrate", help="calibrate a trained prior's free heads to the training codes "
                                         "(stage2.prior_calibration, for a model trained without it)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train", help="the clips whose codes are the target (default: train)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the calibrated model file (may be --model itself)")
    p.set_defaults(fn=_calibrate)

    p = sub.add_parser("quickstart", help="data set + both stages + evaluation + animation in a time budget")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--template")
    p.add_argument("--masks")
    _rig_arguments(p)
    p.add_argument("--sentences", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--audio-context-ms", type=int, choices=(1000, 600), default=1000,
                   help="audio per frame (model.audio_context_ms): 1000 (released, look-ahead 500 ms) or 600 "
                        "(the seed's 600 ms window, look-ahead 300 ms)")
    p.add_argument("--faces-per-voice", type=int, default=None,
                   help="procedural faces per voice in the data set (default 4; 1 is the data set of one face per "
                        "voice; must be 1 with --template or --rig)")
    p.set_defaults(fn=_quickstart)
