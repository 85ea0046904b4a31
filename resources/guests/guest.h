/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * Definitions shared by the guest kernel (CPL0) and the user workloads (CPL3).
 * The numbers that the VMM also knows (workload ids, parameter slots, the
 * results layout) are documented in README.md beside this file and mirrored
 * in integration/src/vm/workload.rs.
 */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;

#define PAGE_SIZE 4096UL
#define LARGE_SIZE (2UL << 20)

/* Workload ids (boot info offset 24). */
#define WL_TOUCH 1
#define WL_SPACES 2
#define WL_COW 3
#define WL_ADBITS 4
#define WL_HUGE 5
#define WL_ACCESS 6
#define WL_SMP 7
#define WL_HOSTILE 8
#define WL_HOTPLUG 9
#define WL_REMAP 10
#define WL_ATTACK 11      /* CPL0 writes into the VMM's hidden region */
#define WL_SPIN_USER 12   /* never returns: spins at CPL3 */
#define WL_SPIN_KERNEL 13 /* never returns: spins at CPL0 */
#define WL_FAULT_LOOP 14  /* never returns: faults on one address forever */
#define WL_TIMER 15       /* LAPIC timer ticks switch between user tasks */

/* Parameter slots: 0 is the seed of every workload, 1-5 are the workload's
 * own, 6-7 give the results buffer. */
#define P_SEED 0
#define P_RESULTS_GPA 6
#define P_RESULTS_SIZE 7

/* Results buffer: 64 header words, then records (u64). */
#define RES_MAGIC 0x5345525f554d4d53UL /* "SMMU_RES" */
#define RH_MAGIC 0
#define RH_WORKLOAD 1
#define RH_STATUS 2
#define RH_NRECORDS 3
#define RH_FLAGS 4
#define RH_NTSC 5
#define RH_FAULTS 6  /* page faults taken by the kernel's #PF handler */
#define RH_ERRORS 7  /* mismatches the workload found itself */
#define RH_TSC 8     /* 32 slots of TSC deltas: not part of the checksum */
#define RH_NTSC_MAX 32
/* attack: what the last attack step did, for a VMM to read after the VM
 * ended, whichever way it ended (not part of the checksum) */
#define RH_ATK_STEP 40    /* step number + 1 (0: no step yet) */
#define RH_ATK_CLASS 41   /* its target class (ATK_*) */
#define RH_ATK_WHERE 42   /* the hole offset, VA or value it targeted */
#define RH_ATK_VALUE 43   /* the value it wrote */
#define RH_ATK_DONE 44    /* attacks carried out */
#define RH_ATK_FAULTED 45 /* attacks whose access faulted (nothing written) */
#define RH_ATK_SKIPPED 46 /* attacks with nothing to target */
#define RH_TRAPS 47       /* exceptions (system calls included) that reached
                           * the kernel's trap handler: with RH_FAULTS, what
                           * a VMM can watch for progress (not checksummed) */
#define RH_TICKS 48       /* timer interrupts the kernel took */
#define RH_SWITCHES 49    /* task switches made at timer interrupts */
#define RH_KTICKS 50      /* timer interrupts taken at CPL0 */
#define RH_IPIS 51        /* shootdown IPIs handled (all CPUs) */
                          /* (48-51 are not checksummed: they depend on
                           * timing; the workloads check them against
                           * bounds) */
#define RH_WORDS 64

#define VEC_TIMER 0x20    /* the local APIC timer */
#define VEC_SHOOTDOWN 0x21 /* TLB shootdown IPI */
#define VEC_SPURIOUS 0xff
#define MAX_TASKS 8       /* timer workload: user tasks */
#define TASK_STACK_PAGES 4 /* each task's stack, at DATA2_VA of its space */

/* RH_FLAGS bits. */
#define RF_1G_SKIPPED 1UL /* native mode: 1 GiB pages cannot run here */
#define RF_1G_DONE 2UL

