#!/usr/bin/env python3
"""Issue 14's comparison of certified L-inf robustness radii: margincert against auto_LiRPA.

For every network (trained by PyTorch here, and trained by margincert itself), on the first
N MNIST training images (L-inf box clipped to [0,1], radius by bisection on [0, eps_max] with
the same number of steps on both sides), prints and writes (Markdown + JSON):

- the median certified radius over all examples (a non-robust example counts as 0),
- the number certified at fixed eps (0.01, 0.03 by default),
- the CPU time per radius (user + system of the process and its threads/children),

for margincert's IBP, its CROWN (full CROWN: intermediate bounds by back-substitution), its
alpha mode (optimized ReLU slopes) and the best-of-methods radius it reports (with CROWN),
its verified PGD attack radius (the paper's 100 steps x 10 restarts; every
certified radius must be at most it), and auto_LiRPA's IBP, CROWN and alpha-CROWN when
auto_LiRPA is importable (through ../shared/anchors/lirpa_shims.py; skipped without it).

    /opt/torch-anchor/bin/python benches/robust_compare.py                 # 200 images
    /opt/torch-anchor/bin/python benches/robust_compare.py --examples 50 --nets torch-mlp

Needs: a Python with torch, numpy and safetensors (see ../shared/anchors/README.md), the
MNIST files (../shared/data/mnist or --data), and a built margincert binary (--bin; default
target/release/margincert, else target/debug/margincert). auto_LiRPA runs in float32 and is
not sound under floating point: compare tightness and time, not soundness, against it.
"""
import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def mnist(data_dir, n):
    x = read_idx(data_dir / "train-images-idx3-ubyte.gz")[:n]
    y = read_idx(data_dir / "train-labels-idx1-ubyte.gz")[:n]
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0, torch.tensor(y, dtype=torch.long)


# Bias-free networks and their margincert specs (the nn.Sequential indices are the spec's).
def torch_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100, bias=False), nn.ReLU(),
                         nn.Linear(100, 100, bias=False), nn.ReLU(), nn.Linear(100, 10, bias=False))


MLP_SPEC = """name = "torch-mlp"
input = { c = 1, h = 28, w = 28 }
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
out = 100
bias = false
[[layers]]
type = "relu"
[[layers]]
type = "dense"
out = 100
bias = false
[[layers]]
type = "relu"
[[layers]]
type = "dense"
out = 10
bias = false
"""


def torch_cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1, bias=False), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 100, bias=False), nn.ReLU(),
                         nn.Linear(100, 10, bias=False))


def conv_toml(out):
    return f"""[[layers]]
type = "conv2d"
out = {out}
kernel = 4
stride = 2
padding = {{ explicit = 1 }}
bias = false
[[layers]]
type = "relu"
"""


CNN_SPEC = ('name = "torch-cnn"\ninput = { c = 1, h = 28, w = 28 }\n' + conv_toml(16) + conv_toml(32)
            + '[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nout = 100\nbias = false\n'
            + '[[layers]]\ntype = "relu"\n[[layers]]\ntype = "dense"\nout = 10\nbias = false\n')


def train_torch(model, x, y, epochs, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            b = perm[i:i + 100]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def margincert_robust(args, model_args, out, method, attack):
    """One `margincert robust` run; returns (report, CPU seconds)."""
    cmd = [str(args.bin), "--threads", str(args.threads), "robust", *model_args,
           "--data", f"mnist:{args.data}", "--split", "train", "--subset", str(args.examples),
           "--norm", "inf", "--eps-max", str(args.eps_max), "--steps", str(args.steps),
           "--method", method, "--out", str(out)]
    cmd += ["--attack", "pgd"] if attack else ["--no-attack"]
    t0 = cpu_children()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "robust.json").read_text()), cpu_children() - t0


