"""Released-layout checkpoints (built from the published key/shape layout) and our safetensors file."""
import json
import os
import pathlib

import pytest
import torch

import meshtalk_fast as mf
from meshtalk_fast.models import causal_head_mask

LAYOUT = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "official_checkpoint_layout.json"


@pytest.fixture(scope="module")
def layout():
    path = pathlib.Path(os.environ.get("MESHTALK_LAYOUT", LAYOUT))
    if not path.is_file():
        pytest.fail(f"official checkpoint layout not found at {path}; set MESHTALK_LAYOUT")
    return json.loads(path.read_text())["files"]


def fake_state(shapes, seed=0):
    """A state dict of the released layout: random weights, causal masks, positive stddev."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith(".mask"):
            co, ci = shape[0] // 16, shape[1] // 16
            state[key] = causal_head_mask(ci, co, 16)
        elif key.endswith("stddev"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def released_dir(tmp_path_factory, layout):
    d = tmp_path_factory.mktemp("released")
    for i, (name, shapes) in enumerate(layout.items()):
        torch.save(fake_state(shapes, i), d / name)
    return d


def test_layout_equals_our_modules(layout):
    model = mf.MeshTalk(6172)
    ours = {"encoder.pkl": model.encoder, "vertex_unet.pkl": model.vertex_unet,
            "context_model.pkl": model.context_model}
    for name, module in ours.items():
        assert {k: list(v.shape) for k, v in module.state_dict().items()} == layout[name]


def test_released_files_load_strictly(released_dir, layout):
    model = mf.load_official(released_dir)
    for name, attr in [("encoder.pkl", "encoder"), ("vertex_unet.pkl", "vertex_unet"),
                       ("context_model.pkl", "context_model")]:
        state = torch.load(released_dir / name, weights_only=True)
        for key, value in getattr(model, attr).state_dict().items():
            assert torch.equal(value, state[key]), key


def _rewrite(src, dst, name, edit):
    dst.mkdir()
    for f in src.iterdir():
        state = torch.load(f, weights_only=True)
        if f.name == name:
            edit(state)
        torch.save(state, dst / f.name)
    return dst


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.pop("fusion.weight"), r"missing keys \['fusion.weight'\]"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(3)), r"unexpected keys \['extra.weight'\]"),
    (lambda s: s.__setitem__("fusion.weight", torch.zeros(128, 2175)),
     r"'fusion.weight' has shape \[128, 2175\] but the model config .* expects \[128, 2176\]"),
    (lambda s: s.__setitem__("fusion.bias", torch.zeros(128, dtype=torch.int64)), "must be floating point"),
])
def test_bad_released_files(released_dir, tmp_path, edit, match):
    bad = _rewrite(released_dir, tmp_path / "bad", "vertex_unet.pkl", edit)
    with pytest.raises(mf.CheckpointError, match=match):
        mf.load_official(bad)


def test_config_disagreeing_with_checkpoint(released_dir):
    with pytest.raises(mf.CheckpointError, match=r"heads=8.* expects \[1024, 256\]|heads=8.*expects"):
        mf.load_official(released_dir, heads=8)
    with pytest.raises(mf.CheckpointError, match=r"n_vertices=5023"):
        mf.load_official(released_dir, n_vertices=5023)


def test_missing_file_wrong_mask_and_not_a_state_dict(released_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        mf.load_official(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "encoder.pkl").write_bytes((released_dir / "encoder.pkl").read_bytes())
    with pytest.raises(FileNotFoundError, match="vertex_unet.pkl"):
        mf.load_official(partial)
    bad = _rewrite(released_dir, tmp_path / "mask", "context_model.pkl",
                   lambda s: s["logits.mask"].fill_(1.0))
    with pytest.raises(mf.CheckpointError, match="logits.mask must be the causal head mask"):
        mf.load_official(bad)
    junk = _rewrite(released_dir, tmp_path / "junk", "encoder.pkl", lambda s: None)
    torch.save([1, 2, 3], junk / "encoder.pkl")
    with pytest.raises(mf.CheckpointError, match="expected a state dict"):
        mf.load_official(junk)
    (junk / "encoder.pkl").write_bytes(b"not a torch file")
    with pytest.raises(mf.CheckpointError, match="not a readable torch state dict"):
        mf.load_official(junk)


def test_save_load_roundtrip(tmp_path):
    mean, std = torch.randn(300, 3), torch.rand(300, 3) + 0.5
    model = mf.MeshTalk(300, heads=4, classes=8, mean=mean, stddev=std, fps=25, clock="exact",
                        expression_input="offset")
    path = tmp_path / "model.safetensors"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left
    loaded = mf.MeshTalk.load(path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["config"])["clock"] == "exact"
        assert json.loads(f.metadata()["config"])["expression_input"] == "offset"
        assert not any(k.endswith(".mask") for k in f.keys())


def test_load_bad_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = mf.MeshTalk(50, heads=2, classes=4)
    good = tmp_path / "good.safetensors"
    model.save(good)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".mask")}
    meta = {"format": "meshtalk_fast", "format_version": "1", "config": json.dumps(model.config.__dict__)}
    missing = dict(state)
    missing.pop("vertex_unet.vertex_bias")
    save_file(missing, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(mf.CheckpointError, match="missing keys"):
        mf.MeshTalk.load(tmp_path / "missing.safetensors")
    save_file(state, tmp_path / "nometa.safetensors")
    with pytest.raises(mf.CheckpointError, match="metadata 'format'"):
        mf.MeshTalk.load(tmp_path / "nometa.safetensors")
    lying = dict(meta, config=json.dumps(dict(model.config.__dict__, heads=3)))
    save_file(state, tmp_path / "lying.safetensors", metadata=lying)
    with pytest.raises(mf.CheckpointError, match="heads=3"):
        mf.MeshTalk.load(tmp_path / "lying.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(mf.CheckpointError, match="not a readable safetensors file"):
        mf.MeshTalk.load(tmp_path / "trunc.safetensors")
    with pytest.raises(FileNotFoundError):
        model.save(tmp_path / "no" / "such" / "dir.safetensors")
