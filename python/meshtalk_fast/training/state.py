"""Training checkpoints: model + optimizer + step + RNG state in one safetensors file.

Written atomically (``atomic_save_file``): a kill during the write leaves the last good checkpoint.
Tensors live under ``model.*``, ``optim.<param index>.<name>``, ``ema.<param index>`` (the averaged weights of
``stage{N}.ema``, when on) and ``rng.torch``; the rest (configs, stage, step, the optimizer's
hyper-parameters, the trainer's own state such as stage 1's lock watch under ``extra``) is JSON in the metadata.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

import torch

from ..models.checkpoint import CheckpointError, atomic_save_file, check_state, inspect_model_file, saved_state
from ..models.meshtalk import MeshTalk

__all__ = ["save_train_state", "load_train_state", "TRAIN_FORMAT"]

TRAIN_FORMAT = "meshtalk_fast.train"


def save_train_state(path: str, model: MeshTalk, optimizer: torch.optim.Optimizer, stage: int, step: int,
                     train_config: Dict[str, Any], ema: Optional[Sequence[torch.Tensor]] = None,
                     extra: Optional[Dict[str, Any]] = None) -> None:
    """``ema``: the averaged weights, one per parameter of the optimizer's groups in their order; ``extra``: the
    trainer's own state (JSON-serialisable), returned by ``load_train_state`` as ``extra`` ({} when none)."""
    tensors = {f"model.{k}": v for k, v in saved_state(model).items()}
    for i, v in enumerate(ema or ()):
        tensors[f"ema.{i}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    scalars: Dict[str, Dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": TRAIN_FORMAT, "stage": str(stage), "step": str(step),
        "model_config": json.dumps(model.config.__dict__, sort_keys=True),
        "train_config": json.dumps(train_config, sort_keys=True),
        "param_groups": json.dumps(opt["param_groups"]), "optim_scalars": json.dumps(scalars),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    atomic_save_file(tensors, path, meta)


def load_train_state(path: str) -> Dict[str, Any]:
    """-> dict(model=MeshTalk, optimizer_state=..., stage, step, train_config, rng_state, ema, extra): ``ema`` the list
    of averaged weights, or None when the checkpoint has none; ``extra`` the trainer's own state ({} in checkpoints
    written before it existed)."""
    from safetensors import safe_open

    path = os.fspath(path)
    config, meta = inspect_model_file(path, MeshTalk, TRAIN_FORMAT, config_key="model_config", prefix="model.",
                                      required=("stage", "step", "train_config", "param_groups", "optim_scalars"))
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if "rng.torch" not in tensors:
        raise CheckpointError(f"{path}: tensor 'rng.torch' is missing (not a complete training checkpoint)")
    model = MeshTalk(**config.__dict__)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state(saved_state(model), state, path, config)
    model.load_state_dict(state, strict=False)  # head masks are rebuilt by the constructor
    ema = _indexed(tensors, "ema.", path)
    try:
        opt_state: Dict[int, Dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = v
        extra = json.loads(meta.get("extra", "{}"))
        if not isinstance(extra, dict):
            raise TypeError(f"metadata 'extra' must be a JSON object, got {type(extra).__name__}")
        for idx, entry in json.loads(meta["optim_scalars"]).items():
            opt_state.setdefault(int(idx), {}).update(entry)
        return {
            "model": model, "stage": int(meta["stage"]), "step": int(meta["step"]),
            "train_config": json.loads(meta["train_config"]),
            "optimizer_state": {"state": opt_state, "param_groups": json.loads(meta["param_groups"])},
            "rng_state": tensors["rng.torch"],
            "ema": ema,
            "extra": extra,
        }
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the optimizer state, step or extra state in the metadata is malformed "
                              f"({exc})") from None


def _indexed(tensors: Dict[str, torch.Tensor], prefix: str, path: str) -> Optional[list]:
    """``prefix0, prefix1, ...`` in index order, or None when there is none; an error when one is missing."""
    names = [k[len(prefix):] for k in tensors if k.startswith(prefix)]
    if not names:
        return None
    if sorted(names, key=lambda n: int(n) if n.isdigit() else -1) != [str(i) for i in range(len(names))]:
        raise CheckpointError(f"{path}: tensors {prefix}0 .. {prefix}{len(names) - 1} expected, got {sorted(names)}")
    found = {int(n): tensors[prefix + n] for n in names}
    return [found[i] for i in range(len(found))]
