"""Training configuration: one TOML file, the released values as defaults.

```toml
[model]            # MeshTalk sizes (n_vertices comes from the data)
heads = 16
classes = 128
clock = "released"
lookahead = 8000   # samples of audio after the frame centre: 8000 = centred (released); leave it out to
                   # centre the window of any audio context (4800 at 600 ms)
audio_context_ms = 1000     # or 600: the seed's 600 ms window (61 x 80 log-mel), look-ahead 300 ms
expression_input = "mesh"   # or "offset": the expression encoder reads mesh - template

[stage1]           # encoders + decoder
batch_size = 8
segment_frames = 32
lr = 1e-4
weight_decay = 1e-3   # decoder (VertexUnet) only, as released
codes = "gumbel"      # or "argmax" (no Gumbel noise in stage 1)

[stage2]           # the autoregressive prior on frozen argmax codes
batch_size = 8
segment_frames = 64
lr = 1e-4
```
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Dict, Optional

from ..base.checks import check_choice, check_positive_int
from ..models.meshtalk import MeshTalkConfig as ModelSection  # [model] = the model's config; n_vertices comes from the data

__all__ = ["ModelSection", "StageSection", "TrainConfig", "load_config"]


@dataclasses.dataclass
class StageSection:
    batch_size: int = 8
    segment_frames: int = 32
    lr: float = 1e-4              # released code; the authors report 1e-3
    weight_decay: float = 1e-3    # stage 1: decoder only (released); stage 2: unused unless set
    steps: int = 100000
    schedule: str = "constant"    # "constant" (released) | "cosine" (to 10% of lr)
    warmup_steps: int = 0
    accumulate: int = 1           # micro-batches per optimizer step (per process)
    distance: str = "squared"     # stage 1 vertex distance: "squared" (released) | "l2" (paper)
    codes: str = "gumbel"         # stage 1 codes fed to the decoder: "gumbel" (released: Gumbel-softmax
                                  # sample, straight-through) | "argmax" (the argmax, straight-through
                                  # through the softmax). At initialisation the logits differ by far less
                                  # than the Gumbel noise, so sampled codes are noise the decoder learns
                                  # to ignore; argmax codes depend on the input from step 0 (RESULTS.md)
    diversity: float = 0.0        # stage 1 weight of the code-usage term (objectives.diversity_loss);
                                  # 0 = released objective
    expression_diversity: float = -1.0  # stage 1 weight of the code-usage term on the expression heads
                                  # (model.expression_heads); -1: the same as `diversity`. The upper face has
                                  # a few states, so spreading its frames evenly over all classes can only
                                  # be done by hashing something else into them (RESULTS.md, "The upper face")
    expression_st_temperature: float = 1.0  # stage 1: the expression heads' straight-through gradient flows through
                                  # softmax(logits / T); their codes (the argmax) are the same for any T. 1 = as
                                  # released. A group whose softmax saturated on one class (the stuck brows,
                                  # RESULTS.md, "Stuck brow heads") passes no gradient at T = 1 (objectives.py)
    expression_st_anneal: float = 0.0  # 0: expression_st_temperature for the whole of stage 1; s in (0, 1]: it falls
                                  # geometrically to 1 over the first s of the stage (of its steps or time
                                  # budget, as the lr schedule), 1 after: the stuck groups of the quick start
                                  # got stuck in its first ~250 steps, and codes that never saturate keep
                                  # changing late, which spoils the averaged weights (RESULTS.md)
    expression_lock_steps: int = 0  # stage 1: 0 = off; N: a group of expression heads whose batches chose one class on
                                  # every head with a saturated softmax in at least 80 % of its last N steps is
                                  # locked, and its straight-through temperature goes back to
                                  # expression_st_temperature and anneals again from there (needs the anneal;
                                  # training/locks.py): a group that locked as T reached 1 stayed locked for good
                                  # (RESULTS.md, "A lock watch")
    # stage 1 weights of the released terms (all 1 as released): reconstruction, eye landmarks (the
    # paper's eyelid term) and the two modality-crossing terms (mouth: keep audio; eye: keep expression)
    recon_weight: float = 1.0
    landmarks_weight: float = 1.0
    mouth_weight: float = 1.0
    eye_weight: float = 1.0
    brow_weight: float = 0.0      # ours: reconstruction error over the forehead mask (brow raises), normalised
                                  # like the landmark term; 0 = released
    upper_face_codes: str = "all" # stage 1: which heads' codes the eyelid and brow terms reach: "all"
                                  # (released) | "expression" (the expression heads only) | "split" (eyelid
                                  # and brow terms each on half of the expression heads; objectives.py)
    clip_grad_norm: float = 0.0   # clip the global gradient norm to this before each step (0: off, released)
    adam_beta2: float = 0.999     # Adam's second-moment decay (PyTorch's default, as released)
    relaxed_expression: float = 0.0  # stage 1 share (of steps or time budget) during which the expression heads'
                                     # codes reach the decoder relaxed, softmax(logprobs / tau) with tau from 1
                                     # to 0.1, instead of straight-through one-hots; 0 = released (objectives.py)
    event_crops: float = 0.0      # stage 1 share of each batch's crops drawn around an upper-face event of
                                  # the training data (a blink or brow raise; batches.CropSampler); 0 =
                                  # released (crops uniform over the data)
    logit_gap_limit: float = 0.0  # stage 1: a penalty keeps each expression head's largest logit within this of its
                                  # mean logit, logit_gap_weight x mean over frames and heads of relu(gap - limit)^2;
                                  # 0 = off (released). A head whose softmax saturated on one class passes no
                                  # gradient and never recovers (the brows' failure, RESULTS.md, "Stuck brow
                                  # heads"); unlike a softmax-based term, this one's gradient grows with the gap
    logit_gap_weight: float = 0.01
    ema: float = 0.0              # decay per step of an exponential moving average of the stage's weights
                                  # (Polyak averaging): the stage ends with the averaged weights, and
                                  # validation reads them; 0 = off (released). Adam's last steps leave each
                                  # weight jittering around its optimum; the average does not (RESULTS.md,
                                  # "Averaged weights")
    prior_calibration: int = 0    # stage 2: after training, this many fixed-point steps fit the free expression heads'
                                  # output biases so that the prior's own samples use each class as often as the
                                  # training codes do (training/calibrate.py; model.prior_expression = "free"); 0 =
                                  # off (released). Teacher forcing leaves the free-running samples drifting: brow
                                  # raises 0.57x-1.92x the data's rate in four quick starts (RESULTS.md)
    identity_mix: float = 0.0     # share of each micro-batch's crops moved to another face: template and
                                  # frames shifted by a random combination of the training identities'
                                  # differences (batches.IdentityMix); 0 = released. Needs >= 2 identities


@dataclasses.dataclass
class TrainConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    stage1: StageSection = dataclasses.field(default_factory=StageSection)
    stage2: StageSection = dataclasses.field(
        default_factory=lambda: StageSection(segment_frames=64, weight_decay=0.0))
    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    checkpoint_every: int = 500
    amp: bool = True              # bf16 autocast on CUDA for the encoders/decoder (never on CPU)
    flush_denormal: bool = True   # CPU: denormal floats flushed to zero while training (torch.set_flush_denormal,
                                  # set by the Trainer and left set): a trained prior's softmax puts ~1e-40 on
                                  # the classes it rules out, and on an Intel Xeon its backward ran 1.75x slower
                                  # per stage-2 step with them (RESULTS.md, "Denormal floats in stage 2")

    def validate(self) -> "TrainConfig":
        self.model.validate()
        for name in ("stage1", "stage2"):
            st: StageSection = getattr(self, name)
            for field in ("batch_size", "segment_frames", "steps", "accumulate"):
                check_positive_int(f"{name}.{field}", getattr(st, field))
            check_choice(f"{name}.schedule", st.schedule, ("constant", "cosine"))
            check_choice(f"{name}.distance", st.distance, ("squared", "l2"))
            check_choice(f"{name}.codes", st.codes, ("gumbel", "argmax"))
            check_choice(f"{name}.upper_face_codes", st.upper_face_codes, ("all", "expression", "split"))
            if not st.lr > 0:
                raise ValueError(f"{name}.lr must be > 0, got {st.lr}")
            for field in ("diversity", "recon_weight", "landmarks_weight", "mouth_weight", "eye_weight", "brow_weight"):
                value = getattr(st, field)
                if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                    raise ValueError(f"{name}.{field} must be a finite number >= 0, got {value!r}")
            if not (isinstance(st.expression_diversity, (int, float)) and
                    (st.expression_diversity == -1 or 0 <= st.expression_diversity < float("inf"))):
                raise ValueError(f"{name}.expression_diversity must be -1 (same as diversity) or a finite number "
                                 f">= 0, got {st.expression_diversity!r}")
            if not (isinstance(st.clip_grad_norm, (int, float)) and 0 <= st.clip_grad_norm < float("inf")):
                raise ValueError(f"{name}.clip_grad_norm must be a finite number >= 0 (0: off), got "
                                 f"{st.clip_grad_norm!r}")
            if not (isinstance(st.adam_beta2, float) and 0 < st.adam_beta2 < 1):
                raise ValueError(f"{name}.adam_beta2 must be a number in (0, 1), got {st.adam_beta2!r}")
            if not (isinstance(st.relaxed_expression, (int, float)) and 0 <= st.relaxed_expression <= 1):
                raise ValueError(f"{name}.relaxed_expression must be a number in [0, 1], got {st.relaxed_expression!r}")
            if not (isinstance(st.event_crops, (int, float)) and 0 <= st.event_crops <= 1):
                raise ValueError(f"{name}.event_crops must be a number in [0, 1], got {st.event_crops!r}")
            if not (isinstance(st.identity_mix, (int, float)) and 0 <= st.identity_mix <= 1):
                raise ValueError(f"{name}.identity_mix must be a number in [0, 1], got {st.identity_mix!r}")
            t = st.expression_st_temperature
            if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < float("inf")):
                raise ValueError(f"{name}.expression_st_temperature must be a finite number > 0, got {t!r}")
            anneal = st.expression_st_anneal
            if not (isinstance(anneal, (int, float)) and not isinstance(anneal, bool) and 0 <= anneal <= 1):
                raise ValueError(f"{name}.expression_st_anneal must be a number in [0, 1], got {anneal!r}")
            lock = st.expression_lock_steps
            if isinstance(lock, bool) or not isinstance(lock, int) or lock < 0:
                raise ValueError(f"{name}.expression_lock_steps must be an integer >= 0 (0: off), got {lock!r}")
            if lock and not (t > 1 and anneal > 0):
                raise ValueError(f"{name}.expression_lock_steps = {lock} raises a locked group's straight-through "
                                 f"temperature back to expression_st_temperature and anneals it again: it needs "
                                 f"expression_st_temperature > 1 and expression_st_anneal > 0, got {t!r} and "
                                 f"{anneal!r}")
            for field in ("logit_gap_limit", "logit_gap_weight"):
                value = getattr(st, field)
                if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")):
                    raise ValueError(f"{name}.{field} must be a finite number >= 0, got {value!r}")
            if not (isinstance(st.ema, (int, float)) and 0 <= st.ema < 1):
                raise ValueError(f"{name}.ema must be a number in [0, 1) (0: off), got {st.ema!r}")
            pc = st.prior_calibration
            if isinstance(pc, bool) or not isinstance(pc, int) or pc < 0:
                raise ValueError(f"{name}.prior_calibration must be an integer >= 0 (0: off), got {pc!r}")
            if st.weight_decay < 0:
                raise ValueError(f"{name}.weight_decay must be >= 0, got {st.weight_decay}")
        for field in ("amp", "flush_denormal"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field} must be true or false, got {getattr(self, field)!r}")
        for field in ("log_every", "val_every", "checkpoint_every"):
            check_positive_int(field, getattr(self, field))
        self.check_model()
        return self

    def check_model(self) -> None:
        """Stage options that need a model option."""
        if self.stage1.relaxed_expression > 0 and not self.model.expression_heads:
            raise ValueError("stage1.relaxed_expression > 0 needs model.expression_heads > 0 (the heads it relaxes), "
                             "got 0")
        if self.stage1.expression_st_temperature != 1 and not self.model.expression_heads:
            raise ValueError(f"stage1.expression_st_temperature = {self.stage1.expression_st_temperature} needs "
                             f"model.expression_heads > 0 (the heads it is for), got 0")
        if self.stage1.logit_gap_limit > 0 and not self.model.expression_heads:
            raise ValueError("stage1.logit_gap_limit > 0 needs model.expression_heads > 0 (the heads it bounds), got 0")
        if self.stage2.prior_calibration > 0 and not (self.model.expression_heads and
                                                     self.model.prior_expression == "free"):
            raise ValueError(f"stage2.prior_calibration > 0 needs a prior with free heads (model.expression_heads > 0 "
                             f"and model.prior_expression = 'free'), got expression_heads="
                             f"{self.model.expression_heads}, prior_expression={self.model.prior_expression!r}")
        need = {"all": 0, "expression": 1, "split": 2}[self.stage1.upper_face_codes]
        if self.model.expression_heads < need:
            raise ValueError(f"stage1.upper_face_codes = {self.stage1.upper_face_codes!r} needs model.expression_heads "
                             f">= {need}, got {self.model.expression_heads}")

    def model_kwargs(self) -> Dict[str, Any]:
        """``MeshTalk(n_vertices, **model_kwargs())``: the [model] section without n_vertices (from the data)."""
        return {k: v for k, v in dataclasses.asdict(self.model).items() if k != "n_vertices"}

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any], source: str = "config") -> "TrainConfig":
        raw = dict(raw)
        sections = {"model": ModelSection, "stage1": StageSection, "stage2": StageSection}
        kwargs: Dict[str, Any] = {}
        default = cls()
        for key, value in raw.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ValueError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
                known = {f.name for f in dataclasses.fields(sections[key])}
                unknown = sorted(set(value) - known)
                if unknown:
                    raise ValueError(f"{source}: unknown keys in [{key}]: {unknown}; known: {sorted(known)}")
                if key == "model":  # from the class defaults: an unset lookahead centres the window of the
                    kwargs[key] = ModelSection(**value)  # section's audio_context_ms
                else:
                    kwargs[key] = dataclasses.replace(getattr(default, key), **value)
            elif key in {f.name for f in dataclasses.fields(cls)}:
                kwargs[key] = value
            else:
                raise ValueError(f"{source}: unknown key {key!r}")
        return cls(**kwargs).validate()


def load_config(path: Optional[str]) -> TrainConfig:
    """Read a TOML config (``None``: the released defaults)."""
    if path is None:
        return TrainConfig().validate()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path!r} is not valid TOML: {exc}") from None
    return TrainConfig.from_dict(raw, source=path)
