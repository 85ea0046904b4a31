#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Applies the Cloud Hypervisor patch series of this directory to a fresh
# clone of a Cloud Hypervisor repository, checks its commit messages against
# CH's gitlint rules, builds it without and with the `shadow_mmu` feature
# (`--locked`), checks CH's formatting and clippy lints for the touched
# crates, runs their unit tests and the new integration tests, and prints a
# one-line verdict (PASS:, FAIL: or SKIP:).
#
#   patches/apply-and-test.sh [--each-patch] [CH_DIR]
#
# Arguments and environment:
#   CH_DIR          Cloud Hypervisor git repository holding the base commit
#                   named in `series` (a checkout or a bare mirror); the
#                   argument wins over the variable. Without one the script
#                   prints `SKIP: ...` and exits 0.
#   --each-patch, EACH_PATCH=1
#                   Also lint every patch of the series on its own, as
#                   applied on top of the previous ones: `cargo clippy
#                   --locked --all-targets -D warnings` of hypervisor, vmm,
#                   devices and cloud-hypervisor without the feature and
#                   with it.
#   MICRO_HTTP_DIR  micro-http git repository holding the commit CH's
#                   Cargo.lock wants, for machines that cannot reach
#                   github.com. Unset: Cargo fetches it.
#   SHADOW_MMU_DIR  The shadow-mmu git repository. Default: the repository of
#                   this script. The series pins the crate to a revision of
#                   it (Cargo.toml, Cargo.lock); the build takes that
#                   revision from this repository's history by replacing the
#                   git source in .cargo/config.toml, so Cargo.lock stays as
#                   the series commits it.
#   SHADOW_MMU_REV  Build against this revision of SHADOW_MMU_DIR instead of
#                   the pinned one (e.g. HEAD): the pin is rewritten in the
#                   scratch clone only. --locked then fails if the crate's
#                   dependencies changed since the pinned revision.
#   SHADOW_MMU_GUEST_KERNEL
#                   The guest kernel for the integration tests. Default: built
#                   from SHADOW_MMU_DIR by `cargo build -p
#                   shadow-mmu-integration` (its build script makes it).
#   CH_SHADOW_MMU_WORK
#                   Where runs keep their files. Default: target/ch-shadow-mmu
#                   in SHADOW_MMU_DIR. Each run clones CH into a directory of
#                   its own there (run.XXXXXX, removed when the run ends
#                   unless KEEP_WORK=1); runs share its `target` directory so
#                   that dependencies build once, and take turns with it
#                   (flock), so two runs at once are safe.
#   SKIP_UNIT_TESTS=1  Skip CH's unit tests of the touched crates.
#   FAST=0          Build CH's release binary with its own profile (LTO,
#                   one codegen unit: much slower) instead of without LTO.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EACH_PATCH=${EACH_PATCH:-0}
for arg in "$@"; do
    case $arg in
    --each-patch) EACH_PATCH=1 ;;
    -h | --help)
        sed -n '5,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    -*)
        echo "usage: $0 [--each-patch] [CH_DIR]" >&2
        exit 2
        ;;
    *) CH_DIR=$arg ;;
    esac
done
SHADOW_MMU_DIR=$(cd "${SHADOW_MMU_DIR:-$HERE/..}" && pwd)
WORK_ROOT=${CH_SHADOW_MMU_WORK:-$SHADOW_MMU_DIR/target/ch-shadow-mmu}
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
for p in "${PATCHES[@]}"; do
    [ -f "$HERE/$p" ] || fail "missing $p"
done

# This run's own directory; only it is ever removed.
mkdir -p "$WORK_ROOT/target"
RUN=$(mktemp -d "$WORK_ROOT/run.XXXXXX")
if [ "${KEEP_WORK:-0}" != 1 ]; then
    trap 'rm -rf "$RUN"' EXIT
fi
CH=$RUN/cloud-hypervisor

