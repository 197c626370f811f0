"""NumPy backend LSTM inference against PyTorch eager (no_grad), same weights, same run.

    python benchmarks/bench_lstm.py [--repeats 30]

Models: a masked LSTM text classifier (embedding mask_zero -> lstm -> dense) at
batch 32, and the same without a mask. Prints median times and the ratio
numpy / torch (below 1 means NumPy is faster). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import layerdsl
from layerdsl import testing

MODELS = {
    "masked LSTM, batch 32": ("input 100 dtype=int32\nembedding 10000 64 mask_zero=true\nlstm 64\ndense 1 | sigmoid", 32),
    "unmasked LSTM, batch 32": ("input 100x64\nlstm 64\ndense 1 | sigmoid", 32),
    "masked LSTM, batch 1": ("input 100 dtype=int32\nembedding 10000 64 mask_zero=true\nlstm 64\ndense 1 | sigmoid", 1),
}


def median_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; median of {args.repeats}")
    print(f"{'model':<28}{'numpy ms':>10}{'torch ms':>10}{'numpy/torch':>13}")
    for name, (text, batch) in MODELS.items():
        model = layerdsl.parse(text)
        weights = testing.random_weights(model)
        x = testing.random_input(model, batch=batch, padding="pre")
        np_model = layerdsl.build(model, target="numpy")
        layerdsl.set_weights(np_model, weights)
        torch_model = layerdsl.build(model, target="torch").eval()
        layerdsl.set_weights(torch_model, weights)
        tx = torch.from_numpy(x)

        def run_torch(torch_model=torch_model, tx=tx) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                torch_model(tx)

        np.testing.assert_allclose(np_model(x), testing.run("torch", torch_model, model, x), atol=1e-5, rtol=1e-4)
        t_np = median_ms(lambda np_model=np_model, x=x: np_model(x), args.repeats)
        t_torch = median_ms(run_torch, args.repeats)
        print(f"{name:<28}{t_np:>10.2f}{t_torch:>10.2f}{t_np / t_torch:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
