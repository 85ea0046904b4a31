#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Runs shadow-mmu's pure-Rust core under Miri: the unit tests of src/ and
# every integration test of shadow-mmu/tests/ (without the kvm feature, so
# tests/kvm_glue.rs is not built), checking for undefined behaviour and data
# races in the interleavings Miri explores.
#
#   scripts/miri.sh            everything below (tens of minutes to hours
#                              on a small machine)
#   scripts/miri.sh --ci       the subset .ci/run runs (a few minutes): the
#                              unit tests but the 200 000-step reverse-map
#                              model, the MMU's concurrency tests (data
#                              races), the hostile page tables, the
#                              emulator's error paths, and the KVM glue's
#                              logic (feature kvm; it needs no vCPU)
#   scripts/miri.sh ARGS...    one run with extra arguments for the test
#                              harness, e.g. a test name filter or
#                              `--exact NAME`
#
# Needs the nightly toolchain with the miri and rust-src components
# (rustup component add --toolchain nightly miri rust-src). Builds use
# $CARGO_TARGET_DIR (default target/miri in the repository).
#
# Under Miri (cfg!(miri)) the tests cut their iteration counts (the 8-thread
# stress test and the INVLPG race in tests/mmu_concurrency.rs, the walker
# races in tests/walker_concurrency.rs, the proptest cases of
# tests/mmu_model.rs) and ignore, with a reason, what is still far too slow
# there: the access.c matrices and the 10 000-case walker property tests.
#
# The instruction emulator (src/emulate/) is run apart:
# * its decoder, iced-x86, reads its handler tables through the `&Header`
#   pattern (a reference to a table's first field cast to the whole
#   handler), which Stacked Borrows rejects and Tree Borrows accepts
#   (icedland/iced#455, rust-lang/miri#3082): the emulator's tests run
#   under -Zmiri-tree-borrows, everything else under Stacked Borrows;
# * its tests that compare with the host CPU run inline assembly, which
#   Miri cannot interpret: only emulate::tests::errors (no assembly) runs.
#
# MIRIFLAGS (unless already set):
#   -Zmiri-permissive-provenance  parking_lot casts integers to pointers; this
#                                 only silences Miri's warning about it (the
#                                 semantics are Miri's default).
#   -Zmiri-isolation-error=warn-nobacktrace
#                                 proptest looks up its regression file
#                                 (getcwd), which isolation refuses: the
#                                 call fails with an error, Miri warns, and
#                                 the test goes on without the file.
# Isolation otherwise stays on: nothing else needs the host's clock, files
# or environment (sleeps run on Miri's virtual clock). $MIRI_SEEDS (e.g.
# 0..4) adds -Zmiri-many-seeds=$MIRI_SEEDS, which reruns every test under
# that many scheduler seeds.
#
# Exits non-zero if Miri reports undefined behaviour or a test fails.

set -euo pipefail

cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/miri}"
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-permissive-provenance -Zmiri-isolation-error=warn-nobacktrace}"
if [[ -n "${MIRI_SEEDS:-}" ]]; then
    MIRIFLAGS="$MIRIFLAGS -Zmiri-many-seeds=$MIRI_SEEDS"
fi
base_flags=$MIRIFLAGS

cargo +nightly miri --version
start=$SECONDS

# miri_test [--tree-borrows] CARGO-ARGS... -- HARNESS-ARGS...
miri_test() {
    local flags=$base_flags
    if [[ $1 == --tree-borrows ]]; then
        flags="$flags -Zmiri-tree-borrows"
        shift
    fi
    echo "== cargo miri test $* (MIRIFLAGS=$flags)"
    MIRIFLAGS=$flags cargo +nightly miri test -p shadow-mmu "$@"
}

emulator_errors=emulate::tests::errors::

if [[ "${1:-}" == --ci ]]; then
    miri_test --lib -- --skip emulate:: --skip spt::rmap::tests::matches_a_plain_map
    miri_test --tree-borrows --lib -- "$emulator_errors"
    miri_test --test mmu_concurrency
    miri_test --test hostile
    # The KVM glue's logic (return chains, vCPU set-up, switches): no vCPU
    # needed, so Miri checks it too.
    miri_test --features kvm --lib -- kvm::
elif [[ $# -gt 0 ]]; then
    miri_test --lib --tests -- "$@"
else
    miri_test --lib --tests -- --skip emulate::
    miri_test --tree-borrows --lib -- "$emulator_errors"
fi
echo "miri: all tests passed in $((SECONDS - start)) s"
