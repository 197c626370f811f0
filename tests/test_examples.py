"""The runnable examples do what the README says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_example(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_training_on_padded_sequences_lowers_the_loss(target):
    pytest.importorskip(target)
    result = run_example(str(ROOT / "examples" / "train_sequences.py"), "--target", target, "--examples", "512", "--epochs", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    losses = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0]


def test_compare_backends_reports_agreement(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    result = run_example(str(ROOT / "examples" / "compare_backends.py"), str(ROOT / "examples" / "mnist_convnet.layers"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All backends agree." in result.stdout
    for target in ("keras", "torch", "numpy"):
        assert (tmp_path / "out" / f"mnist_convnet_{target}.py").exists()
    assert (tmp_path / "out" / "mnist_convnet.onnx").exists()  # run by onnxruntime as written
    assert "onnx: wrote" in result.stdout


def test_compare_backends_compares_every_output_of_a_model_with_two_inputs(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    model = tmp_path / "two.layers"
    model.write_text(
        "input 6 dtype=int32 name=ids\nembedding 50 8\ntap tokens\ninput 6 dtype=int32 name=segments\n"
        "embedding 2 8\nadd @tokens\nattention 2 4\ntap encoded\nglobalavgpool1d\ndense 3 | softmax\ntap label\n"
        "@encoded\ndense 5\ntap tags\noutput @label @tags\n"
    )
    result = run_example(str(ROOT / "examples" / "compare_backends.py"), str(model), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All backends agree." in result.stdout
    for target in ("keras", "torch", "numpy", "onnx"):
        assert f"{target}: output 2 (4, 6, 5)" in result.stdout
