"""The C++ safetensors reader (meshtalk_fast._core) against files written by the safetensors package.

Valid files must read back exactly (floats as float32, integers and bools in their own dtype);
hostile files must raise ValueError naming the problem, never crash.
"""
from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save as np_save_bytes
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file

from meshtalk_fast import _core

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 7), (0, 4), (1, 1, 1, 1), (5, 0, 2)]
NUMPY_DTYPES = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
DTYPE_NAME = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}
TORCH_ONLY = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def _values(dtype, shape, rng):
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == np.bool_:
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        vals = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        if n >= 2:  # the extremes too
            vals[:2] = [info.min, info.max]
        return vals.reshape(shape)
    vals = (rng.standard_normal(n) * 100).astype(dtype)
    specials = np.array([np.inf, -np.inf, np.nan, -0.0, np.finfo(dtype).tiny / 4], dtype=dtype)
    vals[: min(n, len(specials))] = specials[: min(n, len(specials))]
    return vals.reshape(shape)


def _expected(arr):
    """What .get() returns: float32 for float dtypes, the same array otherwise."""
    if not np.issubdtype(arr.dtype, np.floating):
        return arr
    with np.errstate(over="ignore"):  # F64 values beyond float32 become inf, as in the core
        return arr.astype(np.float32)


def _decode(dtype, raw, shape):
    """An independent decoder for one tensor's bytes (numpy, or torch for BF16/F8)."""
    if dtype in TORCH_ONLY:
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(TORCH_ONLY[dtype])
        return t.float().numpy().reshape(shape) if len(raw) else np.zeros(shape, np.float32)
    if dtype == "BOOL":
        return np.frombuffer(raw, np.uint8).astype(bool).reshape(shape)
    return _expected(np.frombuffer(raw, np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<")).reshape(shape))


def _assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_array_equal(got, want)  # NaN == NaN here; -0.0 == 0.0 is checked below
    if got.dtype == np.float32:
        assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.fixture
def numpy_file(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"{name}.{'x'.join(map(str, s)) or 'scalar'}": _values(dt, s, rng)
               for name, dt in NUMPY_DTYPES.items() for s in SHAPES}
    tensors["ünïcode/name ✓"] = np.ones((2, 3), np.float32)
    metadata = {"format": "pt", "config": json.dumps({"V": 6172, "T": 90}),
                "odd \"chars\"\n\\": "näme ✓ 😀 \t end", "": ""}
    path = tmp_path / "all.safetensors"
    np_save_file(tensors, str(path), metadata=metadata)
    return path, tensors, metadata


def test_numpy_roundtrip_all_dtypes_and_shapes(numpy_file):
    path, tensors, metadata = numpy_file
    f = _core.SafetensorsFile(path)
    assert f.keys() == sorted(tensors) and len(f) == len(tensors) and list(f) == sorted(tensors)
    assert f.metadata() == metadata
    for name, arr in tensors.items():
        assert name in f
        assert f.shape(name) == arr.shape
        assert f.dtype(name) == DTYPE_NAME[arr.dtype]
        _assert_same(f.get(name), _expected(arr))
        _assert_same(f[name], _expected(arr))
    assert "missing" not in f
    assert str(path) in repr(f) and f.path == str(path)


def test_read_safetensors_and_from_bytes(numpy_file):
    path, tensors, _ = numpy_file
    everything = _core.read_safetensors(path)
    assert list(everything) == sorted(tensors)
    blob = np_save_bytes(tensors)
    g = _core.SafetensorsFile.from_bytes(blob)
    assert g.path == "<bytes>" and g.metadata() == {}
    for name, arr in tensors.items():
        _assert_same(everything[name], _expected(arr))
        _assert_same(g.get(name), _expected(arr))


def test_torch_bf16_f16_f8(tmp_path):
    torch.manual_seed(0)
    tensors = {
        "bf16": torch.randn(3, 17, 5).to(torch.bfloat16),
        "f16": torch.randn(1, 300).to(torch.float16),
        "f8_e4m3": (torch.randn(7, 3) * 8).to(torch.float8_e4m3fn),
        "f8_e5m2": (torch.randn(7, 3) * 8).to(torch.float8_e5m2),
        "i64": torch.arange(-5, 6, dtype=torch.int64).reshape(11, 1),
    }
    path = tmp_path / "t.safetensors"
    torch_save_file(tensors, str(path), metadata={"who": "torch"})
    f = _core.SafetensorsFile(str(path))
    assert [f.dtype(k) for k in f.keys()] == ["BF16", "F16", "F8_E4M3", "F8_E5M2", "I64"]
    for name, t in tensors.items():
        want = t.numpy() if name == "i64" else t.float().numpy()
        _assert_same(f.get(name), want)


def _all_bit_patterns(torch_dtype, n_bits):
    int_dtype = torch.int16 if n_bits == 16 else torch.uint8
    bits = torch.arange(2 ** n_bits, dtype=torch.int32).to(int_dtype)
    return bits.view(torch_dtype)


@pytest.mark.parametrize("torch_dtype,n_bits", [
    (torch.float16, 16), (torch.bfloat16, 16), (torch.float8_e4m3fn, 8), (torch.float8_e5m2, 8)])
def test_every_bit_pattern_converts_exactly(tmp_path, torch_dtype, n_bits):
    t = _all_bit_patterns(torch_dtype, n_bits)
    path = tmp_path / "bits.safetensors"
    torch_save_file({"x": t}, str(path))
    got = _core.SafetensorsFile(path).get("x")
    want = t.float().numpy()
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_get_with_expected_shape(numpy_file):
    path, _, _ = numpy_file
    f = _core.SafetensorsFile(path)
    assert f.get("F32.3x5", shape=[3, 5]).shape == (3, 5)
    assert f.get("F32.3x5", shape=[-1, 5]).shape == (3, 5)
    with pytest.raises(ValueError, match=r"tensor 'F32.3x5': expected shape \[3, 4\], found \[3, 5\]"):
        f.get("F32.3x5", shape=[3, 4])
    with pytest.raises(ValueError, match=r"expected shape \[\*, 5, 1\], found \[3, 5\]"):
        f.get("F32.3x5", shape=[-1, 5, 1])


def test_missing_key_and_missing_file(numpy_file, tmp_path):
    path, _, _ = numpy_file
    f = _core.SafetensorsFile(path)
    for call in (f.get, f.shape, f.dtype, f.__getitem__):
        with pytest.raises(KeyError, match="no tensor named 'nope'"):
            call("nope")
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match="no such file"):
        _core.SafetensorsFile(missing)
    with pytest.raises(OSError, match=str(missing)):
        _core.read_safetensors(str(missing))
    with pytest.raises(OSError, match="is a directory"):
        _core.SafetensorsFile(tmp_path)
    with pytest.raises(OSError, match="not a regular file"):  # a device would never end
        _core.SafetensorsFile("/dev/zero")


# ----------------------------------------------------------------------------------------------
# Hostile files
# ----------------------------------------------------------------------------------------------

def _blob(header, data=b"", length=None):
    """A file image: an explicit header (str, or dict dumped as JSON) and data section."""
    if isinstance(header, dict):
        header = json.dumps(header)
    raw = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _raises(blob, pattern, tmp_path=None):
    with pytest.raises(ValueError, match=pattern) as info:
        _core.SafetensorsFile.from_bytes(blob, "hostile")
    assert "safetensors 'hostile'" in str(info.value)
    if tmp_path is not None:  # the same through a real file; the message names the path
        path = tmp_path / "hostile.safetensors"
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=pattern) as info:
            _core.SafetensorsFile(path)
        assert str(path) in str(info.value)


