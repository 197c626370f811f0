"""Train a compiled Keras model with tf.distribute.MirroredStrategy, on CPU replicas.

    python examples/train_keras_distributed.py [--replicas 2] [--out losses.json]

`layerdsl.build(..., target="keras")` returns a plain `keras.Model`, so the usual recipe applies
unchanged: build and compile it inside `strategy.scope()` (its variables become mirrored), then
`fit`. On a machine with GPUs, `MirroredStrategy()` with no arguments uses all of them; here the
one CPU is split into logical devices so that the replicas, and the gradient all-reduce between
them, are real. (Keras 3's own `keras.distribution` API serves the JAX backend; with TensorFlow,
`tf.distribute` is the route, and `MultiWorkerMirroredStrategy` extends it to several machines.)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras
import numpy as np
import tensorflow as tf

import layerdsl

# The dropout-paper MLP at a small size; `maxnorm=` becomes Keras's MaxNorm constraint.
MODEL = """
model small_mlp
input 20
dense 64 init=normal maxnorm=3 activation=relu
dropout 0.1
dense 64 maxnorm=3 activation=relu
dense 3 | softmax
"""


def cpu_replicas(count: int) -> list[str]:
    """Split the CPU into `count` logical devices (must run before TensorFlow initializes them)."""
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def synthetic_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 20)).astype("float32")
    y = (x @ rng.standard_normal((20, 3))).argmax(axis=1)
    return x, y


def replica_copies(model: keras.Model) -> list[list[np.ndarray]]:
    """Each variable's per-replica copies (a MirroredVariable holds one per device)."""
    return [[np.asarray(copy) for copy in getattr(w.value, "values", [w.value])] for w in model.weights]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, help="write the replica count and each epoch's loss here as JSON")
    args = parser.parse_args()

    strategy = tf.distribute.MirroredStrategy(cpu_replicas(args.replicas))
    print(f"replicas in sync: {strategy.num_replicas_in_sync}")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = layerdsl.build(MODEL, target="keras")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    x, y = synthetic_data(2048, seed=1)
    # The global batch is split across the replicas: 32 examples each.
    history = model.fit(x, y, batch_size=32 * strategy.num_replicas_in_sync, epochs=args.epochs, verbose=2)
    copies = replica_copies(model)
    spread = max(float(np.abs(c - cs[0]).max()) for cs in copies for c in cs)
    print(f"copies per variable: {min(map(len, copies))}; largest difference between copies: {spread}")
    if args.out is not None:
        report = {
            "replicas": strategy.num_replicas_in_sync,
            "copies_per_variable": min(map(len, copies)),
            "replica_spread": spread,
            "loss": history.history["loss"],
        }
        args.out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
