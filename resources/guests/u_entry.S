/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * User-mode (CPL3) entry and access probes. Linked into the user image at
 * USER_IMAGE_VA; runs natively on this host.
 */

    .text
    .globl user_entry
user_entry:
    /* RDI = user info page, RSI = CPU index, RSP = this CPU's user stack. */
    testq %rsi, %rsi
    jnz 1f
    movq %rdi, %r12
    movq %rsi, %r13
    movq $__ubss_start, %rdi
    movq $__ubss_end, %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    movq %r12, %rdi
    movq %r13, %rsi
1:  call user_main
    ud2

    /* The system-call gate: usys(a0, a1, a2, a3, a4, nr). On this host
     * neither syscall (it reaches LSTAR still at CPL3) nor int 0x80 (#UD)
     * enters the kernel from CPL3, but int3 does (#BP, a trap: the kernel
     * sees RIP after it), through a DPL-3 gate in both paging modes; in
     * shadow mode the VMM builds that gate from the trap table, so a system
     * call costs no VMM exit. The kernel's #BP handler checks RIP ==
     * usys_gate + 1, takes RAX = number, RDI, RSI, RDX, R10, R8 = arguments
     * and returns the result in RAX. (#UD is the hypercall in shadow mode,
     * so it always goes through the VMM.) */
    .globl usys, usys_gate
usys:
    movq %rcx, %r10
    movq %r9, %rax
usys_gate:
    int3
    ret

    /* Each returns 0, or 1 | error code << 8 when the kernel's #PF handler
     * caught a fault. */
    .globl uprobe_read, uprobe_read_insn, uprobe_read_end
uprobe_read:
    xorl %eax, %eax
uprobe_read_insn:
    movb (%rdi), %cl
uprobe_read_end:
    ret

    .globl uprobe_write, uprobe_write_insn, uprobe_write_end
uprobe_write:
    xorl %eax, %eax
uprobe_write_insn:
    movb $0xc3, (%rdi)
uprobe_write_end:
    ret

    .globl uprobe_fetch, uprobe_fetch_end
uprobe_fetch:
    xorl %eax, %eax
    call *%rdi
uprobe_fetch_end:
    ret

    .section .note.GNU-stack, "", @progbits
