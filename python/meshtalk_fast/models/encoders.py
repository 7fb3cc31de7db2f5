"""The MultimodalEncoder of MeshTalk: AudioEncoder, ExpressionEncoder and FusionMlp.

Module and parameter names follow the released model so its ``encoder.pkl`` loads strictly.
Leaky ReLU slope 0.2 throughout.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.mel import N_MELS, WIN_LENGTH, hann_window, mel_filterbank, torch_log_mel
from ..base.checks import check_choice, check_tensor
from ..ops.frame_clock import AUDIO_CONTEXTS, check_audio_context, context_mel_frames, context_window

__all__ = ["MelSpectrogram", "AudioEncoder", "ExpressionEncoder", "GroupedExpressionEncoder", "group_heads",
           "FusionMlp", "MultimodalEncoder", "LEAKY_SLOPE"]

LEAKY_SLOPE = 0.2


class _Buffer(nn.Module):
    """A holder for one named buffer, so state-dict keys read ``melspec.spectrogram.window``."""

    def __init__(self, name: str, value: torch.Tensor):
        super().__init__()
        self.register_buffer(name, value)


class MelSpectrogram(nn.Module):
    """The released ``melspec`` with its two buffers; computes ``torch_log_mel`` (log included)."""

    def __init__(self):
        super().__init__()
        self.spectrogram = _Buffer("window", hann_window(WIN_LENGTH))
        self.mel_scale = _Buffer("fb", mel_filterbank())

    def forward(self, audio: torch.Tensor) -> torch.Tensor:  # [..., L] -> [..., 80, 1 + L // 160]
        return torch_log_mel(audio, self.spectrogram.window, self.mel_scale.fb)


class AudioEncoder(nn.Module):
    """One frame's audio window -> ``latent_dim`` code: log-mel, a dilated conv stack, mean, linear.

    Conv1d 80 -> 128 (kernel 5), then six Conv1d 128 -> 128 (kernel 5) in residual-average blocks, with
    the dilations of ``context_ms`` (``ops.frame_clock.AUDIO_CONTEXTS``): 1000 ms (released) 2, 4, 6, 2, 4, 6,
    a receptive field of exactly 101 mel frames (one 1 s window of 16000 samples); 600 ms 1, 2, 4, 1, 2, 4,
    exactly 61 mel frames (one 600 ms window of 9600 samples). The parameters have the same names and
    shapes either way (only the dilations differ), so the context is part of the model's config.
    Convolutions are initialised as released: Xavier-uniform weights, biases 0.01.
    """

    def __init__(self, latent_dim: int = 128, channels: int = 128, kernel_size: int = 5, context_ms: int = 1000):
        super().__init__()
        self.context_ms = check_audio_context(context_ms)
        self.window_samples = context_window(context_ms)
        self.melspec = MelSpectrogram()
        self.convert_dimensions = nn.Conv1d(N_MELS, channels, kernel_size=kernel_size)
        self.dilations = list(AUDIO_CONTEXTS[self.context_ms])
        self.convs = nn.ModuleList(
            [nn.Conv1d(channels, channels, kernel_size=kernel_size, dilation=d) for d in self.dilations])
        self.code = nn.Linear(channels, latent_dim)
        self.receptive_field = kernel_size + sum((kernel_size - 1) * d for d in self.dilations)
        assert self.receptive_field == context_mel_frames(context_ms), "AUDIO_CONTEXTS dilations do not fit the window"
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel [N, 80, F] -> [N, latent_dim]`` (mean over the F - R + 1 valid positions, R the receptive field)."""
        return self.code(self._conv_stack(mel).mean(dim=-1))

    def _conv_stack(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel [N, 80, F] -> [N, C, F - R + 1]``: output j has seen mel frames j .. j + R - 1 (R = 101 or 61)."""
        x = F.leaky_relu(self.convert_dimensions(mel), LEAKY_SLOPE)
        for conv in self.convs:
            y = F.leaky_relu(conv(x), LEAKY_SLOPE)
            if self.training:
                y = F.dropout(y, 0.2)
            crop = (x.shape[-1] - y.shape[-1]) // 2
            x = (x[..., crop:x.shape[-1] - crop] + y) / 2
        return x

    def encode_stream(self, mel: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Streaming framing: the conv stack once over a whole mel sequence ``mel [B, 80, F]``, read at
        ``positions [T]`` or ``[B, T]`` (index of the first of the R mel frames each video frame sees,
        in ``[0, F - R]``; R = 101 or 61) -> ``[B, T, latent_dim]``. About 17x less work than one 1 s window
        per frame."""
        x = self._conv_stack(mel)  # [B, C, F - R + 1]: one window per output position
        if positions.dim() == 1:
            return self.code(x[..., positions].transpose(1, 2))
        index = positions[:, None, :].expand(-1, x.shape[1], -1)
        return self.code(torch.gather(x, 2, index).transpose(1, 2))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, T, W] -> code [B, T, latent_dim]`` (W = 16000 for 1000 ms, 9600 for 600 ms)."""
        W = self.window_samples
        check_tensor("audio", audio, shape=(None, None, W), what=f"[B, T, {W}] ({self.context_ms} ms windows)")
        B, T = audio.shape[:2]
        mel = self.melspec(audio.reshape(B * T, audio.shape[-1]))
        return self.encode_mel(mel).view(B, T, -1)


class ExpressionEncoder(nn.Module):
    """Mesh sequence -> per-frame code: normalise, 2 linear layers, LSTM, linear.

    ``input="mesh"`` (released) normalises the mesh by the training mean/std. ``input="offset"`` reads
    the motion instead, ``(geom - template) / std``: the mesh with its subject's identity removed. Over
    many subjects identity dominates the per-vertex statistics (on the built-in data the eye motion is
    ~5 % of a vertex's std), so the released input buries the signal the codes must carry; the offset
    input trains the autoencoder ~3x faster (benchmarks/RESULTS.md). Same parameters either way.
    """

    def __init__(self, latent_dim: int = 128, n_vertices: int = 6172, mean: Optional[torch.Tensor] = None,
                 stddev: Optional[torch.Tensor] = None, hidden: int = 256, bottleneck: int = 128,
                 input: str = "mesh"):
        super().__init__()
        check_choice("input", input, ("mesh", "offset"))
        self.n_vertices, self.input = n_vertices, input
        shape = (1, 1, n_vertices, 3)
        self.register_buffer("mean", torch.zeros(shape) if mean is None else mean.reshape(shape).float().clone())
        self.register_buffer("stddev", torch.ones(shape) if stddev is None else stddev.reshape(shape).float().clone())
        self.layers = nn.ModuleList([nn.Linear(n_vertices * 3, hidden), nn.Linear(hidden, bottleneck)])
        self.lstm = nn.LSTM(input_size=bottleneck, hidden_size=bottleneck, num_layers=1, batch_first=True)
        self.code = nn.Linear(bottleneck, latent_dim)

    def forward(self, geom: torch.Tensor, template: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``geom [B, T, V, 3]`` (and ``template [B, V, 3]`` for ``input="offset"``) -> ``code [B, T, latent_dim]``."""
        check_tensor("geom", geom, shape=(None, None, self.n_vertices, 3), what="[B, T, V, 3]")
        if self.input == "offset":
            if template is None:
                raise ValueError("template is required: this expression encoder reads geom - template "
                                 "(input='offset'), got None")
            check_tensor("template", template, shape=(geom.shape[0], self.n_vertices, 3),
                         what=f"[B={geom.shape[0]}, V={self.n_vertices}, 3]")
            x = (geom - template[:, None]) / self.stddev
        else:
            x = (geom - self.mean) / self.stddev
        x = x.reshape(x.shape[0], x.shape[1], self.n_vertices * 3)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LEAKY_SLOPE)
        x, _ = self.lstm(x)
        return self.code(x)


