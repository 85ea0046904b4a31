#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Runs shadow-mmu's pure-Rust core under Miri: the unit tests of src/ and
# every integration test of shadow-mmu/tests/ (without the kvm feature, so
# tests/kvm_glue.rs is not built), checking for undefined behaviour and data
# races in the interleavings Miri explores.
#
#   scripts/miri.sh            everything below
#   scripts/miri.sh ARGS...    extra arguments for the test harness, e.g. a
#                              test name filter or `--exact NAME`
#
# Needs the nightly toolchain with the miri and rust-src components
# (rustup +nightly component add miri rust-src). Builds use
# $CARGO_TARGET_DIR (default /tmp/target-miri). Not part of .ci/run: the
# whole run takes tens of minutes on a small machine.
#
# Under Miri (cfg!(miri)) the tests cut their iteration counts (the 8-thread
# stress test and the INVLPG race in tests/mmu_concurrency.rs, the walker
# races in tests/walker_concurrency.rs, the proptest cases of
# tests/mmu_model.rs) and ignore, with a reason, what is still far too slow
# there: the access.c matrices and the 10 000-case walker property tests.
#
# MIRIFLAGS (unless already set):
#   -Zmiri-permissive-provenance  parking_lot casts integers to pointers; this
#                                 only silences Miri's warning about it (the
#                                 semantics are Miri's default).
# Isolation stays on: nothing needs the host's clock, files or environment
# (sleeps run on Miri's virtual clock; proptest's regression files are not
# read). $MIRI_SEEDS (e.g. 0..4) adds -Zmiri-many-seeds=$MIRI_SEEDS, which
# reruns every test under that many scheduler seeds.
#
# Exits non-zero if Miri reports undefined behaviour or a test fails.

set -euo pipefail

cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-miri}"
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-permissive-provenance}"
if [[ -n "${MIRI_SEEDS:-}" ]]; then
    MIRIFLAGS="$MIRIFLAGS -Zmiri-many-seeds=$MIRI_SEEDS"
fi

cargo +nightly miri --version
echo "MIRIFLAGS=$MIRIFLAGS"
start=$SECONDS
cargo +nightly miri test -p shadow-mmu --lib --tests -- "$@"
echo "miri: all tests passed in $((SECONDS - start)) s"
