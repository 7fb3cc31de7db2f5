"""Checkpoint files: the released three ``.pkl`` state dicts, and our single safetensors file.

Every load is strict: missing, unexpected or mis-shaped keys, a config that disagrees with the file,
and non-floating tensors are refused with an error that names the file, the key, the expected and
the found value. Released files are read with ``torch.load(weights_only=True)`` (no pickle code runs).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Mapping, Union

import torch

from ._checks import shape_str
from .meshtalk import MeshTalk, MeshTalkConfig
from .models.context_model import causal_head_mask

__all__ = ["load_official", "save_model", "load_model", "atomic_save_file", "read_config", "CheckpointError", "OFFICIAL_FILES",
           "FORMAT_NAME", "FORMAT_VERSION"]

PathLike = Union[str, "os.PathLike[str]"]
OFFICIAL_FILES = {"encoder.pkl": "encoder", "vertex_unet.pkl": "vertex_unet", "context_model.pkl": "context_model"}
FORMAT_NAME = "meshtalk_fast"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model (missing/extra/mis-shaped keys, wrong config)."""


def _describe(config: MeshTalkConfig) -> str:
    return (f"n_vertices={config.n_vertices}, heads={config.heads}, classes={config.classes}, "
            f"expression_dim={config.expression_dim}, audio_dim={config.audio_dim}, "
            f"fusion_hidden={config.fusion_hidden}, context_hidden={config.context_hidden}")


def _check_against(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str,
                   config: MeshTalkConfig) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}" + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
        if extra:
            parts.append(f"unexpected keys {extra[:8]}" + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else ""))
        raise CheckpointError(f"{source}: " + "; ".join(parts))
    for key, ref in expected.items():
        t = found[key]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{source}: {key!r} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {key!r} must be floating point, got dtype {t.dtype}")
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: {key!r} has shape {shape_str(t.shape)} but the model config "
                f"({_describe(config)}) expects {shape_str(ref.shape)}")


def _check_masks(model: MeshTalk, source: str) -> None:
    cm = model.context_model
    for name, layer in [("embedding", cm.embedding), *[(f"context_layers.{i}", l) for i, l in
                                                        enumerate(cm.context_layers)], ("logits", cm.logits)]:
        if not torch.equal(layer.mask, causal_head_mask(layer.ch_in, layer.ch_out, layer.heads)):
            raise CheckpointError(f"{source}: {name}.mask must be the causal head mask (output head i sees "
                                  "input heads < i); the file holds a different mask")


def load_official(model_dir: PathLike, heads: int = 16, classes: int = 128, n_vertices: int = 6172,
                  **config) -> MeshTalk:
    """Read the released ``encoder.pkl``, ``vertex_unet.pkl`` and ``context_model.pkl`` from
    ``model_dir`` into a ``MeshTalk`` (strict, ``weights_only=True``; float tensors become float32)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model_dir {model_dir!r} is not a directory")
    model = MeshTalk(n_vertices=n_vertices, heads=heads, classes=classes, **config)
    for filename, attr in OFFICIAL_FILES.items():
        path = os.path.join(model_dir, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} is missing: a released model directory holds "
                                    f"{', '.join(OFFICIAL_FILES)}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable torch state dict ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path}: expected a state dict (mapping of name -> tensor), "
                                  f"got {type(state).__name__}")
        module = getattr(model, attr)
        _check_against(module.state_dict(), state, path, model.config)
        module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    _check_masks(model, model_dir)
    return model


def _saved_state(model: MeshTalk) -> Dict[str, torch.Tensor]:
    # The context model's head masks are derived from the config: not stored (saves 32 MB at the
    # released size); load_model rebuilds them.
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
            if not k.endswith(".mask")}


def atomic_save_file(tensors: Dict[str, torch.Tensor], path: PathLike, metadata: Dict[str, str]) -> None:
    """``safetensors.torch.save_file``, atomically: a temporary file in the same folder is fsynced and
    renamed over ``path`` only when complete, so a kill mid-write leaves the previous file intact."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {path!r}: folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".meshtalk-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: MeshTalk, path: PathLike) -> None:
    """Write ``model`` to one safetensors file, config in the metadata (atomically)."""
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.config.__dict__, sort_keys=True)}
    atomic_save_file(_saved_state(model), path, meta)


def read_config(path: PathLike) -> MeshTalkConfig:
    """The ``MeshTalkConfig`` stored in a file written by ``save_model``."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata 'format' must be {FORMAT_NAME!r}, got {meta.get('format')!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: metadata 'format_version' must be {FORMAT_VERSION!r}, "
                              f"got {meta.get('format_version')!r}")
    try:
        raw = json.loads(meta["config"])
        return MeshTalkConfig(**raw).validate()
    except Exception as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not a valid MeshTalk config ({exc})") from None


def load_model(path: PathLike, map_location: str = "cpu") -> MeshTalk:
    """Load a file written by ``save_model`` (strict)."""
    from safetensors.torch import load_file

    config = read_config(path)
    model = MeshTalk(**config.__dict__)
    state = load_file(os.fspath(path), device="cpu")
    expected = _saved_state(model)
    _check_against(expected, state, os.fspath(path), config)
    model.load_state_dict(state, strict=False)  # masks are rebuilt by the constructor
    return model.to(map_location)