/* Guest-virtual layout (identical in every address space). */
#define KERNEL_DIRECT_MAX (1UL << 30)   /* [0, 1 GiB): RAM, supervisor */
#define USER_IMAGE_VA 0x40000000UL      /* user image, user RW */
#define USER_STACK_VA 0x40200000UL      /* per-CPU user stacks */
#define USER_STACK_SIZE 0x10000UL       /* 64 KiB each, one page guard */
#define RESULTS_VA 0x40400000UL         /* results buffer, user RW */
#define RESULTS_MAX (4UL << 20)
#define DOORBELL_VA 0x40800000UL        /* doorbell page (GPA 0xf000_0000) */
#define UINFO_VA 0x40801000UL           /* user info page (read-only) */
#define ACC_STAGE_VA 0x40802000UL       /* access test staging page (RW) */
#define ACC_PT_VA 0x40803000UL          /* access test PT, read-only alias */
#define ACC_PD_VA 0x40804000UL          /* access test PD, read-only alias */
#define DATA_VA 0x8000000000UL          /* PML4 slot 1: workload data */
#define DATA2_VA 0x8040000000UL         /* second data region (+1 GiB) */
#define HOTPLUG_VA 0x8000000000UL       /* hotplug: new RAM (PML4 slot 1) */
#define HOTPLUG_ALIAS 0x4000000000UL    /* hotplug: alias at +256 GiB */
#define REMAP_VA 0x30000000000UL        /* PML4 slot 6: remap workload pages */
#define REMAP_MAX 512                   /* pages at REMAP_VA (one leaf table) */
#define ACCESS_VA 0x10000000000UL       /* PML4 slot 2: access test page */
#define HOSTILE_VA 0x18000000000UL      /* PML4 slot 3: hostile tables */
#define HUGE1G_VA 0x20000000000UL       /* PML4 slot 4: 1 GiB page */
#define FAULT_LOOP_VA 0x38000000000UL   /* PML4 slot 7: never mapped */
#define HOLE_VA 0xffffff0000000000UL    /* PML4 slot 510: the VMM's hole */
#define ACCESS_OFF 0x40UL               /* offset of the probed byte */

/* Syscalls: rax = number, rdi, rsi, rdx, r10, r8 = arguments. */
#define SYS_EXIT 0        /* status: kernel EXIT hypercall */
#define SYS_MAP 1         /* space, va, npages, flags -> 0 / <0 */
#define SYS_NEW_SPACE 2   /* -> space id */
#define SYS_SWITCH 3      /* space */
#define SYS_CLONE 4       /* src space, va, npages -> new space (COW) */
#define SYS_CLEAR_AD 5    /* va, npages: clear A/D in leaf PTEs, flush */
#define SYS_READ_PTES 6   /* va, npages, results word, level: leaf flag bytes
                             * (level 1, 2), or leaf entry addresses (3) */
#define SYS_ACCESS 7      /* n, nk, paging bits: one batch (n == 0: end) */
#define SYS_SPLIT 8       /* va of a 2 MiB page: split into 4 KiB PTEs */
#define SYS_COLLAPSE 9    /* va: rebuild the 2 MiB page */
#define SYS_MAP_1G 10     /* va: 1 GiB page at GPA 0 (shadow only) */
#define SYS_FLUSH 11      /* va or ~0 for all */
#define SYS_REMAP 12      /* va, n, gpa: point n PTEs at n frames, flush */
#define SYS_START_CPU 13  /* index */
#define SYS_HOSTILE 14    /* step, out: the hostile workload's steps */
#define SYS_CONSOLE 15    /* va of a NUL-terminated user string (no SMAP) */
#define SYS_PHYS 16       /* va -> gpa of the leaf (or ~0) */
#define SYS_ACCESS_INIT 17 /* set up the access test: stage page, aliases */
#define SYS_RAM_MAP 18    /* refresh uinfo's RAM regions -> count / <0 */
#define SYS_PTE 20        /* va in REMAP_VA, op, arg: rewrite one live PTE,
                           * then INVLPG it (ops: PTE_OP_*) */