step="clone"
log "clone of $CH_DIR at $BASE in $CH"
git clone -q --no-checkout "$CH_DIR" "$CH"
git -C "$CH" checkout -q --detach "$BASE"

step="git am"
log "applying ${#PATCHES[@]} patches"
git -C "$CH" -c user.name=apply-and-test -c user.email=apply-and-test@invalid \
    am -q --committer-date-is-author-date "${PATCHES[@]/#/$HERE/}" || fail "a patch does not apply"
mapfile -t COMMITS < <(git -C "$CH" rev-list --reverse "$BASE..HEAD")

step="commit messages"
log "$step"
python3 "$HERE/check-commits.py" "$CH" "$BASE..HEAD" >&2 ||
    fail "a commit message breaks Cloud Hypervisor's gitlint rules (see above)"

# --- Where the git dependencies come from ------------------------------------
# Source replacement keeps Cargo.lock as committed, so every build is --locked.
step="cargo config"
PINNED=$(sed -n 's|^source = "git+'"$SHADOW_MMU_URL"'?rev=\([0-9a-f]\{40\}\)#.*|\1|p' "$CH/Cargo.lock")
[ -n "$PINNED" ] || fail "Cargo.lock has no shadow-mmu entry pinned to a revision of $SHADOW_MMU_URL"
REV=$PINNED
if [ -n "${SHADOW_MMU_REV:-}" ]; then
    REV=$(git -C "$SHADOW_MMU_DIR" rev-parse --verify "${SHADOW_MMU_REV}^{commit}") ||
        fail "no revision $SHADOW_MMU_REV in $SHADOW_MMU_DIR"
fi
git -C "$SHADOW_MMU_DIR" cat-file -e "$REV^{commit}" 2>/dev/null ||
    fail "$SHADOW_MMU_DIR does not hold the pinned shadow-mmu revision $REV"
# Points the checked-out tree at revision REV of the crate if it is not the
# pinned one.
pin_crate() {
    [ "$REV" = "$PINNED" ] && return 0
    sed -i "s|rev = \"$PINNED\"|rev = \"$REV\"|" "$CH/Cargo.toml"
    sed -i "s|?rev=$PINNED#$PINNED|?rev=$REV#$REV|" "$CH/Cargo.lock"
}
pin_crate
log "shadow-mmu at $REV from $SHADOW_MMU_DIR"
mkdir -p "$CH/.cargo"
cat >"$CH/.cargo/config.toml" <<EOF
[source."git+$SHADOW_MMU_URL?rev=$REV"]
git = "$SHADOW_MMU_URL"
rev = "$REV"
replace-with = "shadow-mmu-local"

