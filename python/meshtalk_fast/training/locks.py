"""The expression groups' lock watch (``stage1.expression_lock_steps``): a group whose codes locked on one class is
given its straight-through temperature back.

Stage 1's expression heads pass their decoder gradient to their logits through ``softmax(logits / T)``
(``stage1.expression_st_temperature``), T annealed from its start to 1 (``stage1.expression_st_anneal``). A group of
heads can still lock late in the anneal: every frame of every batch on one class, its softmax saturated, so at T
near 1 no gradient reaches its logits and it stays there for good (RESULTS.md, "Stuck brow groups"). This watch
keeps, per group, the last ``steps`` steps' verdicts: was the step *locked*, the batch's frames on one class on each
of the group's heads (``classes_group{g}`` 1) with a saturated softmax (``saturation_group{g}`` at least
``LOCK_SATURATION``)? When at least ``LOCKED_SHARE`` of them were, the group is locked: its temperature goes back to
the start and anneals again, from that step, over the same share of the stage, and its window starts empty. A share
rather than a run of consecutive steps because a stuck group's batches still show a second class now and then (a
batch full of brow raises): seed 4's stuck brow group in a 1150-step run was locked in 80-100 % of every 50 steps from
step ~840 on and never 30 steps in a row. Runs in which no group locks are not touched: their temperatures are the
schedule's, step for step.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

__all__ = ["LockWatch", "LOCK_SATURATION", "LOCKED_SHARE", "annealed_temperature"]

# A locked step: the batch's mean largest class probability of the group's heads at least this, and one class chosen
# on each head. Healthy brow groups of the quick start sit at 0.6-1.0 with 2-6 classes per batch (a learnt resting /
# raised pair: ~1.0 with 2), with one class only in single batches; a stuck one sits at 1.000 with one class for
# hundreds of steps.
LOCK_SATURATION = 0.99
# The share of the window's steps that must be locked. Over windows of 50 steps (read from the logs, every 10th step),
# the 20 healthy runs and probes on record reached at most 0.2 in their brow group (0.6 in seed 4's first 600 steps,
# which went on to get stuck), the two stuck ones 1.0.
LOCKED_SHARE = 0.8


def annealed_temperature(start: float, progress: float) -> float:
    """``start`` falling geometrically to 1 as ``progress`` goes from 0 to 1; 1 after."""
    return 1.0 if progress >= 1.0 else float(start) ** (1.0 - max(0.0, progress))


class LockWatch:
    """``LockWatch(groups, steps, start, share)``: ``observe(terms, frac)`` after each stage-1 step (the step's logged
    terms, ``frac`` the stage's progress in [0, 1]) returns the groups that locked at it (the trainer logs them: the
    log is the record of every lock); ``temperatures(frac)`` the straight-through temperature of each group.
    ``state_dict``/``load_state_dict`` carry it through checkpoints."""

    def __init__(self, groups: int, steps: int, start: float, share: float):
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if not (start > 1.0 and 0.0 < share <= 1.0):
            raise ValueError(f"the lock watch raises the temperature to start > 1 and anneals it over a share in "
                             f"(0, 1], got start {start!r}, share {share!r}")
        self.groups, self.steps, self.start, self.share = groups, steps, float(start), float(share)
        self.need = math.ceil(LOCKED_SHARE * steps)     # locked steps in the window that lock the group
        self.window: List[Deque[bool]] = [deque(maxlen=steps) for _ in range(groups)]  # last steps' verdicts
        self.since: List[Optional[float]] = [None] * groups  # the progress at which its temperature was raised again

    def temperatures(self, frac: float) -> Tuple[float, ...]:
        """Each group's temperature at progress ``frac``: the schedule's, or its own re-anneal where larger."""
        scheduled = annealed_temperature(self.start, frac / self.share)
        return tuple(scheduled if since is None else
                     max(scheduled, annealed_temperature(self.start, (frac - since) / self.share))
                     for since in self.since)

    def observe(self, terms: Dict[str, float], frac: float) -> List[int]:
        """Add the step's verdict per group from ``terms`` (``classes_group{g}``, ``saturation_group{g}``); the groups
        whose last ``steps`` steps hold at least ``LOCKED_SHARE`` locked ones get their temperature raised, their window
        emptied, and are returned."""
        locked = []
        for g in range(self.groups):
            try:
                classes, top = float(terms[f"classes_group{g}"]), float(terms[f"saturation_group{g}"])
            except KeyError as exc:
                raise KeyError(f"the lock watch needs the stage-1 diagnostics classes_group{g} and "
                               f"saturation_group{g}; the step's terms have {sorted(terms)}") from exc
            # classes: the mean over micro-batches (and processes) of the per-head count, so <= 1 means one class
            # on every head of every micro-batch
            self.window[g].append(classes <= 1.0 + 1e-6 and top >= LOCK_SATURATION)
            if len(self.window[g]) == self.steps and sum(self.window[g]) >= self.need:
                self.window[g].clear()
                self.since[g] = float(frac)
                locked.append(g)
        return locked

    def state_dict(self) -> dict:
        return {"window": [[int(x) for x in w] for w in self.window], "since": list(self.since)}

    def load_state_dict(self, state: dict) -> None:
        window, since = list(state.get("window", [])), list(state.get("since", []))
        if len(window) != self.groups or len(since) != self.groups:
            raise ValueError(f"the lock watch state holds {len(window)} / {len(since)} groups, expected {self.groups}")
        self.window = [deque((bool(x) for x in w), maxlen=self.steps) for w in window]
        self.since = [None if s is None else float(s) for s in since]
