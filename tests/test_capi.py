"""The C API (csrc/include/meshtalk/meshtalk.h, csrc/core/capi.cpp) and the installed C/C++ package.

- The C++ tests in tests/cpp are configured, built and run through CTest from the source tree, once
  plainly and once under AddressSanitizer + UndefinedBehaviorSanitizer; the loader's fuzz target
  (csrc/fuzz) runs under both sanitizers for a bounded time.
- Model files written by ``MeshTalk.save`` load through the C API with the sizes, frame clock and
  latency Python computes; a file written by the C++ test writer loads in ``MeshTalk.load``.
- csrc/examples builds against the installed package (``meshtalk-fast cmake-dir``) as an engine
  would, and prints the same model facts as Python.
"""
from __future__ import annotations

import math
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest
import torch

import meshtalk_fast as mf

ROOT = pathlib.Path(__file__).resolve().parents[1]
JOBS = "2"  # CI has 2 cores
# meshtalk_fast imported from the checkout (PYTHONPATH=python) has no installed C/C++ files.
FROM_SOURCE = pathlib.Path(mf.__file__).resolve().is_relative_to(ROOT / "python")


def _run(cmd, timeout=900, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited with {proc.returncode}\n--- stdout\n"
                             f"{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def _cmake_build(build: pathlib.Path, *options: str) -> None:
    _run(["cmake", "-S", ROOT, "-B", build, "-DMESHTALK_BUILD_PYTHON=OFF", "-DMESHTALK_BLAS=OFF",
          "-DMESHTALK_BUILD_TESTS=ON", *options])
    _run(["cmake", "--build", build, "--parallel", JOBS])


def _ctest(build: pathlib.Path, *args: str) -> str:
    out = _run(["ctest", "--test-dir", build, "--output-on-failure", "--no-tests=error", *args]).stdout
    assert "100% tests passed" in out, out
    return out


@pytest.fixture(scope="module")
def release_build(tmp_path_factory):
    """The core, the C++ tests and the shared library (Release, no BLAS), installed into a prefix."""
    build = tmp_path_factory.mktemp("capi_release")
    prefix = build / "prefix"
    _cmake_build(build, "-DCMAKE_BUILD_TYPE=Release", "-DMESHTALK_BUILD_SHARED=ON", f"-DCMAKE_INSTALL_PREFIX={prefix}")
    _run(["cmake", "--install", build])
    cpp = build / "tests" / "cpp"
    return types.SimpleNamespace(build=build, prefix=prefix, test_capi=cpp / "test_capi",
                                 writer=cpp / "mt_write_test_model")


@pytest.fixture(scope="module")
def sanitized_build(tmp_path_factory):
    """The core, the C++ tests and the fuzzers with -fsanitize=address,undefined. -O0: it builds in
    ~60% of the -O1 time, which outweighs the slower runs (the fuzzer runs for a fixed time)."""
    build = tmp_path_factory.mktemp("capi_sanitized")
    _cmake_build(build, "-DMESHTALK_SANITIZE=ON", "-DMESHTALK_BUILD_FUZZERS=ON", "-DMESHTALK_FUZZ_SECONDS=20",
                 "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -g", "-DCMAKE_C_FLAGS_DEBUG=-O0 -g")
    return build


# ------------------------------------------------------------------------------------------- CTest

def test_ctest(release_build):
    out = _ctest(release_build.build)
    for name in ("capi", "capi_c", "capi_c_shared", "shared_exports_only_the_c_api"):
        assert re.search(rf"Test +#\d+: {name} \.+ +Passed", out), (name, out)


@pytest.mark.slow
def test_ctest_under_address_and_undefined_sanitizers(sanitized_build):
    out = _ctest(sanitized_build, "--label-exclude", "fuzz")
    assert re.search(r"Test +#\d+: capi \.+ +Passed", out), out
    # The binaries really carry the sanitizers' runtimes.
    ldd = _run(["ldd", sanitized_build / "tests" / "cpp" / "test_capi"]).stdout
    assert "libasan" in ldd and "libubsan" in ldd, ldd


@pytest.mark.slow
def test_fuzz_loader_under_sanitizers(sanitized_build):
    """20 s of mutated model files through mt_model_load_from_memory: no crash, no sanitizer report."""
    out = _ctest(sanitized_build, "--label-regex", "fuzz", "--verbose")
    m = re.search(r"fuzz driver: done, (\d+) mutated runs in ([\d.]+) s", out)
    assert m, out
    assert int(m.group(1)) > 100 and float(m.group(2)) >= 19, m.group(0)


# ------------------------------------------------------------------------------------------- Python's files

CONFIGS = [
    dict(n_vertices=7, heads=3, classes=5),
    dict(n_vertices=4, heads=2, classes=3, audio_dim=5, context_hidden=3, fps=25, clock="exact", framing="stream",
         lookahead=4000),
    dict(n_vertices=6, heads=4, classes=2, fps=60, lookahead=0),
]
SAMPLE_COUNTS = [0, 1, 533, 534, 8000, 15999, 16000, 16001, 48000, 123457, 960000]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _expected_facts(config: mf.MeshTalkConfig) -> dict:
    """What the C API must report, computed the Python way."""
    facts = dict(n_vertices=config.n_vertices, heads=config.heads, classes=config.classes,
                 audio_dim=config.audio_dim, fps=config.fps, clock=config.clock, framing=config.framing,
                 lookahead=config.lookahead,
                 latency=config.lookahead + _ceil_div(16000, config.fps),
                 latency4=config.lookahead + _ceil_div(5 * 16000, config.fps),
                 latency8=config.lookahead + _ceil_div(9 * 16000, config.fps))
    for n in SAMPLE_COUNTS:
        facts[f"frames:{n}"] = mf.num_frames(n, config.fps, config.clock)
    return facts


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_python_written_models_load_with_their_facts(release_build, tmp_path, config):
    torch.manual_seed(0)
    model = mf.MeshTalk(**config)
    path = tmp_path / "model.safetensors"
    model.save(path)
    facts = _expected_facts(model.config)
    out = _run([release_build.test_capi, "--model", path, *[f"{k}={v}" for k, v in facts.items()]]).stdout
    assert f"{len(facts)} checks, 0 failed" in out, out
    if model.config.framing == "window":  # the latency the streaming reference states
        template = torch.zeros(model.config.n_vertices, 3)
        for delay, key in ((None, "latency"), (4, "latency4"), (8, "latency8")):
            masks = None if delay is None else (torch.ones(model.config.n_vertices),) * 2
            stream = mf.StreamingAnimator(model, template, seed=0, smooth_masks=masks,
                                          smoothing_delay=delay or 4)
            assert facts[key] == math.ceil(stream.latency_s * 16000 - 1e-6), (key, stream.latency_breakdown)


def test_truncated_and_foreign_files_are_refused(release_build, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    mf.MeshTalk(5, heads=2, classes=3).save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    proc = subprocess.run([str(release_build.test_capi), "--model", str(cut)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"mt_model_load: safetensors '{cut}'" in proc.stderr and "is the file truncated?" in proc.stderr, proc.stderr
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2, 2)}, str(foreign), metadata={"format": "pt"})
    proc = subprocess.run([str(release_build.test_capi), "--model", str(foreign)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "metadata 'format': expected \"meshtalk_fast\" (a file written by MeshTalk.save), found \"pt\"" in proc.stderr


def test_cpp_test_writer_writes_what_meshtalk_save_writes(release_build, tmp_path):
    """The C++ tests' model files (tests/cpp/model_writer.cpp) are real MeshTalk files: MeshTalk.load
    (strict: every key, shape and the config) reads one, and it has exactly MeshTalk.save's keys."""
    from safetensors import safe_open

    from meshtalk_fast.checkpoint import _saved_state

    path = tmp_path / "cpp.safetensors"
    _run([release_build.writer, path, "--vertices", "6", "--heads", "2", "--classes", "3", "--fps", "25",
          "--clock", "exact", "--lookahead", "4000"])
    model = mf.MeshTalk.load(path)
    c = model.config
    assert (c.n_vertices, c.heads, c.classes, c.fps, c.clock, c.lookahead) == (6, 2, 3, 25, "exact", 4000)
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert sorted(keys) == sorted(_saved_state(model))
    reference = tmp_path / "python.safetensors"
    model.save(reference)
    with safe_open(str(reference), "pt") as f:
        assert f.metadata() == meta


# ------------------------------------------------------------------------------------------- the package

def _package_cmake_dir(request) -> pathlib.Path:
    """The installed package's CMake folder; from a source checkout, the same install made by the
    release build (the wheel's layout: prefix/lib/cmake/meshtalk_fast)."""
    if FROM_SOURCE:
        return request.getfixturevalue("release_build").prefix / "lib" / "cmake" / "meshtalk_fast"
    return pathlib.Path(mf.cmake_dir())


def test_cmake_dir_command():
    proc = subprocess.run([sys.executable, "-m", "meshtalk_fast.cli", "cmake-dir"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if FROM_SOURCE:  # no installed C/C++ files: a one-line error naming the fix
        assert proc.returncode == 2, proc
        assert "was not installed with its C/C++ files" in proc.stderr and "pip install ." in proc.stderr
        with pytest.raises(FileNotFoundError, match="not installed with its C/C.. files"):
            mf.cmake_dir()
        return
    assert proc.returncode == 0, proc.stderr
    folder = pathlib.Path(proc.stdout.strip())
    assert folder == pathlib.Path(mf.cmake_dir())
    assert (folder / "meshtalk_fastConfig.cmake").is_file() and (folder / "meshtalk_fastConfigVersion.cmake").is_file()
    package = pathlib.Path(mf.__file__).parent
    assert (package / "include" / "meshtalk" / "meshtalk.h").is_file()
    assert (package / "lib" / "libmeshtalk_core.a").is_file()
    assert pathlib.Path(mf.capi.include_dir()) == package / "include"


def test_example_builds_against_the_package_and_prints_the_model(request, tmp_path):
    cmake_dir = _package_cmake_dir(request)
    build = tmp_path / "example"
    _run(["cmake", "-S", ROOT / "csrc" / "examples", "-B", build, f"-Dmeshtalk_fast_DIR={cmake_dir}",
          "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", build, "--parallel", JOBS])
    torch.manual_seed(0)
    model = mf.MeshTalk(9, heads=3, classes=4, fps=25, clock="exact", lookahead=6000)
    path = tmp_path / "model.safetensors"
    model.save(path)
    out = _run([build / "meshtalk_example", path]).stdout
    got = dict(line.split("=", 1) for line in out.strip().splitlines())
    c = model.config
    facts = _expected_facts(c)
    assert got == {
        "version": mf.__version__, "n_vertices": str(c.n_vertices), "heads": str(c.heads),
        "classes": str(c.classes), "audio_dim": str(c.audio_dim), "sample_rate": "16000", "fps": str(c.fps),
        "clock": c.clock, "framing": c.framing, "lookahead_samples": str(c.lookahead),
        "latency_samples": str(facts["latency"]), "latency_samples_smoothed": str(facts["latency4"]),
        "frames_per_minute": str(mf.num_frames(960000, c.fps, c.clock)), "weight_bytes": got["weight_bytes"],
    }
    assert int(got["weight_bytes"]) > 4 * sum(p.numel() for p in model.vertex_unet.parameters()) * 0.9
    # Errors: a status and a message on stderr, exit code 1.
    proc = subprocess.run([str(build / "meshtalk_example"), str(tmp_path / "absent.safetensors")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("meshtalk_example: file not found: mt_model_load: safetensors '"), proc.stderr
