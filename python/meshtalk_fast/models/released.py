"""The released model: ``encoder.pkl``, ``vertex_unet.pkl``, ``context_model.pkl`` (``load_official``), and
``load_model_any`` (a released model directory or one of our ``.safetensors`` files)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

import torch

from .checkpoint import CheckpointError, PathLike, check_state
from .meshtalk import MeshTalk

__all__ = ["OFFICIAL_FILES", "load_official", "load_model_any"]

OFFICIAL_FILES = {"encoder.pkl": "encoder", "vertex_unet.pkl": "vertex_unet", "context_model.pkl": "context_model"}


def _check_masks(model: MeshTalk, source: str) -> None:
    name = model.context_model.non_causal_layer()
    if name is not None:
        raise CheckpointError(f"{source}: {name}.mask must be the causal head mask (output head i sees "
                              "input heads < i); the file holds a different mask")


def load_official(model_dir: PathLike, heads: int = 16, classes: int = 128, n_vertices: int = 6172,
                  **config) -> MeshTalk:
    """Read the released ``encoder.pkl``, ``vertex_unet.pkl`` and ``context_model.pkl`` from
    ``model_dir`` into a ``MeshTalk`` (strict, ``weights_only=True``; float tensors become float32).
    The released model reads 1 s of audio per frame: ``audio_context_ms`` other than 1000 is refused (the
    600 ms encoder has the same parameter shapes, so the weights would load and run on the wrong windows)."""
    model_dir = os.fspath(model_dir)
    context = config.get("audio_context_ms", 1000)
    if context != 1000:
        raise CheckpointError(f"{model_dir}: audio context mismatch: expected audio_context_ms={context!r} (asked "
                              f"for), found 1000 ms (the released model's audio encoder reads 1 s windows)")
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
        check_state(module.state_dict(), state, path, model.config)
        module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    _check_masks(model, model_dir)
    return model


def load_model_any(path: PathLike, n_vertices: Optional[int] = None,
                   audio_context_ms: Optional[int] = None) -> MeshTalk:
    """A released model directory (``load_official``, with ``n_vertices`` when given) or one of our
    ``.safetensors`` files (``MeshTalk.load``; its config holds the size). ``audio_context_ms`` (None: the
    model's): the audio context the caller expects; another raises ``CheckpointError``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model {path!r} does not exist (expected a .safetensors file or a released "
                                "model directory)")
    if os.path.isdir(path):
        extra = {} if audio_context_ms is None else {"audio_context_ms": audio_context_ms}
        return load_official(path, **({} if n_vertices is None else {"n_vertices": n_vertices}), **extra)
    return MeshTalk.load(path, audio_context_ms=audio_context_ms)
