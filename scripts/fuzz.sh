#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Runs the cargo-fuzz targets of fuzz/ for a fixed time.
#
#   scripts/fuzz.sh TARGET SECONDS     one of: walker mmu_ops hypercall scenario emulate glue
#   scripts/fuzz.sh all SECONDS        each target in turn, SECONDS each
#
# Installs cargo-fuzz from crates.io if it is missing and needs the nightly
# toolchain (libFuzzer and sanitizers). The committed seeds in
# fuzz/corpus/TARGET are read, never written: new inputs go to a scratch
# corpus under $FUZZ_WORK_DIR (default /tmp/shadow-mmu-fuzz), crashes to
# fuzz/artifacts/TARGET/ (git-ignored; fuzz/common/tests/corpus.rs replays what is
# there). Builds use $CARGO_TARGET_DIR (default /tmp/target-fuzz).
# $FUZZ_SANITIZER picks cargo-fuzz's sanitizer (default address; none runs
# mmu_ops and hypercall about ten times faster).
#
# Prints, per target: executions, the CPU time of the fuzzing run (build
# excluded), its exit status and the crash artifacts it wrote. Exits non-zero
# if any target failed (a crash, a timeout, an out-of-memory, a build error).

set -uo pipefail

TARGETS=(walker mmu_ops hypercall scenario emulate glue)

usage() {
    echo "usage: $0 {${TARGETS[*]// /|}|all} SECONDS" >&2
    exit 2
}

[ $# -eq 2 ] || usage
what=$1
seconds=$2
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage
if [ "$what" = all ]; then
    targets=("${TARGETS[@]}")
else
    targets=()
    for t in "${TARGETS[@]}"; do
        [ "$t" = "$what" ] && targets=("$t")
    done
    [ ${#targets[@]} -eq 1 ] || usage
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-fuzz}
work=${FUZZ_WORK_DIR:-/tmp/shadow-mmu-fuzz}
sanitizer=${FUZZ_SANITIZER:-address}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked || exit 2
fi

# Sets CPU to the CPU seconds (user + system) of the finished children of
# this shell. `times` must run in this shell, not in a subshell (a command
# substitution would count the subshell's children), so it writes a file.
cpu_now() {
    local f="$work/.times" _ ut st
    times >"$f"
    { read -r _ _; read -r ut st; } <"$f"
    CPU=$(awk -v u="$ut" -v s="$st" 'function sec(t,  m) {
            m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t)
            return m * 60 + t
        } BEGIN { printf "%.1f", sec(u) + sec(s) }')
}

mkdir -p "$work"
failed=0
summary=()
for target in "${targets[@]}"; do
    echo "=== $target: building"
    if ! cargo +nightly fuzz build -s "$sanitizer" "$target"; then
        echo "=== $target: build failed"
        summary+=("$target: build failed")
        failed=1
        continue
    fi
    corpus="$work/corpus/$target"
    logs="$work/logs"
    artifacts="$root/fuzz/artifacts/$target"
    mkdir -p "$corpus" "$logs" "$artifacts"
    log="$logs/$target.log"
    stamp="$logs/.$target.start"
    touch "$stamp"
    dict=()
    [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")

    echo "=== $target: fuzzing for ${seconds}s, sanitizer $sanitizer (scratch corpus $corpus, log $log)"
    cpu_now
    before=$CPU
    start=$(date +%s)
    cargo +nightly fuzz run -s "$sanitizer" "$target" "$corpus" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$log" |
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|panicked|Test unit written|SUMMARY'
    status=${PIPESTATUS[0]}
    wall=$(($(date +%s) - start))
    cpu_now
    cpu=$(awk -v a="$CPU" -v b="$before" 'BEGIN { printf "%.1f", a - b }')

    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    if [ -z "$execs" ]; then
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    crashes=$(find "$artifacts" -type f -newer "$stamp" 2>/dev/null | sort)
    rm -f "$stamp"

    echo "=== $target: exit status $status, ${execs:-?} executions, ${cpu}s CPU, ${wall}s wall"
    if [ -n "$crashes" ]; then
        echo "=== $target: crash artifacts:"
        echo "$crashes" | sed 's/^/    /'
        echo "    (reproduce: cargo +nightly fuzz run -s $sanitizer $target ARTIFACT;" \
            "minimize: cargo +nightly fuzz tmin -s $sanitizer $target ARTIFACT)"
    fi
    summary+=("$target: exit $status, ${execs:-?} execs, ${cpu}s CPU, ${wall}s wall, $(echo -n "$crashes" | grep -c .) artifacts")
    [ "$status" -eq 0 ] || failed=1
done

echo "=== summary"
printf '    %s\n' "${summary[@]}"
exit "$failed"
