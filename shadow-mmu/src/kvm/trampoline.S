/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * shadow-mmu trampoline: the only code of the VMM that runs inside the
 * guest. It lives in the hypervisor hole, mapped supervisor-only in every
 * shadow root, and runs at CPL0 on the per-vCPU IST stack at the top of
 * the vCPU's 16 KiB block.
 *
 * Every exception vector enters here until the guest registers its trap
 * table; then #BP goes straight to the guest's handler. External
 * interrupts (vectors 32-255, from the in-kernel local APIC) enter through
 * short stubs of their own and exit like an exception without an error
 * code: the VMM delivers them to the guest's handler through guest memory. (The hypercall is
 * a #UD raised by a marked `ud2`: KVM's emulator cannot deliver `int n` at
 * CPL0.) The entry
 * saves RAX, RDX and, for a page fault, CR2 on the IST stack and exits to
 * the VMM with `out` to port 0x5a1. The VMM reads the hardware frame and
 * the saved registers from the stack, resolves the event, and then writes
 * what the trampoline must do as a return chain onto that same stack: the
 * entry ends with `ret`, which pops the first gadget from the slot where
 * CR2 was saved. Each gadget below takes its operand from the stack and
 * returns into the next one; the last one restores RAX and RDX and
 * `iretq`s through the hardware frame, which the VMM may have rewritten in
 * place (resuming after a hypercall, delivering an exception to the
 * guest's handler).
 *
 * CPL0 code is emulated instruction by instruction on the hosts this was
 * built on (about 1-2 us an instruction with its fetch walk), so the chain
 * carries out exactly the work an exit needs and nothing else: a fault the
 * VMM fixed resumes in 5 instructions after `out`, a CR3 load in 7. There
 * are no flags to test and no lists to count.
 *
 * Gadgets (the VMM knows their offsets: kvm/mailbox.rs):
 *   resume        the registers are still where the entry saved them;
 *   resume_moved  the VMM moved RAX and RDX up two slots (so that the
 *                 chain could use theirs);
 *   cr3, cr4, cr2 load a control register;
 *   invlpg        invalidate one address;
 *   write         rewrite a shadow entry with its current value (`lock
 *                 or 0`): a hypervisor that shadows our tables sees only
 *                 the guest's own stores, and an atomic store of what the
 *                 memory holds now cannot put back a value another vCPU
 *                 has since replaced;
 *   touch         a 2-byte `lock or 0` into a shadow page that is reused,
 *                 so such a hypervisor drops its stale copy of it;
 *   far           continue with the chain at the address popped (the
 *                 chain area of the vCPU block, for chains longer than
 *                 the five slots below the frame);
 *   back          end of a far chain: back to the entry's stack;
 *   again         exit again for the next batch, which the VMM writes at
 *                 the start of the chain area.
 *
 * Assemble: as --64 -o t.o trampoline.S && objcopy -O binary t.o trampoline.bin
 * The offsets below must match kvm/mailbox.rs (a unit test compares them).
 */
        .intel_syntax noprefix
        .code64
        .text

        .set EXIT_PORT,    0x5a1
        .set BLOCK_SIZE,   0x4000
        .set CHAIN,        0x100   /* chain area offset in the vCPU block */

        .set STUB_STRIDE,  32
        .set NMI_ENTRY,    0x400
        .set G_RESUME,     0x440
        .set G_RESUME_MOVED, 0x450
        .set G_CR3,        0x460
        .set G_CR4,        0x470
        .set G_CR2,        0x480
        .set G_INVLPG,     0x490
        .set G_WRITE,      0x4a0
        .set G_TOUCH,      0x4b0
        .set G_FAR,        0x4c0
        .set G_BACK,       0x4d0
        .set G_AGAIN,      0x4e0
        .set UD_ENTRY,     0x500
        .set IRQ_STUBS,    0x600   /* vectors 32-255, IRQ_STRIDE apart */
        .set IRQ_STRIDE,   16
        .set IRQ_COMMON,   0x1400
        .set PF_ENTRY,     0x1420

        /* The root cache: 64 entries of (guest CR3 | bit 63, shadow root),
         * indexed by CR3 bits 12-17; then the last CR3 switched to here. */
        .set ROOTS,        0x3400
        .set ROOT_MASK,    63
        .set SWITCHED,     0x3800
        /* Nonzero when the root cache may be used (one vCPU). */
        .set FAST_PATH,    0x3808
        /* At the #UD entry's exit, rsp is the IST top minus 80 bytes. */
        .set FROM_TOP,     80 - BLOCK_SIZE
        /* The dirty table (see pf_entry): the 2 MiB-aligned address the
         * table maps (1: none), the hole address of its shadow page, and
         * the CR2 the guest last saw. */
        .set ARM_BASE,     0x3810
        .set ARM_SPT,      0x3818
        .set ARM_CR2,      0x3820
        /* From a vCPU block to its arm block: the guest table's page, then
         * the expected guest entries, then the expected shadow entries. */
        .set ARM_DIST,     0x120000
        .set ARM_GPTES,    0x1000
        .set ARM_SPTES,    0x2000
        /* From an NMI block to its vCPU block. */
        .set NMI_DIST,     0x80000
        .set DISARMED,     1
        /* An unarmed slot of the expected guest entries. */
        .set UNARMED,      8

/*
 * Entry stubs: one per vector, STUB_STRIDE bytes apart. The stack they
 * leave at the exit (16-byte aligned by the CPU before the pushes):
 *   [rsp+0] CR2 (#PF only)  [rsp+8] rdx  [rsp+16] rax  [rsp+24] vector
 *   [rsp+32] error code     [rsp+40] rip, cs, rflags, rsp, ss
 */
        .macro stub vec, has_ec
        .balign STUB_STRIDE
        .if \has_ec == 0
        push 0
        .endif
        push \vec
        push rax
        push rdx
        .if \vec == 14
        mov rax, cr2
        .endif
        push rax
        .if \vec == 6
        jmp ud_entry
        .else
        mov edx, EXIT_PORT
        out dx, al
        ret
        .endif
        .endm

stubs:
        stub 0, 0
        stub 1, 0
        stub 2, 0
        stub 3, 0
        stub 4, 0
        stub 5, 0
        stub 6, 0
        stub 7, 0
        stub 8, 1
        stub 9, 0
        stub 10, 1
        stub 11, 1
        stub 12, 1
        stub 13, 1
        stub 14, 1
        stub 15, 0
        stub 16, 0
        stub 17, 1
        stub 18, 0
        stub 19, 0
        stub 20, 0
        stub 21, 1
        stub 22, 0
        stub 23, 0
        stub 24, 0
        stub 25, 0
        stub 26, 0
        stub 27, 0
        stub 28, 0
        stub 29, 0
        stub 30, 0
        stub 31, 0

/*
 * NMI entry (IST 2, its own stack, so that an NMI inside the trampoline
 * clobbers nothing): the VMM sends an NMI to make this vCPU flush its TLB
 * for a change another vCPU made. Reload CR3, count the flush in the word
 * at the base of the NMI stack's 16 KiB block, and return.
 */
        .org NMI_ENTRY
nmi:
        push rax
        mov rax, cr3
        mov cr3, rax
        mov rax, rsp
        and rax, -BLOCK_SIZE
        mov qword ptr [rax + ARM_BASE - NMI_DIST], DISARMED
        inc qword ptr [rax]
        pop rax
        iretq

        .org G_RESUME
resume:
        pop rdx
        pop rax
        add rsp, 16
        iretq

        .org G_RESUME_MOVED
resume_moved:
        pop rax
        pop rdx
        iretq

        .org G_CR3
        pop rax
        mov cr3, rax
        ret

        .org G_CR4
        pop rax
        mov cr4, rax
        ret

        .org G_CR2
        pop rax
        mov cr2, rax
        ret

        .org G_INVLPG
        pop rax
        invlpg [rax]
        ret

        .org G_WRITE
        pop rax
        lock or qword ptr [rax], 0
        ret

        .org G_TOUCH
        pop rax
        lock or word ptr [rax], 0
        ret

        .org G_FAR
        pop rsp
        ret

        .org G_BACK
        pop rsp
        pop rax
        pop rdx
        iretq

        .org G_AGAIN
        mov edx, EXIT_PORT
        out dx, al
        and rsp, -BLOCK_SIZE
        add rsp, CHAIN
        ret

/*
 * #UD: a register-form hypercall (`ud2; "SHR"` at CPL0) is answered here,
 * without an exit, in two cases: LOAD_CR3 (RAX = 1, RDX = the new CR3)
 * whose shadow root the VMM left in the root cache (note the CR3, with bit
 * 63 set, for the VMM, which catches up at the next exit, load the root,
 * and return 0 in RAX past the five bytes); and any number but 1, which
 * the ABI answers with -1 (also the cheapest round trip through the
 * trampoline there is: delivery, these instructions, `iretq`, which is
 * how the bench measures the floor of a shadow fault). Everything else, a
 * miss included, exits as any vector does. The marker is read only when
 * the VMM enabled the cache (one vCPU: no other vCPU's exit can take the
 * page's shadow mapping away meanwhile) and its five bytes lie in the
 * page the ud2 was fetched from, so the read cannot fault.
 */
        .org UD_ENTRY
ud_entry:
        cmp qword ptr [rsp + FAST_PATH + FROM_TOP], 0
        je slow
        test byte ptr [rsp + 48], 3
        jnz slow
        mov rax, [rsp + 40]
        mov edx, eax
        and edx, 0xfff
        cmp edx, 0xffb
        ja slow
        cmp dword ptr [rax], 0x48530b0f
        jne slow
        cmp byte ptr [rax + 4], 0x52
        jne slow
        cmp qword ptr [rsp + 16], 1
        jne unknown
        mov rax, [rsp + 8]
        mov edx, eax
        shr edx, 12
        and edx, ROOT_MASK
        shl edx, 4
        bts rax, 63
        cmp rax, [rsp + rdx + ROOTS + FROM_TOP]
        jne slow
        mov [rsp + SWITCHED + FROM_TOP], rax
        mov qword ptr [rsp + ARM_BASE + FROM_TOP], DISARMED
        mov rax, [rsp + rdx + ROOTS + FROM_TOP + 8]
        mov cr3, rax
        mov qword ptr [rsp + 16], 0
        jmp done
unknown:
        mov qword ptr [rsp + 16], -1
done:
        add qword ptr [rsp + 40], 5
        add rsp, 8
        pop rdx
        pop rax
        add rsp, 16
        iretq
slow:
        mov edx, EXIT_PORT
        out dx, al
        ret

/*
 * External interrupts: vectors 32-255, one 16-byte stub each, which push
 * an error code of 0 and the vector (sign-extended from 8 bits: the VMM
 * reads its low byte) and join the common exit. The stack at the exit is
 * the exception stubs' (CR2 slot unused).
 */
        .org IRQ_STUBS
        .set v, 32
        .rept 224
        .balign IRQ_STRIDE
        push 0
        push (v - 256 * (v / 128))
        jmp irq_common
        .set v, v + 1
        .endr

        .org IRQ_COMMON
irq_common:
        push rax
        push rdx
        push rax
        mov edx, EXIT_PORT
        out dx, al
        ret

/*
 * #PF while a table is armed (the VMM points the gate here when it arms,
 * and back at the stub when it disarms, so that an unarmed fault pays
 * nothing for this): a write to a clean page, answered without an exit. The VMM arms one guest leaf table at a time
 * (the crate's `dirty` module): ARM_BASE says which 2 MiB the table maps,
 * the arm block's first page maps the guest table, and two tables give,
 * by entry, the guest entry the write must find (UNARMED: none) and the
 * read-only shadow entry the VMM left. The VMM arms only entries with P
 * and W set and PWT clear, so an error code equal to the entry's low four
 * bits is a write to a present page and nothing else: no reserved bit, no
 * protection key, a user page written by the user or a supervisor page by
 * the supervisor (an unarmed slot would need a reserved-bit fault on a
 * non-present entry, which no CPU reports). Then D is set in the guest
 * entry with `lock cmpxchg`, as a CPU's walk does, the shadow entry is
 * made writable and dirty with another (an entry the VMM changed meanwhile
 * is left alone; the bits are clear in what the VMM armed, so adding them
 * sets them), the guest's CR2 is put back, and the guest resumes: 35
 * instructions with the `iretq`, where an exit runs 11 and a round trip
 * through the VMM. Anything else exits as any vector does; the VMM takes
 * the new entries over at the next exit, before anything else. Any exit,
 * a CR3 switch by the root cache and a flush NMI disarm the table.
 */
        .org PF_ENTRY
pf_entry:
        push 14
        push rax
        push rdx
        mov rax, cr2
        push rax
        and rax, -0x200000
        cmp rax, [rsp + ARM_BASE + FROM_TOP]
        jne pf_exit
        push rcx
        mov ecx, [rsp + 8]
        shr ecx, 9
        and ecx, 0xff8
        mov rax, [rsp + rcx + ARM_DIST + ARM_GPTES + FROM_TOP + 8]
        mov edx, eax
        and edx, 15
        cmp edx, [rsp + 40]
        jne pf_miss
        lea rdx, [rax + 0x40]
        lock cmpxchg [rsp + rcx + ARM_DIST + FROM_TOP + 8], rdx
        jne pf_miss
        mov rax, [rsp + rcx + ARM_DIST + ARM_SPTES + FROM_TOP + 8]
        lea rdx, [rax + 0x42]
        add rcx, [rsp + ARM_SPT + FROM_TOP + 8]
        lock cmpxchg [rcx], rdx
        pop rcx
        jne pf_exit
        mov rax, [rsp + ARM_CR2 + FROM_TOP]
        mov cr2, rax
        add rsp, 8
        pop rdx
        pop rax
        add rsp, 16
        iretq
pf_miss:
        pop rcx
pf_exit:
        mov edx, EXIT_PORT
        out dx, al
        ret
