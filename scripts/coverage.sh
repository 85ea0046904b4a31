#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Line coverage of the shadow-mmu crate by its own tests (unit tests of src/
# and shadow-mmu/tests/), measured with cargo-llvm-cov (LLVM source-based
# coverage), checked against coverage_config_x86_64.json as rust-vmm
# repositories do:
#
#   {"coverage_score": N, "exclude_path": REGEX, "crate_features": LIST}
#
#   coverage_score  the expected line coverage in percent;
#   exclude_path    a regular expression of source files left out of the
#                   figure (test-only code under src/);
#   crate_features  the features the tests are built with.
#
#   scripts/coverage.sh            measure; fail if the figure dropped more
#                                  than 1 point below coverage_score
#   scripts/coverage.sh --update   measure and write the figure into the
#                                  configuration
#
# The kvm feature's tests need /dev/kvm. The full access.c matrices of
# tests/access_matrix.rs (access_matrix_*, permission_matrix_*: hundreds of
# millions of walks through code the other tests cover too) are skipped:
# instrumented, they alone take more than half an hour on a small machine.
#
# Needs cargo-llvm-cov and the llvm-tools-preview component; both are
# installed if missing (cargo install needs crates.io). Builds go to
# target/llvm-cov-target; the summary is left in target/coverage/.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

config=coverage_config_x86_64.json
update=0
case "${1:-}" in
"") ;;
--update) update=1 ;;
*)
    echo "usage: $0 [--update]" >&2
    exit 2
    ;;
esac

json_field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$config" "$1"
}

score=$(json_field coverage_score)
exclude=$(json_field exclude_path)
features=$(json_field crate_features)

if ! cargo llvm-cov --version >/dev/null 2>&1; then
    echo "cargo-llvm-cov not found: installing it"
    cargo install cargo-llvm-cov --locked </dev/null
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component add llvm-tools-preview </dev/null >/dev/null 2>&1 ||
        echo "warning: rustup component add llvm-tools-preview failed" >&2
fi
cargo llvm-cov --version

start=$SECONDS
feature_args=()
if [[ -n "$features" ]]; then
    feature_args=(--features "$features")
fi
cargo llvm-cov clean --workspace
cargo llvm-cov --no-report -p shadow-mmu "${feature_args[@]}" \
    -- --skip access_matrix_ --skip permission_matrix_
report_args=(-p shadow-mmu --ignore-filename-regex "$exclude")
cargo llvm-cov report "${report_args[@]}" --summary-only
mkdir -p target/coverage
cargo llvm-cov report "${report_args[@]}" --summary-only --json \
    --output-path target/coverage/summary.json

measured=$(python3 -c '
import json, sys
lines = json.load(open(sys.argv[1]))["data"][0]["totals"]["lines"]
print("%.2f" % lines["percent"])
' target/coverage/summary.json)
echo "coverage: ${measured}% of lines (expected ${score}%) in $((SECONDS - start)) s"

if [[ $update == 1 ]]; then
    python3 - "$config" "$measured" <<'EOF'
import json, sys
path, measured = sys.argv[1], float(sys.argv[2])
with open(path) as f:
    config = json.load(f)
config["coverage_score"] = measured
with open(path, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
EOF
    echo "coverage: $config now expects ${measured}%"
    exit 0
fi

python3 - "$score" "$measured" <<'EOF'
import sys
score, measured = float(sys.argv[1]), float(sys.argv[2])
if measured < score - 1.0:
    sys.exit(f"coverage: FAIL: {measured:.2f}% is more than 1 point below "
             f"{score:.2f}%; add tests, or lower coverage_score with a reason")
if measured > score + 1.0:
    print(f"coverage: {measured:.2f}% is more than 1 point above {score:.2f}%: "
          "raise coverage_score (scripts/coverage.sh --update)")
print("coverage: ok")
EOF
