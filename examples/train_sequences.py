"""Train a compiled sequence model on a synthetic padded dataset and watch the loss fall.

    python examples/train_sequences.py [--target torch|keras] [--epochs 8]

The task: each example is a variable-length sequence of token ids (1..49);
its label is 1 when token 7 appears more often than token 3. Sequences are
padded with `layerdsl.pad_sequences` (pre-padding, as Keras does), and the
embedding's `mask_zero=true` makes the LSTM skip the padding.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import layerdsl

MODEL = """
model counter
input 40 dtype=int32
embedding 50 16 mask_zero=true
lstm 32
dense 1 | sigmoid
"""


def make_dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for _ in range(count):
        length = int(rng.integers(5, 41))
        seq = rng.integers(1, 50, length)
        seq[rng.random(length) < 0.15] = 7
        seq[rng.random(length) < 0.15] = 3
        sequences.append(seq.tolist())
        labels.append(float((seq == 7).sum() > (seq == 3).sum()))
    return layerdsl.pad_sequences(sequences, maxlen=40), np.array(labels, dtype=np.float32)


def train_torch(model: layerdsl.Model, x: np.ndarray, y: np.ndarray, epochs: int) -> list[float]:
    import torch

    torch.manual_seed(0)
    net = layerdsl.build(model, target="torch")
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCELoss()
    xs, ys = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
    losses = []
    for _ in range(epochs):
        net.train()
        total = 0.0
        for start in range(0, len(xs), 64):
            batch_x, batch_y = xs[start : start + 64], ys[start : start + 64]
            optimizer.zero_grad()
            loss = loss_fn(net(batch_x).squeeze(-1), batch_y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch_x)
        losses.append(total / len(xs))
    return losses


def train_keras(model: layerdsl.Model, x: np.ndarray, y: np.ndarray, epochs: int) -> list[float]:
    import keras

    keras.utils.set_random_seed(0)
    net = layerdsl.build(model, target="keras")
    net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    history = net.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=False)
    return [float(v) for v in history.history["loss"]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("torch", "keras"), default="torch")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--examples", type=int, default=1024)
    args = parser.parse_args(argv)

    model = layerdsl.parse(MODEL)
    x, y = make_dataset(args.examples, seed=0)
    print(f"{args.examples} sequences padded to {x.shape[1]} ids; {int(y.sum())} positive")
    train = train_torch if args.target == "torch" else train_keras
    losses = train(model, x, y, args.epochs)
    for epoch, loss in enumerate(losses, 1):
        print(f"epoch {epoch}: loss {loss:.4f}")
    fell = losses[-1] < 0.8 * losses[0]
    print("loss fell" if fell else "loss did not fall")
    return 0 if fell else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
