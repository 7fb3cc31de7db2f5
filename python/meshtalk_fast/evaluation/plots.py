"""Pictures of results people would rather look at than read (PNG, matplotlib's Agg backend):
training curves, one panel per stage and group of terms, and the upper face over time (eye closure and
brow height, ground truth vs sampled)."""
from __future__ import annotations

import fnmatch
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["plot_training_curves", "plot_upper_face", "CURVE_PANELS"]

# (stage, split, title, keys): one panel each; a panel with nothing logged is left out. A key may be an fnmatch
# pattern ("saturation_group*": every expression group the log has, in group order)
CURVE_PANELS = [
    (1, "train", "stage 1: reconstruction", ("total", "recon", "landmarks", "brow")),
    (1, "train", "stage 1: modality crossing", ("mouth", "eye")),
    (1, "train", "stage 1: codes", ("code_perplexity", "diversity", "expression_diversity")),
    (1, "train", "stage 1: expression groups, largest class probability", ("saturation_group*",)),
    (1, "train", "stage 1: expression groups, classes per batch (1: locked)", ("classes_group*",)),
    (1, "val", "stage 1: validation (reconstruction)", ("lve", "lve_static", "code_sensitivity")),
    (2, "train", "stage 2: prior", ("cross_entropy",)),
    (2, "val", "stage 2: validation (speech only)", ("lve", "lve_static")),
    (2, "val", "stage 2: validation (prior)", ("cross_entropy", "cross_entropy_expression", "cross_entropy_audio")),
]


def _series(log_path: str) -> Dict[Tuple[int, str, str], List[Tuple[int, float]]]:
    """``{(stage, split, key): [(step, value), ...]}`` from a ``metrics.jsonl`` log."""
    series: Dict[Tuple[int, str, str], List[Tuple[int, float]]] = {}
    with open(log_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("stage", "step"):
                    series.setdefault((rec.get("stage"), rec.get("split"), k), []).append((rec["step"], float(v)))
    return series


def _logged(series, stage: int, split: str, keys: Sequence[str]) -> List[str]:
    """The names of ``keys`` (names or fnmatch patterns) that the log has for (stage, split), in the order of ``keys``
    and, within a pattern, by the number the name ends with (``classes_group2`` before ``classes_group10``)."""
    names = [k for (st, sp, k) in series if (st, sp) == (stage, split)]
    out: List[str] = []
    for key in keys:
        found = fnmatch.filter(names, key) if any(c in key for c in "*?[") else [key] if key in names else []
        out += sorted((k for k in found if k not in out), key=lambda k: (len(k), k))
    return out


def _figure(rows: int, cols: int, width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, constrained_layout=True)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, png_path: str) -> None:
    """Write through a temporary file, so a reader never sees half a picture."""
    tmp = f"{png_path}.tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, png_path)


def plot_training_curves(log_path: str, png_path: str) -> Dict[str, list]:
    """One panel per stage and group of terms (``CURVE_PANELS``), log-scaled y where all values are > 0; the stage-1
    lock watch's firings (split ``"lock"``, training/locks.py) as dotted vertical lines on the stage-1 training
    panels. Returns what it drew: ``{"panels": [titles], "locks": [stage-1 steps]}``."""
    if not os.path.isfile(log_path):
        raise FileNotFoundError(f"training log {log_path!r} does not exist")
    series = _series(log_path)
    locks = [step for step, _ in series.get((1, "lock", "group"), [])]
    panels = [(stage, split, title, _logged(series, stage, split, keys)) for stage, split, title, keys in CURVE_PANELS]
    panels = [p for p in panels if p[3]]
    cols = 2
    rows = max(1, -(-len(panels) // cols))
    fig, axes = _figure(rows, cols, 11, 3.2 * rows)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no logged values yet", ha="center")
    for ax, (stage, split, title, keys) in zip(axes.flat, panels):
        positive = True
        for k in keys:
            steps, values = zip(*series[(stage, split, k)])
            positive &= min(values) > 0
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=k)
        if (stage, split) == (1, "train"):
            for i, step in enumerate(locks):
                ax.axvline(step, color="red", ls=":", lw=1, label="lock watch fired" if i == 0 else None)
        if positive:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _save(fig, png_path)
    return {"panels": [title for _, _, title, _ in panels], "locks": locks}


def plot_upper_face(png_path: str, fps: float, truth: Dict[str, Sequence[float]],
                    sampled: Dict[str, Sequence[Sequence[float]]], thresholds: Optional[Dict[str, float]] = None,
                    title: str = "") -> None:
    """The upper face over time: for each signal name (``"eye closure"``, ``"brow height"``) the ground
    truth ``truth[name] [T]`` and one line per sampled animation ``sampled[name] [[T], ...]``, with the
    event threshold dashed. Signals are ``metrics.region_motion`` values (distance from the template)."""
    names = list(truth)
    if not names:
        raise ValueError("truth must hold at least one signal, got none")
    fig, axes = _figure(len(names), 1, 11, 2.6 * len(names))
    for ax, name in zip(axes[:, 0], names):
        t = [i / fps for i in range(len(truth[name]))]
        ax.plot(t, truth[name], color="black", lw=2, label="ground truth")
        for i, s in enumerate(sampled.get(name, [])):
            ax.plot([j / fps for j in range(len(s))], s, lw=1.2, alpha=0.8, label=f"sampled (seed {i})")
        if thresholds and name in thresholds:
            ax.axhline(thresholds[name], color="grey", ls="--", lw=1, label="event threshold")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        axes[0, 0].set_title(title, fontsize=10)
    _save(fig, png_path)
