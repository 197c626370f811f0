"""Compiled models train unchanged under data parallelism: torch DDP (2 processes) and Keras MirroredStrategy."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LIMIT_S = 240  # a bound on a hang, far above the ~15 s each run takes


def run_bounded(command: list[str], cwd: Path, **env_vars: str) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; on a hang, kill the group (torchrun's workers too)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **env_vars}
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as process:
        try:
            output, _ = process.communicate(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"{command} did not finish in {LIMIT_S} s:\n{output[-4000:]}")
    assert process.returncode == 0, f"{command} failed:\n{output[-4000:]}"
    return subprocess.CompletedProcess(command, process.returncode, output)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def example_model(script: str) -> layerdsl.Model:
    """The `.layers` text an example trains, parsed (the script is imported, not run)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return layerdsl.parse(module.MODEL)


def test_ddp_on_two_processes_lowers_the_loss_and_leaves_every_rank_with_the_same_weights(tmp_path):
    torch = pytest.importorskip("torch")
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")
    run_bounded(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            str(EXAMPLES / "train_ddp.py"),
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        # Loopback only: gloo otherwise picks the interface the host name resolves to.
        **({"GLOO_SOCKET_IFNAME": "lo"} if sys.platform == "linux" else {}),
    )
    losses = json.loads((tmp_path / "losses.json").read_text())
    assert losses[-1] < 0.5 * losses[0], losses

    rank0 = layerdsl.load_weights(tmp_path / "rank0.npz")
    rank1 = layerdsl.load_weights(tmp_path / "rank1.npz")
    model = example_model("train_ddp.py")
    assert set(rank0) == set(rank1) == {f"{layer.name}.{w.name}" for layer in model.layers for w in layer.weights}
    for key in rank0:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)

    # The optimizer's post-step hook applied the max-norm constraints (the limits bind in this example).
    constrained = [layer for layer in model.layers if layer.args.get("maxnorm") is not None]
    assert {layer.kind for layer in constrained} == {"conv2d", "dense"}
    for layer in constrained:
        kernel = rank0[f"{layer.name}.kernel"]
        norms = np.sqrt((kernel**2).sum(axis=tuple(range(kernel.ndim - 1))))  # per output unit / filter
        assert norms.max() <= layer.args["maxnorm"] * (1 + 1e-5), layer.name


def test_keras_mirrored_strategy_on_two_cpu_replicas_lowers_the_loss(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    report_path = tmp_path / "report.json"
    run_bounded(
        [sys.executable, str(EXAMPLES / "train_keras_distributed.py"), "--replicas", "2", "--out", str(report_path)],
        cwd=tmp_path,
    )
    report = json.loads(report_path.read_text())
    assert report["replicas"] == 2
    assert report["copies_per_variable"] == 2  # built inside strategy.scope(): every variable is mirrored
    assert report["replica_spread"] == 0.0
    assert report["loss"][-1] < 0.5 * report["loss"][0], report["loss"]