#define SYS_MAP_RAM 19    /* va, gpa, npages: 2 MiB user RW pages of RAM
                           * outside the boot RAM (hotplugged) -> 0 / <0 */
#define SYS_ATTACK 21     /* class, r1, r2, r3: one attack step at CPL0 on
                           * the hidden region -> 0 done, 1 faulted, 2
                           * nothing to target, -3 native paging (but
                           * ATK_GUEST_RELINK, which runs natively too) */
#define SYS_SPIN 22       /* spin at CPL0 forever */
#define SYS_TIMER 23      /* period ns, ntasks, entry: start tasks 1..n-1
                           * (each in a new space, entry(index), IF set),
                           * arm the periodic timer, wait for its first
                           * tick at CPL0; the caller is task 0 and
                           * continues with interrupts enabled -> 0 / <0 */
#define SYS_TASK_DONE 24  /* this task is finished: never run again */
#define SYS_TIMER_STOP 25 /* stop the timer, interrupts off -> ticks */
#define SYS_INTERRUPTS 26 /* 1: run this user code with interrupts on, 0 off */
#define SYS_SHOOTDOWN 27  /* va in REMAP_VA, frame: point the PTE at the
                           * frame, INVLPG here, then IPI every other online
                           * CPU, whose handler INVLPGs it, and wait for
                           * them all -> 0 / <0 */
#define SYS_FLOOR 28      /* n, kind: n hypercalls of no known number, for
                           * the cost of a round trip: kind 0 register form
                           * (shadow paging: the VMM's trampoline answers
                           * it without an exit on one vCPU; natively -3),
                           * kind 1 block form (an exit each) -> 0 / <0 */

/* Target classes of the attack workload (SYS_ATTACK). The hidden region's
 * layout is the KVM glue's (shadow-mmu/src/kvm/layout.rs, mailbox.rs). */
#define ATK_IST 0         /* words of an IST stack's saved frame */
#define ATK_FORGED_EXIT 1 /* a forged frame, then out 0x5a1 from guest code */
#define ATK_FAKE_EXC 2    /* a crafted exception entered through the stub */
#define ATK_CHAIN 3       /* words of a chain area */
#define ATK_SWITCH 4      /* the switch word (register-form LOAD_CR3) */
#define ATK_ROOTS 5       /* a root-cache slot, then the register LOAD_CR3 */
#define ATK_NMI 6         /* the flush count of an NMI block */
#define ATK_GDT 7         /* a GDT descriptor */
#define ATK_IDT 8         /* an IDT gate */
#define ATK_TSS 9         /* RSP0, IST1, IST2 or the I/O map base of a TSS */
#define ATK_TRAMPOLINE 10 /* trampoline code bytes (CR0.WP cleared) */
#define ATK_LINK 11       /* a shadow link on the path of a user page */
#define ATK_LEAF 12       /* a shadow leaf */
#define ATK_ARENA 13      /* any entry of any arena page */
#define ATK_RAW_CR3 14    /* mov cr3 straight to an arena page or guest table */
#define ATK_RELINK 15     /* clear P on a link and touch, r1 % 64 + 1 times */
#define ATK_READ 16       /* reads anywhere in the hole */
#define ATK_GUEST_RELINK 17 /* not an attack: clear and set P in the guest's
                             * own PDE of a page and touch it, r1 times */
#define ATK_ARM 18        /* the dirty fast path's arming: base, shadow-page
                           * address, CR2, expected entries, the window */
#define ATK_CLASSES 19

