#!/usr/bin/env bash
# Installs what margincert needs besides a Rust toolchain, on Debian/Ubuntu:
#   m4 (rug builds GMP and MPFR from source) and a C compiler;
#   dataset-fashion-mnist (optional: the Fashion-MNIST files some tests read).
# Safe to run again: it installs only what is missing. Run as root or with sudo available.
set -euo pipefail
need=()
command -v m4 >/dev/null 2>&1 || need+=(m4)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  # dataset-fashion-mnist is optional (tests that need it skip without it).
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null || \
    $SUDO apt-get install -y -qq "${need[@]/dataset-fashion-mnist/}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "error: no cargo on PATH; install a Rust toolchain (https://rustup.rs)" >&2; exit 1; }
