"""Exact information plane of the paper's SYN network in a plain PyTorch loop.

    python examples/syn_plain_loop.py [--epochs 100] [--activation tanh] [--out syn_mi.jsonl]

The monitor needs three lines: build it on a probe set, call `measure(epoch)`
when you want a point, read `history` (or attach sinks). Everything else is an
ordinary training loop.
"""

import argparse

import torch

from ib_brevitas import InformationPlane, JsonlSink
from ib_brevitas.experiments.data import stratified_split, syn_dataset
from ib_brevitas.experiments.models import syn_loss, syn_mlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    parser.add_argument("--out", default=None, help="also write the records to this JSONL file")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the SYN net is tiny: threads only add overhead
    torch.manual_seed(0)
    x, y = syn_dataset()
    train_idx, _ = stratified_split(y, 0.2, seed=0)
    x_train, y_train = torch.from_numpy(x[train_idx]).float(), torch.from_numpy(y[train_idx])
    model = syn_mlp(args.activation, bits=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    plane = InformationPlane(model, x, y, batch_size=len(x))  # probe: all 4096 patterns
    if args.out:
        plane.add_sink(JsonlSink(args.out))
    plane.measure(epoch=0)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in torch.randperm(len(x_train)).split(256):
            optimizer.zero_grad()
            syn_loss(model(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
        if epoch % 10 == 0:
            plane.measure(epoch)

    print(f"{'layer':6} {'epoch':>5} {'I(X;T)':>7} {'I(T;Y)':>7} distinct")
    for r in plane.history:
        if r.epoch in (0, args.epochs - args.epochs % 10):
            print(f"{r.layer:6} {r.epoch:5d} {r.i_xt:7.3f} {r.i_ty:7.3f} {r.n_distinct:8d}")


if __name__ == "__main__":
    main()
