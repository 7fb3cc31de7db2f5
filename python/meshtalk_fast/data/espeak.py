"""eSpeak NG speech with phoneme timings, called through ctypes.

The eSpeak NG library and its voice data ship inside the ``espeakng-loader`` wheel; this module asks
that package where they are and drives the C API directly:
``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ..., espeakINITIALIZE_PHONEME_EVENTS)``,
``espeak_SetSynthCallback`` (audio and events are handed to us in memory, nothing is played),
``espeak_SetVoiceByName`` / ``espeak_SetParameter`` / ``espeak_ng_SetRandSeed`` and ``espeak_Synth``.
Every ``espeakEVENT_PHONEME`` event carries the phoneme's eSpeak mnemonic (e.g. ``'aI``, ``@``, ``p``)
and the output sample at which it starts.

Determinism. eSpeak keeps state between utterances (pitch flutter phase, filter memories), so the same
text synthesised twice in one process gives slightly different samples. To make every utterance a
pure function of (text, voice, seed), synthesis runs in a helper process that initialises eSpeak once
and forks a fresh child per utterance (on platforms without ``fork``: one fresh process per
utterance). The helper runs this file as a script, so it imports nothing but the standard library
and numpy (no torch).
"""
from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["Voice", "Utterance", "synthesize", "EspeakError", "library_paths"]

# Constants of speak_lib.h (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES = 0x100  # text inside [[ ]] is read as eSpeak phoneme mnemonics
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EE_OK = 0
_HEADER = struct.Struct("<II")  # response frame: JSON length, audio byte length


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded, initialised or could not synthesise a request."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an eSpeak voice name (``"en-us"``, ``"en-gb-x-rp+f2"``: language voice
    plus an optional ``+variant``), speaking rate in words per minute (80..450), base pitch and pitch
    range (0..100, 50 = the voice's default)."""
    name: str
    rate: int = 175
    pitch: int = 50
    range: int = 50

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"Voice.name must be a non-empty eSpeak voice name without spaces, got {self.name!r}")
        for field, lo, hi in (("rate", 80, 450), ("pitch", 0, 100), ("range", 0, 100)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"Voice.{field} must be an integer in [{lo}, {hi}], got {value!r}")

    @property
    def id(self) -> str:
        """A file-name-safe subject id, e.g. ``en-gb-x-rp+f2_r150_p60``."""
        rng = "" if self.range == 50 else f"_g{self.range}"
        return f"{self.name}_r{self.rate}_p{self.pitch}{rng}"


@dataclass
class Utterance:
    """Synthesised speech and its phoneme timeline.

    samples: ``int16 [N]`` at ``sample_rate`` (eSpeak's own rate, 22050 Hz).
    starts, ends: ``int64 [P]`` sample index where phoneme p starts / ends (the next phoneme's start;
        the last one ends at N); non-decreasing, inside ``[0, N]``.
    phonemes: ``P`` eSpeak mnemonics as reported, stress marks included (``'aI``, ``,oU``, ``_:``).
    """
    text: str
    voice: Voice
    seed: int
    samples: np.ndarray
    sample_rate: int
    starts: np.ndarray
    ends: np.ndarray
    phonemes: List[str]

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def times(self) -> Tuple[np.ndarray, np.ndarray]:
        """Phoneme start and end times in seconds: ``(float64 [P], float64 [P])``."""
        return self.starts / self.sample_rate, self.ends / self.sample_rate


