"""Headless preview rendering: shaded mesh frames (NumPy + Pillow) and an H.264/AAC MP4 (imageio-ffmpeg).

Why this way: the machines this runs on have no GPU and no display, so OpenGL-based renderers
(pyrender, Open3D's offscreen path) need EGL/OSMesa set-ups that are rarely there. A face mesh seen
from the front is almost a height field, so a painter's algorithm is enough: back faces are culled,
the remaining triangles are sorted far to near and filled with Pillow's ``ImageDraw.polygon`` (C
code), flat (Lambert) shaded from their face normals, at ``supersample`` times the size and reduced
with a box filter for anti-aliasing. The camera is orthographic along -z (the template's front is
+z, up is +y) and fixed for the whole sequence: it frames the bounding box of all frames.

Video: imageio-ffmpeg's wheel ships a static ffmpeg with libx264 and the native AAC encoder, so no
system ffmpeg is needed; frames are piped to it as raw RGB (``write_frames``) and the speech is muxed
as AAC from a temporary 16-bit WAV.
"""
from __future__ import annotations

import os
import re
import subprocess
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ..base.checks import shape_str
from ..base.tempfiles import make_temp, release

__all__ = ["Camera", "render_frames", "save_preview_mp4", "probe_mp4", "ffmpeg_exe", "frame_grid", "eye_colours"]

