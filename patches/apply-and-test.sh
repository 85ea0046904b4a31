#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Applies the Cloud Hypervisor patch series of this directory to a scratch
# clone of a Cloud Hypervisor checkout, builds it without and with the
# `shadow_mmu` feature, runs the unit tests of the touched crates and the new
# integration tests, checks CH's formatting and clippy lints for the touched
# crates, and prints a one-line verdict (PASS:, FAIL: or SKIP:).
#
#   CH_DIR=<cloud-hypervisor checkout or bare mirror> patches/apply-and-test.sh
#
# Environment:
#   CH_DIR          Cloud Hypervisor git repository holding the base commit
#                   named in `series` (a checkout or a bare mirror). Without
#                   one the script prints `SKIP: ...` and exits 0.
#   CH_WORK         Where the scratch clone lives (kept between runs so that
#                   builds are incremental). Default: /tmp/ch-shadow-mmu-check.
#   MICRO_HTTP_DIR  micro-http git repository holding the commit CH's
#                   Cargo.lock wants (for machines that cannot reach
#                   github.com). Unset: Cargo fetches it.
#   SHADOW_MMU_DIR  The shadow-mmu repository whose `shadow-mmu` crate CH
#                   builds against. Default: the repository of this script.
#   SHADOW_MMU_GUEST_KERNEL
#                   The guest kernel for the integration tests. Default: built
#                   from SHADOW_MMU_DIR by `cargo build -p
#                   shadow-mmu-integration` (its build script makes it).
#   SKIP_UNIT_TESTS=1  Skip CH's unit tests of the touched crates.
#   FAST=0          Build CH's release binary with its own profile (LTO,
#                   one codegen unit: much slower) instead of without LTO.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHADOW_MMU_DIR=${SHADOW_MMU_DIR:-$(cd "$HERE/.." && pwd)}
CH_WORK=${CH_WORK:-/tmp/ch-shadow-mmu-check}
TARGET=x86_64-unknown-linux-gnu
MICRO_HTTP_URL=https://github.com/firecracker-microvm/micro-http
SHADOW_MMU_URL=https://github.com/rust-vmm/shadow-mmu

step=setup
fail() {
    echo "FAIL: Cloud Hypervisor --shadow-mmu series: $step${1:+: $1}"
    exit 1
}
trap 'fail "command failed (line $LINENO)"' ERR
log() { echo "==> $*" >&2; }

BASE=$(sed -n 's/^# base: \([0-9a-f]\{40\}\).*/\1/p' "$HERE/series")
[ -n "$BASE" ] || fail "no '# base: <commit>' line in $HERE/series"
mapfile -t PATCHES < <(grep -v '^\s*\(#\|$\)' "$HERE/series")

# --- Cloud Hypervisor source ---------------------------------------------
if [ -z "${CH_DIR:-}" ] || ! git -C "$CH_DIR" rev-parse --git-dir >/dev/null 2>&1; then
    echo "SKIP: Cloud Hypervisor source not present (set CH_DIR to a checkout holding $BASE)"
    exit 0
fi
if ! git -C "$CH_DIR" cat-file -e "$BASE^{commit}" 2>/dev/null; then
    step="base commit"
    fail "$CH_DIR does not hold the base commit $BASE"
fi

step="scratch clone"
log "scratch clone of $CH_DIR at $BASE in $CH_WORK"
if [ ! -d "$CH_WORK/.git" ]; then
    rm -rf "$CH_WORK"
    git clone -q --no-checkout "$CH_DIR" "$CH_WORK"
else
    git -C "$CH_WORK" am --abort >/dev/null 2>&1 || true
    git -C "$CH_WORK" cat-file -e "$BASE^{commit}" 2>/dev/null ||
        git -C "$CH_WORK" fetch -q "$CH_DIR"
fi
git -C "$CH_WORK" checkout -q -f --detach "$BASE"
git -C "$CH_WORK" clean -q -fdx -e target -e .cargo

step="git am"
log "applying ${#PATCHES[@]} patches"
for p in "${PATCHES[@]}"; do
    [ -f "$HERE/$p" ] || fail "missing $p"
done
git -C "$CH_WORK" -c user.name=apply-and-test -c user.email=apply-and-test@invalid \
    am -q "${PATCHES[@]/#/$HERE/}" || fail "a patch does not apply"

