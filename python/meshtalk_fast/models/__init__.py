"""The released MeshTalk modules (names and parameter layout match the released checkpoints)."""
from .context_model import ContextModel, MaskedContextConvolution, causal_head_mask, gumbel_noise
from .encoders import AudioEncoder, ExpressionEncoder, FusionMlp, MelSpectrogram, MultimodalEncoder
from .vertex_unet import VertexUnet

__all__ = ["AudioEncoder", "ExpressionEncoder", "FusionMlp", "MelSpectrogram", "MultimodalEncoder",
           "VertexUnet", "ContextModel", "MaskedContextConvolution", "causal_head_mask", "gumbel_noise"]
