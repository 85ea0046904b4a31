/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Guest code for tests/kvm_glue.rs, loaded at GPA/GVA 0x100000 and run at
 * CPL0 on shadow tables. Assemble:
 *   as --64 -o basic.o basic.S && objcopy -O binary basic.o basic.bin
 */
        .intel_syntax noprefix
        .code64
start:
        mov rsp, 0x80000
        /* SET_TRAP_TABLE(0x9000, 0x7f000) through the hypercall block at 0x8000. */
        mov qword ptr [0x8000], 4
        mov qword ptr [0x8008], 0x9000
        mov qword ptr [0x8010], 0x7f000
        mov eax, 0x8000
        ud2
        .ascii "SHM"
        /* A 2 MiB guest page at gva 0x200000 (GPA 0x400000). */
        mov rax, [0x200000]
        movabs rbx, 0x1122334455667788
        mov [0x201008], rbx
        mov rcx, [0x201008]
        /* A 4 KiB page at gva 0x400000 through the guest PT at 0x5000. */
        mov rsi, [0x400010]
        /* Not mapped: #PF delivered to the handler below. */
        mov rdx, [0x40000000]
        hlt
        .org 0x100
handler:
        mov r8, cr2
        pop r9
        hlt
