"""Our model file: one safetensors file, the config as JSON in its metadata (the released three ``.pkl``
state dicts are read by released.py, with the checks here).

Every load is strict: missing, unexpected or mis-shaped keys, a config that disagrees with the file,
non-floating and non-finite tensors are refused with an error that names the file, the key, the
expected and the found value. Released files are read with ``torch.load(weights_only=True)`` (no
pickle code runs). Our files are checked by ``inspect_model_file`` before anything is allocated: the
header (read by us, duplicate keys refused), the config (sane limits) against the tensors' shapes.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

from ..base.checks import check_regular_file, shape_str
from ..base.tempfiles import temp_path
from ..ops.frame_clock import check_audio_context
from .config import MeshTalkConfig

__all__ = ["save_model", "load_model", "check_audio_context_of", "atomic_save_file", "read_config", "inspect_model_file", "saved_state",
           "check_state", "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "file_metadata", "model_image"]

PathLike = Union[str, "os.PathLike[str]"]
FORMAT_NAME = "meshtalk_fast"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model (missing/extra/mis-shaped keys, wrong config)."""


def _describe(config: MeshTalkConfig) -> str:
    return (f"n_vertices={config.n_vertices}, heads={config.heads}, classes={config.classes}, "
            f"expression_dim={config.expression_dim}, audio_dim={config.audio_dim}, "
            f"fusion_hidden={config.fusion_hidden}, context_hidden={config.context_hidden}")


def check_state(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str,
                config: MeshTalkConfig) -> None:
    """The loaded tensors ``found`` must be ``expected``'s keys and shapes (``_check_shapes``), floating
    point, and finite: a NaN or inf weight is refused naming the tensor (the model would compute
    non-finite frames and only fail at the end)."""
    _check_shapes({k: tuple(v.shape) for k, v in expected.items()}, found, source, config)
    for key in expected:
        t = found[key]
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: tensor {key!r} holds non-finite weights ({int(torch.isnan(t).sum())} NaN, "
                                  f"{int(torch.isinf(t).sum())} inf of {t.numel()} values)")


def _check_shapes(expected: Mapping[str, tuple], found: Mapping, source: str, config: MeshTalkConfig) -> None:
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
        if isinstance(t, _HeaderEntry):  # a tensor described by a file's header, not loaded yet
            floating, shape = t.dtype in _FLOAT_DTYPES, t.shape
        elif isinstance(t, torch.Tensor):
            floating, shape = t.is_floating_point(), tuple(t.shape)
        else:
            raise CheckpointError(f"{source}: {key!r} must be a tensor, got {type(t).__name__}")
        if not floating:
            raise CheckpointError(f"{source}: {key!r} must be floating point, got dtype {t.dtype}")
        if tuple(shape) != tuple(ref):
            raise CheckpointError(
                f"{source}: {key!r} has shape {shape_str(shape)} but the model config "
                f"({_describe(config)}) expects {shape_str(ref)}")


def saved_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    # The context model's head masks are derived from the config: not stored (saves 32 MB at the
    # released size); load_model rebuilds them.
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
            if not k.endswith(".mask")}


def atomic_save_file(tensors: Dict[str, torch.Tensor], path: PathLike, metadata: Dict[str, str]) -> None:
    """``safetensors.torch.save_file``, atomically: a temporary file in the same folder (``_tempfiles``:
    removed on failure or SIGTERM, or by the next save after a kill) is fsynced and renamed over
    ``path`` only when complete, so a kill mid-write leaves the previous file intact."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {path!r}: folder {folder!r} does not exist")
    with temp_path(folder, os.path.basename(path), suffix=".tmp") as tmp:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


def file_metadata(model: nn.Module) -> Dict[str, str]:
    """The metadata of our model file: format, version and the config as JSON."""
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.config.__dict__, sort_keys=True)}


def save_model(model: nn.Module, path: PathLike) -> None:
    """Write ``model`` to one safetensors file, config in the metadata (atomically)."""
    atomic_save_file(saved_state(model), path, file_metadata(model))


def model_image(model: nn.Module) -> bytes:
    """The bytes ``save_model`` would write, in memory (what the C++ core loads without a file)."""
    from safetensors.torch import save

    return save(saved_state(model), metadata=file_metadata(model))


# ------------------------------------------------------------------------------------------------
# Our files: the header is checked before anything is allocated
# ------------------------------------------------------------------------------------------------
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit on the JSON header
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E5M2": 1, "F8_E4M3": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E5M2", "F8_E4M3")


class _HeaderEntry:
    """One tensor as a safetensors header describes it (dtype name and shape), not loaded."""

    def __init__(self, dtype: str, shape: tuple):
        self.dtype, self.shape = dtype, shape


def _unique_keys(where: str):
    """``json.loads`` hook refusing an object with a key twice (json would keep the last silently)."""
    def hook(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise CheckpointError(f"{where}: duplicate key {key!r}")
            out[key] = value
        return out
    return hook


def _read_header(path: str):
    """(tensors {name: _HeaderEntry}, metadata {str: str}) of a safetensors file, every offset checked."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path}: not a readable safetensors file (header length {n}, file size {size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys(f"{path}: header"))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: header '__metadata__' must map names to strings")
    data = size - 8 - n
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
            numel = 1
            for d in shape:
                if d < 0:
                    raise ValueError("negative size")
                numel *= d
            ok = dtype in _ITEM_BYTES and 0 <= begin <= end <= data and end - begin == numel * _ITEM_BYTES[dtype]
        except Exception:
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: header entry {name!r} is malformed or points outside the file: "
                                  f"{json.dumps(info)[:200]}")
        tensors[name] = _HeaderEntry(dtype, shape)
    return tensors, meta


