#!/usr/bin/env bash
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# patches/check.sh [CH_DIR]: apply-and-test.sh with the Cloud Hypervisor
# repository given as an argument (or CH_DIR), every patch of the series
# also linted on its own (--each-patch).
exec "$(dirname "${BASH_SOURCE[0]}")/apply-and-test.sh" --each-patch "$@"
