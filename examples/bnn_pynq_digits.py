"""Watch a model nobody here wrote: brevitas_examples' TFC-2W2A on a real data set.

    python examples/bnn_pynq_digits.py [--epochs 5] [--mnist-dir DIR] [--logdir runs/tfc_2w2a]
    tensorboard --logdir runs

Uses scikit-learn's handwritten digits (offline, resized to 28x28) by default,
or MNIST IDX files when --mnist-dir points at them. The monitor finds the
model's integer layers itself and logs to the SummaryWriter you already have.
"""

import argparse

import numpy as np
import torch
from brevitas_examples.bnn_pynq.models import model_with_cfg
from torch.utils.tensorboard import SummaryWriter

from ib_brevitas import InformationPlane
from ib_brevitas.experiments.data import digits_as_mnist, load_mnist_idx, stratified_split


def load(mnist_dir):
    if mnist_dir:
        images, labels = load_mnist_idx(mnist_dir, split="test")
        return images.astype(np.float32) / 255.0, labels
    return digits_as_mnist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--mnist-dir", default=None, help="directory with MNIST IDX files (gzip or not)")
    parser.add_argument("--logdir", default="runs/tfc_2w2a")
    parser.add_argument("--probe-size", type=int, default=1000)
    args = parser.parse_args()

    torch.manual_seed(0)
    images, labels = load(args.mnist_dir)
    x, y = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    model, _ = model_with_cfg("tfc_2w2a", pretrained=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    probe = test_idx[: args.probe_size]
    plane = InformationPlane(model, x[probe], y[probe], batch_size=250)
    print("measured layers:", ", ".join(plane.layer_names))
    writer = SummaryWriter(args.logdir)
    plane.log_to(writer)  # ib/I_XT/<layer>, ib/I_TY/<layer> + the information-plane tab

    plane.measure(epoch=0)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in torch.from_numpy(train_idx)[torch.randperm(len(train_idx))].split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        records = plane.measure(epoch)
        model.eval()
        with torch.no_grad():
            acc = (model(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
        writer.add_scalar("acc/test", acc, epoch)
        print(f"epoch {epoch}: test acc {acc:.3f}  " + "  ".join(
            f"{r.label} I(X;T)={r.i_xt:.2f} I(T;Y)={r.i_ty:.2f}" for r in records))
    writer.close()


if __name__ == "__main__":
    main()
