/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Guest code for tests/kvm_glue.rs (CPL3 part), loaded at 0x100000:
 * a kernel page at 0x100000, user code at 0x101000. Assemble:
 *   as --64 -o user.o user.S && objcopy -O binary user.o user.bin
 */
        .intel_syntax noprefix
        .code64
kernel:
        mov rsp, 0x80000
        /* SET_TRAP_TABLE(0x9000, 0x7f000) through the block at 0x8000. */
        mov qword ptr [0x8000], 4
        mov qword ptr [0x8008], 0x9000
        mov qword ptr [0x8010], 0x7f000
        mov eax, 0x8000
        ud2
        .ascii "SHM"
        /* To user mode at 0x101000 with its stack at 0x7000. */
        push 0x1b
        push 0x7000
        push 0x2
        push 0x23
        push 0x101000
        iretq
        .org 0x100
handler:
        mov r8, cr2
        pop r9
        pop r10
        pop r11
        hlt
        .org 0x1000
user:
        mov rax, [0x102000]
        mov qword ptr [0x102008], 0x77
        mov rbx, [0x102008]
        push rbx
        pop rdx
        /* A user read of a supervisor page: #PF with P|U = 0x5. */
        mov rcx, [0x100000]
        hlt
