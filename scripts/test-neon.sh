#!/usr/bin/env bash
# The kernel tests on AArch64 without an ARM machine: cross-compile the library's unit tests for
# aarch64-unknown-linux-gnu and run them under qemu-user, which emulates NEON and the
# dot-product extension (so both NEON kernels run against the scalar reference). Needs the
# target (`rustup target add aarch64-unknown-linux-gnu`) and Debian's `qemu-user` and
# `gcc-aarch64-linux-gnu` (this script installs the last two with apt when missing).
#
#   scripts/test-neon.sh                 # the kernel and attention tests
#   scripts/test-neon.sh engine::        # any test filter
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  apt-get install -y -q qemu-user gcc-aarch64-linux-gnu
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
  rustup target add aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
filter=${1:-engine::kernels::}
# Each ISA the emulated CPU has, in turn (qemu's default CPU has the dot-product extension).
for isa in neondot neon scalar; do
  echo "== HEARTH_ISA=$isa" >&2
  HEARTH_ISA=$isa cargo test --release --locked --target aarch64-unknown-linux-gnu --lib -- "$filter"
done