def _expected_shapes(config: MeshTalkConfig, model_class: type) -> Dict[str, tuple]:
    """The shapes of ``saved_state`` for ``config``, computed on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = model_class(**config.__dict__)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(".mask")}


def inspect_model_file(path: PathLike, model_class: type, format_name: str = FORMAT_NAME,
                       config_key: str = "config", prefix: str = "", required: tuple = ()):
    """Check one of our safetensors files without loading a tensor: a regular file, its header (offsets,
    no duplicate keys), metadata ``format`` (and ``format_version`` for models), ``required`` metadata
    keys, the MeshTalk config in metadata ``config_key`` (sane limits, no duplicate keys) and the tensors
    ``prefix + key`` against the shapes a ``model_class`` (``MeshTalk``) of that config has. Returns (config,
    metadata)."""
    path = check_regular_file("model file", path)
    tensors, meta = _read_header(path)
    if meta.get("format") != format_name:
        raise CheckpointError(f"{path}: metadata 'format' must be {format_name!r}, got {meta.get('format')!r}")
    if format_name == FORMAT_NAME and meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: metadata 'format_version' must be {FORMAT_VERSION!r}, "
                              f"got {meta.get('format_version')!r}")
    missing = [k for k in (config_key, *required) if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {', '.join(repr(k) for k in missing)} (not a complete file "
                              f"written by meshtalk_fast)")
    try:
        raw = json.loads(meta[config_key], object_pairs_hook=_unique_keys(f"metadata {config_key!r}"))
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        config = MeshTalkConfig(**raw).validate()
    except Exception as exc:
        raise CheckpointError(f"{path}: metadata {config_key!r} is not a valid MeshTalk config ({exc})") from None
    found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    _check_shapes(_expected_shapes(config, model_class), found, path, config)
    return config, meta


def read_config(path: PathLike, model_class: type) -> MeshTalkConfig:
    """The ``MeshTalkConfig`` stored in a file written by ``save_model`` (the file is checked, not loaded)."""
    return inspect_model_file(path, model_class)[0]


def check_audio_context_of(config: MeshTalkConfig, audio_context_ms: Optional[int], source: str) -> None:
    """The caller's ``audio_context_ms`` (None: any) against the one of a model (``config``, read from
    ``source``). The two contexts have the same parameter shapes (only the encoder's dilations differ), so a
    mismatch would run silently on the wrong windows: a clear error instead."""
    if audio_context_ms is None:
        return
    check_audio_context(audio_context_ms)
    if config.audio_context_ms != audio_context_ms:
        raise CheckpointError(f"{source}: audio context mismatch: expected audio_context_ms={audio_context_ms} "
                              f"(asked for), found {config.audio_context_ms} ms in the model file's config "
                              f"(its audio encoder reads {config.window_samples}-sample windows)")


def load_model(path: PathLike, map_location: str = "cpu", *, model_class: type,
               audio_context_ms: Optional[int] = None) -> nn.Module:
    """Load a file written by ``save_model`` into a ``model_class`` (``MeshTalk.load`` passes itself; strict;
    checked by ``inspect_model_file`` before any allocation). ``audio_context_ms`` (None: the file's): the
    audio context the caller expects; a file of another context raises ``CheckpointError``."""
    from safetensors.torch import load_file

    config, _ = inspect_model_file(path, model_class)
    check_audio_context_of(config, audio_context_ms, os.fspath(path))
    state = load_file(os.fspath(path), device="cpu")
    model = model_class(**config.__dict__)
    check_state(saved_state(model), state, os.fspath(path), config)
    model.load_state_dict(state, strict=False)  # masks are rebuilt by the constructor
    return model.to(map_location)
