/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Kernel entry points and low-level paths: the ELF notes, the 64-bit ABI
 * entry, the 32-bit PVH entry (Cloud Hypervisor), exception stubs, the
 * syscall entry, the entry to user mode and the supervisor access probes.
 * Everything here runs at CPL0, where this host emulates each instruction:
 * keep it short.
 */

#define KSTACK_SHIFT 14
#define MAX_CPUS 8
#define ACCESS_VA 0x10000000000
#define ACCESS_SPAN (64 * 0x201000)

/* ------------------------------------------------------------------ notes */

    .section .note.shadowmmu, "a"
    .balign 4
    .long 10            /* namesz: "ShadowMMU\0" */
    .long 16            /* descsz */
    .long 1             /* type */
    .asciz "ShadowMMU"
    .balign 4
    .long 2             /* ABI version */
    .long 0             /* flags */
    .quad entry64
    .balign 4

    .section .note.xen, "a"
    .balign 4
    .long 4             /* namesz: "Xen\0" */
    .long 4             /* descsz */
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_entry32
    .balign 4

/* -------------------------------------------------------- 64-bit ABI entry */

    .section .text.entry, "ax"
    .code64
    .globl entry64
entry64:
    /* RDI = boot info GPA, RSI = vCPU index (0 for the boot vCPU). */
    cmpq $MAX_CPUS, %rsi
    jae 1f
    leaq 1(%rsi), %rax
    shlq $KSTACK_SHIFT, %rax
    addq $kstacks, %rax
    movq %rax, %rsp
    call kmain
1:  ud2

/* ---------------------------------------------------- 32-bit PVH entry (CH) */

    .code32
    .globl pvh_entry32
pvh_entry32:
    /* Protected mode, paging off, EBX = PVH start_info. */
    movl $pvh_stack_top, %esp
    movl %cr4, %eax
    orl $0x20, %eax             /* PAE */
    movl %eax, %cr4
    movl $pvh_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* PG | PE */
    movl %eax, %cr0
    lgdt pvh_gdtr
    ljmp $0x08, $pvh_entry64

    .code64
pvh_entry64:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %ebx, %edi
    call pvh_main
2:  hlt
    jmp 2b

/* ------------------------------------------------------- exception stubs */

    .text
    .macro EXC vec, err
    .balign 8
exc\vec:
    .if \err == 0
    pushq $0
    .endif
    pushq $\vec
    jmp exc_common
    .endm

    EXC 0,0
    EXC 1,0
    EXC 2,0
    EXC 3,0
    EXC 4,0
    EXC 5,0
    EXC 6,0
    EXC 7,0
    EXC 8,1
    EXC 9,0
    EXC 10,1
    EXC 11,1
    EXC 12,1
    EXC 13,1
    .balign 8
exc14:
    /* Fast path for faults of the access probes (kprobe_*, uprobe_*): make
     * the probe return 1 | error code << 8, count the fault, iretq. Every
     * instruction here is emulated, so this skips the C handler. */
    pushq %rax
    pushq %rcx
    movq 24(%rsp), %rax         /* RIP; stack: rcx rax err rip cs rflags rsp ss */
    movq $kprobe_read_end, %rcx
    cmpq $kprobe_read_insn, %rax
    je 8f
    movq $kprobe_write_end, %rcx
    cmpq $kprobe_write_insn, %rax
    je 8f
    movq $uprobe_read_end, %rcx
    cmpq $uprobe_read_insn, %rax
    je 8f
    movq $uprobe_write_end, %rcx
    cmpq $uprobe_write_insn, %rax
    je 8f
    movq %cr2, %rcx             /* a fetch probe faults with RIP == CR2 */
    cmpq %rcx, %rax
    jne 7f
    movabsq $ACCESS_VA, %rcx
    subq %rcx, %rax
    cmpq $ACCESS_SPAN, %rax
    jae 7f
    addq $8, 48(%rsp)           /* pop the probe's return address */
    movq $kprobe_fetch_end, %rcx
    testb $3, 32(%rsp)
    jz 8f
    movq $uprobe_fetch_end, %rcx
8:  movq %rcx, 24(%rsp)
    movq 16(%rsp), %rax
    shlq $8, %rax
    orq $1, %rax
    movq res, %rcx
    incq 48(%rcx)               /* res[RH_FAULTS] */
    popq %rcx
    addq $16, %rsp              /* saved RAX, error code */
    iretq
7:  popq %rcx
    popq %rax
    pushq $14
    jmp exc_common
    EXC 15,0
    EXC 16,0
    EXC 17,1
    EXC 18,0
    EXC 19,0
    EXC 20,0
    EXC 21,1
    EXC 22,0
    EXC 23,0
    EXC 24,0
    EXC 25,0
    EXC 26,0
    EXC 27,0
    EXC 28,0
    EXC 29,0
    EXC 30,0
    EXC 31,0

exc_common:
    /* Only the caller-saved registers: the C handler preserves the rest. */
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    call trap
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq

/* ------------------------------------------------------ interrupt stubs */

    /* External interrupts: the timer, the shootdown IPI and the spurious
     * vector (guest.h). They save every general register, so that the
     * handler can switch the interrupted user task for another one by
     * rewriting the frame (struct iframe in kernel.c). */
    .macro IRQ vec
    .balign 8
