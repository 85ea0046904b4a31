/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Guest code for tests/kvm_glue.rs: a CPL0 guest that attacks the hidden
 * region through the hypervisor hole, loaded at 0x100000. The VM's hidden
 * region starts at 1 << 40, so the arena starts 2 MiB above it and shadow
 * page at shadow-physical P is at hole address P + 0xfffffe0000000000.
 * Assemble:
 *   as --64 -o hostile.o hostile.S && objcopy -O binary hostile.o hostile.bin
 */
        .intel_syntax noprefix
        .code64
/* Entry 0x100000: clear P of the shadow root's entry for PML4 slot 1. */
corrupt:
        mov rsp, 0x80000
        mov rax, [0x8000000000]
        mov rax, cr3
        movabs rbx, 0xfffffe0000000000
        add rbx, rax
        and qword ptr [rbx + 8], -2
        mov cr3, rax
        mov rax, [0x8000001000]
        hlt
        .org 0x800
/* Entry 0x100800: run on a copy of the shadow root (CR3 loaded by the
 * guest itself), then touch PML4 slot 2, which only the MMU's root will
 * ever link. */
switch:
        mov rsp, 0x80000
        mov rax, [0x8000000000]
        mov rsi, cr3
        movabs rbx, 0xfffffe0000000000
        add rsi, rbx
        mov edi, 0x70000
        mov ecx, 512
        rep movsq
        mov eax, 0x70000
        mov cr3, rax
        movabs rax, 0x10000000000
        mov rax, [rax]
        hlt
        .org 0x1000
/* Entry 0x101000: a #PF the VMM must deliver on a kernel stack that is not
 * mapped. */
nostack:
        mov rsp, 0x80000
        /* SET_TRAP_TABLE(0x9000, 0x7f000) through the block at 0x8000. */
        mov qword ptr [0x8000], 4
        mov qword ptr [0x8008], 0x9000
        mov qword ptr [0x8010], 0x7f000
        mov eax, 0x8000
        ud2
        .ascii "SHM"
        mov rsp, 0x40001000
        mov rax, [0x40000000]
        hlt
        .org 0x1800
/* Entry 0x101800: forge a leaf in its own shadow page table (through the
 * arena, in the hole) that maps the trampoline's #PF entry writable at gva
 * 0x1ff000, overwrite that entry's first bytes with ud2, then fault. The
 * entry is found through this vCPU's IDT (hole offset 0x110000); hole offset
 * X is hidden-region address (1 << 40) + X. */
trampoline:
        mov rsp, 0x80000
        mov rax, cr3
        movabs rbx, 0xfffffe0000000000
        movabs rdx, 0x000ffffffffff000
        mov rcx, [rax + rbx]
        and rcx, rdx
        mov rcx, [rcx + rbx]
        and rcx, rdx
        mov rcx, [rcx + rbx]
        and rcx, rdx
        lea rdi, [rcx + rbx + 0x1ff * 8]
        movabs rsi, 0xffffff00001100e0
        movzx eax, word ptr [rsi]
        movzx ecx, word ptr [rsi + 6]
        shl rcx, 16
        or rax, rcx
        mov ecx, dword ptr [rsi + 8]
        shl rcx, 32
        or rax, rcx
        movabs rcx, 0x20000000000
        add rax, rcx
        mov rcx, rax
        and rcx, rdx
        or rcx, 0x63
        mov [rdi], rcx
        and eax, 0xfff
        mov word ptr [rax + 0x1ff000], 0x0b0f
        mov rax, [0x40000000]
        hlt
