/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * The guest kernel (CPL0). It runs the same way under native paging (it owns
 * its GDT/IDT/TSS and executes mov cr3 / invlpg) and under shadow paging
 * (it asks the VMM with hypercalls: resources/ABI.md). Every instruction of
 * this file is emulated on this project's hosts (~0.65 us each), so the
 * kernel does as little as it can: workloads run at CPL3 (u_user.c) and call
 * in with coarse syscalls.
 */
#include "guest.h"

#define MAX_CPUS 8
#define KSTACK_SHIFT 14
#define MAX_SPACES 64
#define MAX_DEMAND 4
#define COW_MAX 4096
#define BATCH_MAX 256

#define HC_LOAD_CR3 1
#define HC_INVLPG 2
#define HC_FLUSH_TLB 3
#define HC_SET_TRAP_TABLE 4
#define HC_SET_PAGING_BITS 5
#define HC_CONSOLE_WRITE 6
#define HC_EXIT 7
#define HC_START_VCPU 8
#define HC_MMU_UPDATE 9
#define HC_MEMORY_MAP 10

#define MSR_EFER 0xc0000080u

#define BOOT_MAGIC 0x53484d4d55300001UL

/* Exit statuses of kernel-detected failures (the user's own status is 0 on
 * success or a small positive number). */
#define ST_BAD_BOOT 0xe1000000UL
#define ST_TRAP 0xe2000000UL  /* | vector */
#define ST_NOMEM 0xe3000000UL

struct bootinfo {
    u64 magic;
    u32 paging;
    u32 ncpus;
    u64 ram;
    u64 workload;
    u64 params[8];
    u64 doorbell;
    u64 cmdline;     /* GPA of the kernel command line, 0: none */
    u64 cmdline_len; /* its length in bytes (no NUL needed) */
};

#define CMDLINE_MAX 4096

struct hcblock {
    u64 nr;
    u64 arg[4];
    i64 result;
    u64 pad[2];
};

struct percpu {
    u64 kstack_top;
    u64 cpu;
    u64 root;       /* GPA of the loaded PML4 */
    u64 space;
    u64 nbatch;
    u64 pad[2];
    struct hcblock hc;
};

struct frame {
    u64 r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss;
};

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __attribute__((packed));

struct idt_entry {
    u16 off0;
    u16 sel;
    u8 ist;
    u8 type;
    u16 off1;
    u32 off2;
    u32 reserved;
};

struct dtr {
    u16 limit;
    u64 base;
} __attribute__((packed));

/* From entry.S and the linker script. */
extern char kstacks[];
extern const u64 exc_table[256];
extern char __bss_start[], __bss_end[], __image_end[], __user_lma[];
extern char __user_start[], __user_end[];
extern void enter_user(u64 rip, u64 rsp, u64 rdi, u64 rsi) __attribute__((noreturn));
extern u64 kprobe_read(u64 va), kprobe_write(u64 va), kprobe_fetch(u64 va);
extern char kprobe_read_insn[], kprobe_read_end[], kprobe_write_insn[], kprobe_write_end[];
extern char kprobe_fetch_end[];
/* User image symbols (their user virtual addresses). */
extern char user_entry[], usys_gate[], uprobe_read_insn[], uprobe_read_end[], uprobe_write_insn[];
extern char uprobe_write_end[], uprobe_fetch_end[];

static struct percpu percpu[MAX_CPUS] __attribute__((aligned(64)));
static u64 gdt[MAX_CPUS][8] __attribute__((aligned(16)));
static struct tss tss[MAX_CPUS] __attribute__((aligned(16)));
static struct idt_entry idt[256] __attribute__((aligned(16)));

static int shadow;
/* Under shadow paging, page-table entries are written with MMU_UPDATE
 * hypercalls unless pt_direct: then with the same stores as natively, which
 * the VMM emulates where they hit a write-protected table. */
static int pt_direct;
static u64 ncpus, ram, workload, params[8], doorbell;
u64 *res; /* also used by entry.S */
static u64 res_words;
static u64 next_frame, frame_limit;
static u64 space_root[MAX_SPACES];
static u64 nspaces;
static u64 pdpt0; /* PML4[0] of every space: kernel and user image */
static u64 uinfo_gpa;

static struct {
    u64 va, npages;
} demand[MAX_DEMAND];
static u64 ndemand;

static u64 cow_base, cow_npages;
static u8 cow_ref[COW_MAX];

/* Batched page-table stores of each CPU (shadow paging). */
static u64 batch[MAX_CPUS][BATCH_MAX][2] __attribute__((section(".noinit")));

static struct {
    u64 *pd, *pt;
    struct acc_stage *stage;
    u32 ctrl;
    int ready;
} acc;

/* ------------------------------------------------------------ primitives */