BACKGROUND = (28, 30, 36)
SKIN = np.array([226.0, 196.0, 178.0])
LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])  # towards the light, camera space
AMBIENT = 0.22
EYE = np.array([46.0, 34.0, 32.0])  # the eye opening (eye_colours): dark, so a closing lid hides it


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _as_numpy(x, name: str, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


class Camera:
    """Fixed orthographic camera along -z framing ``vertices [T, V, 3]`` (or ``[V, 3]``) in a
    ``width`` x ``height`` image with ``margin`` (fraction of the size) on each side."""

    def __init__(self, vertices: np.ndarray, width: int, height: int, margin: float = 0.06):
        pts = vertices.reshape(-1, 3)
        lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        self.scale = float(min(width * (1 - 2 * margin) / span[0], height * (1 - 2 * margin) / span[1]))
        self.centre = (lo + hi) / 2
        self.width, self.height = width, height

    def project(self, v: np.ndarray) -> np.ndarray:
        """``v [..., 3]`` -> pixel coordinates ``[..., 2]`` (x right, y down)."""
        xy = (v[..., :2] - self.centre) * self.scale
        return np.stack([self.width / 2 + xy[..., 0], self.height / 2 - xy[..., 1]], axis=-1)


def _shade(tri: np.ndarray, base: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``tri [F, 3, 3]`` (and base colours ``[F, 3]``, default skin) -> (front-facing mask ``[F]``, RGB
    ``[F, 3]`` uint8 from Lambert shading)."""
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1)
    front = n[:, 2] > 0  # counter-clockwise seen from +z (the camera)
    n = n / np.maximum(length, 1e-20)[:, None]
    light = AMBIENT + (1 - AMBIENT) * np.clip(n @ LIGHT, 0.0, 1.0)
    base = SKIN[None, :] if base is None else base
    return front & (length > 0), np.clip(base * light[:, None], 0, 255).astype(np.uint8)


def eye_colours(template, eye_keypoints) -> np.ndarray:
    """Per-vertex colours ``[V, 3]`` (0..255) that paint the eye openings dark: per eye (keypoints split
    left/right of their mean x), the keypoints and every template vertex inside the ellipse their
    bounding box spans. The lids' vertices sweep over that region when the eye closes, so a blink reads
    as the dark opening shrinking to a line. ``template [V, 3]``, ``eye_keypoints [V]`` (> 0.5 = keypoint);
    with no keypoints every vertex is skin."""
    v = _as_numpy(template, "template", np.float64)
    kp = _as_numpy(eye_keypoints, "eye_keypoints", np.float64) > 0.5
    if v.ndim != 2 or v.shape[1] != 3 or kp.shape != (v.shape[0],):
        raise ValueError(f"template [V, 3] and eye_keypoints [V] must agree, got {shape_str(v.shape)} and "
                         f"{shape_str(kp.shape)}")
    out = np.tile(SKIN, (v.shape[0], 1))
    if kp.sum() < 2:
        return out
    pts = v[kp]
    for side in (pts[:, 0] < pts[:, 0].mean(), pts[:, 0] >= pts[:, 0].mean()):
        eye = pts[side]
        if eye.shape[0] < 2:
            continue
        lo, hi = eye[:, :2].min(0), eye[:, :2].max(0)
        centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1e-9)
        r = (((v[:, :2] - centre) / half) ** 2).sum(1)
        out[(r < 1.0) & (v[:, 2] > eye[:, 2].min() - 2 * half[1])] = EYE
    out[kp] = EYE
    return out


def _render_one(v: np.ndarray, faces: np.ndarray, camera: Camera, supersample: int,
                colours: Optional[np.ndarray] = None):
    from PIL import Image, ImageDraw

    tri = v[faces]  # [F, 3, 3]
    front, colour = _shade(tri, None if colours is None else colours[faces].mean(1))
    tri, colour = tri[front], colour[front]
    order = np.argsort(tri[:, :, 2].mean(axis=1), kind="stable")  # far (small z) first
    xy = camera.project(tri[order]) * supersample  # [F', 3, 2]
    colour = colour[order]
    img = Image.new("RGB", (camera.width * supersample, camera.height * supersample), BACKGROUND)
    draw = ImageDraw.Draw(img)
    polygon = draw.polygon
    for pts, c in zip(xy.reshape(-1, 6).tolist(), map(tuple, colour.tolist())):
        polygon(pts, fill=c)
    if supersample > 1:
        img = img.reduce(supersample)
    return np.asarray(img)


def render_frames(vertices, faces, size: Tuple[int, int] = (512, 512), supersample: int = 2,
                  camera: Optional[Camera] = None, colours=None) -> Iterator[np.ndarray]:
    """Yield one shaded RGB image ``[H, W, 3]`` uint8 per frame of ``vertices [T, V, 3]``.

    faces: ``[F, 3]`` vertex indices, counter-clockwise seen from the front. size: (width, height).
    colours: optional per-vertex base colours ``[V, 3]`` in 0..255 (e.g. ``eye_colours``), default skin.
    """
    v = _as_numpy(vertices, "vertices", np.float64)
    f = _as_numpy(faces, "faces", np.int64)
    if v.ndim != 3 or v.shape[-1] != 3 or v.shape[0] == 0:
        raise ValueError(f"vertices must have shape [T > 0, V, 3], got {shape_str(v.shape)}")
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise ValueError(f"faces must have shape [F > 0, 3] (triangles), got {shape_str(f.shape)}")
    if f.min() < 0 or f.max() >= v.shape[1]:
        raise ValueError(f"faces must index vertices in [0, {v.shape[1]}), got indices in [{f.min()}, {f.max()}]")
    width, height = (int(s) for s in size)
    cam = camera if camera is not None else Camera(v, width, height)
    col = None
    if colours is not None:
        col = _as_numpy(colours, "colours", np.float64)
        if col.shape != (v.shape[1], 3):
            raise ValueError(f"colours must have shape [V={v.shape[1]}, 3], got {shape_str(col.shape)}")
    for frame in v:
        yield _render_one(frame, f, cam, supersample, col)


def save_preview_mp4(path, vertices, faces, fps: int, audio: Optional[torch.Tensor] = None,
                     sample_rate: int = 16000, size: Tuple[int, int] = (512, 512), supersample: int = 2,
                     progress: bool = False, colours=None, labels: Optional[Sequence[str]] = None) -> None:
    """Write ``vertices [T, V, 3]`` as an H.264 MP4 at ``fps`` with ``audio [L]`` (mono, ``sample_rate``)
    as its AAC track. Width and height must be multiples of 16 (H.264 macroblocks). The soundtrack is
    the audio as given, scaled down only if it would clip (peak > 1).

    ``vertices`` may also be a list of sequences ``[T, V, 3]`` (same T): they are rendered side by side
    with one camera, each panel ``size``, captioned by ``labels`` (e.g. ground truth | sampled).
    ``colours``: per-vertex base colours ``[V, 3]`` (``eye_colours`` makes blinks visible)."""
    import imageio_ffmpeg
    import soundfile as sf

    width, height = (int(s) for s in size)
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        raise ValueError(f"size must be positive multiples of 16 (H.264 macroblocks), got {width}x{height}")
    path = os.fspath(path)
    wav = None
    try:
        if audio is not None:
            a = _as_numpy(audio, "audio", np.float64).reshape(-1)
            peak = float(np.abs(a).max()) if a.size else 0.0
            if peak > 1.0:
                a = a / peak
            wav = make_temp(os.path.dirname(os.path.abspath(path)), "audio", suffix=".wav")
            sf.write(wav, a, sample_rate, subtype="PCM_16")
        panels = list(vertices) if isinstance(vertices, (list, tuple)) else [vertices]
        panels = [_as_numpy(p, "vertices", np.float64) for p in panels]
        if len({p.shape for p in panels}) != 1:
            raise ValueError(f"side-by-side sequences must share one shape [T, V, 3], got "
                             f"{[shape_str(p.shape) for p in panels]}")
        if labels is not None and len(labels) != len(panels):
            raise ValueError(f"labels must name each of the {len(panels)} panels, got {len(labels)}")
        writer = imageio_ffmpeg.write_frames(
            path, (width * len(panels), height), fps=fps, codec="libx264", quality=8, macro_block_size=16,
            ffmpeg_log_level="error", audio_path=wav, audio_codec=None if wav is None else "aac",
            output_params=["-movflags", "+faststart"])
        writer.send(None)
        camera = Camera(np.concatenate(panels, 1), width, height)
        streams = [render_frames(p, faces, (width, height), supersample, camera, colours) for p in panels]
        frames = (_captioned(list(imgs), labels) for imgs in zip(*streams))
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=len(panels[0]), desc="preview.mp4", unit="frame")
        try:
            for img in frames:
                writer.send(np.ascontiguousarray(img))
        finally:
            writer.close()
    finally:
        if wav is not None:
            release(wav)


def _captioned(images: Sequence[np.ndarray], labels: Optional[Sequence[str]]) -> np.ndarray:
    """Panels side by side, each with its label in the top-left corner."""
    if labels is not None:
        from PIL import Image, ImageDraw

        out = []
        for img, text in zip(images, labels):
            pic = Image.fromarray(img)
            ImageDraw.Draw(pic).text((8, 6), text, fill=(235, 235, 235))
            out.append(np.asarray(pic))
        images = out
    return np.concatenate(images, axis=1) if len(images) > 1 else images[0]


def probe_mp4(path) -> Dict[str, object]:
    """What is in a video file, read back with the bundled ffmpeg: ``frames`` (decoded count), ``fps``,
    ``width``, ``height``, ``video_codec``, ``audio_codec`` (None without audio), ``audio_rate`` and
    ``audio_seconds`` (decoded samples / rate)."""
    import imageio_ffmpeg

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {path!r} does not exist")
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True, text=True).stderr
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\d+)x(\d+).*?, ([\d.]+) fps", info)
    if video is None:
        raise ValueError(f"video file {path!r} has no readable video stream: {info.strip().splitlines()[-1]}")
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+).*?, (\d+) Hz", info)
    frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    out = dict(frames=int(frames), fps=float(video.group(4)), width=int(video.group(2)), height=int(video.group(3)),
               video_codec=video.group(1), audio_codec=None, audio_rate=None, audio_seconds=None)
    if audio is not None:
        rate = int(audio.group(2))
        raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", path, "-map", "0:a:0", "-f", "f32le", "-ac", "1",
                              "-ar", str(rate), "-"], capture_output=True, check=True).stdout
        out.update(audio_codec=audio.group(1), audio_rate=rate, audio_seconds=len(raw) / 4 / rate)
    return out


def frame_grid(images: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Tile same-sized RGB images ``[H, W, 3]`` into one ``[rows*H, columns*W, 3]`` picture."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    grid[:] = BACKGROUND
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return grid