def library_paths() -> Tuple[str, str]:
    """(shared library path, espeak-ng-data path) from the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError("the built-in speech data set needs eSpeak NG from the 'espeakng-loader' package: "
                          "pip install espeakng-loader") from None
    lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not os.path.isfile(lib):
        raise EspeakError(f"espeakng-loader's shared library {lib!r} does not exist")
    if not os.path.isdir(data):
        raise EspeakError(f"espeakng-loader's voice data folder {data!r} does not exist")
    return lib, data


# ------------------------------------------------------------------------------------------------
# The engine: runs inside the helper process only.
# ------------------------------------------------------------------------------------------------
class _Engine:
    def __init__(self, library: str, data: str):
        lib = ctypes.CDLL(library)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        self.lib = lib
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(),
                                                 _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed for voice data {data!r} (returned {self.sample_rate})")
        self._chunks: List[np.ndarray] = []
        self._events: List[Tuple[int, int, str]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]

    def _on_audio(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = ev.id.string.decode("utf-8", errors="replace")
                self._events.append((int(ev.sample), int(ev.audio_position), name))
            i += 1
        return 0

    def synthesize(self, text: str, voice: dict, seed: int) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice["name"].encode()) != _EE_OK:
            raise EspeakError(f"eSpeak NG has no voice {voice['name']!r}")
        for param, key in ((_PARAM_RATE, "rate"), (_PARAM_PITCH, "pitch"), (_PARAM_RANGE, "range")):
            if lib.espeak_SetParameter(param, int(voice[key]), 0) != _EE_OK:
                raise EspeakError(f"espeak_SetParameter({key}={voice[key]}) failed")
        lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        if self._set_seed is not None:
            self._set_seed(int(seed))
        self._chunks, self._events = [], []
        raw = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEMES, None, None)
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status} for text {text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        events = []
        for sample, ms, name in self._events:
            # `sample` is the output sample the event belongs to; fall back to the documented
            # millisecond position if the two ever disagree by more than 2 ms.
            if abs(sample * 1000.0 / self.sample_rate - ms) > 2.0:
                sample = int(round(ms * self.sample_rate / 1000.0))
            events.append((sample, name))
        return audio.astype(np.int16, copy=False), events


def _write_frame(stream, header: dict, payload: bytes = b"") -> None:
    blob = json.dumps(header).encode()
    stream.write(_HEADER.pack(len(blob), len(payload)) + blob + payload)
    stream.flush()


def _read_exact(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        part = stream.read(n - len(out))
        if not part:
            raise EOFError(f"expected {n} bytes, got {len(out)}")
        out += part
    return bytes(out)


def _read_frame(stream) -> Tuple[dict, bytes]:
    n_json, n_payload = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return json.loads(_read_exact(stream, n_json)), _read_exact(stream, n_payload)


def _answer(engine: _Engine, request: dict) -> Tuple[dict, bytes]:
    try:
        audio, events = engine.synthesize(request["text"], request["voice"], request["seed"])
    except Exception as exc:  # reported to the client, which raises it there
        return {"ok": False, "error": str(exc)}, b""
    return {"ok": True, "sample_rate": engine.sample_rate, "events": events}, audio.tobytes()


def _serve(library: str, data: str, mode: str) -> None:
    """The helper's main loop: one JSON request per line on stdin, one frame per answer on stdout."""
    out = sys.stdout.buffer
    try:
        engine = _Engine(library, data)
    except Exception as exc:
        _write_frame(out, {"ok": False, "error": f"eSpeak NG could not be initialised: {exc}"})
        return
    _write_frame(out, {"ok": True, "sample_rate": engine.sample_rate})
    for line in sys.stdin:
        request = json.loads(line)
        if mode == "once":  # a fresh process per utterance: answer directly and stop
            _write_frame(out, *_answer(engine, request))
            return
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child synthesises from the pristine state the parent kept
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as pipe:
                _write_frame(pipe, *_answer(engine, request))
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            blob = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or len(blob) < _HEADER.size:
            _write_frame(out, {"ok": False, "error": f"the synthesis process died (wait status {status}) "
                                                      f"on text {request.get('text')!r}"})
        else:
            out.write(blob)
            out.flush()


# ------------------------------------------------------------------------------------------------
# The client: lives in the user's process.
# ------------------------------------------------------------------------------------------------
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__espeak_helper__')"


