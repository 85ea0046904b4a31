#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# scripts/check-headers.sh: every tracked source, build and script file
# carries the project's copyright line and SPDX license identifier in its
# first lines. Prints the files that do not and exits 1 if there are any.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=0
while IFS= read -r f; do
    if ! head -n 5 "$f" | grep -q 'SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause' ||
        ! head -n 5 "$f" | grep -q 'Copyright .* The shadow-mmu Authors'; then
        echo "missing license header: $f"
        missing=1
    fi
done < <(git ls-files '*.rs' '*.c' '*.h' '*.S' '*.ld' '*.sh' '*.toml' '*.py' .ci/run)
if [ "$missing" = 1 ]; then
    exit 1
fi
echo "license headers: ok"
