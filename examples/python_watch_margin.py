"""Train a small bias-free CNN in PyTorch and plot its certified normalized margin.

    pip install ./python torch matplotlib
    python examples/python_watch_margin.py --epochs 100 --out margin.png

The data are the first 200 MNIST training images embedded in margincert (no download).
Every `--every` epochs, `margincert.watch` certifies the current weights: the normalized
margin q_min / rho^L is an enclosure [lo, hi] about the exact real network on the exact
inputs p/255, and the summed loss is certified far below float range. Nothing is written
but the plot.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import margincert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--out", default="margin.png", help="the plot (PNG)")
    args = ap.parse_args()

    torch.manual_seed(0)
    data = margincert.load_data("embedded", "train", subset=args.examples)
    x = torch.from_numpy(data.images).float() / 255  # exactly p/255, as ToTensor
    y = torch.from_numpy(data.labels.astype(np.int64))

    # Bias-free (first-layer bias allowed): positively homogeneous of degree 3.
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2, bias=True),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10, bias=False),
    )
    print(margincert.Model.from_torch(net, (1, 28, 28)).homogeneity()["reasons"][-1])

    history = margincert.watch(net, data, every=args.every, input_shape=(1, 28, 28))
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    for epoch in range(args.epochs + 1):
        if epoch > 0:
            for i in range(0, len(x), 20):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[i : i + 20]), y[i : i + 20]).backward()
                opt.step()
        row = history.step(epoch)
        if row is not None:
            print(
                f"epoch {epoch:4d}  q_min in [{row['q_min_lo']:.4g}, {row['q_min_hi']:.4g}]  "
                f"normalized margin in [{row['normalized_margin_lo']:.4g}, "
                f"{row['normalized_margin_hi']:.4g}]  log10 loss <= {row['loss_log10_hi']:.4g}  "
                f"({row['certified_positive']}/{row['examples']} certified, "
                f"{row['seconds']:.2f} s)"
            )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["step"] for r in history]
    lo = [r["normalized_margin_lo"] for r in history]
    hi = [r["normalized_margin_hi"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(epochs, lo, hi, alpha=0.4, label="certified enclosure")
    ax.plot(epochs, lo, marker="o", ms=3, label="certified lower bound")
    ax.set_xlabel("epoch")
    ax.set_ylabel("normalized margin  q_min / rho^L")
    ax.set_title("Certified normalized margin of a bias-free CNN")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