[source.shadow-mmu-local]
git = "file://$SHADOW_MMU_DIR"
rev = "$REV"
EOF
MICRO_HTTP_SOURCE=$(sed -n 's|^source = "\(git+'"$MICRO_HTTP_URL"'?[^#]*\)#[0-9a-f]*"|\1|p' "$CH/Cargo.lock")
MICRO_HTTP_REV=$(sed -n 's|^source = "git+'"$MICRO_HTTP_URL"'?[^#]*#\([0-9a-f]*\)"|\1|p' "$CH/Cargo.lock")
if [ -n "${MICRO_HTTP_DIR:-}" ] && [ -n "$MICRO_HTTP_REV" ]; then
    # A directory source: a git one would fetch micro-http's submodule.
    mkdir -p "$RUN/vendor/micro_http"
    git -C "$MICRO_HTTP_DIR" archive "$MICRO_HTTP_REV" | tar -x -C "$RUN/vendor/micro_http"
    echo '{"files":{},"package":null}' >"$RUN/vendor/micro_http/.cargo-checksum.json"
    branch=${MICRO_HTTP_SOURCE#*\?branch=}
    cat >>"$CH/.cargo/config.toml" <<EOF

[source."$MICRO_HTTP_SOURCE"]
git = "$MICRO_HTTP_URL"
branch = "$branch"
replace-with = "micro-http-local"

[source.micro-http-local]
directory = "$RUN/vendor"
EOF
fi

# --- Builds ----------------------------------------------------------------
cd "$CH"
# Runs share the target directory, one at a time. CH's test_infra looks for
# the binaries under ./target.
unset CARGO_TARGET_DIR
ln -s "$WORK_ROOT/target" "$CH/target"
exec {lock}>"$WORK_ROOT/target/.apply-and-test.lock"
if ! flock -n "$lock"; then
    log "waiting for another run to finish with $WORK_ROOT/target"
    flock "$lock"
fi
# Cargo identifies the workspace's crates by their path in the workspace,
# not by where the checkout is: a clone older than a previous run's
# artifacts would reuse them, with that run's CARGO_MANIFEST_DIR compiled
# in (test_infra finds the binaries through it). Sources newer than every
# artifact so far make Cargo rebuild this clone's crates.
find "$CH" \( -name .git -o -name target \) -prune -o -type f -print0 | xargs -0 touch
if [ "${FAST:-1}" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
FEATURES=(--features hypervisor/shadow_mmu,vmm/shadow_mmu,cloud-hypervisor/shadow_mmu)
build() {
    local start=$SECONDS
    cargo build -q --locked --release --bin cloud-hypervisor --target "$TARGET" "$@"
    log "built in $((SECONDS - start)) s"
}
clippy() {
    cargo clippy -q --locked --target "$TARGET" -p hypervisor -p vmm -p devices -p cloud-hypervisor \
        --all-targets "$@" -- -D warnings >&2
}

if [ "$EACH_PATCH" = 1 ]; then
    for i in "${!COMMITS[@]}"; do
        n=$((i + 1))
        subject=$(git log -1 --format=%s "${COMMITS[$i]}")
        git checkout -q --detach "${COMMITS[$i]}"
        pin_crate
        start=$SECONDS
        step="patch $n ($subject) on its own: clippy without the feature"
        log "$step"
        clippy
        step="patch $n ($subject) on its own: clippy with the feature"
        log "$step"
        clippy "${FEATURES[@]}"
        git checkout -q -f --detach "${COMMITS[$i]}"
        log "patch $n: $((SECONDS - start)) s"
    done
    git checkout -q --detach "${COMMITS[-1]}"
    pin_crate
fi

step="build without the feature"
log "$step"
build
step="build with --features shadow_mmu"
log "$step"
build --features shadow_mmu --bin ch-remote
CH_BIN=$CH/target/$TARGET/release/cloud-hypervisor
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
clippy "${FEATURES[@]}"

# --- Unit tests ------------------------------------------------------------
if [ "${SKIP_UNIT_TESTS:-0}" != 1 ]; then
    step="unit tests (hypervisor, vmm, devices, cloud-hypervisor) with the feature"
    log "$step"
    cargo test -q --locked --target "$TARGET" -p hypervisor -p vmm -p devices -p cloud-hypervisor \
        "${FEATURES[@]}" --lib --bins >&2
    step="unit tests of the config without the feature"
    log "$step"
    cargo test -q --locked --target "$TARGET" -p vmm --features kvm --lib -- config:: >&2
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
start=$SECONDS
RUSTFLAGS="--cfg devcli_testenv" cargo test -q --locked --target "$TARGET" -p cloud-hypervisor \
    --test integration --features shadow_mmu -- shadow_mmu:: >&2
log "integration tests in $((SECONDS - start)) s"

each=""
[ "$EACH_PATCH" = 1 ] && each=", each patch clippy-clean on its own with and without it"
echo "PASS: Cloud Hypervisor $(git -C "$CH" rev-parse --short "$BASE") + ${#PATCHES[@]} patches: commit messages as CH's gitlint wants, --locked builds with and without shadow_mmu$each, fmt and clippy clean, unit and integration tests pass"