static inline void outl(u16 port, u32 v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline u64 read_cr0(void)
{
    u64 v;
    __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    return v;
}

static inline void write_cr0(u64 v)
{
    __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}

static inline u64 read_cr4(void)
{
    u64 v;
    __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}

static inline void write_cr4(u64 v)
{
    __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory");
}

static inline u64 read_cr2(void)
{
    u64 v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

static inline void write_cr3(u64 v)
{
    __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}

static inline void invlpg(u64 va)
{
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

static inline void zero_page(u64 gpa)
{
    u64 n = 512, p = gpa;
    __asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(0UL) : "memory");
}

static inline void copy_page(u64 dst, u64 src)
{
    u64 n = 512;
    __asm__ volatile("rep movsq" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* The compiler may emit calls to these. */
void *memset(void *d, int c, unsigned long n)
{
    void *r = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return r;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    void *r = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return r;
}

static inline struct percpu *this_cpu(void)
{
    u64 sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    return &percpu[(sp - (u64)kstacks) >> KSTACK_SHIFT];
}

/* ------------------------------------------------------------- hypercalls */

static i64 hypercall(u64 nr, u64 a0, u64 a1, u64 a2, u64 a3)
{
    struct hcblock *b = &this_cpu()->hc;
    b->nr = nr;
    b->arg[0] = a0;
    b->arg[1] = a1;
    b->arg[2] = a2;
    b->arg[3] = a3;
    if (shadow)
        /* ABI v1 shadow hypercall: a ud2 marked "SHM" (KVM's emulator, which
         * runs CPL0 code here, cannot deliver int n). */
        __asm__ volatile("ud2; .ascii \"SHM\"" : : "a"((u32)(u64)b) : "memory");
    else
        outl(0x5a0, (u32)(u64)b);
    return b->result;
}

/* The register form (shadow paging, LOAD_CR3 only): RAX = number, RDX =
 * argument, the result in RAX; the VMM's trampoline serves it without an
 * exit when the address space's shadow root is cached. */
static i64 hypercall_reg(u64 nr, u64 arg)
{
    i64 r;
    __asm__ volatile("ud2; .ascii \"SHR\"" : "=a"(r) : "a"(nr), "d"(arg) : "memory");
    return r;
}

/* n hypercalls of a number the ABI does not know (answered -1), to time a
 * round trip: the register form, which the VMM's trampoline answers by
 * itself when it can (shadow paging only), or the block form (an exit). */
static i64 sys_floor(u64 n, u64 kind)
{
    if (kind > 1 || (kind == 0 && !shadow))
        return -3;
    for (u64 i = 0; i < n; i++) {
        i64 r = kind == 0 ? hypercall_reg(0, 0) : hypercall(0, 0, 0, 0, 0);
        if (r != -1)
            return -2;
    }
    return 0;
}

static u64 kstrlen(const char *s)
{
    u64 n = 0;
    while (s[n])
        n++;
    return n;
}

static void kputs(const char *s)
{
    hypercall(HC_CONSOLE_WRITE, (u64)s, kstrlen(s), 0, 0);
}

static void __attribute__((noreturn)) kexit(u64 status)
{
    for (;;)
        hypercall(HC_EXIT, status, 0, 0, 0);
}

/* ------------------------------------------------------ page-table writes */

/* Commit the batched page-table writes (shadow mode: one MMU_UPDATE). */
static void pt_commit(void)
{
    struct percpu *pc = this_cpu();
    if (pc->nbatch) {
        hypercall(HC_MMU_UPDATE, (u64)batch[pc->cpu], pc->nbatch, 0, 0);
        pc->nbatch = 0;
    }
}

/* A store into a live page table: in shadow mode it is batched and reaches
 * the table with MMU_UPDATE before the next flush, CR3 load or return. */
static inline void pte_write(u64 *p, u64 v)
{
    if (!shadow || pt_direct) {
        *(volatile u64 *)p = v;
        return;
    }
    struct percpu *pc = this_cpu();
    batch[pc->cpu][pc->nbatch][0] = (u64)p;
    batch[pc->cpu][pc->nbatch][1] = v;
    if (++pc->nbatch == BATCH_MAX)
        pt_commit();
}

/* Clears A and D in a live entry as a kernel's page reclaimer does: A with
 * a locked test-and-clear (Linux's ptep_test_and_clear_young is lock btr),
 * D with a compare-exchange loop, since the CPU may set either meanwhile. */
static inline void pte_clear_ad(u64 *p)
{
    u64 v = *(volatile u64 *)p;
    if (shadow && !pt_direct) {
        if (v & (PTE_A | PTE_D))
            pte_write(p, v & ~(PTE_A | PTE_D));
        return;
    }
    if (v & PTE_A)
        __asm__ volatile("lock btrq $5, %0" : "+m"(*p) : : "memory", "cc");
    u64 old = *(volatile u64 *)p;
    while (old & PTE_D) {
        u64 prev;
        __asm__ volatile("lock cmpxchgq %2, %1"
                         : "=a"(prev), "+m"(*p)
                         : "r"(old & ~PTE_D), "0"(old)
                         : "memory", "cc");
        if (prev == old)
            break;
        old = prev;
    }
}

static void tlb_invlpg(u64 va)
{
    if (shadow) {
        pt_commit();
        hypercall(HC_INVLPG, va, 0, 0, 0);
    } else {
        invlpg(va);
    }
}

static void load_root(struct percpu *pc, u64 root)
{
    pc->root = root;
    if (shadow) {
        pt_commit();
        hypercall_reg(HC_LOAD_CR3, root);
    } else {
        write_cr3(root);
    }
}

static void tlb_flush(void)
{
    if (shadow) {
        pt_commit();
        hypercall(HC_FLUSH_TLB, 0, 0, 0, 0);
    } else {
        write_cr3(this_cpu()->root);
    }
}

/* ------------------------------------------------------------- allocation */

static u64 alloc_frames(u64 n, u64 align)
{
    u64 f = (next_frame + align - 1) & ~(align - 1);
    if (f + n * PAGE_SIZE > frame_limit || f + n * PAGE_SIZE < f) {
        if (res)
            res[RH_STATUS] = ST_NOMEM;
        kputs("kernel: out of guest memory\n");
        kexit(ST_NOMEM);
    }
    next_frame = f + n * PAGE_SIZE;
    return f;
}

static u64 alloc_table(void)
{
    u64 f = alloc_frames(1, PAGE_SIZE);
    zero_page(f);
    return f;
}

/* The entry for va at level (1 PTE, 2 PDE, 3 PDPTE) under root, allocating
 * missing tables (P|W|U) when alloc is set; 0 if absent or under a large
 * page. */
static u64 *pte_ptr(u64 root, u64 va, int level, int alloc)
{
    u64 *t = (u64 *)root;
    for (int l = 4; l > level; l--) {
        u64 *e = &t[(va >> (12 + 9 * (l - 1))) & 511];
        u64 v = *e;
        if (!(v & PTE_P)) {
            if (!alloc)
                return 0;
            v = alloc_table() | PTE_P | PTE_W | PTE_U;
            pte_write(e, v);
            /* later walks read this entry from memory: under shadow paging
             * it must not wait in the batch */
            if (shadow && !pt_direct)
                pt_commit();
        } else if (l <= 3 && (v & PTE_PS)) {
            return 0;
        }
        t = (u64 *)(v & PTE_ADDR);
    }
    return &t[(va >> (12 + 9 * (level - 1))) & 511];
}

/* Map npages 4 KiB pages at va to consecutive frames from gpa. */
static void map_range(u64 root, u64 va, u64 gpa, u64 npages, u64 flags)
{
    while (npages) {
        u64 *p = pte_ptr(root, va, 1, 1);
        u64 n = 512 - ((va >> 12) & 511);
        if (n > npages)
            n = npages;
        u64 v = gpa | flags;
        if (!shadow || pt_direct) {
            for (u64 i = 0; i < n; i++, v += PAGE_SIZE)
                p[i] = v;
        } else {
            for (u64 i = 0; i < n; i++, v += PAGE_SIZE)
                pte_write(&p[i], v);
        }
        va += n * PAGE_SIZE;
        gpa += n * PAGE_SIZE;
        npages -= n;
    }
}

static u64 new_space(void)
{
    if (nspaces == MAX_SPACES)
        return ~0UL;
    u64 root = alloc_table();
    ((u64 *)root)[0] = pdpt0 | PTE_P | PTE_W | PTE_U;
    space_root[nspaces] = root;
    return nspaces++;
}

/* ------------------------------------------------------------ local APIC */

#define MSR_APIC_BASE 0x1bu
#define X2APIC_EOI 0x80bu
#define X2APIC_SVR 0x80fu
#define X2APIC_ICR 0x830u
#define X2APIC_LVT_TIMER 0x832u
#define X2APIC_TIMER_INIT 0x838u
#define X2APIC_TIMER_DIV 0x83eu
#define RFLAGS_IF 0x200UL

/* x2APIC mode (ABI.md, "Interrupts"), software-enabled, with the spurious
 * vector. */
static void apic_init(void)
{
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | (1UL << 11) | (1UL << 10));
    wrmsr(X2APIC_SVR, 0x100 | VEC_SPURIOUS);
}

static inline void apic_eoi(void)
{
    wrmsr(X2APIC_EOI, 0);
}

/* -------------------------------------------------------------- CPU setup */

static void cpu_init(struct percpu *pc)
{
    u64 c = pc->cpu;
    if (!shadow) {
        u64 *g = gdt[c];
        g[0] = 0;
        g[1] = 0x00af9a000000ffffUL; /* 0x08 kernel code, 64-bit */
        g[2] = 0x00cf92000000ffffUL; /* 0x10 kernel data */
        g[3] = 0x00cff2000000ffffUL; /* 0x18 user data (0x1b) */
        g[4] = 0x00affa000000ffffUL; /* 0x20 user code, 64-bit (0x23) */
        u64 t = (u64)&tss[c];
        tss[c].rsp0 = pc->kstack_top;
        tss[c].iomap_base = sizeof(struct tss);
        g[5] = 0x67 | ((t & 0xffffff) << 16) | (0x89UL << 40) | (((t >> 24) & 0xff) << 56);
        g[6] = t >> 32;
        struct dtr gd = {sizeof(gdt[0]) - 1, (u64)g};
        struct dtr id = {sizeof(idt) - 1, (u64)idt};
        __asm__ volatile("lgdt %0\n\t"
                         "ltr %w1\n\t"
                         "lidt %2"
                         :
                         : "m"(gd), "r"(0x28), "m"(id)
                         : "memory");
    } else {
        hypercall(HC_SET_TRAP_TABLE, (u64)exc_table, pc->kstack_top, 256, 0);
    }
    apic_init();
}

static void build_idt(void)
{
    for (int v = 0; v < 256; v++) {
        u64 h = exc_table[v];
        if (!h)
            continue; /* not present */
        idt[v].off0 = (u16)h;
        idt[v].sel = 0x08;
        idt[v].ist = 0;
        /* present interrupt gate; DPL 3 for #BP, the system-call gate */
        idt[v].type = v == 3 ? 0xee : 0x8e;
        idt[v].off1 = (u16)(h >> 16);
        idt[v].off2 = (u32)(h >> 32);
        idt[v].reserved = 0;
    }
}

/* CR0.WP, CR4.SMEP/SMAP, EFER.NXE from access-test control bits. */
static void set_paging_bits(u32 ctrl)
{
    if (shadow) {
        u64 bits = ((ctrl & AC_WP) ? 1 : 0) | ((ctrl & AC_SMEP) ? 2 : 0) |
                   ((ctrl & AC_SMAP) ? 4 : 0) | ((ctrl & AC_NXE) ? 8 : 0);
        pt_commit();
        hypercall(HC_SET_PAGING_BITS, bits, 0, 0, 0);
        return;
    }
    u64 cr0 = read_cr0() & ~(1UL << 16);
    write_cr0(cr0 | ((ctrl & AC_WP) ? (1UL << 16) : 0));
    u64 cr4 = read_cr4() & ~(3UL << 20);
    write_cr4(cr4 | ((ctrl & AC_SMEP) ? (1UL << 20) : 0) | ((ctrl & AC_SMAP) ? (1UL << 21) : 0));
    u64 efer = rdmsr(MSR_EFER) & ~(1UL << 11);
    wrmsr(MSR_EFER, efer | ((ctrl & AC_NXE) ? (1UL << 11) : 0));
}

#define CTRL_DEFAULT (AC_WP | AC_NXE)

/* -------------------------------------------------------------- page faults */

static void fatal_trap(struct frame *f, u64 cr2)
{
    static const char hex[] = "0123456789abcdef";
    static char msg[] = "kernel: unexpected exception vv err eeeeeeee rip rrrrrrrrrrrrrrrr "
                        "cr2 cccccccccccccccc\n";
    char *p = msg + 30;
    for (int i = 0; i < 2; i++)
        p[i] = hex[(f->vector >> (4 * (1 - i))) & 15];
    p = msg + 37;
    for (int i = 0; i < 8; i++)
        p[i] = hex[(f->error >> (4 * (7 - i))) & 15];
    p = msg + 50;
    for (int i = 0; i < 16; i++)
        p[i] = hex[(f->rip >> (4 * (15 - i))) & 15];
    p = msg + 71;
    for (int i = 0; i < 16; i++)
        p[i] = hex[(cr2 >> (4 * (15 - i))) & 15];
    kputs(msg);
    if (res) {
        res[RH_STATUS] = ST_TRAP | f->vector;
        res[RH_WORDS - 4] = f->vector;
        res[RH_WORDS - 3] = f->error;
        res[RH_WORDS - 2] = f->rip;
        res[RH_WORDS - 1] = cr2;
    }
    kexit(ST_TRAP | f->vector);
}

/* A fault in one of the access probes: make the probe return 1 | err << 8. */
static int probe_fault(struct frame *f, u64 cr2)
{
    u64 rip = f->rip;
    u64 r = 1 | (f->error << 8);
    if (rip == (u64)kprobe_read_insn) {
        f->rip = (u64)kprobe_read_end;
    } else if (rip == (u64)kprobe_write_insn) {
        f->rip = (u64)kprobe_write_end;
    } else if (rip == (u64)uprobe_read_insn) {
        f->rip = (u64)uprobe_read_end;
    } else if (rip == (u64)uprobe_write_insn) {
        f->rip = (u64)uprobe_write_end;
    } else if (cr2 == rip && (rip - ACCESS_VA < ACC_SLOTS * (LARGE_SIZE + PAGE_SIZE) ||
                              rip - REMAP_VA < REMAP_MAX * PAGE_SIZE)) {
        f->rip = (f->cs & 3) ? (u64)uprobe_fetch_end : (u64)kprobe_fetch_end;
        f->rsp += 8;
    } else {
        return 0;
    }
    f->rax = r;
    return 1;
}

static int demand_fault(struct percpu *pc, struct frame *f, u64 cr2)
{
    if (f->error & PTE_P)
        return 0;
    for (u64 i = 0; i < ndemand; i++) {
        if (cr2 - demand[i].va < demand[i].npages * PAGE_SIZE) {
            u64 *p = pte_ptr(pc->root, cr2, 1, 1);
            pte_write(p, alloc_frames(1, PAGE_SIZE) | PTE_P | PTE_W | PTE_U);
            return 1;
        }
    }
    return 0;
}

static int cow_fault(struct percpu *pc, struct frame *f, u64 cr2)
{
    if ((f->error & 3) != 3)
        return 0;
    u64 *p = pte_ptr(pc->root, cr2, 1, 0);
    if (!p || !(*p & PTE_COW))
        return 0;
    u64 v = *p;
    u64 frame = v & PTE_ADDR;
    u64 idx = (frame - cow_base) >> 12;
    if (idx < cow_npages && cow_ref[idx] > 1) {
        u64 n = alloc_frames(1, PAGE_SIZE);
        copy_page(n, frame);
        cow_ref[idx]--;
        v = (v & ~PTE_ADDR) | n;
    }
    pte_write(p, (v & ~PTE_COW) | PTE_W);
    tlb_invlpg(cr2);
    return 1;
}

i64 syscall_dispatch(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 nr);
static int attack_fixup(struct frame *f);

void trap(struct frame *f)
{
    struct percpu *pc = this_cpu();
    if (res)
        res[RH_TRAPS]++;
    if (f->vector == 3 && f->rip == (u64)usys_gate + 1 && (f->cs & 3) == 3) {
        /* the system-call gate (u_entry.S) */
        u64 nr = f->rax;
        f->rax = (u64)syscall_dispatch(f->rdi, f->rsi, f->rdx, f->r10, f->r8, nr);
        /* the timer workload's task 0 runs with interrupts on */
        if (nr == SYS_TIMER && f->rax == 0)
            f->rflags |= RFLAGS_IF;
        if (nr == SYS_TIMER_STOP || (nr == SYS_INTERRUPTS && !f->rdi))
            f->rflags &= ~RFLAGS_IF;
        if (nr == SYS_INTERRUPTS && f->rdi)
            f->rflags |= RFLAGS_IF;
        return;
    }
    if (f->vector == 14) {
        u64 cr2 = read_cr2();
        if (res)
            res[RH_FAULTS]++;
        if (probe_fault(f, cr2) || demand_fault(pc, f, cr2) || cow_fault(pc, f, cr2)) {
            pt_commit();
            return;
        }
        /* fault-loop: return without fixing anything, forever */
        if (workload == WL_FAULT_LOOP && cr2 == FAULT_LOOP_VA)
            return;
        if (attack_fixup(f))
            return;
        fatal_trap(f, cr2);
    }
    if (attack_fixup(f))
        return;
    fatal_trap(f, 0);
}

/* ------------------------------------------------------------- interrupts */

/* What irq_common (entry.S) saved: every general register, then the vector,
 * a zero error code and the interrupt frame. */
struct iframe {
    u64 r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss;
};

/* The timer workload's user tasks, on CPU 0: a task is its saved frame and
 * its address space; the timer interrupt switches between them. */
struct task {
    struct iframe f;
    u64 space;
    u64 done;
};
static struct task tasks[MAX_TASKS];
static u64 ntasks, cur_task;

/* The CPUs that have booted (bit per CPU), and the shootdown under way:
 * its page and the CPUs that have not invalidated it yet. */
static volatile u64 cpus_online, shoot_va, shoot_pending;

static void count(u64 word)
{
    if (res)
        __atomic_add_fetch(&res[word], 1, __ATOMIC_SEQ_CST);
}

static i64 sys_pte(struct percpu *pc, u64 va, u64 op, u64 arg);

/* SYS_SHOOTDOWN, as a kernel unmaps on SMP: the new entry, the local
 * INVLPG, then a fixed IPI to each other online CPU (x2APIC ICR: vector,
 * physical destination = the CPU's APIC ID, its index here), whose handler
 * invalidates the page; wait until all have. Interrupts stay off here. */
static i64 sys_shootdown(struct percpu *pc, u64 va, u64 frame)
{
    if (sys_pte(pc, va, PTE_OP_FRAME, frame) < 0)
        return -1;
    u64 others = cpus_online & ~(1UL << pc->cpu);
    shoot_va = va;
    u64 n = 0;
    for (u64 c = 0; c < MAX_CPUS; c++)
        n += (others >> c) & 1;
    shoot_pending = n;
    for (u64 c = 0; c < MAX_CPUS; c++)
        if (others & (1UL << c))
            wrmsr(X2APIC_ICR, (c << 32) | (1UL << 14) | VEC_SHOOTDOWN);
    while (shoot_pending)
        __asm__ volatile("pause" ::: "memory");
    return 0;
}

/* A tick that interrupted user mode: save the task, resume the next one
 * that is not done (round robin) in its own address space. */
static void switch_task(struct percpu *pc, struct iframe *f)
{
    u64 next = cur_task;
    for (u64 k = 1; k < ntasks; k++) {
        u64 t = (cur_task + k) % ntasks;
        if (!tasks[t].done) {
            next = t;
            break;
        }
    }
    if (next == cur_task)
        return;
    tasks[cur_task].f = *f;
    tasks[cur_task].space = pc->space;
    *f = tasks[next].f;
    cur_task = next;
    pc->space = tasks[next].space;
    load_root(pc, space_root[pc->space]);
    count(RH_SWITCHES);
}

void irq(struct iframe *f)
{
    struct percpu *pc = this_cpu();
    switch (f->vector) {
    case VEC_TIMER:
        count(RH_TICKS);
        if (!(f->cs & 3))
            count(RH_KTICKS);
        else if (ntasks > 1)
            switch_task(pc, f);
        apic_eoi();
        break;
    case VEC_SHOOTDOWN:
        tlb_invlpg(shoot_va);
        count(RH_IPIS);
        __atomic_sub_fetch(&shoot_pending, 1, __ATOMIC_SEQ_CST);
        apic_eoi();
        break;
    default:
        break; /* spurious: no EOI */
    }
}

static i64 sys_map(u64 space, u64 va, u64 npages, u64 flags);

/* SYS_TIMER: tasks 1..n-1 start at entry(index) on a stack of their own in
 * a new address space; the timer fires every period ns (the APIC bus runs
 * at 1 GHz under KVM) and its first tick is awaited here, at CPL0, with
 * sti; hlt. */
static i64 sys_timer(struct percpu *pc, u64 period, u64 n, u64 entry)
{
    if (pc->cpu != 0 || ntasks || !n || n > MAX_TASKS || period < 10000 || period > 1000000000UL)
        return -1;
    for (u64 t = 1; t < n; t++) {
        u64 s = new_space();
        if (s == ~0UL || sys_map(s, DATA2_VA, TASK_STACK_PAGES, MAP_W) < 0)
            return -1;
        struct iframe *f = &tasks[t].f;
        memset(f, 0, sizeof(*f));
        f->rip = entry;
        f->cs = 0x23;
        f->rflags = 0x2 | RFLAGS_IF;
        f->rsp = DATA2_VA + TASK_STACK_PAGES * PAGE_SIZE;
        f->ss = 0x1b;
        f->rdi = t;
        tasks[t].space = s;
        tasks[t].done = 0;
    }
    tasks[0].done = 0;
    cur_task = 0;
    ntasks = n;
    u64 ticks = res[RH_TICKS];
    wrmsr(X2APIC_TIMER_DIV, 0xb); /* divide by 1 */
    wrmsr(X2APIC_LVT_TIMER, VEC_TIMER | (1UL << 17)); /* periodic */
    wrmsr(X2APIC_TIMER_INIT, period);
    while (res[RH_TICKS] == ticks)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    return 0;
}

static i64 sys_timer_stop(void)
{
    wrmsr(X2APIC_LVT_TIMER, 1UL << 16); /* masked */
    wrmsr(X2APIC_TIMER_INIT, 0);
    ntasks = 0;
    return (i64)res[RH_TICKS];
}

/* --------------------------------------------------------------- syscalls */

static i64 sys_map(u64 space, u64 va, u64 npages, u64 flags)
{
    if (space >= nspaces || (va & (PAGE_SIZE - 1)) || !npages)
        return -1;
    u64 root = space_root[space];
    u64 w = (flags & MAP_W) ? PTE_W : 0;
    if (flags & MAP_DEMAND) {
        if (ndemand == MAX_DEMAND)
            return -1;
        demand[ndemand].va = va;
        demand[ndemand].npages = npages;
        ndemand++;
        return 0;
    }
    if (flags & MAP_LARGE) {
        if ((va & (LARGE_SIZE - 1)) || (npages & 511))
            return -1;
        u64 f = alloc_frames(npages, LARGE_SIZE);
        for (u64 i = 0; i < npages / 512; i++) {
            u64 *p = pte_ptr(root, va + i * LARGE_SIZE, 2, 1);
            pte_write(p, (f + i * LARGE_SIZE) | PTE_P | PTE_U | PTE_PS | w);
        }
        return (i64)f;
    }
    u64 f = alloc_frames(npages, PAGE_SIZE);
    map_range(root, va, f, npages, PTE_P | PTE_U | w);
    return (i64)f;
}

static i64 sys_clone(u64 src, u64 va, u64 npages)
{
    if (src >= nspaces || npages > COW_MAX)
        return -1;
    u64 dst = new_space();
    if (dst == ~0UL)
        return -1;
    u64 sroot = space_root[src], droot = space_root[dst];
    u64 *sp = 0, *dp = 0;
    if (!cow_npages) {
        /* the refcounts cover the source region's frames, which SYS_MAP
         * allocated contiguously */
        u64 *first = pte_ptr(sroot, va, 1, 0);
        if (!first || !(*first & PTE_P))
            return -1;
        cow_base = *first & PTE_ADDR;
        cow_npages = npages;
        for (u64 i = 0; i < npages; i++)
            cow_ref[i] = 1;
    }
    for (u64 i = 0; i < npages; i++, va += PAGE_SIZE) {
        if (!sp || !(va & 0x1ff000)) {
            sp = pte_ptr(sroot, va, 1, 0);
            dp = pte_ptr(droot, va, 1, 1);
            if (!sp)
                return -1;
        }
        u64 v = *sp;
        if (v & PTE_P) {
            if (v & PTE_W) {
                v = (v & ~PTE_W) | PTE_COW;
                pte_write(sp, v);
            }
            pte_write(dp, v);
            u64 idx = ((v & PTE_ADDR) - cow_base) >> 12;
            if (idx >= cow_npages)
                return -1;
            if (cow_ref[idx] < 255)
                cow_ref[idx]++;
        }
        sp++;
        dp++;
    }
    tlb_flush();
    return (i64)dst;
}

static i64 sys_clear_ad(struct percpu *pc, u64 va, u64 npages)
{
    u64 *p = 0;
    for (u64 i = 0; i < npages; i++, va += PAGE_SIZE, p++) {
        if (!p || !(va & 0x1ff000)) {
            p = pte_ptr(pc->root, va, 1, 0);
            if (!p)
                return -1;
        }
        pte_clear_ad(p);
    }
    tlb_flush();
    return 0;
}

/* Low bytes of npages entries at level (1 or 2) from va, packed 8 to a word
 * into the results at word index out. */
static i64 sys_read_ptes(struct percpu *pc, u64 va, u64 npages, u64 out, u64 level)
{
    if (level == 3) {
        /* The guest-physical address of each 4 KiB leaf entry, a word each
         * (0 where there is none): what a VMM log of entries names. */
        if (npages > res_words || out > res_words - npages)
            return -1;
        for (u64 i = 0; i < npages; i++, va += PAGE_SIZE)
            res[out + i] = (u64)pte_ptr(pc->root, va, 1, 0);
        return 0;
    }
    if (level < 1 || level > 2 || out + (npages + 7) / 8 > res_words)
        return -1;
    u64 step = level == 1 ? PAGE_SIZE : LARGE_SIZE;
    u8 *o = (u8 *)&res[out];
    for (u64 i = 0; i < npages; i++, va += step) {
        u64 *p = pte_ptr(pc->root, va, level, 0);
        o[i] = p ? (u8)*p : 0;
    }
    return 0;
}

static i64 sys_split(struct percpu *pc, u64 va)
{
    u64 *pde = pte_ptr(pc->root, va, 2, 0);
    if (!pde || !(*pde & PTE_PS))
        return -1;
    u64 v = *pde;
    u64 pt = alloc_frames(1, PAGE_SIZE);
    u64 flags = v & (PTE_P | PTE_W | PTE_U | PTE_A | PTE_D);
    u64 base = (v & PTE_ADDR & ~(LARGE_SIZE - 1)) | flags;
    u64 *t = (u64 *)pt;
    if (!shadow || pt_direct) {
        for (u64 i = 0; i < 512; i++)
            t[i] = base + i * PAGE_SIZE;
    } else {
        for (u64 i = 0; i < 512; i++)
            pte_write(&t[i], base + i * PAGE_SIZE);
    }
    pte_write(pde, pt | PTE_P | PTE_W | PTE_U | PTE_A);
    tlb_flush();
    return 0;
}

static i64 sys_collapse(struct percpu *pc, u64 va)
{
    u64 *pde = pte_ptr(pc->root, va, 2, 0);
    if (!pde || (*pde & PTE_PS) || !(*pde & PTE_P))
        return -1;
    u64 *t = (u64 *)(*pde & PTE_ADDR);
    u64 ad = 0;
    for (u64 i = 0; i < 512; i++)
        ad |= t[i];
    u64 v = (t[0] & PTE_ADDR) | PTE_P | PTE_W | PTE_U | PTE_PS | (ad & (PTE_A | PTE_D));
    pte_write(pde, v);
    tlb_flush();
    return 0;
}

static i64 sys_map_1g(struct percpu *pc, u64 va)
{
    if (!shadow)
        return -3;
    if (va & ((1UL << 30) - 1))
        return -1;
    u64 *p = pte_ptr(pc->root, va, 3, 1);
    pte_write(p, PTE_P | PTE_W | PTE_U | PTE_PS);
    tlb_flush();
    return 0;
}

/* The access test (see struct acc_stage). All 4 KiB PTEs point at one frame,
 * the 2 MiB PDEs at one 2 MiB frame, with a ret (0xc3) at each slot's byte.
 * Stores into page tables are expensive on this host (each is emulated and
 * tracked by KVM's shadow MMU), so a batch writes its PTEs and PDEs as two
 * contiguous runs. */
static i64 access_init(struct percpu *pc)
{
    if (acc.ready)
        return 0;
    u64 root = space_root[0];
    acc.pd = pte_ptr(root, ACCESS_VA, 2, 1);
    acc.pt = (u64 *)alloc_table();
    u64 frame4k = alloc_frames(1, PAGE_SIZE);
    u64 frame2m = alloc_frames(512, LARGE_SIZE);
    *(u8 *)(frame4k + ACCESS_OFF) = 0xc3;
    for (u64 i = 0; i < ACC_SLOTS; i++)
        *(u8 *)(frame2m + i * PAGE_SIZE + ACCESS_OFF) = 0xc3;
    acc.stage = (struct acc_stage *)alloc_table();
    acc.stage->frame4k = frame4k;
    acc.stage->frame2m = frame2m;
    acc.stage->pt = (u64)acc.pt;
    map_range(root, ACC_STAGE_VA, (u64)acc.stage, 1, PTE_P | PTE_W | PTE_U);
    map_range(root, ACC_PT_VA, (u64)acc.pt, 1, PTE_P | PTE_U);
    map_range(root, ACC_PD_VA, (u64)acc.pd & ~(PAGE_SIZE - 1), 1, PTE_P | PTE_U);
    acc.ctrl = CTRL_DEFAULT;
    acc.ready = 1;
    load_root(pc, pc->root);
    return 0;
}

/* Copy n entries into a live page table: one rep movsq natively (and with
 * direct page-table writes), batched MMU_UPDATE pairs under shadow paging. */
static void pt_copy(u64 *dst, const u64 *src, u64 n)
{
    if (shadow && !pt_direct) {
        for (u64 i = 0; i < n; i++)
            pte_write(&dst[i], src[i]);
        return;
    }
    __asm__ volatile("rep movsq" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* One batch: paging bits ctrl, n slots' entries from the staging page, nk
 * supervisor cases. n == 0 ends the test (default paging bits, PDEs
 * cleared). */
static i64 sys_access(u64 n, u64 nk, u64 ctrl)
{
    if (!acc.ready || n > ACC_SLOTS || nk > n || (ctrl & ~(u64)(AC_WP | AC_SMEP | AC_SMAP | AC_NXE)))
        return -1;
    struct acc_stage *st = acc.stage;
    if (n == 0) {
        ctrl = CTRL_DEFAULT;
        for (u64 i = 0; i < ACC_SLOTS; i++)
            st->pde[i] = 0;
        n = ACC_SLOTS;
    }
    if (ctrl != acc.ctrl) {
        set_paging_bits((u32)ctrl);
        acc.ctrl = (u32)ctrl;
    }
    pt_copy(acc.pt, st->pte, n);
    pt_copy(acc.pd, st->pde, n);
    tlb_flush();
    for (u64 k = 0; k < nk; k++) {
        u64 x = st->kcase[k], va = x & ~7UL, r;
        if (x & 4)
            __asm__ volatile("pushfq; orl $0x40000, (%%rsp); popfq" : : : "memory", "cc");
        if ((x & 3) == 0)
            r = kprobe_read(va);
        else if ((x & 3) == 1)
            r = kprobe_write(va);
        else
            r = kprobe_fetch(va);
        if (x & 4)
            __asm__ volatile("pushfq; andl $~0x40000, (%%rsp); popfq" : : : "memory", "cc");
        st->kres[k] = r;
    }
    return 0;
}

/* Point n PTEs from va at n frames from gpa (RAM), flush this CPU. */
static i64 sys_remap(struct percpu *pc, u64 va, u64 n, u64 gpa)
{
    if ((gpa & (PAGE_SIZE - 1)) || gpa < (u64)__image_end || gpa + n * PAGE_SIZE > frame_limit)
        return -1;
    u64 *p = 0;
    for (u64 i = 0; i < n; i++, va += PAGE_SIZE, p++) {
        if (!p || !(va & 0x1ff000)) {
            p = pte_ptr(pc->root, va, 1, 0);
            if (!p)
                return -1;
        }
        pte_write(p, (gpa + i * PAGE_SIZE) | PTE_P | PTE_W | PTE_U);
    }
    tlb_flush();
    return 0;
}

#define HIDDEN_GPA 0x10000000000UL
#define RECURSIVE_SLOT 5UL

/* The hostile workload's kernel steps (see u_user.c). */
static i64 sys_hostile(struct percpu *pc, u64 step, u64 out)
{
    u64 root = pc->root;
    switch (step) {
    case 0: { /* a user mapping inside the hole (PML4 slot 510) */
        u64 f = alloc_frames(1, PAGE_SIZE);
        *(volatile u64 *)f = 0x686f6c655f6d6170UL;
        u64 *p = pte_ptr(root, HOLE_VA, 1, 1);
        pte_write(p, f | PTE_P | PTE_W | PTE_U);
        tlb_flush();
        return 0;
    }
    case 1: { /* user PTEs at the hidden region and beyond RAM */
        u64 *p = pte_ptr(root, HOSTILE_VA, 1, 1);
        pte_write(p, HIDDEN_GPA | PTE_P | PTE_W | PTE_U);
        u64 beyond = ram + (16UL << 20);
        if (beyond - 0xf0000000UL < 0x10000000UL)
            beyond = 0xe0000000UL;
        pte_write(p + 1, beyond | PTE_P | PTE_W | PTE_U);
        tlb_flush();
        return 0;
    }
    case 2: /* recursive: PML4[5] -> the PML4 itself */
        pte_write(&((u64 *)root)[RECURSIVE_SLOT], root | PTE_P | PTE_W | PTE_U);
        tlb_flush();
        return (i64)root;
    case 3: { /* looping: the hostile PD's last entry points at that PD */
        u64 *pd = pte_ptr(root, HOSTILE_VA, 2, 0);
        if (!pd)
            return -1;
        u64 pdg = (u64)pd & ~(PAGE_SIZE - 1);
        pte_write(&((u64 *)pdg)[511], pdg | PTE_P | PTE_W | PTE_U);
        tlb_flush();
        return (i64)(*pd & PTE_ADDR); /* the PT the loop exposes as data */
    }
    case 4: { /* garbage hypercall arguments; results into records[out..] */
        static const u64 calls[][5] = {
            {0, 0, 0, 0, 0},
            {1000, 0, 0, 0, 0},
            {HC_CONSOLE_WRITE, ~0UL - 4, 8, 0, 0},
            {HC_CONSOLE_WRITE, 0x1000, 5000, 0, 0},
            {HC_START_VCPU, 99, 0, 0, 0},
            {HC_START_VCPU, 0, 0, 0, 0},
            {HC_LOAD_CR3, 0x1234, 0, 0, 0},
            {HC_LOAD_CR3, HIDDEN_GPA, 0, 0, 0},
            {HC_INVLPG, 0x8000000000000000UL, 0, 0, 0},
            {HC_MMU_UPDATE, HIDDEN_GPA, 1, 0, 0},
            {HC_MMU_UPDATE, 0x1000, 257, 0, 0},
            {HC_MMU_UPDATE, 0x1004, 1, 0, 0},
            {HC_SET_TRAP_TABLE, 0x123, 0, 0, 0},
            {HC_SET_PAGING_BITS, 0xfff0, 0, 0, 0},
        };
        u64 n = sizeof(calls) / sizeof(calls[0]);
        if (RH_WORDS + out + n + 1 > res_words)
            return -1;
        for (u64 i = 0; i < n; i++)
            res[RH_WORDS + out + i] =
                (u64)hypercall(calls[i][0], calls[i][1], calls[i][2], calls[i][3], calls[i][4]);
        /* a console write that runs 4 bytes past the end of RAM */
        res[RH_WORDS + out + n] = (u64)hypercall(HC_CONSOLE_WRITE, ram - 4, 8, 0, 0);
        return (i64)n + 1;
    }
    }
    return -1;
}

/* ----------------------------------------------------------------- attack */

/* The attack workload's kernel side: a guest kernel that uses its CPL0 to
 * write into the VMM's hidden region through the hole, as a hostile one
 * would. It knows the KVM glue's layout (shadow-mmu/src/kvm/layout.rs and
 * mailbox.rs) and the hidden region's GPA (resources/ABI.md); the arena's
 * size it probes. Each SYS_ATTACK carries out one step of one target class
 * (ATK_* in guest.h) with the user's random numbers, notes what it targeted
 * in the results header (RH_ATK_*: the VMM reads them however the VM
 * ends), and returns 0 (done), 1 (the access faulted: nothing written) or
 * 2 (nothing to target). Native paging has no hole: -3. */

#define SYS_SIZE (2UL << 20)
#define ARENA_GPA (HIDDEN_GPA + SYS_SIZE)
#define ARENA_VA (HOLE_VA + SYS_SIZE)
#define L_GDT 0x3000UL
#define L_TSS 0x5000UL
#define L_TSS_STRIDE 128UL
#define L_TRAMPOLINE 0x6000UL
#define L_TRAMPOLINE_LEN 5284UL /* trampoline.bin */
#define L_BLOCKS 0x10000UL
#define L_BLOCK 0x4000UL
#define L_NMI_BLOCKS (L_BLOCKS + 32 * L_BLOCK)
#define L_IDTS (L_NMI_BLOCKS + 32 * L_BLOCK)
#define L_IDT_STRIDE 4096UL
#define L_CHAIN 0x100UL
#define L_CHAIN_END 0x3400UL
#define L_ROOTS 0x3400UL
#define L_ROOT_SLOTS 64UL
#define L_SWITCHED 0x3800UL
#define L_STUB 32UL
#define L_HOLE_PT 0x2000UL
#define L_ARMS (L_IDTS + 32 * L_IDT_STRIDE)
#define L_ARM_GPTES 0x1000UL
#define L_ARM_SPTES 0x2000UL
#define L_ARM_BASE 0x3810UL
#define L_ARM_SPT 0x3818UL
#define L_ARM_CR2 0x3820UL
#define L_FRAME 80UL /* bytes the entry leaves below the IST top */
#define ENTRY_FLAGS (PTE_P | PTE_W | PTE_U | PTE_A) /* 0x27 */
#define BIT63 (1UL << 63)
#define CR0_WP (1UL << 16)
#define ATK_DATA_PAGES 64

extern u64 kprobe_load64(u64 va, u64 *out), kprobe_store64(u64 va, u64 v), kprobe_store8(u64 va, u64 b);
extern char kprobe_load64_insn[], kprobe_load64_end[], kprobe_store64_insn[], kprobe_store64_end[];
extern char kprobe_store8_insn[], kprobe_store8_end[], atk_fake_ret[];
extern void atk_forged_exit(u64 ist_top);
extern u64 atk_fake_exc(u64 stub, u64 ist_top, u64 err, u64 cr2);

static u64 atk_arena;   /* arena bytes the hole maps (probed once) */
static u64 atk_scratch; /* a RAM page: forged frames' stack, a hypercall */

/* From trap(): an attack probe that faulted (any vector) returns 1 |
 * vector << 8; an exception the VMM delivered for a fake one goes back to
 * where the fake one returns. */
static int attack_fixup(struct frame *f)
{
    u64 rip = f->rip, to;
    if (rip == (u64)kprobe_load64_insn)
        to = (u64)kprobe_load64_end;
    else if (rip == (u64)kprobe_store64_insn)
        to = (u64)kprobe_store64_end;
    else if (rip == (u64)kprobe_store8_insn)
        to = (u64)kprobe_store8_end;
    else
        return workload == WL_ATTACK && rip == (u64)atk_fake_ret;
    f->rip = to;
    f->rax = 1 | f->vector << 8;
    return 1;
}

static inline u64 read_cr3(void)
{
    u64 v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

static u64 mix(u64 x)
{
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15UL;
    return x ^ (x >> 29);
}

static u64 ram_page(u64 r)
{
    u64 top = ram < KERNEL_DIRECT_MAX ? ram : KERNEL_DIRECT_MAX;
    return (r % top) & PTE_ADDR;
}

static int in_arena(u64 gpa)
{
    return gpa - ARENA_GPA < atk_arena;
}

/* Hole address of vCPU cpu's block, its IST top, its NMI block. */
static u64 atk_block(u64 cpu)
{
    return HOLE_VA + L_BLOCKS + cpu * L_BLOCK;
}

static u64 atk_top(u64 cpu)
{
    return atk_block(cpu) + L_BLOCK;
}

/* A crafted or random value for a word that held old. */
static u64 atk_value(u64 r, u64 old)
{
    u64 x = mix(r);
    switch ((r >> 56) % 12) {
    case 0: return x;
    case 1: return 0;
    case 2: return ~0UL;
    case 3: return old ^ (1UL << (x % 64));
    case 4: return old + (x % 16) - 8;
    case 5: return ((HIDDEN_GPA + (x % SYS_SIZE)) & PTE_ADDR) | ENTRY_FLAGS;
    case 6: return ((ARENA_GPA + (x % (atk_arena ? atk_arena : SYS_SIZE))) & PTE_ADDR) | ENTRY_FLAGS;
    case 7: return ram_page(x) | ENTRY_FLAGS;
    case 8: return BIT63 | x;
    case 9: return HOLE_VA + (x % (SYS_SIZE + atk_arena));
    case 10: return (u64)kstacks + (x % (MAX_CPUS << KSTACK_SHIFT));
    default: return 0xf0000000UL | ENTRY_FLAGS;
    }
}

static u64 atk_store(u64 va, u64 v)
{
    res[RH_ATK_WHERE] = va;
    res[RH_ATK_VALUE] = v;
    return kprobe_store64(va, v) ? 1 : 0;
}

static u64 atk_load(u64 va)
{
    u64 v = 0;
    (void)kprobe_load64(va, &v);
    return v;
}

/* Hole address of the shadow entry at level (4..1) for va on the root the
 * CPU runs on, 0 if its path leaves the arena or ends earlier. */
static u64 shadow_entry(u64 va, int level)
{
    u64 table = read_cr3() & PTE_ADDR;
    for (int l = 4;; l--) {
        if (!in_arena(table))
            return 0;
        u64 e = ARENA_VA + (table - ARENA_GPA) + 8 * ((va >> (12 + 9 * (l - 1))) & 511);
        if (l == level)
            return e;
        u64 v;
        if (kprobe_load64(e, &v) || !(v & PTE_P) || (v & PTE_PS))
            return 0;
        table = v & PTE_ADDR;
    }
}

/* A shadow root the trampoline's root cache of this vCPU holds, 0 if none. */
static u64 cached_root(u64 cpu, u64 r)
{
    for (u64 i = 0; i < L_ROOT_SLOTS; i++) {
        u64 v = atk_load(atk_block(cpu) + L_ROOTS + 16 * ((i + r) % L_ROOT_SLOTS) + 8);
        if (v)
            return v;
    }
    return 0;
}

static void atk_prepare(void)
{
    if (!atk_arena) {
        u64 v, n = 0;
        while (n < 511 && !kprobe_load64(ARENA_VA + n * SYS_SIZE, &v))
            n++;
        atk_arena = n ? n * SYS_SIZE : PAGE_SIZE;
    }
    if (!atk_scratch) {
        atk_scratch = alloc_table();
        /* a hypercall instruction at offset 0, its block at 64 */
        u8 *p = (u8 *)atk_scratch;
        p[0] = 0x0f;
        p[1] = 0x0b;
        p[2] = 'S';
        p[3] = 'H';
        p[4] = 'M';
        p[5] = 0xc3;
    }
}

/* The frame and hypercall a forged exit claims. */
static void atk_forge(struct percpu *pc, u64 r1, u64 r2, u64 r3)
{
    u64 top = atk_top(pc->cpu);
    static const u64 calls[] = {HC_INVLPG, HC_FLUSH_TLB, HC_LOAD_CR3, HC_MMU_UPDATE, HC_CONSOLE_WRITE,
                                HC_SET_PAGING_BITS, HC_MEMORY_MAP, 99};
    u64 *block = (u64 *)(atk_scratch + 64);
    block[0] = calls[r3 % 8];
    block[1] = atk_value(r3 >> 3, DATA_VA);
    block[2] = (r3 >> 20) % 3;
    block[5] = 0;
    u64 vec = (r1 & 1) ? 14 : (r1 & 2) ? 6 : (r1 >> 2) % 40;
    u64 ukframe = pc->kstack_top; /* the user's syscall frame: rip cs rflags rsp ss */
    u64 rip, cs, rfl, rsp, ss;
    switch ((r2 >> 4) % 4) {
    case 0: /* from this kernel, at the hypercall in the scratch page */
        rip = atk_scratch;
        cs = 0x08;
        rfl = 2;
        rsp = atk_scratch + 0xf00;
        ss = 0x10;
        break;
    case 1: /* from the user, as the system call's own frame says */
        rip = *(u64 *)(ukframe - 40);
        cs = *(u64 *)(ukframe - 32);
        rfl = *(u64 *)(ukframe - 24);
        rsp = *(u64 *)(ukframe - 16);
        ss = *(u64 *)(ukframe - 8);
        break;
    default: /* anything */
        rip = atk_value(r2, (u64)atk_fake_ret);
        cs = (r2 & 8) ? atk_value(r2 >> 8, 0x08) : 0x23;
        rfl = atk_value(r2 >> 16, 2);
        rsp = (r2 & 4) ? atk_scratch + 0xf00 : atk_value(r2 >> 24, 0);
        ss = atk_value(r2 >> 32, 0x10);
        break;
    }
    u64 cr2 = (r1 & 4) ? DATA_VA + ((r1 >> 8) % ATK_DATA_PAGES) * PAGE_SIZE : atk_value(r1 >> 8, 0);
    u64 w[10] = {cr2, r2, (r2 & 3) ? atk_scratch + 64 : r3, vec, r1 >> 40, rip, cs, rfl, rsp, ss};
    for (u64 i = 0; i < 10; i++)
        (void)kprobe_store64(top - L_FRAME + 8 * i, w[i]);
    res[RH_ATK_WHERE] = vec;
    res[RH_ATK_VALUE] = cr2;
}

static u64 atk_trampoline(u64 r1, u64 r2, u64 r3)
{
    /* the stubs' out, ret and push bytes, or anywhere */
    u64 off = (r1 & 1) ? (r1 >> 1) % L_TRAMPOLINE_LEN : L_STUB * ((r1 >> 1) % 32) + 12 + (r1 >> 8) % 3;
    static const u8 bytes[] = {0x90, 0xcc, 0xc3, 0xf4, 0x00, 0xff};
    u64 b = (r2 & 1) ? (r2 >> 8) & 0xff : bytes[(r2 >> 1) % 6];
    u64 va = HOLE_VA + L_TRAMPOLINE + off;
    res[RH_ATK_WHERE] = va;
    res[RH_ATK_VALUE] = b;
    if (!(r3 & 1))
        return kprobe_store8(va, b) ? 1 : 0; /* read-only: faults */
    u64 cr0 = read_cr0();
    write_cr0(cr0 & ~CR0_WP);
    u64 r = kprobe_store8(va, b);
    write_cr0(cr0);
    return r ? 1 : 0;
}

/* A link (levels 4 to 2) or leaf (level 1) of a data page, changed. */
static u64 atk_entry(u64 r1, u64 r2, int leaf)
{
    u64 va = DATA_VA + (r1 % ATK_DATA_PAGES) * PAGE_SIZE;
    int level = leaf ? 1 : 2 + (int)((r1 >> 8) % 3);
    if (leaf && (r1 & 0x10000))
        va = (u64)kstacks, level = 2; /* the kernel's own 2 MiB leaf */
    u64 e = shadow_entry(va, level);
    if (!e && leaf)
        e = shadow_entry(va, ++level);
    if (!e)
        return 2;
    u64 old = atk_load(e), v;
    u64 table = ARENA_GPA + ((e - ARENA_VA) & PTE_ADDR);
    u64 flags = old & 0xfff;
    switch (r2 % 13) {
    case 0: v = old & ~PTE_P; break;
    case 1: v = old & ~PTE_U; break;
    case 2: v = old & ~PTE_W; break;
    case 3: v = old | PTE_NX; break;
    case 4: v = ram_page(mix(r2)) | flags; break;
    case 5: v = ((r2 & 0x100) ? 0xf0000000UL : ((ram + (16UL << 20)) & PTE_ADDR)) | flags; break;
    case 6: v = (HIDDEN_GPA + L_BLOCKS + ((r2 >> 8) % 64) * PAGE_SIZE) | flags; break;
    case 7: v = (ARENA_GPA + ((mix(r2) % atk_arena) & PTE_ADDR)) | flags; break;
    case 8: v = table | flags; break; /* a loop */
    case 9: v = (read_cr3() & PTE_ADDR) | flags; break;
    case 10: v = old | PTE_PS; break;
    case 11: v = old | (1UL << 51); break;
    default: v = leaf ? (space_root[0] | ENTRY_FLAGS | PTE_D) : atk_value(r2 >> 8, old); break;
    }
    u64 r = atk_store(e, v);
    invlpg(va);
    return r;
}

static u64 atk_raw_cr3(struct percpu *pc, u64 r1, u64 r2)
{
    u64 v;
    switch (r1 % 5) {
    case 0: v = cached_root(pc->cpu, r2); break;
    case 1: v = ARENA_GPA + ((mix(r2) % atk_arena) & PTE_ADDR); break;
    case 2: v = space_root[r2 % nspaces]; break;
    case 3: v = ram_page(mix(r2)); break;
    default: v = HIDDEN_GPA + ((r2 % 16) << 12); break;
    }
    res[RH_ATK_WHERE] = read_cr3();
    res[RH_ATK_VALUE] = v;
    if (!v)
        return 2;
    write_cr3(v);
    return 0;
}

/* Clear P on the level-2 link of a data page and touch it, n times. */
static u64 atk_relink(u64 n, u64 r2)
{
    u64 va = DATA_VA + (r2 % ATK_DATA_PAGES) * PAGE_SIZE, faulted = 0, x;
    res[RH_ATK_WHERE] = va;
    res[RH_ATK_VALUE] = n;
    for (u64 i = 0; i < n; i++) {
        u64 e = shadow_entry(va, 2);
        if (e) {
            u64 v = atk_load(e);
            faulted += kprobe_store64(e, v & ~PTE_P) != 0;
            invlpg(va);
        }
        faulted += kprobe_load64(va, &x) != 0;
    }
    return faulted ? 1 : 0;
}

/* What an ordinary kernel does when it unmaps and remaps a range: clear P
 * in its own PDE of a data page, invalidate, set it back, invalidate, touch
 * the page; n times. The shadow link under that PDE goes and comes back. */
static u64 atk_guest_relink(struct percpu *pc, u64 n, u64 r2)
{
    u64 va = DATA_VA + (r2 % ATK_DATA_PAGES) * PAGE_SIZE, x;
    u64 *p = pte_ptr(pc->root, va, 2, 0);
    if (!p || !(*p & PTE_P))
        return 2;
    u64 v = *p;
    res[RH_ATK_WHERE] = va;
    res[RH_ATK_VALUE] = n;
    for (u64 i = 0; i < n; i++) {
        pte_write(p, v & ~PTE_P);
        tlb_invlpg(va);
        pte_write(p, v);
        tlb_invlpg(va);
        (void)kprobe_load64(va, &x);
    }
    return 0;
}

static i64 sys_attack(struct percpu *pc, u64 class, u64 r1, u64 r2, u64 r3)
{
    if (class == ATK_GUEST_RELINK) {
        u64 r = atk_guest_relink(pc, r1, r2);
        res[r ? RH_ATK_SKIPPED : RH_ATK_DONE]++;
        return (i64)r;
    }
    if (!shadow)
        return -3;
    if (class >= ATK_CLASSES)
        return -1;
    atk_prepare();
    u64 cpu = (r3 >> 48) % ncpus, r = 0;
    res[RH_ATK_WHERE] = res[RH_ATK_VALUE] = 0;
    switch (class) {
    case ATK_IST: {
        u64 va = atk_top(cpu) - 8 * (1 + r1 % (L_FRAME / 8));
        r = atk_store(va, atk_value(r2, atk_load(va)));
        break;
    }
    case ATK_FORGED_EXIT:
        atk_forge(pc, r1, r2, r3);
        atk_forged_exit(atk_top(pc->cpu));
        break;
    case ATK_FAKE_EXC: {
        u64 pick = r1 % 8;
        u64 vec = pick < 4 ? 14 : pick == 4 ? 6 : pick == 5 ? 13 : pick == 6 ? 8 : (r1 >> 8) % 32;
        int has_ec = vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21;
        u64 cr2;
        switch ((r2 >> 4) % 4) {
        case 0: cr2 = DATA_VA + (r2 >> 8) % (2 * ATK_DATA_PAGES) * PAGE_SIZE; break;
        case 1: cr2 = FAULT_LOOP_VA + ((r2 >> 8) & 0xfff); break;
        default: cr2 = atk_value(r2 >> 8, DATA_VA); break;
        }
        u64 err = (r2 & 1) ? (r3 & 0x1f) : atk_value(r3, 0);
        res[RH_ATK_WHERE] = vec;
        res[RH_ATK_VALUE] = cr2;
        atk_fake_exc(HOLE_VA + L_TRAMPOLINE + L_STUB * vec, atk_top(pc->cpu), has_ec ? err : ~0UL, cr2);
        break;
    }
    case ATK_CHAIN: {
        u64 va = atk_block(cpu) + L_CHAIN + 8 * (r1 % ((L_CHAIN_END - L_CHAIN) / 8));
        r = atk_store(va, atk_value(r2, atk_load(va)));
        break;
    }
    case ATK_SWITCH: {
        u64 v;
        switch (r1 % 6) {
        case 0: v = space_root[r2 % nspaces] | BIT63; break;
        case 1: v = (read_cr3() & PTE_ADDR) | BIT63; break;
        case 2: v = HIDDEN_GPA | BIT63; break;
        case 3: v = 0x1000 | BIT63; break;
        case 4: v = (ram_page(mix(r2)) + 8) | BIT63; break;
        default: v = atk_value(r2, 0); break;
        }
        r = atk_store(atk_block(cpu) + L_SWITCHED, v);
        break;
    }
    case ATK_ROOTS: {
        u64 sp = r1 % nspaces, cr3 = space_root[sp], v;
        u64 slot = atk_block(pc->cpu) + L_ROOTS + 16 * ((cr3 >> 12) % L_ROOT_SLOTS);
        switch (r2 % 6) {
        case 0: v = cached_root(pc->cpu, r2 >> 8); break;
        case 1: v = ARENA_GPA + ((mix(r2) % atk_arena) & PTE_ADDR); break;
        case 2: v = cr3; break; /* the guest's own table as a root */
        case 3: v = HIDDEN_GPA + (((r2 >> 8) % 16) << 12); break;
        case 4: v = ram_page(mix(r2)); break;
        default: v = atk_value(r2 >> 8, 0); break;
        }
        if (kprobe_store64(slot, cr3 | BIT63) || atk_store(slot + 8, v)) {
            r = 1;
            break;
        }
        pc->space = sp;
        load_root(pc, cr3);
        break;
    }
    case ATK_NMI: {
        static const u64 vals[] = {~0UL, ~0UL - 1, 0, 1UL << 63};
        u64 va = HOLE_VA + L_NMI_BLOCKS + cpu * L_BLOCK;
        r = atk_store(va, (r1 & 4) ? atk_value(r2, atk_load(va)) : vals[r1 % 4]);
        break;
    }
    case ATK_GDT: {
        u64 va = HOLE_VA + L_GDT + 8 * (r1 % (5 + 2 * ncpus)), old = atk_load(va), v;
        switch (r2 % 4) {
        case 0: v = old & ~(1UL << 47); break;
        case 1: v = old ^ (3UL << 45); break;
        case 2: v = old ^ (1UL << 53); break;
        default: v = atk_value(r2 >> 2, old); break;
        }
        r = atk_store(va, v);
        break;
    }
    case ATK_IDT: {
        u64 vec = r1 % 256, va = HOLE_VA + L_IDTS + cpu * L_IDT_STRIDE + 16 * vec, old = atk_load(va), v;
        u64 h = exc_table[vec % 32];
        switch (r2 % 5) {
        case 0: v = old & ~(1UL << 47); break;
        case 1: v = (old & ~(7UL << 32)) | (((r2 >> 8) % 8) << 32); break;
        case 2: /* straight to the kernel's handler, past the VMM */
            v = (h & 0xffff) | (0x08UL << 16) | (0x8eUL << 40) | (((h >> 16) & 0xffff) << 48);
            break;
        case 3: va += 8, v = atk_value(r2 >> 8, atk_load(va)); break;
        default: v = atk_value(r2 >> 8, old); break;
        }
        r = atk_store(va, v);
        break;
    }
    case ATK_TSS: {
        static const u64 offs[] = {4, 36, 44, 102};
        u64 va = HOLE_VA + L_TSS + cpu * L_TSS_STRIDE + offs[r1 % 4], v;
        switch (r2 % 4) {
        case 0: v = atk_top((cpu + 1) % ncpus); break;
        case 1: v = atk_top(cpu) - 0x1000 - 8 * ((r2 >> 8) % 64); break;
        case 2: v = pc->kstack_top - 512; break;
        default: v = atk_value(r2 >> 8, 0); break;
        }
        r = atk_store(va, v);
        break;
    }
    case ATK_TRAMPOLINE:
        r = atk_trampoline(r1, r2, r3);
        break;
    case ATK_LINK:
    case ATK_LEAF:
        r = atk_entry(r1, r2, class == ATK_LEAF);
        break;
    case ATK_ARENA: {
        u64 va = ARENA_VA + ((r1 % atk_arena) & ~7UL);
        r = atk_store(va, atk_value(r2, atk_load(va)));
        break;
    }
    case ATK_RAW_CR3:
        r = atk_raw_cr3(pc, r1, r2);
        break;
    case ATK_RELINK:
        r = atk_relink(r1, r2);
        break;
    case ATK_READ: {
        u64 va = HOLE_VA + ((r1 % (SYS_SIZE + atk_arena)) & ~7UL);
        res[RH_ATK_WHERE] = va;
        r = kprobe_load64(va, &res[RH_ATK_VALUE]) ? 1 : 0;
        break;
    }
    case ATK_ARM: {
        u64 arm = HOLE_VA + L_ARMS + cpu * L_BLOCK, va, v;
        switch (r1 % 6) {
        case 0: /* the armed 2 MiB: the data pages', or anything */
            va = atk_block(cpu) + L_ARM_BASE;
            v = (r2 & 1) ? DATA_VA & ~0x1fffffUL : atk_value(r2, atk_load(va));
            break;
        case 1: /* the shadow page: another arena page, the system area */
            va = atk_block(cpu) + L_ARM_SPT;
            v = (r2 & 1) ? HOLE_VA + SYS_SIZE + ((mix(r2) % (atk_arena ? atk_arena : 1)) & PTE_ADDR)
                         : atk_value(r2, atk_load(va));
            break;
        case 2:
            va = atk_block(cpu) + L_ARM_CR2;
            v = atk_value(r2, 0);
            break;
        case 3: /* an expected guest entry */
            va = arm + L_ARM_GPTES + 8 * ((r2 >> 8) % 512);
            v = atk_value(r2, atk_load(va));
            break;
        case 4: /* an expected shadow entry */
            va = arm + L_ARM_SPTES + 8 * ((r2 >> 8) % 512);
            v = atk_value(r2, atk_load(va));
            break;
        default: /* the window's entry in the hole's page table */
            va = HOLE_VA + L_HOLE_PT + 8 * ((L_ARMS + cpu * L_BLOCK) >> 12);
            v = (r2 & 1) ? ram_page(mix(r2)) | ENTRY_FLAGS : atk_value(r2, atk_load(va));
            break;
        }
        res[RH_ATK_WHERE] = va;
        res[RH_ATK_VALUE] = v;
        r = atk_store(va, v);
        break;
    }
    }
    if (r == 1)
        res[RH_ATK_FAULTED]++;
    else if (r == 2)
        res[RH_ATK_SKIPPED]++;
    else
        res[RH_ATK_DONE]++;
    return (i64)r;
}

/* Asks the VMM for the RAM regions now (they grow with memory hotplug),
 * straight into the user info page. */
static i64 sys_ram_map(void)
{
    struct uinfo *u = (struct uinfo *)uinfo_gpa;
    i64 n = hypercall(HC_MEMORY_MAP, (u64)u->ram_regions, MAX_RAM_REGIONS, 0, 0);
    if (n < 0)
        return n;
    u->nram = (u64)n < MAX_RAM_REGIONS ? (u64)n : MAX_RAM_REGIONS;
    return n;
}

/* Maps npages (a multiple of 512) of RAM at gpa, as the last SYS_RAM_MAP
 * reported it and outside the boot RAM the kernel allocates from, at va in
 * the current space with 2 MiB user RW pages. */
static i64 sys_map_ram(struct percpu *pc, u64 va, u64 gpa, u64 npages)
{
    const struct uinfo *u = (const struct uinfo *)uinfo_gpa;
    u64 size = npages * PAGE_SIZE;
    if ((va | gpa | size) & (LARGE_SIZE - 1) || !npages || npages > (1UL << 30) || gpa < ram ||
        va + size < va || va < DATA_VA || va + size > ACCESS_VA)
        return -1;
    int inside = 0;
    for (u64 i = 0; i < u->nram; i++) {
        u64 s = u->ram_regions[i][0], l = u->ram_regions[i][1];
        if (gpa >= s && gpa - s <= l && size <= l - (gpa - s))
            inside = 1;
    }
    if (!inside)
        return -1;
    for (u64 off = 0; off < size; off += LARGE_SIZE) {
        u64 *p = pte_ptr(pc->root, va + off, 2, 1);
        if (!p)
            return -1;
        pte_write(p, (gpa + off) | PTE_P | PTE_W | PTE_U | PTE_PS);
    }
    return 0;
}

/* Rewrites the live PTE of va (a page of the remap workload) and
 * invalidates that page only, as a kernel's mprotect or page migration
 * does: the new translation must be what every later access sees. */
static i64 sys_pte(struct percpu *pc, u64 va, u64 op, u64 arg)
{
    if (va - REMAP_VA >= REMAP_MAX * PAGE_SIZE || (va & (PAGE_SIZE - 1)))
        return -1;
    u64 *p = pte_ptr(pc->root, va, 1, 0);
    if (!p)
        return -1;
    u64 v = *(volatile u64 *)p;
    switch (op) {
    case PTE_OP_FRAME:
        if ((arg & (PAGE_SIZE - 1)) || arg < (u64)__image_end || arg >= frame_limit)
            return -1;
        v = (v & ~PTE_ADDR) | arg;
        break;
    case PTE_OP_CLEAR_W: v &= ~PTE_W; break;
    case PTE_OP_SET_W: v |= PTE_W; break;
    case PTE_OP_CLEAR_P: v &= ~PTE_P; break;
    case PTE_OP_SET_P: v |= PTE_P; break;
    case PTE_OP_SET_NX: v |= PTE_NX; break;
    case PTE_OP_CLEAR_NX: v &= ~PTE_NX; break;
    default: return -1;
    }
    pte_write(p, v);
    tlb_invlpg(va);
    return 0;
}

static u64 user_gpa(struct percpu *pc, u64 va)
{
    u64 *p = pte_ptr(pc->root, va, 1, 0);
    if (!p || !(*p & PTE_P))
        return ~0UL;
    return (*p & PTE_ADDR) | (va & (PAGE_SIZE - 1));
}

i64 syscall_dispatch(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 nr)
{
    struct percpu *pc = this_cpu();
    (void)a4;
    i64 r;
    switch (nr) {
    case SYS_EXIT:
        pt_commit();
        kexit(a0);
    case SYS_MAP:
        r = sys_map(a0, a1, a2, a3);
        break;
    case SYS_NEW_SPACE:
        r = (i64)new_space();
        break;
    case SYS_SWITCH:
        if (a0 >= nspaces)
            return -1;
        pc->space = a0;
        load_root(pc, space_root[a0]);
        return 0;
    case SYS_CLONE:
        r = sys_clone(a0, a1, a2);
        break;
    case SYS_CLEAR_AD:
        r = sys_clear_ad(pc, a0, a1);
        break;
    case SYS_READ_PTES:
        r = sys_read_ptes(pc, a0, a1, a2, a3);
        break;
    case SYS_ACCESS:
        r = sys_access(a0, a1, a2);
        break;
    case SYS_ACCESS_INIT:
        r = access_init(pc);
        break;
    case SYS_SPLIT:
        r = sys_split(pc, a0);
        break;
    case SYS_COLLAPSE:
        r = sys_collapse(pc, a0);
        break;
    case SYS_MAP_1G:
        r = sys_map_1g(pc, a0);
        break;
    case SYS_FLUSH:
        if (a0 == ~0UL)
            tlb_flush();
        else
            tlb_invlpg(a0);
        r = 0;
        break;
    case SYS_START_CPU:
        r = hypercall(HC_START_VCPU, a0, 0, 0, 0);
        break;
    case SYS_CONSOLE: {
        u64 g = user_gpa(pc, a0);
        if (g == ~0UL || a1 > 256 || (g & (PAGE_SIZE - 1)) + a1 > PAGE_SIZE)
            return -1;
        r = hypercall(HC_CONSOLE_WRITE, g, a1, 0, 0);
        break;
    }
    case SYS_PTE:
        r = sys_pte(pc, a0, a1, a2);
        break;
    case SYS_PHYS:
        r = (i64)user_gpa(pc, a0);
        break;
    case SYS_REMAP:
        r = sys_remap(pc, a0, a1, a2);
        break;
    case SYS_HOSTILE:
        r = sys_hostile(pc, a0, a1);
        break;
    case SYS_RAM_MAP:
        r = sys_ram_map();
        break;
    case SYS_MAP_RAM:
        r = sys_map_ram(pc, a0, a1, a2);
        break;
    case SYS_ATTACK:
        r = sys_attack(pc, a0, a1, a2, a3);
        break;
    case SYS_SPIN:
        for (;;)
            __asm__ volatile("pause");
    case SYS_TIMER:
        r = sys_timer(pc, a0, a1, a2);
        break;
    case SYS_TASK_DONE:
        if (cur_task < ntasks && cur_task)
            tasks[cur_task].done = 1;
        r = 0;
        break;
    case SYS_TIMER_STOP:
        r = sys_timer_stop();
        break;
    case SYS_INTERRUPTS:
        r = 0; /* the IF change is made on the way out (trap) */
        break;
    case SYS_SHOOTDOWN:
        r = sys_shootdown(pc, a0, a1);
        break;
    case SYS_FLOOR:
        r = sys_floor(a0, a1);
        break;
    default:
        r = -1;
    }
    pt_commit();
    return r;
}

/* ------------------------------------------------------------------- boot */

static void user_start(struct percpu *pc)
{
    load_root(pc, space_root[pc->space]);
    u64 c = pc->cpu;
    u64 sp = USER_STACK_VA + c * (USER_STACK_SIZE + PAGE_SIZE) + USER_STACK_SIZE;
    enter_user((u64)user_entry, sp, UINFO_VA, c);
}

static void build_shared_tables(void)
{
    u64 limit = ram < KERNEL_DIRECT_MAX ? ram : KERNEL_DIRECT_MAX;
    pdpt0 = alloc_table();
    u64 pd = alloc_table();
    ((u64 *)pdpt0)[0] = pd | PTE_P | PTE_W | PTE_U;
    u64 *k = (u64 *)pd;
    for (u64 a = 0; a < limit; a += LARGE_SIZE)
        k[a >> 21] = a | PTE_P | PTE_W | PTE_PS;
    /* pdpt0[1] (1 GiB - 2 GiB): the user image, stacks, results, doorbell. */
    u64 root = alloc_table(); /* temporary root to reuse pte_ptr */
    ((u64 *)root)[0] = pdpt0 | PTE_P | PTE_W | PTE_U;
    u64 user_pages = ((u64)__user_end - (u64)__user_start) >> 12;
    map_range(root, USER_IMAGE_VA, (u64)__user_lma, user_pages, PTE_P | PTE_W | PTE_U);
    for (u64 c = 0; c < ncpus; c++) {
        u64 n = USER_STACK_SIZE >> 12;
        map_range(root, USER_STACK_VA + c * (USER_STACK_SIZE + PAGE_SIZE), alloc_frames(n, PAGE_SIZE), n,
                  PTE_P | PTE_W | PTE_U);
    }
    map_range(root, RESULTS_VA, (u64)res, res_words >> 9, PTE_P | PTE_W | PTE_U);
    map_range(root, DOORBELL_VA, doorbell, 1, PTE_P | PTE_W | PTE_U);
    uinfo_gpa = alloc_table();
    map_range(root, UINFO_VA, uinfo_gpa, 1, PTE_P | PTE_U);
    struct uinfo *u = (struct uinfo *)uinfo_gpa;
    u->workload = workload;
    u->paging = shadow;
    u->ncpus = ncpus;
    u->ram = ram;
    for (int i = 0; i < 8; i++)
        u->params[i] = params[i];
    u->results_words = res_words;
}

/* The value of a number token: decimal or 0x hexadecimal; ~0 if it is not
 * one. */
static u64 parse_number(const char *s, u64 n)
{
    u64 v = 0, base = 10;
    if (n > 2 && s[0] == '0' && s[1] == 'x') {
        base = 16;
        s += 2;
        n -= 2;
    }
    if (!n)
        return ~0UL;
    for (u64 i = 0; i < n; i++) {
        char c = s[i];
        u64 d = c >= '0' && c <= '9' ? (u64)(c - '0')
                : base == 16 && c >= 'a' && c <= 'f' ? (u64)(c - 'a' + 10)
                                                     : 99;
        if (d >= base)
            return ~0UL;
        v = v * base + d;
    }
    return v;
}

static int token_is(const char *t, u64 n, const char *key)
{
    u64 k = kstrlen(key);
    if (n < k)
        return 0;
    for (u64 i = 0; i < k; i++)
        if (t[i] != key[i])
            return 0;
    return 1;
}

/* The kernel command line, if the VMM gave one (ABI version 2): space
 * separated `key=value` tokens that override the boot info's workload and
 * parameters: workload=ID, seed=N, p1=N .. p5=N, pt_writes=direct|hypercall.
 * Unknown tokens (a VMM may add its own, e.g. console=) are ignored. */
static void parse_cmdline(const struct bootinfo *bi)
{
    u64 len = bi->cmdline_len;
    if (!bi->cmdline || !len)
        return;
    if (len > CMDLINE_MAX || bi->cmdline + len > ram || bi->cmdline + len < bi->cmdline)
        return;
    const char *s = (const char *)bi->cmdline;
    u64 i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\n'))
            i++;
        u64 start = i;
        while (i < len && s[i] && s[i] != ' ' && s[i] != '\n')
            i++;
        const char *t = s + start;
        u64 n = i - start;
        if (!n)
            break;
        if (token_is(t, n, "pt_writes=direct") && n == 16) {
            pt_direct = 1;
        } else if (token_is(t, n, "pt_writes=hypercall") && n == 19) {
            pt_direct = 0;
        } else if (token_is(t, n, "workload=")) {
            u64 v = parse_number(t + 9, n - 9);
            if (v != ~0UL)
                workload = v;
        } else if (token_is(t, n, "seed=")) {
            u64 v = parse_number(t + 5, n - 5);
            if (v != ~0UL)
                params[P_SEED] = v;
        } else if (n > 3 && t[0] == 'p' && t[1] >= '1' && t[1] <= '5' && t[2] == '=') {
            u64 v = parse_number(t + 3, n - 3);
            if (v != ~0UL)
                params[t[1] - '0'] = v;
        }
        if (i < len && !s[i])
            break;
    }
}

void kmain(struct bootinfo *bi, u64 cpu)
{
    struct percpu *pc = &percpu[cpu];
    if (cpu == 0) {
        u64 n = ((u64)__bss_end - (u64)__bss_start) >> 3;
        u64 p = (u64)__bss_start;
        __asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(0UL) : "memory");
        if (bi->magic != BOOT_MAGIC || bi->paging > 1) {
            /* Without a valid boot info we cannot even tell how to call the
             * VMM: stop with an exception it reports. */
            __asm__ volatile("ud2");
        }
        shadow = bi->paging == 1;
        ncpus = bi->ncpus ? bi->ncpus : 1;
        if (ncpus > MAX_CPUS)
            ncpus = MAX_CPUS;
        ram = bi->ram;
        workload = bi->workload;
        for (int i = 0; i < 8; i++)
            params[i] = bi->params[i];
        parse_cmdline(bi);
        pt_direct = shadow && pt_direct;
        doorbell = bi->doorbell;
        u64 rg = params[P_RESULTS_GPA], rs = params[P_RESULTS_SIZE];
        u64 top = ram < KERNEL_DIRECT_MAX ? ram : KERNEL_DIRECT_MAX;
        if (!rg && !rs) {
            /* none in the boot info: 1 MiB at the top of the RAM the
             * kernel maps (checked below like one the VMM chose) */
            rs = 1UL << 20;
            rg = (top - rs) & ~(PAGE_SIZE - 1);
            params[P_RESULTS_GPA] = rg;
            params[P_RESULTS_SIZE] = rs;
        }
        if (rg < (u64)__image_end || (rg & (PAGE_SIZE - 1)) || rs < RH_WORDS * 8 ||
            rs > RESULTS_MAX || (rs & (PAGE_SIZE - 1)) || rg + rs > top || doorbell & (PAGE_SIZE - 1)) {
            kputs("kernel: bad results buffer or doorbell in the boot info\n");
            kexit(ST_BAD_BOOT);
        }
        res = (u64 *)rg;
        res_words = rs / 8;
        res[RH_MAGIC] = RES_MAGIC;
        res[RH_WORKLOAD] = workload;
        next_frame = (u64)__image_end;
        frame_limit = rg;
        if (!shadow)
            build_idt();
        build_shared_tables();
        new_space();
    }
    pc->cpu = cpu;
    __atomic_or_fetch(&cpus_online, 1UL << cpu, __ATOMIC_SEQ_CST);
    pc->kstack_top = (u64)kstacks + ((cpu + 1) << KSTACK_SHIFT);
    pc->space = 0;
    cpu_init(pc);
    user_start(pc);
}

/* ------------------------------------------------------ PVH (Cloud Hypervisor) */

static void com1_puts(const char *s)
{
    for (; *s; s++)
        __asm__ volatile("outb %0, %1" : : "a"(*s), "Nd"((u16)0x3f8));
}

/* Entered from pvh_entry32 in long mode on the image's static identity map
 * (1 GiB, 2 MiB pages). A self-test of the paging the kernel relies on, then
 * a pass line on COM1 and an ACPI S5 exit. */
void pvh_main(u32 start_info)
{
    int ok = *(volatile u32 *)(u64)start_info == 0x336ec578u;
    /* mov cr3 / invlpg / a write through a fresh 4 KiB mapping. */
    u64 f = ((u64)__image_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    u64 *root = (u64 *)f, *pdpt = (u64 *)(f + PAGE_SIZE), *pd = (u64 *)(f + 2 * PAGE_SIZE);
    u64 *pt = (u64 *)(f + 3 * PAGE_SIZE), data = f + 4 * PAGE_SIZE;
    zero_page((u64)root);
    zero_page((u64)pdpt);
    zero_page((u64)pt);
    u64 cur;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cur));
    root[0] = ((u64 *)cur)[0];               /* identity map */
    root[1] = (u64)pdpt | PTE_P | PTE_W;     /* DATA_VA */
    pdpt[0] = (u64)pd | PTE_P | PTE_W;
    zero_page((u64)pd);
    pd[0] = (u64)pt | PTE_P | PTE_W;
    pt[3] = data | PTE_P | PTE_W;
    *(volatile u64 *)data = 0;
    write_cr3((u64)root);
    *(volatile u64 *)(DATA_VA + 3 * PAGE_SIZE + 8) = 0x5348414430574d4dUL;
    invlpg(DATA_VA + 3 * PAGE_SIZE);
    ok = ok && *(volatile u64 *)(data + 8) == 0x5348414430574d4dUL;
    write_cr3(cur);
    com1_puts(ok ? "shadow-mmu-guest: pvh self-test passed\n" : "shadow-mmu-guest: pvh self-test FAILED\n");
    __asm__ volatile("outb %0, %1" : : "a"((u8)0x34), "Nd"((u16)0x600));
    for (;;)
        __asm__ volatile("hlt");
}