class _Helper:
    def __init__(self, isolation: str):
        library, data = library_paths()
        self.isolation = isolation
        self.pid = os.getpid()
        self.log = tempfile.TemporaryFile()
        self._args = [sys.executable, "-c", _BOOT, os.path.abspath(__file__), library, data]
        self.proc: Optional[subprocess.Popen] = None
        self.sample_rate = 0
        if isolation == "fork":
            self.proc = self._start("fork")

    def _start(self, mode: str) -> subprocess.Popen:
        proc = subprocess.Popen(self._args + [mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        hello = self._receive(proc)[0]
        if not hello.get("ok"):
            raise EspeakError(hello.get("error", "unknown error"))
        self.sample_rate = int(hello["sample_rate"])
        return proc

    def _receive(self, proc: subprocess.Popen) -> Tuple[dict, bytes]:
        try:
            return _read_frame(proc.stdout)
        except (EOFError, struct.error, ValueError) as exc:
            proc.kill()
            proc.wait()
            self.log.seek(0)
            detail = self.log.read().decode(errors="replace").strip()[-2000:]
            raise EspeakError(f"the eSpeak helper process stopped unexpectedly ({exc}); its stderr: "
                              f"{detail or '(empty)'}") from None

    def request(self, payload: dict) -> Tuple[dict, bytes]:
        line = (json.dumps(payload) + "\n").encode()
        if self.isolation == "fork":
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start("fork")
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
            return self._receive(self.proc)
        proc = self._start("once")
        proc.stdin.write(line)
        proc.stdin.close()
        answer = self._receive(proc)
        proc.wait()
        return answer

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


_HELPERS = {}
_LOCK = threading.Lock()


def _helper(isolation: str) -> _Helper:
    key = (os.getpid(), isolation)  # a forked process (e.g. a DataLoader worker) gets its own helper
    helper = _HELPERS.get(key)
    if helper is None:
        helper = _HELPERS[key] = _Helper(isolation)
    return helper


def _close_helpers() -> None:
    for (pid, _), helper in list(_HELPERS.items()):
        if pid == os.getpid():
            helper.close()


def synthesize(text: str, voice: Voice = Voice("en-us"), seed: int = 0, isolation: Optional[str] = None) -> Utterance:
    """Speak ``text`` with ``voice``; returns the ``Utterance`` (int16 audio at eSpeak's 22050 Hz and
    the phoneme timeline). The result depends only on (text, voice, seed), never on what was spoken
    before. ``isolation``: ``"fork"`` (default where ``os.fork`` exists) or ``"process"`` (a fresh
    process per utterance; slower, works everywhere). Text inside ``[[ ]]`` is read as eSpeak phoneme
    mnemonics."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    if not isinstance(voice, Voice):
        raise TypeError(f"voice must be a Voice, got {type(voice).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 31:
        raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
    if isolation is None:
        isolation = "fork" if hasattr(os, "fork") else "process"
    if isolation not in ("fork", "process"):
        raise ValueError(f"isolation must be 'fork' or 'process', got {isolation!r}")
    if isolation == "fork" and not hasattr(os, "fork"):
        raise ValueError("isolation='fork' needs os.fork, which this platform lacks; use isolation='process'")
    if "+" in voice.name:  # eSpeak silently ignores an unknown variant: refuse it here instead
        variant = voice.name.split("+", 1)[1]
        folder = os.path.join(library_paths()[1], "voices", "!v")
        if not os.path.isfile(os.path.join(folder, variant)):
            known = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            raise EspeakError(f"eSpeak NG has no voice variant {variant!r} (voice {voice.name!r}); variants: "
                              f"{', '.join(known[:40])}{' ...' if len(known) > 40 else ''}")
    payload = {"text": text, "voice": {"name": voice.name, "rate": voice.rate, "pitch": voice.pitch,
                                       "range": voice.range}, "seed": seed}
    with _LOCK:
        header, audio = _helper(isolation).request(payload)
    if not header.get("ok"):
        raise EspeakError(f"eSpeak NG could not speak {text!r} with voice {voice.name!r}: {header.get('error')}")
    samples = np.frombuffer(audio, dtype=np.int16).copy()
    if samples.size == 0:
        raise EspeakError(f"eSpeak NG produced no audio for {text!r} with voice {voice.name!r}")
    n = samples.shape[0]
    starts = np.array([s for s, _ in header["events"]], dtype=np.int64)
    names = [name for _, name in header["events"]]
    if starts.size == 0:
        raise EspeakError(f"eSpeak NG reported no phoneme events for {text!r} with voice {voice.name!r}")
    if (np.diff(starts) < 0).any() or starts[0] < 0 or starts[-1] > n:
        raise EspeakError(f"eSpeak NG reported phoneme events out of order or outside the audio "
                          f"({n} samples) for {text!r}: {starts.tolist()}")
    ends = np.append(starts[1:], n)
    return Utterance(text=text, voice=voice, seed=seed, samples=samples, sample_rate=int(header["sample_rate"]),
                     starts=starts, ends=ends, phonemes=names)


if __name__ == "__espeak_helper__":
    _serve(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    import atexit

    atexit.register(_close_helpers)
