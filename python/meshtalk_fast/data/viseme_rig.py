"""From a phoneme timeline to articulation curves at the video frame rate, plus the upper-face
motion that speech cannot predict (blinks, brow raises).

Channels (each a ``float64 [T]`` curve in [0, 1], frame k sampled at ``(k + 1/2) / fps`` s):
  jaw        jaw opening (open vowels high, bilabials low)
  round      lip rounding / protrusion (u:, w, oU, S)
  spread     lip spreading (i:, eI, s)
  close      lip closure, bilabials p b m
  labiodental  lower lip to the upper teeth, f v
  blink      eyelid closure (independent of the speech)
  brow       brow raise (independent of the speech)

jaw / round / spread: piecewise-linear keyframes that hold each phoneme's target over the middle of
the phoneme (30 % .. 70 % of its span), then a Gaussian filter over the frame curve
(coarticulation; widths ``JAW_SIGMA`` etc. in seconds). close / labiodental use dominance bumps
instead: 1 over the consonant (at least its nearest frame), falling linearly to 0 within
``DOMINANCE_RAMP`` s, so a short /p/ still closes the lips on at least one frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ["CHANNELS", "SPEECH_CHANNELS", "phoneme_targets", "articulation_curves", "blink_curve", "brow_curve",
           "Style"]

SPEECH_CHANNELS = ("jaw", "round", "spread", "close", "labiodental")
CHANNELS = SPEECH_CHANNELS + ("blink", "brow")

JAW_SIGMA, ROUND_SIGMA, SPREAD_SIGMA = 0.030, 0.050, 0.040  # s
DOMINANCE_RAMP = 0.050  # s
PAUSE_RAMP = 0.080  # s: a pause longer than twice this returns the mouth to rest in between

# (jaw, round, spread, close, labiodental) per eSpeak English phoneme mnemonic, stress marks removed.
_REST = (0.05, 0.0, 0.0, 0.0, 0.0)
_TABLE: Dict[str, Tuple[float, float, float, float, float]] = {}


def _put(names: str, jaw: float, rnd: float = 0.0, spread: float = 0.0, close: float = 0.0, labio: float = 0.0):
    for name in names.split():
        _TABLE[name] = (jaw, rnd, spread, close, labio)


# vowels
_put("a a# A: A@ aa a2 A", 0.95, 0.0, 0.25)
_put("aI aI@ aI3 aI2", 0.85, 0.0, 0.30)
_put("V", 0.70, 0.0, 0.15)
_put("aU aU@", 0.75, 0.35)
_put("O: O O@ OI 0 o", 0.60, 0.50)
_put("oU oU# o@", 0.45, 0.65)
_put("u: U U@ u u@ U2", 0.25, 0.85)
_put("E E2 e", 0.60, 0.0, 0.35)
_put("e@ eI", 0.50, 0.0, 0.45)
_put("3: 3 3:r", 0.45, 0.10, 0.05)
_put("@ @2 @5 a/", 0.40, 0.0, 0.10)
_put("@L", 0.35, 0.0, 0.10)
_put("i i: I2 i@3", 0.20, 0.0, 0.85)
_put("I I# i@", 0.25, 0.0, 0.60)
# consonants
_put("p b m m-", 0.08, 0.0, 0.0, 1.0)
_put("f v", 0.12, 0.0, 0.0, 0.0, 1.0)
_put("w w#", 0.15, 0.95)
_put("S Z tS dZ", 0.15, 0.55)
_put("r r- 3r", 0.20, 0.35)
_put("s z", 0.12, 0.0, 0.45)
_put("t d n t# d# ? n-", 0.20, 0.0, 0.20)
_put("l l- l/", 0.30, 0.0, 0.15)
_put("T D", 0.22, 0.0, 0.25)
_put("j", 0.15, 0.0, 0.60)
_put("k g N x", 0.25, 0.0, 0.10)
_put("h", 0.35)

_STRESS = "',%="  # eSpeak prefixes a phoneme with ' (primary), , (secondary), % or = stress marks
_VOWEL_START = "aeiouAEIOUV@03"


def phoneme_targets(mnemonic: str) -> Tuple[float, float, float, float, float]:
    """(jaw, round, spread, close, labiodental) targets for an eSpeak phoneme mnemonic.

    Pauses (``_``, ``_:``, ``_!``, ...) give the rest pose; unknown mnemonics fall back to a generic
    vowel or consonant by their first character."""
    name = mnemonic.lstrip(_STRESS)
    if not name or name.startswith("_") or name in (";", "|", "||"):
        return _REST
    if name in _TABLE:
        return _TABLE[name]
    trimmed = name.rstrip("#-/0123456789;`")
    if trimmed in _TABLE:
        return _TABLE[trimmed]
    return (0.5, 0.0, 0.2, 0.0, 0.0) if name[0] in _VOWEL_START else (0.2, 0.0, 0.1, 0.0, 0.0)


def is_pause(mnemonic: str) -> bool:
    return phoneme_targets(mnemonic) is _REST


@dataclass(frozen=True)
class Style:
    """Per-subject articulation style: gains on the speech channels and upper-face event statistics."""
    jaw_gain: float = 1.0
    round_gain: float = 1.0
    spread_gain: float = 1.0
    blink_interval: Tuple[float, float] = (2.0, 6.0)  # s, uniform
    blink_duration: float = 0.2  # s
    brow_rate: float = 0.25  # brow raises per second (Poisson)

    @staticmethod
    def random(rng: np.random.Generator) -> "Style":
        return Style(jaw_gain=float(rng.uniform(0.8, 1.15)), round_gain=float(rng.uniform(0.8, 1.2)),
                     spread_gain=float(rng.uniform(0.8, 1.2)), blink_duration=float(rng.uniform(0.17, 0.24)),
                     brow_rate=float(rng.uniform(0.12, 0.35)))


def _frame_times(n_frames: int, fps: int) -> np.ndarray:
    return (np.arange(n_frames) + 0.5) / fps


def _gaussian(curve: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian filter with edge replication: ``[T] -> [T]``."""
    if sigma_frames <= 0 or curve.shape[0] < 2:
        return curve
    r = max(1, int(np.ceil(3 * sigma_frames)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    k /= k.sum()
    padded = np.pad(curve, r, mode="edge")
    return np.convolve(padded, k, mode="valid")


def articulation_curves(starts: Sequence[float], ends: Sequence[float], phonemes: Sequence[str], n_frames: int,
                        fps: int = 30, style: Style = Style()) -> Dict[str, np.ndarray]:
    """Speech channels from a phoneme timeline.

    starts, ends: ``[P]`` phoneme spans in seconds (non-decreasing); phonemes: ``P`` eSpeak mnemonics.
    Returns ``{channel: float64 [n_frames]}`` for ``SPEECH_CHANNELS``, values in [0, 1].
    """
    starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    if not (starts.shape == ends.shape == (len(phonemes),)):
        raise ValueError(f"starts, ends and phonemes must all have length P, got {starts.shape}, {ends.shape} "
                         f"and {len(phonemes)}")
    if (ends < starts).any() or (np.diff(starts) < 0).any():
        raise ValueError("phoneme spans must be non-decreasing with end >= start")
    t = _frame_times(n_frames, fps)
    key_t, key_v = [0.0], [_REST]
    close = np.zeros(n_frames)
    labio = np.zeros(n_frames)
    for s, e, name in zip(starts, ends, phonemes):
        target = phoneme_targets(name)
        dur = e - s
        if target is _REST:
            if dur > 2 * PAUSE_RAMP:
                key_t += [s + PAUSE_RAMP, e - PAUSE_RAMP]
                key_v += [_REST, _REST]
            continue
        key_t += [s + 0.3 * dur, s + 0.7 * dur]
        key_v += [target, target]
        for channel, value in ((close, target[3]), (labio, target[4])):
            if value > 0:
                _dominance_bump(channel, t, s, e, value, fps)
    end = max(float(ends[-1]) if len(ends) else 0.0, t[-1] if n_frames else 0.0)
    key_t.append(end + 1e-6)
    key_v.append(_REST)
    key_t = np.asarray(key_t)
    key_v = np.asarray(key_v)
    order = np.argsort(key_t, kind="stable")
    key_t, key_v = key_t[order], key_v[order]
    out = {}
    gains = {"jaw": style.jaw_gain, "round": style.round_gain, "spread": style.spread_gain}
    for c, (name, sigma) in enumerate((("jaw", JAW_SIGMA), ("round", ROUND_SIGMA), ("spread", SPREAD_SIGMA))):
        curve = np.interp(t, key_t, key_v[:, c])
        out[name] = np.clip(_gaussian(curve, sigma * fps) * gains[name], 0.0, 1.0)
    out["close"] = close
    out["labiodental"] = labio
    return out


def _dominance_bump(channel: np.ndarray, t: np.ndarray, s: float, e: float, value: float, fps: int) -> None:
    """``channel = max(channel, bump)``: ``value`` over [s, e] (and on the frame nearest the centre),
    falling linearly to 0 within ``DOMINANCE_RAMP`` s outside the span."""
    if t.shape[0] == 0:
        return
    dist = np.maximum(np.maximum(s - t, t - e), 0.0)
    bump = value * np.clip(1.0 - dist / DOMINANCE_RAMP, 0.0, 1.0)
    k = int(np.clip(np.round(0.5 * (s + e) * fps - 0.5), 0, t.shape[0] - 1))
    bump[k] = value
    np.maximum(channel, bump, out=channel)


def blink_curve(n_frames: int, fps: int, rng: np.random.Generator, style: Style = Style()) -> np.ndarray:
    """Blinks at random times: intervals uniform in ``style.blink_interval``, each closing in 35 % of
    ``style.blink_duration``, holding 15 %, reopening in 50 %. Returns ``float64 [n_frames]`` in [0, 1]."""
    t = _frame_times(n_frames, fps)
    out = np.zeros(n_frames)
    duration = style.blink_duration
    lo, hi = style.blink_interval
    onset = float(rng.uniform(0.1, hi))
    while onset < (t[-1] if n_frames else 0.0):
        x = (t - onset) / duration
        shape = np.where(x < 0.35, x / 0.35, np.where(x < 0.5, 1.0, 1.0 - (x - 0.5) / 0.5))
        shape = np.where((x < 0) | (x > 1), 0.0, shape)
        np.maximum(out, _ease(shape), out=out)
        onset += float(rng.uniform(lo, hi))
    return out


def brow_curve(n_frames: int, fps: int, rng: np.random.Generator, style: Style = Style()) -> np.ndarray:
    """Brow raises as a Poisson process (``style.brow_rate`` per second): amplitude 0.3..1, rise
    0.15..0.3 s, hold 0.2..0.8 s, fall 0.3..0.5 s, raised-cosine ramps. ``float64 [n_frames]``."""
    t = _frame_times(n_frames, fps)
    out = np.zeros(n_frames)
    onset = float(rng.exponential(1.0 / style.brow_rate)) - 0.5
    while onset < (t[-1] if n_frames else 0.0):
        amp, rise = rng.uniform(0.3, 1.0), rng.uniform(0.15, 0.3)
        hold, fall = rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.5)
        x = t - onset
        up = _ease(np.clip(x / rise, 0, 1))
        down = 1 - _ease(np.clip((x - rise - hold) / fall, 0, 1))
        np.maximum(out, amp * np.minimum(up, down) * (x >= 0), out=out)
        onset += rise + hold + fall + float(rng.exponential(1.0 / style.brow_rate))
    return out


def _ease(x: np.ndarray) -> np.ndarray:
    """Raised-cosine ease in/out on [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))
