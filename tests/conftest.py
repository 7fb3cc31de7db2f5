"""Shared test fixtures: the released MeshTalk assets are read from ../shared/assets/meshtalk
(beside the checkout), or from $MESHTALK_ASSETS. They are never copied into the package."""
import os
import pathlib

import pytest
import torch

# Set once, before anything imports triton: without CUDA the Triton kernels run on the CPU through the
# interpreter (tests parametrised over backends then cover "triton" too, at small sizes).
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = pathlib.Path(os.environ.get("MESHTALK_ASSETS", ROOT.parent / "shared" / "assets" / "meshtalk"))


@pytest.fixture(autouse=True)
def ieee_denormals():
    """Every test starts and ends with denormal floats kept (IEEE): the CPU trainer flushes them for the rest of
    its process (TrainConfig.flush_denormal), and no test's numbers should depend on which test ran before it."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def assets() -> pathlib.Path:
    if not (ASSETS / "face_template.obj").is_file():
        pytest.fail(f"MeshTalk assets not found in {ASSETS}: set MESHTALK_ASSETS to the folder holding "
                    "face_template.obj, the masks and example_sentence.wav")
    return ASSETS


@pytest.fixture(scope="session")
def speech(assets) -> torch.Tensor:
    """The real recorded sentence, loaded as the released model expects it (16 kHz, normalised)."""
    import meshtalk_fast as mf

    return mf.load_audio(assets / "example_sentence.wav")


@pytest.fixture(scope="session")
def template(assets) -> torch.Tensor:
    import meshtalk_fast as mf

    return mf.load_obj(assets / "face_template.obj")[0]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one intra-op thread (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def face_model(assets):
    """``face_model(seed, **config)``: a MeshTalk on the real topology and normalisation, random weights."""
    import numpy as np

    import meshtalk_fast as mf

    mean = torch.from_numpy(np.load(assets / "face_mean.npy"))
    std = torch.from_numpy(np.load(assets / "face_std.npy"))

    def make(seed: int = 0, **config):
        torch.manual_seed(seed)
        return mf.MeshTalk(6172, mean=mean, stddev=std, **config).eval()

    return make


@pytest.fixture(scope="session")
def rig_files(tmp_path_factory, assets):
    """A folder with the built-in face (subject 0) as ``face.obj`` and as an ARKit rig ``face.glb``
    (``make-rig``), a small random model on its topology ``small.safetensors`` and 1 s of the real
    recording ``speech.wav``."""
    import soundfile as sf

    import meshtalk_fast as mf
    from meshtalk_fast import cli
    from meshtalk_fast.data import procedural_face

    root = tmp_path_factory.mktemp("rig")
    v, f, _ = procedural_face(0)
    with open(root / "face.obj", "w") as fh:
        fh.writelines("v %.9g %.9g %.9g\n" % tuple(x) for x in v.tolist())
        fh.writelines("f %d %d %d\n" % tuple(t) for t in (f + 1).tolist())
    torch.manual_seed(0)
    mf.MeshTalk(v.shape[0], heads=4, classes=16).save(root / "small.safetensors")
    raw = mf.load_audio(assets / "example_sentence.wav", normalize=False)[:16000]
    sf.write(root / "speech.wav", raw.numpy(), 16000, subtype="PCM_24")
    assert cli.main(["make-rig", "--out", str(root / "face.glb")]) == 0
    return root


@pytest.fixture(scope="session")
def tiny_cli_files(tmp_path_factory):
    """Inputs for fast CLI runs: a 40-vertex model (2 heads x 4 classes) saved as ``model``, its template
    OBJ with triangles ``template``, 1.2 s of noise as a 16 kHz wav ``wav``, a TOML training config."""
    import numpy as np
    import soundfile as sf

    import meshtalk_fast as mf

    root = tmp_path_factory.mktemp("tiny_cli")
    torch.manual_seed(0)
    model = mf.MeshTalk(40, heads=2, classes=4)
    model.save(root / "model.safetensors")
    rng = np.random.default_rng(0)
    lines = ["v %.6f %.6f %.6f" % tuple(p) for p in rng.standard_normal((40, 3))]
    lines += ["f %d %d %d" % (i + 1, i + 2, i + 3) for i in range(38)]
    (root / "template.obj").write_text("\n".join(lines) + "\n")
    sf.write(root / "speech.wav", (0.1 * rng.standard_normal(19200)).astype(np.float32), 16000, subtype="FLOAT")
    return {"root": root, "model": root / "model.safetensors", "template": root / "template.obj",
            "wav": root / "speech.wav"}


@pytest.fixture(scope="module")
def odd():
    """A sharpened prior of odd sizes (heads 3, classes 5, width 6, V = 10) and its weights in the C++ core's
    layout: (model, context weights, decoder weights)."""
    from helpers import ODD, prior_model

    from meshtalk_fast.backends import cpp as _cpp

    model = prior_model(**ODD, V=10)
    return model, _cpp.context_weights(model), _cpp.decoder_weights(model)


@pytest.fixture(scope="session")
def released_masks(assets):
    """The released smoothing masks ``(forehead [6172], neck [6172])``."""
    import meshtalk_fast as mf

    return mf.load_mask(assets / "forehead_mask.txt", 6172), mf.load_mask(assets / "neck_mask.txt", 6172)
