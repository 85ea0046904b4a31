/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Guest code for tests/kvm_glue.rs (external interrupts), loaded at
 * 0x100000: a kernel page at 0x100000, user code at 0x101000. It runs on a
 * VM with the in-kernel interrupt controller, registers a 256-entry trap
 * table, and, through the x2APIC:
 *   1. sends itself vector 0x31, which has no handler: the #NP handler
 *      records its error code (r9), counts (r10) and acknowledges;
 *   2. takes periodic LAPIC timer ticks (vector 0x30) at CPL0 until
 *      r12 = 3, acknowledging each with an EOI;
 *   3. before 2, sends an IPI to an APIC ID no vCPU has (nothing
 *      happens) and floods itself with 1000 IPIs of vector 0x45, whose
 *      handler counts (rbx) and never acknowledges; after 2, 1000 more;
 *   4. goes to user mode and spins there until a tick arrives at CPL3: the
 *      handler records its stack (r13), the interrupted RIP (r14) and RSP
 *      (r15) and ends the run with `out` to port 0x5a2.
 * Assemble:
 *   as --64 -o interrupts.o interrupts.S && objcopy -O binary interrupts.o interrupts.bin
 */
        .intel_syntax noprefix
        .code64
        .set TIMER, 0x30
        .set NO_HANDLER, 0x31
        .set FLOOD, 0x45
kernel:
        mov rsp, 0x80000
        /* SET_TRAP_TABLE(0x9000, 0x7f000, 256) through the block at 0x8000. */
        mov qword ptr [0x8000], 4
        mov qword ptr [0x8008], 0x9000
        mov qword ptr [0x8010], 0x7f000
        mov qword ptr [0x8018], 256
        mov eax, 0x8000
        ud2
        .ascii "SHM"
        /* x2APIC on; spurious vector 0xff, APIC software-enabled. */
        mov ecx, 0x1b
        rdmsr
        or eax, 0xc00
        wrmsr
        mov ecx, 0x80f
        mov eax, 0x1ff
        xor edx, edx
        wrmsr
        /* A self-IPI to a vector without a handler, taken at the sti. */
        mov ecx, 0x83f
        mov eax, NO_HANDLER
        wrmsr
        sti
        nop
        cli
        /* The timer: divide by 1, periodic, 200000 bus cycles. */
        mov ecx, 0x83e
        mov eax, 0xb
        wrmsr
        mov ecx, 0x832
        mov eax, TIMER | (1 << 17)
        wrmsr
        mov ecx, 0x838
        mov eax, 200000
        wrmsr
        /* An IPI to APIC ID 200 (no such vCPU), then a flood of self
         * IPIs, taken once interrupts are on. */
        mov ecx, 0x830
        mov eax, FLOOD | (1 << 14)
        mov edx, 200
        wrmsr
        call flood_ipis
        sti
        mov rcx, 100000000
1:      cmp r12, 3
        jae 2f
        dec rcx
        jnz 1b
2:      cli
        /* More of them while one is in service: held back. */
        call flood_ipis
        /* To user mode at 0x101000, interrupts on, stack at 0x7000. */
        push 0x1b
        push 0x7000
        push 0x202
        push 0x23
        push 0x101000
        iretq

        .org 0x200
timer:
        inc r12
        test qword ptr [rsp + 8], 3
        jnz 3f
        call eoi
        iretq
3:      mov r13, rsp
        mov r14, [rsp]
        mov r15, [rsp + 24]
        mov dx, 0x5a2
        out dx, al

        .org 0x300
not_present:
        /* The interrupt is in service at the local APIC: acknowledge it. */
        pop r9
        inc r10
        call eoi
        iretq

        .org 0x400
flood:
        inc rbx
        iretq

/* End of interrupt, registers kept. */
eoi:
        push rax
        push rcx
        push rdx
        mov ecx, 0x80b
        xor eax, eax
        xor edx, edx
        wrmsr
        pop rdx
        pop rcx
        pop rax
        ret

flood_ipis:
        mov r8, 1000
4:      mov ecx, 0x83f
        mov eax, FLOOD
        xor edx, edx
        wrmsr
        dec r8
        jnz 4b
        ret

        .org 0x1000
user:
        jmp user