def lirpa_radii(model, x, y, method, eps_max, steps):
    """auto_LiRPA radii by bisection with the margin specification C (rows e_y - e_j)."""
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    # auto_LiRPA 0.3's sparse alpha fails on per-example boxes ("shape mismatch" in
    # reconstruct_full_alpha): dense alphas for alpha-CROWN.
    dense = {"sparse_intermediate_bounds": False, "sparse_features_alpha": False,
             "sparse_spec_alpha": False}

    def fresh():
        return BoundedModule(model, torch.zeros(1, 1, 28, 28),
                             bound_opts=dense if method == "CROWN-Optimized" else {})

    # A fresh module per method (reusing one after alpha-CROWN inflates CROWN's radius), and
    # per call for alpha-CROWN (its optimized slopes are sized by the unstable neurons of the
    # first call).
    alpha = method == "CROWN-Optimized"
    bm = fresh()
    n = len(x)
    c = torch.zeros(n, 9, 10)
    for i in range(n):
        others = [j for j in range(10) if j != y[i]]
        c[i, :, y[i]] = 1.0
        c[i, torch.arange(9), others] = -1.0

    def certified(eps):
        e = eps.view(-1, 1, 1, 1)
        ptb = PerturbationLpNorm(norm=np.inf, eps=float(eps.max()), x_L=(x - e).clamp(0, 1),
                                 x_U=(x + e).clamp(0, 1))
        m = fresh() if alpha else bm
        lb, _ = m.compute_bounds(x=(BoundedTensor(x, ptb),), C=c, method=method, bound_upper=False)
        return lb.min(dim=1).values > 0

    lo, hi = torch.zeros(n), torch.full((n,), eps_max)
    ok0 = certified(torch.zeros(n))
    okm = certified(hi.clone())
    lo[okm] = eps_max
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = certified(mid)
        lo = torch.where(ok & ~okm, mid, lo)
        hi = torch.where(ok | okm, hi, mid)
    lo[~ok0] = 0.0
    return lo.numpy()