class GroupedExpressionEncoder(nn.Module):
    """``expression_groups = G > 1`` (ours): G expression encoders of ``latent_dim / G`` dimensions each,
    every one with its own normaliser ``stddev[g]`` (``[G, V, 3]``), their codes concatenated in group
    order. Made for the upper face: with a region mask folded into each normaliser (the quick start's eye
    region and forehead; ``training.quickstart.initial_model``) group 0 reads the eyes and group 1 the
    brows, and each feeds its own expression heads (``FusionMlp``). One shared encoder learnt either the
    blinks or the brows in a 10-minute budget, never both: the stronger of the two terms took its hidden
    layers over (benchmarks/RESULTS.md, "What the expression heads read")."""

    def __init__(self, latent_dim: int, n_vertices: int, mean: Optional[torch.Tensor], stddev: Optional[torch.Tensor],
                 input: str, groups: int):
        super().__init__()
        if groups < 2 or latent_dim % groups:
            raise ValueError(f"expression groups must be >= 2 and divide latent_dim={latent_dim}, got {groups}")
        if stddev is not None:
            check_tensor("stddev", stddev, shape=(groups, n_vertices, 3), what=f"[G={groups}, V={n_vertices}, 3]")
        self.n_vertices, self.input = n_vertices, input
        self.groups = nn.ModuleList([
            ExpressionEncoder(latent_dim // groups, n_vertices, mean, None if stddev is None else stddev[g],
                              input=input) for g in range(groups)])

    def forward(self, geom: torch.Tensor, template: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``geom [B, T, V, 3]`` (``template [B, V, 3]`` for the offset input) -> ``code [B, T, latent_dim]``."""
        return torch.cat([encoder(geom, template) for encoder in self.groups], dim=-1)


def group_heads(expression_heads: int, groups: int) -> list:
    """How ``expression_heads`` split over ``groups`` (the first groups get the remainder): ``[(lo, hi)]``.
    The same split as the stage-1 objective's ``upper_face_codes = "split"`` (eyelid term on the first
    ceil(k/2) heads)."""
    sizes = [expression_heads // groups + (g < expression_heads % groups) for g in range(groups)]
    bounds = [sum(sizes[:g]) for g in range(groups + 1)]
    return [(bounds[g], bounds[g + 1]) for g in range(groups)]


class FusionMlp(nn.Module):
    """[expression code, audio code] -> ``[B, T, heads, classes]`` log-probabilities.

    ``expression_heads = k > 0`` gives the first k heads a code budget of their own: their logits come
    from a second MLP of the same shape (``expression_mlp``) that reads the expression code alone, so they
    can carry only what the expression encoder sees and the audio cannot drive them; the released MLP
    still computes the other heads (its outputs for the first k heads are unused). With every head fed
    both codes (k = 0, released), the rare upper-face events (blinks in ~3 % of frames) never win a class
    of their own in a short run; with the k heads computed by the shared MLP, what the eyelid term teaches
    them moved the audio heads' hidden layers too and the lip-sync broke (benchmarks/RESULTS.md, "The
    upper face"). k = 0 keeps the released parameters exactly. ``expression_groups = G > 1`` splits the
    expression code and the k heads into G groups (``group_heads``), one MLP each
    (``expression_mlp.g``): group g's heads read group g's part of the code alone.

    ``audio_heads = "audio"`` (ours; "fused" as released) is the mirror image: the released MLP reads the
    audio code alone (its expression inputs are fed zeros, so the parameters keep their released names and
    shapes), so the other heads can carry only what the audio predicts; the expression heads are then the
    only path from a mesh's expression to the face. Needs expression heads.

    ``expression_logit_scale = s > 0`` (ours; 0 as released) bounds the expression heads' logits: centred over
    the classes and scaled to norm s (``bounded_logits``), so their softmax can never saturate. The argmax, and
    so every code the model reconstructs with or the prior learns, is the same function of the MLP's output;
    what changes is the training gradient, which a saturated softmax (largest probability 1.0000, logit gaps
    of 30-50 in the runs whose brows were never learnt) no longer reaches: the code-usage term's included.
    ``audio_logit_scale`` bounds the other heads' logits the same way (all heads when k = 0).
    """

    def __init__(self, classes: int = 128, heads: int = 16, expression_dim: int = 128, audio_dim: int = 128,
                 hidden: int = 256, expression_heads: int = 0, audio_heads: str = "fused", expression_groups: int = 1,
                 expression_logit_scale: float = 0.0, audio_logit_scale: float = 0.0):
        super().__init__()
        if not 0 <= expression_heads < heads:
            raise ValueError(f"expression_heads must be in [0, heads={heads}), got {expression_heads}")
        if expression_groups > 1 and (expression_heads < expression_groups or expression_dim % expression_groups):
            raise ValueError(f"expression_groups={expression_groups} needs at least as many expression heads and "
                             f"an expression_dim it divides, got expression_heads={expression_heads}, "
                             f"expression_dim={expression_dim}")
        check_choice("audio_heads", audio_heads, ("fused", "audio"))
        if audio_heads == "audio" and not expression_heads:
            raise ValueError("audio_heads='audio' needs expression heads to carry the expression "
                             "(expression_heads > 0), got 0")
        self.classes, self.heads, self.expression_heads = classes, heads, expression_heads
        self.audio_heads, self.expression_groups = audio_heads, expression_groups
        if not 0 <= expression_logit_scale < float("inf") or (expression_logit_scale > 0 and not expression_heads):
            raise ValueError(f"expression_logit_scale must be a finite number >= 0, and > 0 only with expression "
                             f"heads; got {expression_logit_scale} with expression_heads={expression_heads}")
        if not 0 <= audio_logit_scale < float("inf"):
            raise ValueError(f"audio_logit_scale must be a finite number >= 0, got {audio_logit_scale}")
        self.expression_logit_scale, self.audio_logit_scale = float(expression_logit_scale), float(audio_logit_scale)
        self.mlp = nn.Sequential(
            nn.Linear(expression_dim + audio_dim, hidden), nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden, hidden), nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden, heads * classes))
        def mlp(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(LEAKY_SLOPE),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(LEAKY_SLOPE),
                                 nn.Linear(hidden, outputs * classes))

        if expression_heads and expression_groups == 1:
            self.expression_mlp = mlp(expression_dim, expression_heads)
        elif expression_heads:
            self.expression_mlp = nn.ModuleList([mlp(expression_dim // expression_groups, hi - lo)
                                                 for lo, hi in group_heads(expression_heads, expression_groups)])

    def forward(self, expression_code: torch.Tensor, audio_code: torch.Tensor) -> torch.Tensor:
        """``expression_code [B, T, E]``, ``audio_code [B, T, A]`` -> ``[B, T, heads, classes]``."""
        B, T = expression_code.shape[:2]
        seen = torch.zeros_like(expression_code) if self.audio_heads == "audio" else expression_code
        logits = self.mlp(torch.cat([seen, audio_code], dim=-1)).view(B, T, self.heads, self.classes)
        if self.audio_logit_scale > 0:  # the expression heads' columns of it are replaced below when k > 0
            logits = bounded_logits(logits, self.audio_logit_scale)
        k = self.expression_heads
        if k and self.expression_groups == 1:
            alone = self.expression_mlp(expression_code).view(B, T, k, self.classes)
        if k and self.expression_groups > 1:
            parts = expression_code.chunk(self.expression_groups, dim=-1)
            alone = torch.cat([mlp(part) for mlp, part in zip(self.expression_mlp, parts)], -1).view(B, T, k, self.classes)
        if k:
            if self.expression_logit_scale > 0:
                alone = bounded_logits(alone, self.expression_logit_scale)
            logits = torch.cat([alone, logits[:, :, k:]], dim=2)
        return F.log_softmax(logits, dim=-1)


def bounded_logits(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """``logits [..., C]`` centred over the classes and scaled to norm ``scale``: the softmax's largest
    probability is then at most ``e^scale / (e^scale + C - 1)`` (about, for large C), and the order of the
    classes, so the argmax, is unchanged. An all-equal row stays all-equal (zero, not a division by zero)."""
    centred = logits - logits.mean(-1, keepdim=True)
    return centred * (scale / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12))


class MultimodalEncoder(nn.Module):
    """Owns ``audio_encoder``, ``expression_encoder`` and ``fusion_model`` (released names)."""

    def __init__(self, classes: int = 128, heads: int = 16, expression_dim: int = 128, audio_dim: int = 128,
                 n_vertices: int = 6172, mean: Optional[torch.Tensor] = None,
                 stddev: Optional[torch.Tensor] = None, fusion_hidden: int = 256, expression_input: str = "mesh",
                 expression_heads: int = 0, audio_heads: str = "fused", audio_context_ms: int = 1000,
                 expression_groups: int = 1, expression_logit_scale: float = 0.0, audio_logit_scale: float = 0.0):
        super().__init__()
        self.audio_encoder = AudioEncoder(audio_dim, context_ms=audio_context_ms)
        if expression_groups == 1:
            self.expression_encoder = ExpressionEncoder(expression_dim, n_vertices, mean, stddev, input=expression_input)
        else:
            self.expression_encoder = GroupedExpressionEncoder(expression_dim, n_vertices, mean, stddev,
                                                               expression_input, expression_groups)
        self.fusion_model = FusionMlp(classes, heads, expression_dim, audio_dim, fusion_hidden, expression_heads,
                                      audio_heads, expression_groups, expression_logit_scale, audio_logit_scale)

    def forward(self, geom: torch.Tensor, audio: torch.Tensor, template: Optional[torch.Tensor] = None):
        """``geom [B, T, V, 3], audio [B, T, W]`` (W: the audio context's window samples; ``template [B, V, 3]``
        for the offset input)
        -> ``(logprobs, expression_code, audio_code)``."""
        expression_code = self.expression_encoder(geom, template)
        audio_code = self.audio_encoder(audio)
        return self.fusion_model(expression_code, audio_code), expression_code, audio_code
