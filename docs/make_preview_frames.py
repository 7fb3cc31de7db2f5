"""Makes docs/preview_frames.png: every 15th frame of the example sentence animated by a randomly
initialised model (the released sizes, face_mean/face_std normalisation, seed 0) with the released
post-smoothing, drawn by the preview renderer (``meshtalk_fast.io.render``) at 192 x 192.

Run: ``PYTHONPATH=python python docs/make_preview_frames.py ../shared/assets/meshtalk docs/preview_frames.png``
"""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import meshtalk_fast as mf
from meshtalk_fast.io.render import frame_grid, render_frames


def main(assets: Path, out: Path) -> None:
    torch.manual_seed(0)
    model = mf.MeshTalk(6172, mean=torch.from_numpy(np.load(assets / "face_mean.npy")),
                        stddev=torch.from_numpy(np.load(assets / "face_std.npy"))).eval()
    template, faces = mf.load_obj(assets / "face_template.obj")
    masks = (mf.load_mask(assets / "forehead_mask.txt"), mf.load_mask(assets / "neck_mask.txt"))
    meshes = mf.animate(assets / "example_sentence.wav", template, model, seed=0, backend="torch",
                        smooth_masks=masks, progress=False)
    picked = meshes[::15][:8]
    images = list(render_frames(picked, faces, size=(192, 192)))
    Image.fromarray(frame_grid(images, columns=4)).save(out, optimize=True)
    print(f"wrote {out} ({len(images)} of {meshes.shape[0]} frames)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
