"""meshtalk_fast: a fast, complete MeshTalk (Richard et al., ICCV 2021).

Speech -> animated 3D face mesh, with a categorical latent space for what audio cannot predict.
The PyTorch modules here are the reference every fast path (Triton, the C++ core) is tested against.
"""
from ._dispatch import BackendUnavailable, available_backends
from .audio import audio_windows, load_audio, log_mel, mel_filterbank, num_frames, torch_log_mel
from .checkpoint import CheckpointError, load_official
from .losses import lip_vertex_error, masked_vertex_losses, step1_losses, torch_masked_vertex_losses
from .mesh import load_mask, load_obj
from .meshtalk import MeshTalk, MeshTalkConfig
from .quantize import quantize
from .smoothing import post_smooth, smooth_geom
from .blendshapes import (ARKIT_NAMES, BlendshapeBasis, BlendshapeStream, blendshape_residual, solve_blendshapes,
                          torch_solve_blendshapes)
from . import data  # data sets: FaceSequence, SegmentDataset, SpeechFaceSet, readers
from .streaming_mel import StreamingLogMel
from . import _triton  # registers the Triton fast paths (triton itself is imported on first use)
from . import _cpp  # registers the C++ core's sample/decode (reports why when _core cannot be imported)

from .animate import animate  # the function (shadows the submodule name; `from .animate import x` still works)
from .streaming import StreamingAnimator
from .export import save_glb, save_npz, save_obj_sequence, write_animation
from .render import probe_mp4, render_frames, save_preview_mp4
from .capi import cmake_dir  # the installed C API's CMake package folder

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "available_backends", "audio_windows", "load_audio", "log_mel", "mel_filterbank",
    "num_frames", "torch_log_mel", "CheckpointError", "load_official", "lip_vertex_error",
    "masked_vertex_losses", "step1_losses", "torch_masked_vertex_losses", "load_mask", "load_obj", "MeshTalk",
    "MeshTalkConfig", "quantize", "post_smooth", "smooth_geom", "StreamingLogMel", "__version__",
]
__all__ += ["animate", "StreamingAnimator", "save_glb", "save_npz", "save_obj_sequence", "write_animation",
            "probe_mp4", "render_frames", "save_preview_mp4"]
__all__ += ["cmake_dir"]
__all__ += ["ARKIT_NAMES", "BlendshapeBasis", "BlendshapeStream", "blendshape_residual", "solve_blendshapes",
            "torch_solve_blendshapes"]
