"""Train a compiled PyTorch model with DistributedDataParallel: CPU, gloo, loopback only.

    torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=29500 examples/train_ddp.py --out runs/ddp

The module that `layerdsl.build` returns is an ordinary `nn.Module`, so DDP wraps it unchanged.
Each rank trains on its shard of a synthetic dataset; DDP averages the gradients, so every rank
takes the same step and ends with the same weights, which each rank saves to OUT/rank{R}.npz.
Rank 0 writes the mean loss of each epoch to OUT/losses.json.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import layerdsl

# The MNIST convnet at a small size. `maxnorm=` gives the module an `apply_constraints()`; the
# limits are tight enough to bind, so the hook below matters.
MODEL = """
model small_convnet
input 12x12x1
conv2d 8 3 maxnorm=0.5 | relu
maxpool 2
flatten
dropout 0.1
dense 32 maxnorm=1 activation=relu
dense 4
"""


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images (N, C, H, W) whose label is the quadrant that is brighter on average."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=generator)
    y = torch.randint(0, 4, (n,), generator=generator)
    for label, (top, left) in enumerate([(0, 0), (0, 6), (6, 0), (6, 6)]):
        x[y == label, :, top : top + 6, left : left + 6] += 0.5
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for rank{R}.npz and losses.json")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    args = parser.parse_args()

    # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a bounded timeout turns a
    # missing peer into an error instead of a hang.
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights everywhere (DDP broadcasts rank 0's anyway)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    model = layerdsl.build(MODEL, target="torch")
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=3e-3)
    if hasattr(model, "apply_constraints"):
        # Keras applies max-norm after every update; so does this hook, identically on every rank.
        optimizer.register_step_post_hook(lambda *_: model.apply_constraints())

    x, y = synthetic_images(1536, seed=1)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=world, rank=rank, shuffle=True, seed=2)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, sampler=sampler)
    loss_fn = torch.nn.CrossEntropyLoss()

    losses = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        total = torch.zeros(2)
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(ddp(xb), yb)
            loss.backward()
            optimizer.step()
            total += torch.tensor([loss.item() * len(yb), len(yb)])
        dist.all_reduce(total)  # the epoch's mean loss over every rank's examples
        losses.append(float(total[0] / total[1]))
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    layerdsl.save_weights(args.out / f"rank{rank}.npz", layerdsl.get_weights(model))
    if rank == 0:
        (args.out / "losses.json").write_text(json.dumps(losses))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
