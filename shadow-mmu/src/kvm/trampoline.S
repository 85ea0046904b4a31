/*
 * shadow-mmu trampoline: the only code of the VMM that runs inside the
 * guest. It lives in the hypervisor hole, mapped supervisor-only in every
 * shadow root, and runs at CPL0 on the per-vCPU IST stack, whose 16 KiB
 * block starts with the vCPU's mailbox.
 *
 * Every exception vector enters here (the hypercall is a #UD raised by a
 * marked `ud2`: KVM's emulator cannot deliver `int n` at CPL0). The
 * entry saves RAX, RDX and CR2 on the IST stack and exits to the VMM with
 * `out` to port 0x5a1; the VMM reads the hardware frame and the saved
 * registers from the stack, resolves the event, and leaves commands in the
 * mailbox, which the trampoline carries out before `iretq`:
 *
 *   1. 2-byte rewrite of each "touch" address: a guest store into a shadow
 *      page that is reused, so a hypervisor that shadows our tables drops
 *      its stale copy;
 *   2. an 8-byte rewrite of each listed entry: changes to present shadow
 *      entries, which such a hypervisor only sees when the guest makes them.
 *   The VMM has already stored the new values; both rewrites are atomic
 *   `lock or 0`s that store what the memory holds now, so a vCPU that
 *   carries its list out late cannot put back a value another vCPU's
 *   newer change replaced (a plain load-and-store could);
 *   3. invlpg of each listed address;
 *   4. flags: load CR4, load CR3 (or reload it: a full flush), set CR2,
 *      replace the iret frame (exception delivery to the guest's handler),
 *      or exit again for more commands than one mailbox holds.
 *
 * CPL0 code is emulated instruction by instruction on the hosts this was
 * built on (~0.65 us each): the common path (nothing to do) is kept short.
 *
 * Assemble: as --64 -o t.o trampoline.S && objcopy -O binary t.o trampoline.bin
 * The layout constants below must match kvm/mailbox.rs.
 */
        .intel_syntax noprefix
        .code64
        .text

        .set MB_FLAGS,     0x100
        .set MB_N_TOUCH,   0x108
        .set MB_N_WRITES,  0x110
        .set MB_N_INVLPG,  0x118
        .set MB_CR3,       0x120
        .set MB_CR4,       0x128
        .set MB_CR2,       0x130
        .set MB_FRAME,     0x140   /* rip, cs, rflags, rsp, ss */
        .set MB_TOUCH,     0x200   /* 64 addresses */
        .set MB_INVLPG,    0x400   /* 64 addresses */
        .set MB_WRITES,    0x600   /* 320 entry addresses */

        .set F_CR4,        1
        .set F_CR3,        2
        .set F_CR2,        4
        .set F_FRAME,      8
        .set F_MORE,       16      /* exit again for the next batch */
        /* F_LISTS (32) only makes the flags word non-zero. */

        .set EXIT_PORT,    0x5a1

/* Entry stubs: one per vector, 16 bytes apart, at offset 16 * index. */
        .macro stub vec, has_ec
        .balign 16
        .if \has_ec == 0
        push 0
        .endif
        push \vec
        jmp common
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
        .balign 16
nmi:
        push rax
        mov rax, cr3
        mov cr3, rax
        mov rax, rsp
        and rax, -0x4000
        inc qword ptr [rax]
        pop rax
        iretq

/*
 * Stack on entry to common (IST, 16-byte aligned by the CPU):
 *   [rsp+0] vector  [rsp+8] error code  [rsp+16] rip  [rsp+24] cs
 *   [rsp+32] rflags [rsp+40] rsp        [rsp+48] ss
 * After the three pushes below: rax at +16, rdx at +8, cr2 at +0.
 */
        .balign 16
common:
        push rax
        push rdx
        mov rax, cr2
        push rax
exit:
        mov edx, EXIT_PORT
        out dx, al
        /* The mailbox is at the start of this vCPU's 16 KiB block. */
        mov rdx, rsp
        and rdx, -0x4000
        cmp qword ptr [rdx + MB_FLAGS], 0
        jne commands
resume:
        add rsp, 8
        pop rdx
        pop rax
        add rsp, 16
        iretq

commands:
        push rcx
        push rsi
        /* 1. touches */
        mov rcx, [rdx + MB_N_TOUCH]
        lea rsi, [rdx + MB_TOUCH]
        jrcxz 2f
1:      mov rax, [rsi]
        lock or word ptr [rax], 0
        add rsi, 8
        loop 1b
2:      /* 2. entry rewrites */
        mov rcx, [rdx + MB_N_WRITES]
        lea rsi, [rdx + MB_WRITES]
        jrcxz 4f
3:      mov rax, [rsi]
        lock or qword ptr [rax], 0
        add rsi, 8
        loop 3b
4:      /* 3. invlpg */
        mov rcx, [rdx + MB_N_INVLPG]
        lea rsi, [rdx + MB_INVLPG]
        jrcxz 6f
5:      mov rax, [rsi]
        invlpg [rax]
        add rsi, 8
        loop 5b
6:      /* 4. flags */
        mov rcx, [rdx + MB_FLAGS]
        test cl, F_CR4
        jz 7f
        mov rax, [rdx + MB_CR4]
        mov cr4, rax
7:      test cl, F_CR3
        jz 8f
        mov rax, [rdx + MB_CR3]
        mov cr3, rax
8:      test cl, F_CR2
        jz 9f
        mov rax, [rdx + MB_CR2]
        mov cr2, rax
9:      test cl, F_FRAME
        jz 10f
        /* The iret frame is at rsp + 16 (rcx, rsi) + 24 (cr2, rdx, rax) + 16. */
        mov rax, [rdx + MB_FRAME]
        mov [rsp + 56], rax
        mov rax, [rdx + MB_FRAME + 8]
        mov [rsp + 64], rax
        mov rax, [rdx + MB_FRAME + 16]
        mov [rsp + 72], rax
        mov rax, [rdx + MB_FRAME + 24]
        mov [rsp + 80], rax
        mov rax, [rdx + MB_FRAME + 32]
        mov [rsp + 88], rax
10:     mov rax, rcx
        mov qword ptr [rdx + MB_FLAGS], 0
        pop rsi
        pop rcx
        test al, F_MORE
        jnz exit
        jmp resume