/* SYS_PTE operations. */
#define PTE_OP_FRAME 0    /* point at the frame arg (a frame the user mapped) */
#define PTE_OP_CLEAR_W 1
#define PTE_OP_SET_W 2
#define PTE_OP_CLEAR_P 3
#define PTE_OP_SET_P 4
#define PTE_OP_SET_NX 5
#define PTE_OP_CLEAR_NX 6
#define PTE_OPS 7

/* SYS_MAP flags. */
#define MAP_W 1
#define MAP_LARGE 2     /* 2 MiB pages, 2 MiB-aligned frames */
#define MAP_DEMAND 4    /* map nothing: the #PF handler maps on first touch */

/* Access test case descriptor (one u32). */
#define AC_PTE_P (1u << 0)
#define AC_PTE_W (1u << 1)
#define AC_PTE_U (1u << 2)
#define AC_PTE_A (1u << 3)
#define AC_PTE_D (1u << 4)
#define AC_PTE_NX (1u << 5)
#define AC_PDE_P (1u << 6)
#define AC_PDE_W (1u << 7)
#define AC_PDE_U (1u << 8)
#define AC_PDE_A (1u << 9)
#define AC_PDE_D (1u << 10)
#define AC_PDE_NX (1u << 11)
#define AC_PDE_PS (1u << 12)
#define AC_RSVD_SHIFT 13 /* 2 bits: 0 none, 1 PTE bit 51, 2 PDE bit 51, 3 PDE bit 13 */
#define AC_USER (1u << 15)
#define AC_KIND_SHIFT 16 /* 2 bits: 0 read, 1 write, 2 fetch */
#define AC_AC (1u << 18) /* EFLAGS.AC for supervisor accesses */
#define AC_WP (1u << 19)
#define AC_SMEP (1u << 20)
#define AC_SMAP (1u << 21)
#define AC_NXE (1u << 22)
#define AC_DESC_BITS 23

#define ACC_SLOTS 64      /* cases per SYS_ACCESS batch */

/* The access test's staging page (ACC_STAGE_VA). Slot i is the byte at
 * ACCESS_VA + i * (2 MiB + 4 KiB) + ACCESS_OFF: PDE i of the access PD and,
 * unless that is a 2 MiB page, PTE i of the access PT (shared by all slots).
 * The user writes the slots' entries and the supervisor cases, the kernel
 * stores the entries with rep movsq, flushes, runs the supervisor cases. */
struct acc_stage {
    u64 frame4k, frame2m, pt; /* GPAs, written by the kernel */
    u64 pad[5];
    u64 pte[ACC_SLOTS];
    u64 pde[ACC_SLOTS];
    u64 kcase[ACC_SLOTS]; /* slot va | kind (bits 0-1) | EFLAGS.AC (bit 2) */
    u64 kres[ACC_SLOTS];  /* probe results: 0 or 1 | error code << 8 */
};

/* Access record: desc | fault << 32 | non-#PF << 33 | error code (or vector)
 * << 40 | final PTE bits 0-7 << 48 | final PDE bits 0-7 << 56. */

/* Page-table entry bits. */
#define PTE_P 0x1UL
#define PTE_W 0x2UL
#define PTE_U 0x4UL
#define PTE_A 0x20UL
#define PTE_D 0x40UL
#define PTE_PS 0x80UL
#define PTE_COW 0x200UL /* software bit: copy on write */
#define PTE_NX (1UL << 63)
#define PTE_ADDR 0x000ffffffffff000UL

#define MAX_RAM_REGIONS 16

/* The user info page (UINFO_VA), written by the kernel. */
struct uinfo {
    u64 workload;
    u64 paging; /* 0 native, 1 shadow */
    u64 ncpus;
    u64 ram;
    u64 params[8];
    u64 results_words; /* capacity of the results buffer in u64 words */
    u64 tsc_khz_hint;  /* 0: unknown */
    u64 nram;          /* RAM regions in ram_regions (SYS_RAM_MAP) */
    u64 ram_regions[MAX_RAM_REGIONS][2]; /* (start, size), ascending */
};

#endif
