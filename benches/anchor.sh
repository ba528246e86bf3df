#!/usr/bin/env bash
# Speed anchor: PyTorch vs margincert on the same machine, same thread count (2), same go.
#
#   benches/anchor.sh                  # all configurations, 3 runs x 10 s each
#   RUNS=5 SECS=20 benches/anchor.sh   # longer
#   CONFIGS="cnn:train:100 mlp:infer:1000" benches/anchor.sh
#
# For every configuration (model, mode, batch) it runs the PyTorch anchor
# (torch_mnist_cnn.py --child, one process per run, fully bias-free CNN = --cnn-bias none,
# the same net as margincert's `mnist-cnn` preset), then `examples/throughput` (RUNS runs),
# and prints the median images/s of each and the ratio margincert / torch.
# The machine is shared: run it when it is quiet. "other" is the largest CPU load (cores)
# from other processes that a torch run saw during its timed window (from /proc/stat).
#
# Needs a Python venv with torch: PYTHON (default /opt/torch-anchor/bin/python), created by
#   python3 -m venv /opt/torch-anchor && /opt/torch-anchor/bin/pip install torch numpy
# Anchors directory: ANCHOR_DIR, else ../shared/anchors next to the repository.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
anchor_dir="${ANCHOR_DIR:-$repo/../shared/anchors}"
script="$anchor_dir/torch_mnist_cnn.py"
python="${PYTHON:-/opt/torch-anchor/bin/python}"
runs="${RUNS:-3}"
secs="${SECS:-10}"
threads=2 # torch_mnist_cnn.py hard-codes 2 threads
configs="${CONFIGS:-cnn:train:100 cnn:train:1000 cnn:infer:100 cnn:infer:1000 mlp:train:100 mlp:train:1000 mlp:infer:100 mlp:infer:1000}"

[[ -f "$script" ]] || { echo "anchor script not found: $script (set ANCHOR_DIR)" >&2; exit 1; }
[[ -x "$python" ]] || { echo "no torch venv at $python (see the header of $0)" >&2; exit 1; }

(cd "$repo" && cargo build --release --example throughput --quiet)
ours="$repo/target/release/examples/throughput"

field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

rows=()
for cfg in $configs; do
  IFS=: read -r model mode batch <<<"$cfg"
  t_ips=()
  other=0
  for ((r = 0; r < runs; r++)); do
    line=$(OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$python" "$script" --child \
      --model "$model" --mode "$mode" --batch "$batch" --seconds "$secs" --warmup 2 \
      --cnn-bias none | grep '^RESULT ' | cut -c8-)
    t_ips+=("$(field "$line" images_per_s)")
    other=$(python3 -c 'import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))' \
      "$other" "$(field "$line" other_cores)")
  done
  t_med=$(python3 -c 'import sys,statistics; print(statistics.median(map(float, sys.argv[1:])))' "${t_ips[@]}")
  ours_line=$("$ours" --model "$model" --mode "$mode" --batch "$batch" --seconds "$secs" \
    --warmup 2 --threads "$threads" --runs "$runs")
  o_med=$(field "$ours_line" images_per_s)
  row=$(python3 -c 'import sys; m,mo,b,t,o,oth=sys.argv[1:]; print(f"{m:<6}{mo:<7}{b:>6}{float(t):>14.1f}{float(o):>18.1f}{float(o)/float(t):>8.2f}{float(oth):>8.2f}")' \
    "$model" "$mode" "$batch" "$t_med" "$o_med" "$other")
  echo "$row" >&2
  rows+=("$row")
done
echo
echo "threads=$threads, runs=$runs x ${secs}s, medians; cnn = bias-free paper CNN;"
echo "other = max CPU cores busy in other processes during the torch runs"
printf '%-6s%-7s%6s%14s%18s%8s%8s\n' model mode batch "torch img/s" "margincert img/s" ratio other
printf '%s\n' "${rows[@]}"