# --- Dependencies the build cannot download here -------------------------
step="cargo config"
mkdir -p "$CH_WORK/.cargo"
{
    echo "[patch.\"$SHADOW_MMU_URL\"]"
    echo "shadow-mmu = { path = \"$SHADOW_MMU_DIR/shadow-mmu\" }"
} >"$CH_WORK/.cargo/config.toml"
MICRO_HTTP_REV=$(sed -n 's|^source = "git+'"$MICRO_HTTP_URL"'?branch=main#\([0-9a-f]*\)"|\1|p' "$CH_WORK/Cargo.lock")
if [ -n "${MICRO_HTTP_DIR:-}" ] && [ -n "$MICRO_HTTP_REV" ]; then
    if [ ! -d "$CH_WORK/.cargo/micro-http/.git" ]; then
        git clone -q --no-checkout "$MICRO_HTTP_DIR" "$CH_WORK/.cargo/micro-http"
    fi
    git -C "$CH_WORK/.cargo/micro-http" checkout -q -f --detach "$MICRO_HTTP_REV"
    {
        echo "[patch.\"$MICRO_HTTP_URL\"]"
        echo "micro_http = { path = \"$CH_WORK/.cargo/micro-http\" }"
    } >>"$CH_WORK/.cargo/config.toml"
fi

# --- Builds ----------------------------------------------------------------
cd "$CH_WORK"
unset CARGO_TARGET_DIR # CH's test_infra looks for the binary under ./target
if [ "${FAST:-1}" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
build() {
    local start=$SECONDS
    cargo build -q --release --bin cloud-hypervisor --target "$TARGET" "$@"
    log "built in $((SECONDS - start)) s"
}
step="build without the feature"
log "$step"
build
step="build with --features shadow_mmu"
log "$step"
build --features shadow_mmu --bin ch-remote
CH_BIN=$CH_WORK/target/$TARGET/release/cloud-hypervisor
"$CH_BIN" --version >/dev/null || fail "no working binary at $CH_BIN"

# --- CH's own checks for the touched crates ---------------------------------
# CH formats with nightly rustfmt (its rustfmt.toml uses unstable options).
step="cargo fmt"
log "$step"
fmt=(cargo fmt)
rustup toolchain list 2>/dev/null | grep -q '^nightly' && fmt=(cargo +nightly fmt)
"${fmt[@]}" --all -- --check >&2 2>/dev/null || fail "not formatted (${fmt[*]} --all)"
step="cargo clippy --all-targets with the feature"
log "$step"
cargo clippy -q --target "$TARGET" -p hypervisor -p vmm -p cloud-hypervisor --all-targets \
    --features hypervisor/shadow_mmu,vmm/shadow_mmu,cloud-hypervisor/shadow_mmu -- -D warnings >&2

# --- Unit tests ------------------------------------------------------------
if [ "${SKIP_UNIT_TESTS:-0}" != 1 ]; then
    step="unit tests (hypervisor, vmm, cloud-hypervisor) with the feature"
    log "$step"
    cargo test -q --target "$TARGET" -p hypervisor -p vmm -p cloud-hypervisor \
        --features hypervisor/shadow_mmu,vmm/shadow_mmu,cloud-hypervisor/shadow_mmu \
        --lib --bins >&2
    step="unit tests of the config without the feature"
    log "$step"
    cargo test -q --target "$TARGET" -p vmm --features kvm --lib -- config:: >&2
fi

# --- Integration tests -----------------------------------------------------
step="guest kernel"
if [ -z "${SHADOW_MMU_GUEST_KERNEL:-}" ]; then
    log "building the guest kernel in $SHADOW_MMU_DIR"
    out=$(cd "$SHADOW_MMU_DIR" && cargo build -q -p shadow-mmu-integration --message-format=json |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "shadow-mmu-integration" in m["package_id"]:
        print(m["out_dir"])')
    SHADOW_MMU_GUEST_KERNEL=$out/kernel.elf
fi
[ -f "$SHADOW_MMU_GUEST_KERNEL" ] || fail "no guest kernel at '$SHADOW_MMU_GUEST_KERNEL'"
export SHADOW_MMU_GUEST_KERNEL

step="integration tests"
log "$step (kernel $SHADOW_MMU_GUEST_KERNEL)"
RUSTFLAGS="--cfg devcli_testenv" cargo test -q --target "$TARGET" -p cloud-hypervisor \
    --test integration --features shadow_mmu -- shadow_mmu:: >&2

echo "PASS: Cloud Hypervisor $(git -C "$CH_WORK" rev-parse --short "$BASE") + ${#PATCHES[@]} patches: builds with and without shadow_mmu, fmt and clippy clean, unit and integration tests pass"
