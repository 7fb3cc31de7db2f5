"""Temporary files have one owner (``_tempfiles``): removed on failure, on SIGTERM / SIGINT (the CLI
exits with one line), and, after a kill -9, by the next run writing beside them; never anyone else's."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from meshtalk_fast.base import tempfiles as _tempfiles
from meshtalk_fast import cli
from meshtalk_fast.models.checkpoint import atomic_save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _ours(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(_tempfiles.TEMP_PREFIX))


def test_stale_temporaries_of_dead_processes_only(tmp_path):
    import torch

    dead, live = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".meshtalk-tmp.{dead}.model_safetensors.abc.tmp"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".meshtalk-tmp.{dead}.out.xyz"
    (stale_dir / "obj").mkdir(parents=True)
    alive = tmp_path / f".meshtalk-tmp.{live}.other.q.tmp"
    alive.write_bytes(b"busy")
    foreign = [tmp_path / ".out.tmp-abcd", tmp_path / ".meshtalk-12345.tmp", tmp_path / ".meshtalk-tmp.x.y"]
    for f in foreign:
        f.write_bytes(b"not ours to judge")
    atomic_save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors", {"format": "x"})
    assert not stale_file.exists() and not stale_dir.exists()
    assert alive.exists() and all(f.exists() for f in foreign)
    assert (tmp_path / "model.safetensors").is_file()


def test_temp_path_is_removed_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with _tempfiles.temp_path(tmp_path, "x", ".npy") as tmp:
            np.save(tmp, np.zeros(3))
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


SLOW_ANIMATE = textwrap.dedent("""
    import sys, time
    import meshtalk_fast.io.export as ex
    from meshtalk_fast import cli

    original = ex.save_npz

    def slow(*args, **kwargs):
        original(*args, **kwargs)
        print("writing", flush=True)
        time.sleep(60)

    ex.save_npz = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


def _start_slow_animate(files, out):
    argv = ["animate", "--model", str(files["model"]), "--template", str(files["template"]),
            "--audio", str(files["wav"]), "--formats", "npz,obj", "--out", str(out), "--seed", "1"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ANIMATE, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.strip() == "writing":
            return proc
    proc.wait()
    pytest.fail(f"animate did not reach its output write: {proc.stderr.read()}")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 128 + signal.SIGTERM, "terminated by signal 15"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_signal_during_animate_output_write_leaves_nothing(tiny_cli_files, tmp_path, sig, code, word):
    out = tmp_path / "out"
    proc = _start_slow_animate(tiny_cli_files, out)
    assert _ours(tmp_path)  # the temporary output folder exists while writing
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


def test_kill_9_leftovers_are_removed_by_the_next_run(tiny_cli_files, tmp_path, capsys):
    out = tmp_path / "out"
    proc = _start_slow_animate(tiny_cli_files, out)
    proc.kill()
    proc.wait()
    left = _ours(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".meshtalk-tmp.{proc.pid}.")
    assert cli.main(["animate", "--model", str(tiny_cli_files["model"]), "--template", str(tiny_cli_files["template"]),
                     "--audio", str(tiny_cli_files["wav"]), "--formats", "npz", "--out", str(out)]) == 0
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["meshes.npz"]


def test_force_replaces_the_output_set_as_a_whole(tiny_cli_files, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["animate", "--model", str(tiny_cli_files["model"]), "--template", str(tiny_cli_files["template"]),
            "--audio", str(tiny_cli_files["wav"]), "--out", str(out)]
    assert cli.main(base + ["--formats", "npz,glb"]) == 0
    assert sorted(os.listdir(out)) == ["animation.glb", "meshes.npz"]
    capsys.readouterr()
    assert cli.main(base + ["--formats", "npz"]) == 2  # an old animation.glb would disagree with the new npz
    assert "already holds meshes.npz, animation.glb" in capsys.readouterr().err
    assert cli.main(base + ["--formats", "obj", "--force"]) == 0
    assert os.listdir(out) == ["obj"]
