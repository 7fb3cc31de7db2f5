"""Blendshape weights in the Live Link Face app's formats: its CSV takes and its UDP packets (what Unreal's
Live Link receives from the iOS app, no plugin needed).

Both carry 61 curves in Unreal's ``EARFaceBlendShape`` order (``LIVELINK_CURVES``): the 52 ARKit
blendshapes (capitalised: ``EyeBlinkLeft``), then head yaw/pitch/roll and each eye's yaw/pitch/roll,
which we send as 0.

CSV (``write_livelink_csv``): header ``Timecode,BlendShapeCount,EyeBlinkLeft,...,RightEyeRoll``, one
row per frame: timecode ``HH:MM:SS:FF.mmm`` (frame FF at the take's fps, the sub-frame as a fraction:
always ``.000`` here), ``61``, the 61 values.

UDP packet, version 6 (``livelink_packet``; all integers and floats big-endian)::

    uint8   6                          packet version
    uint32  n, n bytes                 device id (UTF-8)
    uint32  n, n bytes                 subject name (UTF-8)
    int32   frame number               } FQualifiedFrameTime: the frame, its sub-frame,
    float32 sub-frame                  } and the frame rate as a fraction
    int32   fps numerator, int32 denominator
    uint8   61                         curve count
    61 x float32                       the curves
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..ops.blendshapes import ARKIT_NAMES
from ..io.gltf import replace_file

__all__ = ["LIVELINK_CURVES", "PACKET_VERSION", "DEFAULT_PORT", "arkit_frame", "livelink_packet",
           "parse_livelink_packet", "timecode", "write_livelink_csv", "read_livelink_csv", "LiveLinkSender",
           "parse_target"]

LIVELINK_CURVES = tuple(n[0].upper() + n[1:] for n in ARKIT_NAMES) + (
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch",
    "RightEyeRoll")
PACKET_VERSION = 6
DEFAULT_PORT = 11111


def arkit_frame(weights: np.ndarray, index: Dict[str, int]) -> np.ndarray:
    """``weights [T, K]`` of a rig and ``index`` (ARKit name -> column, ``blendshapes.arkit_index``) ->
    ``float32 [T, 61]`` in ``LIVELINK_CURVES`` order; curves the rig lacks are 0."""
    w = np.asarray(weights, np.float32)
    out = np.zeros((w.shape[0], len(LIVELINK_CURVES)), np.float32)
    for name, k in index.items():
        out[:, ARKIT_NAMES.index(name)] = w[:, k]
    return out


def timecode(frame: int, fps: int) -> str:
    """Frame ``frame`` at ``fps`` as ``HH:MM:SS:FF.000``."""
    seconds, ff = divmod(int(frame), int(fps))
    hh, rest = divmod(seconds, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.000"


def write_livelink_csv(path, curves: np.ndarray, fps: int) -> None:
    """``curves [T, 61]`` (``arkit_frame``) as a Live Link Face CSV take at ``fps`` (temp file, then rename)."""
    c = np.asarray(curves, np.float32)
    if c.ndim != 2 or c.shape[1] != len(LIVELINK_CURVES):
        raise ValueError(f"curves must have shape [T, {len(LIVELINK_CURVES)}], got {list(c.shape)}")

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            fh.write("Timecode,BlendShapeCount," + ",".join(LIVELINK_CURVES) + "\n")
            for t, row in enumerate(c):
                fh.write(f"{timecode(t, fps)},{len(LIVELINK_CURVES)}," + ",".join(f"{x:.6g}" for x in row) + "\n")
    replace_file(path, write)


def livelink_packet(curves: Sequence[float], frame: int, fps: int, subject: str = "meshtalk_fast",
                    device: str = "meshtalk_fast", sub_frame: float = 0.0) -> bytes:
    """One Live Link Face UDP packet (module docstring) carrying ``curves [61]``."""
    c = np.asarray(curves, np.float32).reshape(-1)
    if c.shape[0] != len(LIVELINK_CURVES):
        raise ValueError(f"curves must hold {len(LIVELINK_CURVES)} values, got {c.shape[0]}")
    dev, sub = device.encode("utf-8"), subject.encode("utf-8")
    return (struct.pack(">BI", PACKET_VERSION, len(dev)) + dev + struct.pack(">I", len(sub)) + sub
            + struct.pack(">ifiiB", int(frame), float(sub_frame), int(fps), 1, len(LIVELINK_CURVES))
            + c.astype(">f4").tobytes())


def parse_livelink_packet(data: bytes) -> Dict[str, object]:
    """The fields of a packet (``livelink_packet``'s layout): version, device, subject, frame, sub_frame,
    fps (numerator / denominator), curves ``float32 [61]``. Raises ``ValueError`` on a malformed packet."""
    try:
        version, n = struct.unpack_from(">BI", data, 0)
        if version != PACKET_VERSION:
            raise ValueError(f"packet version {version}, expected {PACKET_VERSION}")
        at = 5
        device = data[at:at + n].decode("utf-8")
        at += n
        (n,) = struct.unpack_from(">I", data, at)
        subject = data[at + 4:at + 4 + n].decode("utf-8")
        at += 4 + n
        frame, sub_frame, num, den, count = struct.unpack_from(">ifiiB", data, at)
        at += 17
        curves = np.frombuffer(data, ">f4", count, at).astype(np.float32)
        if at + 4 * count != len(data):
            raise ValueError(f"{len(data) - at - 4 * count} bytes left over after {count} curves")
    except struct.error as exc:
        raise ValueError(f"truncated Live Link packet ({len(data)} bytes): {exc}") from None
    return {"version": version, "device": device, "subject": subject, "frame": frame, "sub_frame": sub_frame,
            "fps": (num, den), "curves": curves}


def parse_target(text: str) -> Tuple[str, int]:
    """``"HOST[:PORT]"`` -> (host, port), port default ``DEFAULT_PORT``."""
    host, _, port = str(text).rpartition(":") if ":" in str(text) else (str(text), "", "")
    if not host:
        raise ValueError(f"--livelink must be HOST or HOST:PORT, got {text!r}")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--livelink port must be an integer in [1, 65535], got {port!r} in {text!r}")
    return host, int(port)


class LiveLinkSender:
    """Sends frames of curves to ``host:port`` over UDP as Live Link Face packets. The host is resolved
    once, here: an unresolvable one raises ``ValueError`` naming it."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, fps: int = 30, subject: str = "meshtalk_fast",
                 device: str = "meshtalk_fast"):
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except (socket.gaierror, UnicodeError) as exc:
            raise ValueError(f"Live Link target {host!r} (port {port}) cannot be resolved: {exc}") from None
        self.address, self.fps, self.subject, self.device = address, int(fps), subject, device
        self.socket = socket.socket(family, kind, proto)
        self.sent = 0

    def send(self, curves: Sequence[float], frame: Optional[int] = None) -> None:
        frame = self.sent if frame is None else frame
        self.socket.sendto(livelink_packet(curves, frame, self.fps, self.subject, self.device), self.address)
        self.sent += 1

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> "LiveLinkSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_livelink_csv(path) -> Tuple[list, np.ndarray]:
    """(header, values [T, 61]) of a CSV take (for tests and tools)."""
    with open(os.fspath(path)) as fh:
        header = fh.readline().rstrip("\n").split(",")
        rows = [line.rstrip("\n").split(",") for line in fh if line.strip()]
    return header, np.array([[float(x) for x in r[2:]] for r in rows], np.float32).reshape(len(rows), -1)
