#!/usr/bin/env bash
# Top-level module dependency graph of the library: for each top-level module of src/lib.rs,
# the other top-level modules its code names through a `crate::` path (`use` lines and
# inline paths; comments and doc links are ignored). Run from the repository root; prints
# one `module: dep dep ...` line per module, then checks that the graph has no cycle
# (`tsort` fails on a loop) and that `certify` does not import `train`. (No `use crate::{...}` groups exist; the check
# below fails loudly if one appears, since this grep would miss its members.)
set -euo pipefail
edges=''
if grep -rq 'crate::{' src; then
  echo "a 'crate::{' group: extend scripts/module-graph.sh" >&2
  exit 1
fi
mods=$(sed -n 's/^pub mod \([a-z_]*\);/\1/p' src/lib.rs)
for m in $mods; do
  if [ -d "src/$m" ]; then files=$(find "src/$m" -name '*.rs'); else files="src/$m.rs"; fi
  deps=$(cat $files | { grep -v '^\s*//' || true; } \
    | { grep -oE 'crate::[a-z_]+' || true; } | sed 's/^crate:://' \
    | { grep -xF "$mods" || true; } | { grep -vx "$m" || true; } | sort -u | tr '\n' ' ')
  echo "$m: ${deps% }"
  for d in $deps; do edges+="$d $m"$'\n'; done
  edges+="$m $m"$'\n'
done
if ! order=$(printf '%s' "$edges" | tsort 2>&1) || grep -q loop <<<"$order"; then
  echo "CYCLE: $order" >&2
  exit 1
fi
echo "no cycles; a dependency order: $(tr '\n' ' ' <<<"$order")"
if printf '%s' "$edges" | grep -qx 'train certify'; then
  echo "certify imports train" >&2
  exit 1
fi
echo "certify does not import train"