irq\vec:
    pushq $0
    pushq $\vec
    jmp irq_common
    .endm

    IRQ 32
    IRQ 33
    IRQ 255

irq_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    call irq
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq

    /* Handler addresses for the IDT (native) and SET_TRAP_TABLE (shadow):
     * every vector, 0 for none. */
    .section .rodata
    .balign 8
    .globl exc_table
exc_table:
    .irp v,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc\v
    .endr
    .quad irq32
    .quad irq33
    .fill 255 - 34, 8, 0
    .quad irq255

/* ------------------------------------------------------------ enter_user */

    .text
    /* enter_user(rip, rsp, rdi, rsi): iretq to CPL3. */
    .globl enter_user
enter_user:
    pushq $0x1b
    pushq %rsi
    pushq $0x2
    pushq $0x23
    pushq %rdi
    movq %rdx, %rdi
    movq %rcx, %rsi
    iretq

/* ------------------------------------------------ supervisor access probes */

    /* Each returns 0 in RAX, or the #PF handler makes it return
     * 1 | error code << 8. */
    .globl kprobe_read, kprobe_read_insn, kprobe_read_end
kprobe_read:
    xorl %eax, %eax
kprobe_read_insn:
    movb (%rdi), %cl
kprobe_read_end:
    ret

    .globl kprobe_write, kprobe_write_insn, kprobe_write_end
kprobe_write:
    xorl %eax, %eax
kprobe_write_insn:
    movb $0xc3, (%rdi)
kprobe_write_end:
    ret

    .globl kprobe_fetch, kprobe_fetch_end
kprobe_fetch:
    xorl %eax, %eax
    call *%rdi
kprobe_fetch_end:
    ret

/* ------------------------------------------- attack workload (shadow only) */

    /* 8-byte load and store, 1-byte store: each returns 0 in RAX, or the
     * kernel's trap handler (any vector) makes it return 1 | vector << 8
     * without the access: the attack workload pokes at the hole, where a
     * page may be absent or read-only. */
    .globl kprobe_load64, kprobe_load64_insn, kprobe_load64_end
kprobe_load64:                  /* (va, u64 *out) */
    xorl %eax, %eax
kprobe_load64_insn:
    movq (%rdi), %rdx
    movq %rdx, (%rsi)
kprobe_load64_end:
    ret

    .globl kprobe_store64, kprobe_store64_insn, kprobe_store64_end
kprobe_store64:                 /* (va, value) */
    xorl %eax, %eax
kprobe_store64_insn:
    movq %rsi, (%rdi)
kprobe_store64_end:
    ret

    .globl kprobe_store8, kprobe_store8_insn, kprobe_store8_end
kprobe_store8:                  /* (va, byte) */
    xorl %eax, %eax
kprobe_store8_insn:
    movb %sil, (%rdi)
kprobe_store8_end:
    ret

    /* atk_forged_exit(ist_top): the trampoline's exit (out to port 0x5a1)
     * from guest code, with whatever the caller left in the frame slots
     * below ist_top. The VMM answers on the IST stack, which nobody runs:
     * this returns right after the out. */
    .globl atk_forged_exit
atk_forged_exit:
    movl $0x5a1, %edx
    outb %al, %dx
    ret

    /* atk_fake_exc(stub, ist_top, error code or ~0, cr2): enter the
     * trampoline's stub for a vector as the CPU would, with CR2 and the
     * error code chosen here and a hardware frame at the top of the IST
     * stack that returns to atk_fake_ret on this stack at CPL0. The kernel's
     * trap handler sends an exception the VMM delivers for it back there
     * too. Returns 0. */
    .globl atk_fake_exc, atk_fake_ret
atk_fake_exc:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rcx, %cr2
    movq %rsp, %rax
    movq $0x10, -8(%rsi)        /* ss */
    movq %rax, -16(%rsi)        /* rsp */
    pushfq
    popq %r8
    movq %r8, -24(%rsi)         /* rflags */
    movq $0x08, -32(%rsi)       /* cs */
    leaq atk_fake_ret(%rip), %r8
    movq %r8, -40(%rsi)         /* rip */
    leaq -40(%rsi), %rsp
    cmpq $-1, %rdx
    je 1f
    movq %rdx, -48(%rsi)        /* error code */
    leaq -48(%rsi), %rsp
1:  jmp *%rdi
atk_fake_ret:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    xorl %eax, %eax
    ret

/* ------------------------------------------------ PVH boot data (CH only) */

    .section .data.pagetables, "aw"
    .balign 4096
pvh_pml4:
    .quad pvh_pdpt + 0x3
    .fill 511, 8, 0
pvh_pdpt:
    .quad pvh_pd + 0x3
    .fill 511, 8, 0
pvh_pd:
    .set i, 0
    .rept 512
    .quad (i << 21) | 0x83
    .set i, i + 1
    .endr

    .data
    .balign 8
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
pvh_gdt_end:
    .balign 8
pvh_gdtr:
    .word pvh_gdt_end - pvh_gdt - 1
    .long pvh_gdt

    .section .noinit, "aw", @nobits
    .balign 16384
    .globl kstacks
kstacks:
    .space MAX_CPUS << KSTACK_SHIFT
    .balign 16
    .space 4096
pvh_stack_top:

    .section .note.GNU-stack, "", @progbits
