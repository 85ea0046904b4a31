/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Guest code for tests/kvm_glue.rs, loaded at GPA/GVA 0x100000 and run at
 * CPL0 on shadow tables: writes to clean pages (guest entries present,
 * writable, accessed, not dirty), which the trampoline may resolve
 * without an exit. Assemble:
 *   as --64 -o dirty.o dirty.S && objcopy -O binary dirty.o dirty.bin
 */
        .intel_syntax noprefix
        .code64
/* Entry 0x100000: read the first of 64 clean pages at gva 0x400000 (the
 * shadow maps the table's entries read-only), write each page's index at
 * its start, then read CR2, which no fault of the guest's ever set. */
clean:
        mov rsp, 0x80000
        mov rax, [0x400000]
        xor ecx, ecx
1:
        mov rdx, rcx
        shl rdx, 12
        mov [rdx + 0x400000], rcx
        inc ecx
        cmp ecx, 64
        jne 1b
        mov rbx, cr2
        hlt
        .org 0x800
/* Entry 0x100800: after the read (the VMM arms the table), forge the
 * armed table's shadow-page address in vCPU 0's block in the hole
 * (hole offset 0x10000 + 0x3818) with a non-canonical one, then write. */
forged:
        mov rsp, 0x80000
        mov rax, [0x400000]
        movabs rbx, 0xffffff0000013818
        movabs rax, 0x8000000000000000
        mov [rbx], rax
        mov qword ptr [0x400000], 1
        hlt