def summary(r, eps_list):
    r = np.asarray(r, dtype=float)
    return {"median": float(np.median(r)), **{f"at_{e}": int((r > e).sum()) for e in eps_list}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--eps-max", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=16, help="bisection steps on both sides")
    p.add_argument("--eps", default="0.01,0.03", help="fixed eps of the certified counts")
    p.add_argument("--nets", default="torch-mlp,torch-cnn,mc-mlp")
    p.add_argument("--lirpa-methods", default="IBP,backward,CROWN-Optimized")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--data", type=Path, default=REPO / "../shared/data/mnist")
    p.add_argument("--anchors", type=Path, default=REPO / "../shared/anchors")
    p.add_argument("--bin", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO / "bench-out/robust-compare")
    args = p.parse_args()
    args.data = args.data.resolve()
    if args.bin is None:
        rel = REPO / "target/release/margincert"
        args.bin = rel if rel.exists() else REPO / "target/debug/margincert"
    eps_list = [float(e) for e in args.eps.split(",")]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(args.anchors))
    try:
        import lirpa_shims  # noqa: F401  (applies the shims, imports auto_LiRPA)
        have_lirpa = True
    except Exception as e:  # auto_LiRPA is optional
        print(f"auto_LiRPA skipped: {e}", file=sys.stderr)
        have_lirpa = False

    xtr, ytr = mnist(args.data, args.train_images)
    x, y = xtr[:args.examples], ytr[:args.examples]
    nets = {}
    for name in args.nets.split(","):
        d = args.out / name
        d.mkdir(exist_ok=True)
        if name in ("torch-mlp", "torch-cnn"):
            from safetensors.torch import save_file
            model = train_torch(torch_mlp() if name == "torch-mlp" else torch_cnn(), xtr, ytr, 3, 0)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "model.safetensors")
            (d / "spec.toml").write_text(MLP_SPEC if name == "torch-mlp" else CNN_SPEC)
            nets[name] = (model, [str(d / "model.safetensors"), "--spec", str(d / "spec.toml")])
        elif name == "mc-mlp":
            # margincert's own training (small-mlp: 784-100-10), loaded into torch for auto_LiRPA.
            run = d / "run"
            subprocess.run([str(args.bin), "--threads", str(args.threads), "train", "--model",
                            "small-mlp", "--data", f"mnist:{args.data}", "--train-subset", "2000",
                            "--test-subset", "100", "--batch", "100", "--epochs", "20", "--quiet",
                            "--overwrite", "--out", str(run)], check=True)
            from safetensors.torch import load_file
            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 100, bias=False), nn.ReLU(),
                                  nn.Linear(100, 10, bias=False))
            model.load_state_dict(load_file(run / "last.safetensors"))
            nets[name] = (model.eval(), [str(run / "last.safetensors")])
        else:
            sys.exit(f"unknown net {name}: use torch-mlp, torch-cnn, mc-mlp")

    rows, results = [], {}
    for name, (model, margs) in nets.items():
        res = {}
        ibp_rep, t_ibp = margincert_robust(args, margs, args.out / name / "ibp", "ibp", False)
        crown_rep, t_crown = margincert_robust(args, margs, args.out / name / "crown", "crown", False)
        alpha_rep, t_alpha = margincert_robust(args, margs, args.out / name / "alpha", "alpha", False)
        att_rep, t_att = margincert_robust(args, margs, args.out / name / "attack", "crown", True)
        n = len(crown_rep["examples"])
        ibp = [e["ibp"] for e in ibp_rep["examples"]]
        crown = [e["crown"] for e in crown_rep["examples"]]
        alpha = [e["crown"] for e in alpha_rep["examples"]]
        best = [e["certified"] for e in crown_rep["examples"]]
        attack = [np.inf if e["attack"] is None else e["attack"] for e in att_rep["examples"]]
        above = sum(1 for b, a in zip(best + alpha, attack + attack) if b > a)
        res["margincert IBP"] = {**summary(ibp, eps_list), "cpu_per_radius": t_ibp / n}
        res["margincert CROWN"] = {**summary(crown, eps_list), "cpu_per_radius": t_crown / n}
        res["margincert alpha"] = {**summary(alpha, eps_list), "cpu_per_radius": t_alpha / n}
        res["margincert best"] = summary(best, eps_list)
        res["margincert PGD attack"] = {**summary(attack, eps_list), "cpu_per_radius": t_att / n,
                                        "certified_above_attack": above}
        if have_lirpa:
            for m in args.lirpa_methods.split(","):
                t0 = time.process_time()
                r = lirpa_radii(model, x, y, m, args.eps_max, args.steps)
                t = time.process_time() - t0
                over = int(sum(1 for a, b in zip(r, attack) if a > b))
                res[f"auto_LiRPA {m}"] = {**summary(r, eps_list), "cpu_per_radius": t / n,
                                          "above_margincert_attack": over}
        results[name] = res
        for k, v in res.items():
            rows.append((name, k, v))
            print(name, k, v, flush=True)
    head = "| net | method | median radius | " + " | ".join(f"certified at {e}" for e in eps_list) \
        + " | CPU s / radius |"
    md = [f"{args.examples} MNIST training images, L-inf box clipped to [0,1], eps_max {args.eps_max}, "
          f"{args.steps} bisection steps, {args.threads} threads", "", head,
          "|" + "---|" * (4 + len(eps_list))]
    for name, k, v in rows:
        t = v.get("cpu_per_radius")
        md.append(f"| {name} | {k} | {v['median']:.4g} | "
                  + " | ".join(str(v[f'at_{e}']) for e in eps_list)
                  + f" | {'' if t is None else f'{t:.3g}'} |")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    bad = [n for n, r in results.items() if r["margincert PGD attack"]["certified_above_attack"]]
    if bad:
        sys.exit(f"a certified radius above the verified attack radius on {bad}")


if __name__ == "__main__":
    main()
