"""meshtalk_fast: a fast, complete MeshTalk (Richard et al., ICCV 2021).

Speech -> animated 3D face mesh, with a categorical latent space for what audio cannot predict.
The PyTorch modules here are the reference every fast path (Triton, the C++ core) is tested against.
"""
from . import backends
from .base import dispatch
from .base.dispatch import BackendUnavailable, available_backends
from .ops.audio import load_audio
from .ops.frame_clock import audio_windows, num_frames
from .ops.mel import log_mel, mel_filterbank, torch_log_mel
from .models.checkpoint import CheckpointError
from .models.released import load_official
from .ops.vertex_losses import lip_vertex_error, masked_vertex_losses, step1_losses, torch_masked_vertex_losses
from .io.mesh import load_mask, load_obj
from .models.meshtalk import MeshTalk, MeshTalkConfig
from .models.quantize import quantize
from .ops.smoothing import post_smooth, smooth_geom
from .ops.blendshapes import (ARKIT_NAMES, BlendshapeBasis, BlendshapeStream, blendshape_residual, solve_blendshapes,
                              torch_solve_blendshapes)
from . import data  # data sets: FaceSequence, SegmentDataset, SpeechFaceSet, readers
from .streaming.streaming_mel import StreamingLogMel

from .animation.offline import animate  # the function; its module is meshtalk_fast.animation.offline (no shadowing)
from .streaming.animator import StreamingAnimator
from .io.export import save_glb, save_npz, save_obj_sequence, write_animation
from .io.render import probe_mp4, render_frames, save_preview_mp4
from .backends.capi import cmake_dir  # the installed C API's CMake package folder

# The one place backends are wired: each backend module's table, installed once (nothing registers itself
# on import). Triton itself is imported on first use; the C++ table reports why when _core cannot load.
dispatch.install(backends.tables())

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
