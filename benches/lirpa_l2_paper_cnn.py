#!/usr/bin/env python3
"""auto_LiRPA's CROWN / alpha-CROWN L2 radii on a margincert paper-CNN checkpoint (issue 14).

The reference side of docs/BENCHMARKS.md's "paper CNN, L2, against auto_LiRPA" table: the
checkpoint (paper CNN with first-layer bias, `mnist-cnn-first-bias`) is loaded into the
same PyTorch network; for each of the first N MNIST training images, the largest eps on a
bisection of [0, eps_max] (the same steps as `margincert robust --norm 2 --steps`) whose
auto_LiRPA lower bound of every gap (y - j) over the L2 ball is positive. Prints the radii,
their median and the CPU time per radius. auto_LiRPA runs in float32 and is not sound under
floating point: compare tightness and time, not soundness.

    /opt/torch-anchor/bin/python benches/lirpa_l2_paper_cnn.py RUN/last.safetensors \\
        --examples 4 --methods backward --threads 1

Needs torch, numpy, safetensors and auto_LiRPA (../shared/anchors/README.md) and the MNIST
files (../shared/data/mnist or --data).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from robust_compare import read_idx  # the bench beside this script

REPO = Path(__file__).resolve().parent.parent


def paper_cnn():
    """margincert's `mnist-cnn-first-bias` preset (nn.Sequential indices = the spec's)."""
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2, bias=True), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3136, 1024, bias=False), nn.ReLU(),
                         nn.Linear(1024, 10, bias=False))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--examples", type=int, default=4)
    p.add_argument("--methods", default="backward", help="auto_LiRPA methods, comma-separated")
    p.add_argument("--eps-max", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--alpha-iterations", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=REPO / "../shared/data/mnist")
    p.add_argument("--anchors", type=Path, default=REPO / "../shared/anchors")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.anchors))
    import lirpa_shims  # noqa: F401  (applies the shims, imports auto_LiRPA)
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    model = paper_cnn()
    model.load_state_dict(load_file(args.checkpoint))
    model.eval()
    n = args.examples
    x_all = torch.tensor(read_idx(args.data / "train-images-idx3-ubyte.gz")[:n],
                         dtype=torch.float32).unsqueeze(1) / 255.0
    y_all = torch.tensor(read_idx(args.data / "train-labels-idx1-ubyte.gz")[:n], dtype=torch.long)
    out = {}
    for method in args.methods.split(","):
        alpha = method == "CROWN-Optimized"
        # auto_LiRPA 0.3's sparse alpha fails on per-example inputs: dense alphas.
        opts = {"sparse_intermediate_bounds": False, "sparse_features_alpha": False,
                "sparse_spec_alpha": False} if alpha else {}
        t0 = time.process_time()
        radii = []
        for i in range(n):
            x, y = x_all[i:i + 1], int(y_all[i])
            c = torch.zeros(1, 9, 10)
            others = [j for j in range(10) if j != y]
            c[0, :, y] = 1.0
            c[0, torch.arange(9), others] = -1.0

            def certified(eps):
                bm = BoundedModule(model, torch.zeros(1, 1, 28, 28), bound_opts=opts)
                if alpha:
                    bm.set_bound_opts({"optimize_bound_args": {"iteration": args.alpha_iterations}})
                ptb = PerturbationLpNorm(norm=2, eps=eps)
                lb, _ = bm.compute_bounds(x=(BoundedTensor(x, ptb),), C=c, method=method,
                                          bound_upper=False)
                return bool(lb.min() > 0)

            lo, hi = 0.0, args.eps_max
            for _ in range(args.steps):
                mid = (lo + hi) / 2
                if certified(mid):
                    lo = mid
                else:
                    hi = mid
            radii.append(lo)
            print(method, i, lo, flush=True)
        t = time.process_time() - t0
        out[method] = {"radii": radii, "median": float(np.median(radii)), "cpu_per_radius": t / n}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