def _entry(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def test_truncated_files(tmp_path):
    blob = np_save_bytes({"a": np.arange(12, dtype=np.float32), "b": np.arange(5, dtype=np.int64)})
    header_end = 8 + struct.unpack("<Q", blob[:8])[0]
    cuts = [0, 1, 7, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 1,
            header_end + 40, len(blob) - 1]
    for cut in cuts:
        _raises(blob[:cut], r"expected at least 8|header length|past the end of the data section",
                tmp_path if cut in (3, header_end + 1) else None)


def test_header_length(tmp_path):
    _raises(_blob({}, length=10 ** 6), r"header length 1000000 exceeds the 2 bytes", tmp_path)
    _raises(_blob({}, b"\0" * 64, length=2 ** 64 - 1), r"header length 18446744073709551615 exceeds")
    _raises(_blob({}, length=0), r"invalid JSON header at byte 0: expected '\{'")


@pytest.mark.parametrize("header,pattern", [
    ('{"a": }', r"invalid JSON header at byte 6: expected a JSON value, found '\}'"),
    ('{"a": {"dtype": nul}}', r"tensor 'a': dtype must be a string, found null"),
    (b'{"a": \0}', r"invalid JSON header at byte 6: expected a JSON value, found byte 0x00"),
    ("{'a': 1}", r"invalid JSON header at byte 1: expected a string key, found '''"),
    ('{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},}', r"invalid JSON.*string key"),
    ('{"a', r"invalid JSON.*close the string"),
    ('{"a": {"dtype": "F32" "shape": []}}', r"invalid JSON.*',' or '\}'"),
    ('{"a\\q": 1}', r"invalid JSON.*valid escape"),
    ('{"\\ud800": 1}', r"invalid JSON.*low surrogate"),
    ('{"\\udc00": 1}', r"invalid JSON.*high surrogate"),
    ('{"a\nb": 1}', r"invalid JSON.*control character"),
    (b'{"\xff": 1}', r"invalid JSON header: invalid UTF-8 at byte 2"),
    (b'{"\xed\xa0\x80": 1}', r"invalid UTF-8 at byte 2"),  # an encoded surrogate
    (b'{"\xc0\xaf": 1}', r"invalid UTF-8 at byte 2"),  # overlong '/'
    ("[]", r"expected '\{' \(the header must be a JSON object\), found '\['"),
    ("{} x", r"expected the end of the header"),
    ("{}{}", r"expected the end of the header"),
    ('{"a": {"dtype": "F32", "shape": [01], "data_offsets": [0, 4]}}', r"invalid JSON.*',' or '\]'"),
    ('{"a": {"dtype": "F32", "shape": [1.], "data_offsets": [0, 4]}}', r"digit after '\.'"),
])
def test_invalid_json(header, pattern):
    _raises(_blob(header, b"\0" * 16), pattern)


@pytest.mark.parametrize("header,data,pattern", [
    ({"a": _entry(dtype="F12")}, 16, r"tensor 'a': unknown dtype \"F12\" \(expected one of BOOL"),
    ({"a": _entry(dtype=3)}, 16, r"tensor 'a': dtype must be a string, found a number"),
    ({"a": _entry(offsets=(0, 12))}, 16,
     r"tensor 'a': data_offsets \[0, 12\] span 12 bytes, but dtype F32 with shape \[2, 2\] needs 16"),
    ({"a": _entry(offsets=(0, 16))}, 12, r"tensor 'a': data_offsets \[0, 16\] end past the end of the "
                                         r"data section \(12 bytes"),
    ({"a": _entry(offsets=(2 ** 64 - 17, 2 ** 64 - 1))}, 16, r"past the end of the data section"),
    ({"a": _entry(offsets=(16, 0))}, 16, r"begin must not exceed end"),
    ({"a": _entry(offsets=(0, 16)), "b": _entry(shape=(2,), offsets=(8, 16))}, 16,
     r"tensors 'a' \(data_offsets \[0, 16\]\) and 'b' \(data_offsets \[8, 16\]\) overlap"),
    ({"a": _entry(shape=(-1, 4))}, 16, r"tensor 'a': shape\[0\] must be a non-negative integer, "
                                       r"found -1 \(negative\)"),
    ({"a": _entry(shape=(2.0, 2))}, 16, r"shape\[0\] must be a non-negative integer, found 2.0 \(not an"),
    ({"a": _entry(shape=(2 ** 40, 2 ** 40))}, 16, r"element count of shape \[1099511627776, 1099511627776\] "
                                                  r"overflows 64 bits"),
    ({"a": _entry(shape=(2 ** 62,))}, 16, r"byte size of shape \[4611686018427387904\] overflows"),
    ({"a": _entry(shape=(2 ** 70,))}, 16, r"shape\[0\] = 1180591620717411303424 overflows"),
    ({"a": _entry(shape=[1] * 65)}, 16, r"shape has more than 64 dimensions"),
    ({"a": dict(_entry(), shape="2x2")}, 16, r"shape must be an array of integers, found a string"),
    ({"a": _entry(shape=["2", 2])}, 16, r"shape\[0\] must be a non-negative integer, found a string"),
    ({"a": _entry(offsets=(0,))}, 16, r"data_offsets must have 2 entries \[begin, end\], found 1"),
    ({"a": _entry(offsets=(0, 2 ** 64))}, 16, r"data_offsets\[1\] = 18446744073709551616 overflows"),
    ({"a": {"shape": [2, 2], "data_offsets": [0, 16]}}, 16, r"tensor 'a': missing field 'dtype'"),
    ({"a": dict(_entry(), extra=1)}, 16, r"tensor 'a': unknown field 'extra'"),
    ({"a": [1, 2]}, 16, r"tensor 'a': entry must be an object .* found an array"),
    ({"__metadata__": {"k": 1}}, 0, r"__metadata__ value of key 'k' must be a string, found a number"),
    ({"__metadata__": "k"}, 0, r"__metadata__ must be an object of strings, found a string"),
])
def test_invalid_contents(header, data, pattern, tmp_path):
    _raises(_blob(header, b"\0" * data), pattern, tmp_path)


@pytest.mark.parametrize("header,pattern", [
    ('{"a": %s, "a": %s}', r"duplicate key 'a' in the header"),
    ('{"__metadata__": {}, "a": %s, "__metadata__": {}}', r"duplicate key '__metadata__' in the header"),
    ('{"__metadata__": {"k": "1", "k": "2"}, "a": %s}', r"duplicate key 'k' in __metadata__"),
    ('{"a": {"dtype": "F32", "dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}',
     r"tensor 'a': duplicate field 'dtype'"),
])
def test_duplicate_keys(header, pattern):
    entry = json.dumps(_entry())
    _raises(_blob(header.replace("%s", entry), b"\0" * 16), pattern)


def test_gaps_and_empty_tensors_are_allowed():
    header = {"a": _entry(shape=(2,), offsets=(8, 16)), "e": _entry(shape=(0, 3), offsets=(4, 4)),
              "s": _entry(shape=(), offsets=(16, 20))}
    data = struct.pack("<6f", 9, 9, 1.5, 2.5, 3.5, 9)
    f = _core.SafetensorsFile.from_bytes(_blob(header, data))
    _assert_same(f.get("a"), np.array([1.5, 2.5], np.float32))
    _assert_same(f.get("e"), np.zeros((0, 3), np.float32))
    _assert_same(f.get("s"), np.array(3.5, np.float32))


def test_random_mutations_never_crash():
    """300 seeded random corruptions of a valid file: each parses consistently or raises ValueError."""
    tensors = {"w": np.linspace(-2, 2, 120, dtype=np.float32).reshape(8, 15),
               "h": np.arange(5, dtype=np.float16), "d": np.array([1e300, -1.5]),
               "i": np.arange(-3, 3, dtype=np.int32).reshape(2, 3), "m": np.array([True, False, True]),
               "u": np.arange(7, dtype=np.uint8)}
    blob = np_save_bytes(tensors, metadata={"k": "v"})
    rng = random.Random(1234)
    outcomes = {"parsed": 0, "ValueError": 0}
    for _ in range(300):
        data = bytearray(blob)
        for _ in range(rng.choice([1, 1, 2, 4])):
            op = rng.random()
            if op < 0.6 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.7:
                data = data[: rng.randrange(len(data) + 1)]
            elif op < 0.8 and data:
                del data[rng.randrange(len(data))]
            elif op < 0.9:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            else:  # the header length itself
                data[:8] = struct.pack("<Q", rng.choice([0, 1, len(data), 2 ** 63, rng.randrange(400)]))
        data = bytes(data)
        try:
            f = _core.SafetensorsFile.from_bytes(data)
        except ValueError as exc:
            assert "safetensors '<bytes>'" in str(exc)
            outcomes["ValueError"] += 1
            continue
        outcomes["parsed"] += 1
        # It parsed, so Python's json must agree on the header, and the tensors must decode the same.
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8: 8 + n].decode("utf-8"))
        assert header.pop("__metadata__", {}) == f.metadata()
        assert sorted(header) == f.keys()
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            want = _decode(entry["dtype"], data[8 + n + begin: 8 + n + end], entry["shape"])
            _assert_same(f.get(name), want)
    assert outcomes["parsed"] > 20 and outcomes["ValueError"] > 100, outcomes
