"""The command line: exit codes, the stderr format, stdin, and atomic -o."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import layerdsl
from layerdsl import cli
from layerdsl.backends import SOURCE_TARGETS, TARGETS

BAD = "input 8x8x3\nconv2d 4 3\ndense 10\n"
GOOD = "dense 4 in=3 | relu\n"


def run(*args: str, stdin: str | bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        [sys.executable, "-m", "layerdsl", *args], input=data, capture_output=True, cwd=cwd, timeout=120
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.layers"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.layers"
    path.write_text(BAD)
    return path


def test_check_valid_file_exits_0(good):
    result = run("check", str(good))
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"{good}: ok"


def test_check_invalid_file_exits_1_with_located_message(bad):
    result = run("check", str(bad))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.splitlines()[0] == (
        f"{bad}:3:1: error: `dense` needs a 1-D input (features) or a 2-D sequence (timesteps x features), "
        "but receives shape (6, 6, 4)"
    )
    assert "    dense 10\n    ^~~~~\n" in err
    assert "hint: add `flatten` before `dense`" in err
    assert "Traceback" not in err
    assert result.stdout == b""


def test_check_many_files_reports_each(good, bad):
    result = run("check", str(good), str(bad))
    assert result.returncode == 1
    assert f"{good}: ok" in result.stdout.decode()
    assert f"{bad}:3:1: error:" in result.stderr.decode()


def test_check_reads_stdin():
    assert run("check", "-", stdin=GOOD).returncode == 0
    result = run("check", "-", stdin=BAD)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("<stdin>:3:1: error:")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "missing.layers"), "no such file"),
        (lambda d: str(d), "is a directory"),
    ],
)
def test_io_errors_exit_2(tmp_path, make, message):
    result = run("check", make(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_non_utf8_exits_2(tmp_path):
    path = tmp_path / "latin1.layers"
    path.write_bytes(b"dense 4 in=3 name=caf\xe9\n")
    result = run("check", str(path))
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr.decode()


def test_usage_errors_exit_2():
    assert run().returncode == 2
    assert run("compile", "x.layers").returncode == 2  # --target missing
    assert run("compile", "x.layers", "--target", "jax").returncode == 2


def test_summary_table_and_json(examples_dir):
    result = run("summary", str(examples_dir / "mnist_convnet.layers"))
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "Layer (type)" in out and "Output Shape" in out and "Param #" in out
    assert " conv2d_1 (Conv2D)" in out and "(None, 11, 11, 64)" in out and "18,496" in out
    assert "Total params: 34,826" in out

    data = json.loads(run("summary", "--json", str(examples_dir / "vgg16.layers")).stdout)
    assert data["name"] == "vgg16"
    assert data["input_shape"] == [224, 224, 3]
    assert data["total_params"] == 138_357_544
    assert data["trainable_params"] == 138_357_544
    assert data["non_trainable_params"] == 0
    first = data["layers"][0]
    assert first == {**first, "name": "block1_conv1", "type": "Conv2D", "output_shape": [224, 224, 64], "params": 1792, "line": 4}


def test_summary_counts_batchnorm_statistics_as_non_trainable(examples_dir):
    data = json.loads(run("summary", "--json", str(examples_dir / "oneliner.layers")).stdout)
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"]) == (2500, 2300, 200)


def test_summary_of_bad_file_exits_1(bad):
    result = run("summary", str(bad))
    assert result.returncode == 1
    assert result.stdout == b""


@pytest.mark.parametrize("target", SOURCE_TARGETS)
def test_compile_to_stdout_and_file(good, tmp_path, target):
    result = run("compile", str(good), "--target", target)
    assert result.returncode == 0, result.stderr.decode()
    assert "def build_model(" in result.stdout.decode()
    out = tmp_path / "out.py"
    assert run("compile", str(good), "--target", target, "-o", str(out)).returncode == 0
    assert out.read_text() == result.stdout.decode()


def test_failed_compile_leaves_existing_output_untouched(bad, tmp_path):
    out = tmp_path / "model.py"
    out.write_text("# precious\n")
    before = out.stat().st_mtime_ns
    result = run("compile", str(bad), "--target", "torch", "-o", str(out))
    assert result.returncode == 1
    assert out.read_text() == "# precious\n"
    assert out.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.layers", "model.py"]


def test_failed_compile_creates_no_output(bad, tmp_path):
    out = tmp_path / "new.py"
    assert run("compile", str(bad), "--target", "numpy", "-o", str(out)).returncode == 1
    assert not out.exists()


def test_interrupted_write_leaves_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "model.py"
    out.write_text("old\n")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cli._write_atomic(str(out), "new\n")
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.py"]


def test_compile_reads_stdin():
    result = run("compile", "-", "--target", "numpy", stdin=GOOD)
    assert result.returncode == 0
    assert "class Model" in result.stdout.decode()


def test_cli_targets_match_backend_table():
    assert cli.TARGETS == TARGETS


def test_check_imports_no_framework(examples_dir):
    code = (
        "import sys; from layerdsl.cli import main; "
        f"rc = main(['check', '-q', {str(examples_dir / 'vgg16.layers')!r}]); "
        "from layerdsl import api; api.compile(api.load(" + repr(str(examples_dir / "vgg16.layers")) + "), 'torch'); "
        "api.compile(api.load(" + repr(str(examples_dir / "vgg16.layers")) + "), 'keras'); "
        "bad = sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules); "
        "print(rc, bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "0 []", result.stderr


def test_generated_source_names_no_absolute_path(tmp_path):
    path = tmp_path / "deep" / "tiny.layers"
    path.parent.mkdir()
    path.write_text("dense 4 in=3\n")
    model = layerdsl.load(path.resolve())
    for target in ("torch", "keras", "numpy"):
        source = layerdsl.compile(model, target)
        assert str(tmp_path) not in source
        assert "from tiny.layers for" in source
