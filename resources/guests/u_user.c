/* Copyright 2026 The shadow-mmu Authors.
 * SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
 *
 * The user-mode (CPL3) workloads. They run natively on this project's hosts,
 * so everything that is measured happens here; the kernel is called with
 * coarse syscalls. Each workload fills the results buffer (RESULTS_VA, see
 * README.md) with records that must be identical under native and shadow
 * paging, plus TSC deltas (not part of the checksum).
 */
#include "guest.h"

#define DATA3_VA 0x8080000000UL /* demand-paged region of touch */
#define DATA4_VA 0x80c0000000UL /* touch: first touch by reads, sequential */
#define DATA5_VA 0x8100000000UL /* touch: first touch by reads, random order */
#define STATUS_OK 0
#define STATUS_MISMATCH 1
#define STATUS_SETUP 2

extern u64 uprobe_read(u64 va), uprobe_write(u64 va), uprobe_fetch(u64 va);


static volatile u64 *const R = (volatile u64 *)RESULTS_VA;
static const struct uinfo *ui;
static u64 nrec, errors, rng_state;

extern i64 usys(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 nr);

static inline i64 sys(u64 nr, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4)
{
    return usys(a0, a1, a2, a3, a4, nr);
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((u64)hi << 32) | lo;
}

static u64 rnd(void)
{
    u64 x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 2685821657736338717UL;
}

static u64 param(int i, u64 dflt)
{
    return ui->params[i] ? ui->params[i] : dflt;
}

static void rec(u64 v)
{
    if (RH_WORDS + nrec < ui->results_words)
        R[RH_WORDS + nrec] = v;
    nrec++;
}

static void tsc_slot(int i, u64 delta)
{
    R[RH_TSC + i] = delta;
    if ((u64)i + 1 > R[RH_NTSC])
        R[RH_NTSC] = i + 1;
}

/* The compiler may emit calls to these. */
void *memset(void *d, int c, unsigned long n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static void doorbell_puts(const char *s)
{
    for (; *s; s++)
        *(volatile u64 *)(DOORBELL_VA + 8) = (u8)*s;
}

static void __attribute__((noreturn)) doorbell_exit(u64 status)
{
    for (;;)
        *(volatile u64 *)DOORBELL_VA = status;
}

static inline u64 pat(u64 region, u64 i)
{
    return (region << 56) ^ (i * 0x9e3779b97f4a7c15UL) ^ ui->params[P_SEED];
}

static inline volatile u64 *word(u64 va)
{
    return (volatile u64 *)va;
}

/* ------------------------------------------------------------------ touch */

#define TOUCH_MAX_PAGES 65536
static u32 perm[TOUCH_MAX_PAGES];

static u64 w_touch(void)
{
    u64 n = param(1, 16) * 256, passes = param(2, 4), dn = param(3, 2) * 256;
    if (n > TOUCH_MAX_PAGES)
        n = TOUCH_MAX_PAGES;
    if (dn > TOUCH_MAX_PAGES)
        dn = TOUCH_MAX_PAGES;
    if (sys(SYS_MAP, 0, DATA_VA, n, MAP_W, 0) < 0 || sys(SYS_MAP, 0, DATA2_VA, n, MAP_W, 0) < 0 ||
        sys(SYS_MAP, 0, DATA3_VA, dn, MAP_W | MAP_DEMAND, 0) < 0)
        return STATUS_SETUP;
    /* Read regions only with p4 (their size in MiB), so that the default
     * run needs no more memory than before. */
    u64 rn = param(4, 0) * 256;
    if (rn > n)
        rn = n;
    if (rn && (sys(SYS_MAP, 0, DATA4_VA, rn, MAP_W, 0) < 0 ||
               sys(SYS_MAP, 0, DATA5_VA, rn, MAP_W, 0) < 0))
        return STATUS_SETUP;
    for (u64 i = 0; i < n; i++)
        perm[i] = (u32)i;
    for (u64 i = n - 1; i > 0; i--) {
        u64 j = rnd() % (i + 1);
        u32 t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* first touch: sequential, random order, demand-paged (guest #PF) */
    u64 t = rdtsc();
    for (u64 i = 0; i < n; i++)
        *word(DATA_VA + i * PAGE_SIZE + (i & 63) * 64) = pat(1, i);
    tsc_slot(0, rdtsc() - t);
    t = rdtsc();
    for (u64 k = 0; k < n; k++) {
        u64 i = perm[k];
        *word(DATA2_VA + i * PAGE_SIZE + (i & 63) * 64) = pat(2, i);
    }
    tsc_slot(1, rdtsc() - t);
    t = rdtsc();
    for (u64 i = 0; i < dn; i++)
        *word(DATA3_VA + i * PAGE_SIZE) = pat(3, i);
    tsc_slot(2, rdtsc() - t);
    rec(n);
    rec(dn);
    rec(passes);
    /* warm passes */
    u64 tseq = 0, trand = 0;
    for (u64 p = 0; p < passes; p++) {
        u64 s1 = 0, s2 = 0, s3 = 0;
        t = rdtsc();
        for (u64 i = 0; i < n; i++) {
            u64 v = *word(DATA_VA + i * PAGE_SIZE + (i & 63) * 64);
            errors += v != pat(1, i);
            s1 += v;
        }
        u64 t2 = rdtsc();
        tseq += t2 - t;
        for (u64 k = 0; k < n; k++) {
            u64 i = perm[k];
            u64 v = *word(DATA2_VA + i * PAGE_SIZE + (i & 63) * 64);
            errors += v != pat(2, i);
            s2 += v;
        }
        trand += rdtsc() - t2;
        for (u64 i = 0; i < dn; i++) {
            u64 v = *word(DATA3_VA + i * PAGE_SIZE);
            errors += v != pat(3, i);
            s3 += v;
        }
        rec(s1);
        rec(s2);
        rec(s3);
    }
    tsc_slot(3, tseq);
    tsc_slot(4, trand);
    /* calibration: 100 null system calls (CPL3 -> kernel -> CPL3) */
    t = rdtsc();
    for (int i = 0; i < 100; i++)
        sys(SYS_PHYS, 0, 0, 0, 0, 0);
    tsc_slot(5, rdtsc() - t);
    /* calibration: 100 page faults caught by the kernel (not present) */
    t = rdtsc();
    for (int i = 0; i < 100; i++)
        uprobe_read(HOSTILE_VA);
    tsc_slot(6, rdtsc() - t);
    /* calibration: p5 (1000) hypercalls the VMM's trampoline answers
     * itself (shadow paging; natively nothing), and as many that exit */
    u64 trips = param(5, 1000);
    t = rdtsc();
    if (sys(SYS_FLOOR, trips, 0, 0, 0, 0) == 0)
        tsc_slot(9, rdtsc() - t);
    t = rdtsc();
    if (sys(SYS_FLOOR, trips, 1, 0, 0, 0) == 0)
        tsc_slot(10, rdtsc() - t);
    else
        errors++;
    /* first touch by reads (fresh pages read as zero): sequential, then
     * random order over the first rn entries of the same permutation */
    if (rn) {
        u64 s4 = 0, s5 = 0;
        t = rdtsc();
        for (u64 i = 0; i < rn; i++)
            s4 += *word(DATA4_VA + i * PAGE_SIZE + (i & 63) * 64);
        tsc_slot(7, rdtsc() - t);
        t = rdtsc();
        for (u64 k = 0, done = 0; k < n && done < rn; k++) {
            u64 i = perm[k];
            if (i >= rn)
                continue;
            s5 += *word(DATA5_VA + i * PAGE_SIZE + (i & 63) * 64);
            done++;
        }
        tsc_slot(8, rdtsc() - t);
        errors += s4 != 0;
        errors += s5 != 0;
        rec(rn);
        rec(s4);
        rec(s5);
    }
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ----------------------------------------------------------------- spaces */

/* The kernel's MAX_SPACES: the first space and 63 new ones. */
#define MAX_USER_SPACES 64

static u64 w_spaces(void)
{
    u64 k = param(1, 8), pages = param(2, 64), rounds = param(3, 50);
    u64 ids[MAX_USER_SPACES];
    if (k > MAX_USER_SPACES)
        k = MAX_USER_SPACES;
    ids[0] = 0;
    for (u64 s = 1; s < k; s++) {
        i64 id = sys(SYS_NEW_SPACE, 0, 0, 0, 0, 0);
        if (id < 0)
            return STATUS_SETUP;
        ids[s] = (u64)id;
    }
    for (u64 s = 0; s < k; s++)
        if (sys(SYS_MAP, ids[s], DATA_VA, pages, MAP_W, 0) < 0)
            return STATUS_SETUP;
    u64 t = rdtsc();
    for (u64 s = 0; s < k; s++) {
        sys(SYS_SWITCH, ids[s], 0, 0, 0, 0);
        for (u64 p = 0; p < pages; p++)
            *word(DATA_VA + p * PAGE_SIZE) = (s << 32) | p;
    }
    tsc_slot(0, rdtsc() - t);
    t = rdtsc();
    for (u64 r = 0; r < rounds; r++) {
        for (u64 s = 0; s < k; s++) {
            sys(SYS_SWITCH, ids[s], 0, 0, 0, 0);
            for (u64 p = 0; p < pages; p++)
                *word(DATA_VA + p * PAGE_SIZE) += 1;
        }
    }
    tsc_slot(1, rdtsc() - t);
    t = rdtsc();
    for (u64 r = 0; r < rounds; r++)
        for (u64 s = 0; s < k; s++)
            sys(SYS_SWITCH, ids[s], 0, 0, 0, 0);
    tsc_slot(2, rdtsc() - t);
    rec(k);
    rec(pages);
    rec(rounds);
    for (u64 s = 0; s < k; s++) {
        sys(SYS_SWITCH, ids[s], 0, 0, 0, 0);
        u64 sum = 0;
        for (u64 p = 0; p < pages; p++) {
            u64 v = *word(DATA_VA + p * PAGE_SIZE);
            errors += v != ((s << 32) | p) + rounds;
            sum += v;
        }
        rec(sum);
    }
    sys(SYS_SWITCH, 0, 0, 0, 0, 0);
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* -------------------------------------------------------------------- cow */

static u64 cow_sum(u64 n, u64 who, int check)
{
    u64 sum = 0;
    for (u64 i = 0; i < n; i++) {
        for (u64 j = 0; j < 8; j++) {
            u64 v = *word(DATA_VA + i * PAGE_SIZE + j * 512);
            u64 e = pat(4, i * 8 + j);
            if (j == 0 && who == 1 && i % 3 == 0)
                e = ~e;
            if (j == 1 && who == 2 && i % 5 == 0)
                e ^= 0xc4170;
            if (check)
                errors += v != e;
            sum = sum * 31 + v;
        }
    }
    return sum;
}

static u64 w_cow(void)
{
    u64 n = param(1, 128);
    if (n > 4096)
        n = 4096;
    n = (n + 7) & ~7UL;
    if (sys(SYS_MAP, 0, DATA_VA, n, MAP_W, 0) < 0)
        return STATUS_SETUP;
    for (u64 i = 0; i < n; i++)
        for (u64 j = 0; j < 8; j++)
            *word(DATA_VA + i * PAGE_SIZE + j * 512) = pat(4, i * 8 + j);
    u64 t = rdtsc();
    i64 child = sys(SYS_CLONE, 0, DATA_VA, n, 0, 0);
    tsc_slot(0, rdtsc() - t);
    if (child < 0)
        return STATUS_SETUP;
    /* parent writes every third page: copy-on-write faults */
    t = rdtsc();
    for (u64 i = 0; i < n; i += 3)
        *word(DATA_VA + i * PAGE_SIZE) = ~pat(4, i * 8);
    tsc_slot(1, rdtsc() - t);
    sys(SYS_SWITCH, (u64)child, 0, 0, 0, 0);
    t = rdtsc();
    rec(cow_sum(n, 0, 1)); /* the child still sees the original data */
    tsc_slot(2, rdtsc() - t);
    t = rdtsc();
    for (u64 i = 0; i < n; i += 5)
        *word(DATA_VA + i * PAGE_SIZE + 512) ^= 0xc4170;
    tsc_slot(3, rdtsc() - t);
    rec(cow_sum(n, 2, 1));
    u64 out = RH_WORDS + nrec;
    if (sys(SYS_READ_PTES, DATA_VA, n, out, 1, 0) < 0)
        return STATUS_SETUP;
    nrec += n / 8;
    sys(SYS_SWITCH, 0, 0, 0, 0, 0);
    rec(cow_sum(n, 1, 1));
    out = RH_WORDS + nrec;
    if (sys(SYS_READ_PTES, DATA_VA, n, out, 1, 0) < 0)
        return STATUS_SETUP;
    nrec += n / 8;
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ----------------------------------------------------------------- adbits */

#define AD_MAX 4096
static u8 expect[AD_MAX];

static u64 w_adbits(void)
{
    u64 n = (param(1, 256) + 7) & ~7UL, rounds = param(2, 8);
    if (n > AD_MAX)
        n = AD_MAX;
    if (sys(SYS_MAP, 0, DATA_VA, n, MAP_W, 0) < 0)
        return STATUS_SETUP;
    for (u64 i = 0; i < n; i++)
        *word(DATA_VA + i * PAGE_SIZE) = pat(5, i);
    /* Parameter 3: speculative accessed bits allowed. A CPU may set A in
     * entries it caches for speculative accesses (SDM Vol. 3A 4.10.2.3),
     * so an A bit the workload did not cause is no error of its own; the
     * addresses of the entries go in the records, for a check against the
     * VMM's log of the bits it set. */
    u64 speculative = param(3, 0);
    u64 ttouch = 0, tclear = 0;
    rec(n);
    rec(rounds);
    if (speculative) {
        if (RH_WORDS + nrec + n >= ui->results_words ||
            sys(SYS_READ_PTES, DATA_VA, n, RH_WORDS + nrec, 3, 0) < 0)
            return STATUS_SETUP;
        nrec += n;
    }
    for (u64 r = 0; r < rounds; r++) {
        u64 t = rdtsc();
        if (sys(SYS_CLEAR_AD, DATA_VA, n, 0, 0, 0) < 0)
            return STATUS_SETUP;
        tclear += rdtsc() - t;
        for (u64 i = 0; i < n; i++)
            expect[i] = (u8)(rnd() & 3);
        t = rdtsc();
        u64 sum = 0;
        for (u64 i = 0; i < n; i++) {
            if (expect[i] == 2)
                sum += *word(DATA_VA + i * PAGE_SIZE);
            else if (expect[i] == 3)
                *word(DATA_VA + i * PAGE_SIZE + 8) = r;
        }
        ttouch += rdtsc() - t;
        rec(sum);
        u64 out = RH_WORDS + nrec;
        if (out + n / 8 + n / 8 >= ui->results_words ||
            sys(SYS_READ_PTES, DATA_VA, n, out, 1, 0) < 0)
            return STATUS_SETUP;
        volatile u8 *got = (volatile u8 *)&R[out];
        nrec += n / 8;
        volatile u8 *exp = (volatile u8 *)&R[RH_WORDS + nrec];
        for (u64 i = 0; i < n; i++) {
            u8 e = expect[i] == 2 ? PTE_A : expect[i] == 3 ? (PTE_A | PTE_D) : 0;
            exp[i] = e;
            u8 g = got[i] & (PTE_A | PTE_D);
            if (speculative && e == 0 && g == PTE_A)
                continue;
            errors += g != e;
        }
        nrec += n / 8;
    }
    tsc_slot(0, tclear);
    tsc_slot(1, ttouch);
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ------------------------------------------------------------------- huge */

static u64 huge_check(u64 first, u64 count, int written)
{
    u64 sum = 0;
    for (u64 i = first; i < first + count; i++) {
        u64 v = *word(DATA_VA + i * PAGE_SIZE);
        errors += v != pat(6, i);
        sum += v;
        if (written) {
            u64 w = *word(DATA_VA + i * PAGE_SIZE + 8);
            errors += w != ((i & 1) ? i : 0);
            sum += w;
        }
    }
    return sum;
}

static u64 w_huge(void)
{
    u64 n2 = param(1, 8), opts = param(2, 0);
    if (n2 < 2)
        n2 = 2;
    if (n2 > 64)
        n2 = 64;
    u64 pages = n2 * 512;
    if (sys(SYS_MAP, 0, DATA_VA, pages, MAP_W | MAP_LARGE, 0) < 0)
        return STATUS_SETUP;
    u64 t = rdtsc();
    for (u64 i = 0; i < pages; i++)
        *word(DATA_VA + i * PAGE_SIZE) = pat(6, i);
    tsc_slot(0, rdtsc() - t);
    t = rdtsc();
    rec(huge_check(0, pages, 0));
    tsc_slot(1, rdtsc() - t);
    rec(n2);
    u64 out = RH_WORDS + nrec;
    if (sys(SYS_READ_PTES, DATA_VA, n2, out, 2, 0) < 0)
        return STATUS_SETUP;
    nrec += (n2 + 7) / 8;
    /* split the second 2 MiB page into 4 KiB pages, write half, collapse */
    if (sys(SYS_SPLIT, DATA_VA + LARGE_SIZE, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    t = rdtsc();
    rec(huge_check(512, 512, 0));
    for (u64 i = 512; i < 1024; i++)
        *word(DATA_VA + i * PAGE_SIZE + 8) = (i & 1) ? i : 0;
    tsc_slot(2, rdtsc() - t);
    out = RH_WORDS + nrec;
    if (sys(SYS_READ_PTES, DATA_VA + LARGE_SIZE, 512, out, 1, 0) < 0)
        return STATUS_SETUP;
    nrec += 64;
    if (sys(SYS_COLLAPSE, DATA_VA + LARGE_SIZE, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    rec(huge_check(512, 512, 1));
    out = RH_WORDS + nrec;
    if (sys(SYS_READ_PTES, DATA_VA, n2, out, 2, 0) < 0)
        return STATUS_SETUP;
    nrec += (n2 + 7) / 8;
    /* 1 GiB pages: not on this host natively (HOST-NOTES); shadow only. */
    if (ui->paging == 0 || !(opts & 1)) {
        R[RH_FLAGS] |= RF_1G_SKIPPED;
    } else {
        if (sys(SYS_MAP_1G, HUGE1G_VA, 0, 0, 0, 0) < 0)
            return STATUS_SETUP;
        i64 phys = sys(SYS_PHYS, USER_IMAGE_VA, 0, 0, 0, 0);
        if (phys < 0)
            return STATUS_SETUP;
        u64 a = *word(HUGE1G_VA + (u64)phys), b = *word(USER_IMAGE_VA);
        errors += a != b;
        R[RH_FLAGS] |= RF_1G_DONE;
    }
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ----------------------------------------------------------------- access */

static u64 desc_ctrl(u64 combo)
{
    return ((combo & 1) ? AC_WP : 0) | ((combo & 2) ? AC_SMEP : 0) | ((combo & 4) ? AC_SMAP : 0) |
           ((combo & 8) ? AC_NXE : 0);
}

static u32 access_desc(u64 combo)
{
    u64 r = rnd();
    u32 d = (u32)r & 0x1fff;
    if ((r >> 13) & 7)
        d |= AC_PTE_P;
    if ((r >> 16) & 7)
        d |= AC_PDE_P;
    if (((r >> 19) & 7) == 0) {
        u32 rsvd = 1 + (u32)((r >> 22) % 3);
        if (rsvd == 3 && !(d & AC_PDE_PS))
            rsvd = 1;
        d |= rsvd << AC_RSVD_SHIFT;
    }
    d |= (u32)((r >> 32) % 3) << AC_KIND_SHIFT;
    if ((r >> 30) & 1)
        d |= AC_USER;
    else if ((r >> 40) & 1)
        d |= AC_AC;
    return d | (u32)desc_ctrl(combo);
}

static u64 access_va(u64 slot)
{
    return ACCESS_VA + slot * (LARGE_SIZE + PAGE_SIZE) + ACCESS_OFF;
}

/* The entries of a case: PTE and PDE flags from the descriptor, a reserved
 * bit if it asks for one. */
static void access_entries(const volatile struct acc_stage *st, u32 d, u64 *pte, u64 *pde)
{
    u64 e = st->frame4k;
    if (d & AC_PTE_P) e |= PTE_P;
    if (d & AC_PTE_W) e |= PTE_W;
    if (d & AC_PTE_U) e |= PTE_U;
    if (d & AC_PTE_A) e |= PTE_A;
    if (d & AC_PTE_D) e |= PTE_D;
    if (d & AC_PTE_NX) e |= PTE_NX;
    u64 f = (d & AC_PDE_PS) ? (st->frame2m | PTE_PS) : st->pt;
    if (d & AC_PDE_P) f |= PTE_P;
    if (d & AC_PDE_W) f |= PTE_W;
    if (d & AC_PDE_U) f |= PTE_U;
    if (d & AC_PDE_A) f |= PTE_A;
    if (d & AC_PDE_D) f |= PTE_D;
    if (d & AC_PDE_NX) f |= PTE_NX;
    switch ((d >> AC_RSVD_SHIFT) & 3) {
    case 1: e |= 1UL << 51; break;
    case 2: f |= 1UL << 51; break;
    case 3: f |= 1UL << 13; break;
    }
    *pte = e;
    *pde = f;
}

/* Cases in batches of up to ACC_SLOTS with the same paging bits (16 groups,
 * one per combination of CR0.WP, CR4.SMEP, CR4.SMAP, EFER.NXE). */
static u64 w_access(void)
{
    /* Parameter 2: one more record after the cases, the guest-physical
     * address of the PT every slot's PTE is in (for a check of speculative
     * accessed bits against the VMM's log of the entries it set). */
    u64 n = param(1, 20000), with_pt = param(2, 0) != 0;
    u64 max = ui->results_words - RH_WORDS - with_pt;
    if (n > max)
        n = max;
    if (sys(SYS_ACCESS_INIT, 0, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    volatile struct acc_stage *st = (volatile struct acc_stage *)ACC_STAGE_VA;
    const volatile u64 *apt = (const volatile u64 *)ACC_PT_VA;
    const volatile u64 *apd = (const volatile u64 *)ACC_PD_VA;
    u32 desc[ACC_SLOTS];
    u64 kslot[ACC_SLOTS];
    u64 tkern = 0, tuser = 0;
    u64 t = rdtsc();
    for (u64 combo = 0; combo < 16; combo++) {
        u64 end = n * (combo + 1) / 16;
        u64 ctrl = desc_ctrl(combo);
        for (u64 first = n * combo / 16; first < end; first += ACC_SLOTS) {
            u64 cnt = end - first < ACC_SLOTS ? end - first : ACC_SLOTS, nk = 0;
            for (u64 i = 0; i < cnt; i++) {
                u32 d = access_desc(combo);
                u64 pte, pde;
                access_entries(st, d, &pte, &pde);
                desc[i] = d;
                st->pte[i] = pte;
                st->pde[i] = pde;
                if (!(d & AC_USER)) {
                    st->kcase[nk] = access_va(i) | ((d >> AC_KIND_SHIFT) & 3) | ((d & AC_AC) ? 4 : 0);
                    kslot[nk++] = i;
                }
            }
            u64 t1 = rdtsc();
            if (sys(SYS_ACCESS, cnt, nk, ctrl, 0, 0) < 0)
                return STATUS_SETUP;
            u64 t2 = rdtsc();
            tkern += t2 - t1;
            for (u64 k = 0; k < nk; k++) {
                u64 i = kslot[k], r = st->kres[k];
                R[RH_WORDS + first + i] = desc[i] | ((r & 1) << 32) | (((r >> 8) & 0xff) << 40) |
                                          ((apt[i] & 0xff) << 48) | ((apd[i] & 0xff) << 56);
            }
            for (u64 i = 0; i < cnt; i++) {
                u32 d = desc[i];
                if (!(d & AC_USER))
                    continue;
                u64 va = access_va(i), kind = (d >> AC_KIND_SHIFT) & 3, r;
                r = kind == 0 ? uprobe_read(va) : kind == 1 ? uprobe_write(va) : uprobe_fetch(va);
                R[RH_WORDS + first + i] = d | ((r & 1) << 32) | (((r >> 8) & 0xff) << 40) |
                                          ((apt[i] & 0xff) << 48) | ((apd[i] & 0xff) << 56);
            }
            tuser += rdtsc() - t2;
        }
    }
    if (sys(SYS_ACCESS, 0, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    tsc_slot(0, rdtsc() - t);
    tsc_slot(1, tkern);
    tsc_slot(2, tuser);
    nrec = n;
    if (with_pt)
        rec(st->pt);
    return STATUS_OK;
}

/* -------------------------------------------------------------------- smp */

/* Shared between the two CPUs (the user image is mapped in every space). */
static volatile u64 smp_gen, smp_verified, smp_phase, smp_stop, smp_ready, smp_done;
static volatile u64 smp_bad_lockstep, smp_bad_racy, smp_bad_invlpg, smp_npages;
static volatile u64 smp_bad_ipi, smp_acks, smp_aps_ready;

/* CPU 1: read the pages CPU 0 keeps remapping. Lockstep phase: after each
 * new generation, flush this CPU's TLB and check that every page shows the
 * new mapping. Racy phase: every value must belong to one of the two
 * mappings of that page. */
static void __attribute__((noreturn)) smp_ap(void)
{
    u64 n = smp_npages, last = 0, irq_on = 0;
    smp_ready = 1;
    while (!smp_stop) {
        if (smp_phase == 4) {
            /* Shootdown by IPI: keep the page in this CPU's TLB; after each
             * generation its kernel's IPI handler has invalidated it (this
             * CPU does not), so it must read the new frame. */
            if (!irq_on) {
                sys(SYS_INTERRUPTS, 1, 0, 0, 0, 0);
                irq_on = 1;
                last = smp_gen;
                __atomic_add_fetch(&smp_aps_ready, 1, __ATOMIC_SEQ_CST);
            }
            u64 g = smp_gen;
            if (g == last) {
                (void)uprobe_read(REMAP_VA);
                continue;
            }
            u64 want = (g & 1) ? pat(8, 0) : pat(7, 0);
            if (uprobe_read(REMAP_VA) || *word(REMAP_VA) != want)
                __atomic_add_fetch(&smp_bad_ipi, 1, __ATOMIC_SEQ_CST);
            last = g;
            __atomic_add_fetch(&smp_acks, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        if (smp_phase == 1) {
            u64 g = smp_gen;
            if (g == last)
                continue;
            sys(SYS_FLUSH, ~0UL, 0, 0, 0, 0);
            u64 region = (g & 1) ? 8 : 7;
            for (u64 i = 0; i < n; i++)
                smp_bad_lockstep += *word(DATA_VA + i * PAGE_SIZE) != pat(region, i);
            last = g;
            smp_verified = g;
        } else if (smp_phase == 2) {
            for (u64 i = 0; i < n; i++) {
                u64 v = *word(DATA_VA + i * PAGE_SIZE);
                smp_bad_racy += v != pat(7, i) && v != pat(8, i);
            }
        } else if (smp_phase == 3) {
            /* Keep accessing the page CPU 0 rewrites (faulting while it is
             * not present); after each generation, invalidate that page
             * only, as a kernel's shootdown handler does, and check it. */
            u64 g = smp_gen;
            if (g == last) {
                (void)uprobe_read(REMAP_VA);
                continue;
            }
            sys(SYS_FLUSH, REMAP_VA, 0, 0, 0, 0);
            u64 want = (g & 1) ? pat(8, 0) : pat(7, 0);
            smp_bad_invlpg += uprobe_read(REMAP_VA) || *word(REMAP_VA) != want;
            last = g;
            smp_verified = g;
        }
    }
    __atomic_add_fetch(&smp_done, 1, __ATOMIC_SEQ_CST);
    for (;;)
        __asm__ volatile("pause");
}

static u64 w_smp(void)
{
    u64 n = param(1, 16), iters = param(2, 100);
    if (n > 512)
        n = 512;
    if (ui->ncpus < 2)
        return STATUS_SETUP;
    i64 fa = sys(SYS_MAP, 0, DATA_VA, n, MAP_W, 0);
    i64 fb = sys(SYS_MAP, 0, DATA2_VA, n, MAP_W, 0);
    if (fa < 0 || fb < 0)
        return STATUS_SETUP;
    for (u64 i = 0; i < n; i++) {
        *word(DATA_VA + i * PAGE_SIZE) = pat(7, i);
        *word(DATA2_VA + i * PAGE_SIZE) = pat(8, i);
    }
    smp_npages = n;
    smp_phase = 1;
    if (sys(SYS_START_CPU, 1, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    while (!smp_ready)
        __asm__ volatile("pause");
    u64 t = rdtsc();
    for (u64 g = 1; g <= iters; g++) {
        if (sys(SYS_REMAP, DATA_VA, n, (u64)((g & 1) ? fb : fa), 0, 0) < 0)
            return STATUS_SETUP;
        smp_gen = g;
        while (smp_verified != g)
            __asm__ volatile("pause");
    }
    tsc_slot(0, rdtsc() - t);
    smp_phase = 2;
    t = rdtsc();
    for (u64 g = 1; g <= iters; g++)
        if (sys(SYS_REMAP, DATA_VA, n, (u64)((g & 1) ? fb : fa), 0, 0) < 0)
            return STATUS_SETUP;
    tsc_slot(1, rdtsc() - t);
    /* INVLPG lockstep: one page, rewritten in its (shadowed) leaf table and
     * invalidated with INVLPG alone on both CPUs, while CPU 1 keeps
     * accessing it. */
    if (sys(SYS_MAP, 0, REMAP_VA, 1, MAP_W, 0) < 0)
        return STATUS_SETUP;
    (void)*word(REMAP_VA);
    /* CPU 1's accesses fault while the page is not present, as often as
     * the timing has it: they are left out of the fault count. */
    u64 faults = R[RH_FAULTS];
    smp_phase = 3;
    for (u64 g = iters + 1; g <= 2 * iters; g++) {
        if (sys(SYS_PTE, REMAP_VA, PTE_OP_CLEAR_P, 0, 0, 0) < 0 ||
            sys(SYS_PTE, REMAP_VA, PTE_OP_FRAME, (u64)((g & 1) ? fb : fa), 0, 0) < 0 ||
            sys(SYS_PTE, REMAP_VA, PTE_OP_SET_P, 0, 0, 0) < 0)
            return STATUS_SETUP;
        smp_gen = g;
        while (smp_verified != g)
            __asm__ volatile("pause");
    }
    /* Shootdown by IPI, on every vCPU: the others start now, all run user
     * code with interrupts on, and CPU 0's kernel rewrites the entry and
     * IPIs them (SYS_SHOOTDOWN). */
    u64 aps = ui->ncpus - 1;
    for (u64 c = 2; c <= aps; c++)
        if (sys(SYS_START_CPU, c, 0, 0, 0, 0) < 0)
            return STATUS_SETUP;
    smp_phase = 4;
    while (smp_aps_ready != aps)
        __asm__ volatile("pause");
    u64 ipis = R[RH_IPIS];
    for (u64 g = 2 * iters + 1, k = 1; g <= 3 * iters; g++, k++) {
        if (sys(SYS_SHOOTDOWN, REMAP_VA, (u64)((g & 1) ? fb : fa), 0, 0, 0) < 0)
            return STATUS_SETUP;
        smp_gen = g;
        while (smp_acks != k * aps)
            __asm__ volatile("pause");
    }
    ipis = R[RH_IPIS] - ipis;
    smp_stop = 1;
    while (smp_done != aps)
        __asm__ volatile("pause");
    R[RH_FAULTS] = faults;
    /* CPU 0's own view after the last remap (iters even: mapping A) */
    u64 sum = 0;
    for (u64 i = 0; i < n; i++)
        sum += *word(DATA_VA + i * PAGE_SIZE);
    rec(n);
    rec(iters);
    rec(smp_bad_lockstep);
    rec(smp_bad_racy);
    rec(smp_bad_invlpg);
    rec(sum);
    rec(smp_bad_ipi);
    rec(ipis);
    errors += smp_bad_lockstep + smp_bad_racy + smp_bad_invlpg + smp_bad_ipi;
    errors += ipis != iters * aps;
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ---------------------------------------------------------------- hostile */

/* Probe va (read, then write if asked) and record: the probe results and,
 * if the read did not fault, the 8-byte value. */
static void hostile_probe(u64 va, int write)
{
    u64 r = uprobe_read(va);
    rec(r);
    rec(r ? 0 : *word(va));
    if (write)
        rec(uprobe_write(va));
}

/* Outcomes differ between native and shadow paging by design (the hole is
 * the VMM's under shadow paging): the records say what happened. */
static u64 w_hostile(void)
{
    /* 1. a user mapping inside the hole */
    if (sys(SYS_HOSTILE, 0, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    hostile_probe(HOLE_VA, 0);
    /* 2. PTEs at the hidden region and beyond RAM (MMIO or fault) */
    if (sys(SYS_HOSTILE, 1, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    hostile_probe(HOSTILE_VA, 1);
    hostile_probe(HOSTILE_VA + PAGE_SIZE, 1);
    /* 3. recursive PML4 entry: the PML4 read as data */
    i64 root = sys(SYS_HOSTILE, 2, 0, 0, 0, 0);
    if (root < 0)
        return STATUS_SETUP;
    u64 rva = (5UL << 39) | (5UL << 30) | (5UL << 21) | (5UL << 12);
    u64 r = uprobe_read(rva + 5 * 8);
    rec(r);
    if (!r) {
        u64 v = *word(rva + 5 * 8);
        errors += (v & PTE_ADDR) != (u64)root;
        rec(v & 0xfff);
    }
    /* 4. looping PD: entry 511 points at the PD, so the PT behind PD[0] is
     * data at HOSTILE_VA + 511 * 2 MiB; its entry 0 maps the hidden region */
    i64 pt = sys(SYS_HOSTILE, 3, 0, 0, 0, 0);
    if (pt < 0)
        return STATUS_SETUP;
    r = uprobe_read(HOSTILE_VA + 511 * LARGE_SIZE);
    rec(r);
    if (!r)
        rec(*word(HOSTILE_VA + 511 * LARGE_SIZE) & ~0x60UL);
    /* 5. garbage hypercall arguments, made by the kernel */
    i64 n = sys(SYS_HOSTILE, 4, nrec, 0, 0, 0);
    if (n < 0)
        return STATUS_SETUP;
    nrec += (u64)n;
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ---------------------------------------------------------------- hotplug */

static void put_hex(u64 v)
{
    char b[19];
    b[0] = '0';
    b[1] = 'x';
    int n = 2;
    for (int shift = 60; shift >= 0; shift -= 4) {
        u64 d = (v >> shift) & 15;
        if (d || n > 2 || shift == 0)
            b[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    }
    b[n] = 0;
    doorbell_puts(b);
}

static u64 ram_total(void)
{
    u64 t = 0;
    for (u64 i = 0; i < ui->nram; i++)
        t += ui->ram_regions[i][1];
    return t;
}

/* Whether [start, start + size) was RAM in the regions saved in old. */
static int was_ram(const u64 (*old)[2], u64 nold, u64 start, u64 size)
{
    for (u64 i = 0; i < nold; i++)
        if (start >= old[i][0] && start + size <= old[i][0] + old[i][1])
            return 1;
    return 0;
}

/* Waits for the VMM to add RAM (it learns of it with SYS_RAM_MAP, the ABI's
 * MEMORY_MAP), `growths` times; after each, maps every new region twice
 * (HOTPLUG_VA and an alias 256 GiB above), writes one word into each of its
 * 4 KiB pages through the first mapping (the page's GPA mixed with the
 * seed) and reads them back through the alias. Per region it prints and
 * records start, size and the FNV-1a 64 of the words read, which a test
 * can recompute from start, size and seed alone. */
static u64 w_hotplug(void)
{
    u64 growths = param(1, 2);
    static u64 old[MAX_RAM_REGIONS][2];
    if (sys(SYS_RAM_MAP, 0, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    u64 nold = ui->nram, seen = ram_total(), va = 0;
    for (u64 i = 0; i < nold; i++) {
        old[i][0] = ui->ram_regions[i][0];
        old[i][1] = ui->ram_regions[i][1];
    }
    doorbell_puts("hotplug: waiting for RAM beyond ");
    put_hex(seen);
    doorbell_puts("\n");
    for (u64 g = 0; g < growths; g++) {
        /* Each SYS_RAM_MAP is a VMM exit; nothing else to do meanwhile. */
        do {
            if (sys(SYS_RAM_MAP, 0, 0, 0, 0, 0) < 0)
                return STATUS_SETUP;
        } while (ram_total() <= seen);
        seen = ram_total();
        for (u64 r = 0; r < ui->nram; r++) {
            u64 start = ui->ram_regions[r][0], size = ui->ram_regions[r][1];
            if (was_ram(old, nold, start, size))
                continue;
            if ((start | size) & (LARGE_SIZE - 1) || va + size > HOTPLUG_ALIAS ||
                sys(SYS_MAP_RAM, HOTPLUG_VA + va, start, size / PAGE_SIZE, 0, 0) < 0 ||
                sys(SYS_MAP_RAM, HOTPLUG_VA + HOTPLUG_ALIAS + va, start, size / PAGE_SIZE, 0, 0) < 0)
                return STATUS_SETUP;
            u64 pages = size / PAGE_SIZE, base = HOTPLUG_VA + va;
            u64 t = rdtsc();
            for (u64 i = 0; i < pages; i++)
                *word(base + i * PAGE_SIZE + (i & 63) * 64) = (start + i * PAGE_SIZE) ^ ui->params[P_SEED];
            u64 h = 0xcbf29ce484222325UL;
            for (u64 i = 0; i < pages; i++) {
                u64 v = *word(base + HOTPLUG_ALIAS + i * PAGE_SIZE + (i & 63) * 64);
                errors += v != ((start + i * PAGE_SIZE) ^ ui->params[P_SEED]);
                for (int b = 0; b < 64; b += 8) {
                    h ^= (v >> b) & 0xff;
                    h *= 0x100000001b3UL;
                }
            }
            if (g < RH_NTSC_MAX)
                tsc_slot((int)g, rdtsc() - t);
            rec(start);
            rec(size);
            rec(h);
            doorbell_puts("hotplug: region ");
            put_hex(start);
            doorbell_puts(" size ");
            put_hex(size);
            doorbell_puts(" fnv ");
            put_hex(h);
            doorbell_puts("\n");
            va += size;
        }
        nold = ui->nram;
        for (u64 i = 0; i < nold; i++) {
            old[i][0] = ui->ram_regions[i][0];
            old[i][1] = ui->ram_regions[i][1];
        }
        doorbell_puts("hotplug: growth ");
        put_hex(g + 1);
        doorbell_puts(" done, RAM ");
        put_hex(seen);
        doorbell_puts("\n");
    }
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ------------------------------------------------------------------ remap */

/* Rewrites live leaf entries of a table the MMU already shadows (it may
 * have gone unsync): another frame, W, P or NX dropped or restored, each
 * followed by INVLPG of that page only, then reads, writes and executes
 * through the page. Every frame holds a `ret` at offset 0 and its own
 * marker at offset 8, so a translation that survived the INVLPG reads the
 * wrong marker or faults differently: the records differ from native, and
 * the workload checks each probe against the entry it wrote (which marker
 * a read must see; a read faults only without P, a write without P or W,
 * a fetch without P or with NX; a fault's error code has P as the entry
 * has it), counting every difference as an error. */
static u64 w_remap(void)
{
    u64 n = param(1, 16), rounds = param(2, 256);
    if (n > REMAP_MAX / 2)
        n = REMAP_MAX / 2;
    u64 pool = 2 * n;
    /* per live page: the marker of the frame its entry points at, and
     * whether the entry has P, W and NX */
    u64 mark[REMAP_MAX / 2];
    u8 p_bit[REMAP_MAX / 2], w_bit[REMAP_MAX / 2], nx_bit[REMAP_MAX / 2];
    i64 live = sys(SYS_MAP, 0, REMAP_VA, n, MAP_W, 0);
    i64 spare = sys(SYS_MAP, 0, DATA_VA, pool, MAP_W, 0);
    if (live < 0 || spare < 0)
        return STATUS_SETUP;
    /* the frames: the live ones, then the pool */
    for (u64 i = 0; i < n; i++) {
        *(volatile u8 *)(REMAP_VA + i * PAGE_SIZE) = 0xc3;
        *word(REMAP_VA + i * PAGE_SIZE + 8) = pat(10, i);
        mark[i] = pat(10, i);
        p_bit[i] = w_bit[i] = 1;
        nx_bit[i] = 0;
    }
    for (u64 i = 0; i < pool; i++) {
        *(volatile u8 *)(DATA_VA + i * PAGE_SIZE) = 0xc3;
        *word(DATA_VA + i * PAGE_SIZE + 8) = pat(11, i);
    }
    /* every page shadowed before the first rewrite */
    for (u64 i = 0; i < n; i++)
        rec(*word(REMAP_VA + i * PAGE_SIZE + 8));
    for (u64 r = 0; r < rounds; r++) {
        u64 i = rnd() % n, op = rnd() % PTE_OPS, arg = 0;
        if (op == PTE_OP_FRAME) {
            u64 k = rnd() % pool;
            arg = (u64)spare + k * PAGE_SIZE;
            mark[i] = pat(11, k);
        }
        p_bit[i] = op == PTE_OP_CLEAR_P ? 0 : op == PTE_OP_SET_P ? 1 : p_bit[i];
        w_bit[i] = op == PTE_OP_CLEAR_W ? 0 : op == PTE_OP_SET_W ? 1 : w_bit[i];
        nx_bit[i] = op == PTE_OP_CLEAR_NX ? 0 : op == PTE_OP_SET_NX ? 1 : nx_bit[i];
        u64 va = REMAP_VA + i * PAGE_SIZE;
        if (sys(SYS_PTE, va, op, arg, 0, 0) < 0)
            return STATUS_SETUP;
        u64 rd = uprobe_read(va + 8);
        u64 v = rd ? 0 : *word(va + 8);
        u64 wr = uprobe_write(va + 16);
        u64 fe = uprobe_fetch(va);
        rec(i | op << 16 | (rd & 0xffff) << 24 | (wr & 0xffff) << 40);
        rec(v);
        rec(fe);
        /* each probe: 0, or 1 | error code << 8 (bit 8: P) */
        u64 p = p_bit[i];
        errors += (rd & 1) != !p || (rd & 1 && ((rd >> 8) & 1) != p) || (!rd && v != mark[i]);
        errors += (wr & 1) != (!p || !w_bit[i]) || (wr & 1 && ((wr >> 8) & 1) != p);
        errors += (fe & 1) != (!p || nx_bit[i]) || (fe & 1 && ((fe >> 8) & 1) != p);
    }
    return errors ? STATUS_MISMATCH : STATUS_OK;
}

/* ----------------------------------------------------------------- attack */

/* A hostile guest kernel (shadow paging): each step, one SYS_ATTACK of a
 * target class drawn from the mask (parameter 2; 0: every class) writes
 * into the VMM's hidden region through the hole (kernel.c), then the
 * workload carries on with ordinary page-table work that faults and makes
 * hypercalls: touches, remaps, address-space switches, flushes, live PTE
 * rewrites, demand paging. Nothing is checked: what the VMM must do is end
 * the VM with a clear error or let it carry on. Records: per step, class |
 * result << 8. With two vCPUs the other one keeps touching and flushing
 * the same pages (remote flushes, exits to race with). */

#define ATK_SPACES 4
#define ATK_PAGES 64 /* kernel.c's ATK_DATA_PAGES */

static volatile u64 atk_stop;

static void __attribute__((noreturn)) attack_ap(void)
{
    u64 i = 0;
    while (!atk_stop) {
        (void)uprobe_read(DATA_VA + (i % ATK_PAGES) * PAGE_SIZE);
        if (++i % 64 == 0)
            sys(SYS_FLUSH, (i & 128) ? ~0UL : DATA_VA, 0, 0, 0, 0);
    }
    for (;;)
        __asm__ volatile("pause");
}

static void attack_work(u64 spaces[ATK_SPACES], i64 pool)
{
    switch (rnd() % 6) {
    case 0:
        for (int k = 0; k < 8; k++) {
            u64 va = DATA_VA + (rnd() % ATK_PAGES) * PAGE_SIZE;
            if (rnd() & 1)
                (void)uprobe_write(va + 64);
            else
                (void)uprobe_read(va);
        }
        break;
    case 1:
        if (pool >= 0)
            sys(SYS_REMAP, DATA2_VA, 8, (u64)pool + (rnd() % 8) * PAGE_SIZE, 0, 0);
        break;
    case 2: {
        u64 sp = spaces[rnd() % ATK_SPACES];
        sys(SYS_SWITCH, sp, 0, 0, 0, 0);
        for (int k = 0; k < 4; k++)
            (void)uprobe_read(DATA_VA + (rnd() % 16) * PAGE_SIZE);
        sys(SYS_SWITCH, 0, 0, 0, 0, 0);
        break;
    }
    case 3:
        sys(SYS_FLUSH, (rnd() & 1) ? ~0UL : DATA_VA + (rnd() % ATK_PAGES) * PAGE_SIZE, 0, 0, 0, 0);
        break;
    case 4:
        sys(SYS_PTE, REMAP_VA + (rnd() % 8) * PAGE_SIZE, rnd() % PTE_OPS,
            pool >= 0 ? (u64)pool + (rnd() % 8) * PAGE_SIZE : 0, 0, 0);
        (void)uprobe_read(REMAP_VA + (rnd() % 8) * PAGE_SIZE);
        break;
    default:
        *word(DATA3_VA + (rnd() % 64) * PAGE_SIZE) = rnd();
        (void)uprobe_read(DATA_VA + (rnd() % ATK_PAGES) * PAGE_SIZE + 8);
        break;
    }
}

static u64 w_attack(void)
{
    u64 steps = param(1, 24), mask = param(2, 0), relink = param(3, 0);
    if (!(mask & ((1UL << ATK_CLASSES) - 1)))
        mask = (1UL << ATK_CLASSES) - 1;
    u64 spaces[ATK_SPACES] = {0};
    if (sys(SYS_MAP, 0, DATA_VA, ATK_PAGES, MAP_W, 0) < 0 || sys(SYS_MAP, 0, DATA2_VA, 8, MAP_W, 0) < 0 ||
        sys(SYS_MAP, 0, REMAP_VA, 8, MAP_W, 0) < 0 || sys(SYS_MAP, 0, DATA3_VA, 64, MAP_W | MAP_DEMAND, 0) < 0)
        return STATUS_SETUP;
    i64 pool = sys(SYS_MAP, 0, DATA_VA + ATK_PAGES * PAGE_SIZE, 8, MAP_W, 0);
    for (u64 i = 1; i < ATK_SPACES; i++) {
        i64 sp = sys(SYS_NEW_SPACE, 0, 0, 0, 0, 0);
        if (sp < 0 || sys(SYS_MAP, (u64)sp, DATA_VA, 16, MAP_W, 0) < 0)
            return STATUS_SETUP;
        spaces[i] = (u64)sp;
    }
    for (u64 i = 0; i < ATK_PAGES; i++)
        *word(DATA_VA + i * PAGE_SIZE) = pat(11, i);
    for (u64 i = 1; i < ATK_SPACES; i++) {
        sys(SYS_SWITCH, spaces[i], 0, 0, 0, 0);
        (void)*word(DATA_VA);
    }
    sys(SYS_SWITCH, 0, 0, 0, 0, 0);
    if (ui->ncpus > 1 && sys(SYS_START_CPU, 1, 0, 0, 0, 0) < 0)
        return STATUS_SETUP;
    for (u64 s = 0; s < steps; s++) {
        u64 class;
        do
            class = rnd() % ATK_CLASSES;
        while (!(mask & (1UL << class)));
        R[RH_ATK_STEP] = s + 1;
        R[RH_ATK_CLASS] = class;
        u64 r1 = rnd();
        if (class == ATK_RELINK || class == ATK_GUEST_RELINK)
            r1 = relink ? relink : r1 % 64 + 1;
        i64 r = sys(SYS_ATTACK, class, r1, rnd(), rnd(), 0);
        rec(class | (u64)(r & 0xff) << 8);
        for (u64 k = rnd() % 3 + 1; k; k--)
            attack_work(spaces, pool);
    }
    atk_stop = 1;
    return STATUS_OK;
}

/* ---------------------------------------------- guests that never return */

/* spin-user: CPL3, no exit ever. */
static u64 __attribute__((noreturn)) w_spin_user(void)
{
    doorbell_puts("guest: spin-user running\n");
    for (;;)
        R[RH_TSC]++;
}

/* spin-kernel: CPL0, no exit ever. */
static u64 w_spin_kernel(void)
{
    doorbell_puts("guest: spin-kernel running\n");
    sys(SYS_SPIN, 0, 0, 0, 0, 0);
    return STATUS_SETUP;
}

/* fault-loop: a read of a page that is never mapped, whose #PF the kernel
 * returns from without fixing it: the same fault forever. */
static u64 w_fault_loop(void)
{
    doorbell_puts("guest: fault-loop running\n");
    (void)*word(FAULT_LOOP_VA);
    return STATUS_SETUP;
}

/* ------------------------------------------------------------------ timer */

/* Tasks in address spaces of their own, switched by the kernel at LAPIC
 * timer interrupts. Each mixes a pattern into its own pages of DATA_VA
 * (demand-paged) and hashes what it reads: with its registers live across
 * every preemption, a task whose registers or address space were not
 * restored exactly gives another hash than natively. The user image, where
 * these variables live, is shared by every space. */
static volatile u64 task_sum[MAX_TASKS], task_finished[MAX_TASKS];
static u64 timer_pages, timer_rounds;

static u64 timer_work(u64 t)
{
    u64 h = 0xcbf29ce484222325UL ^ t;
    for (u64 r = 0; r < timer_rounds; r++)
        for (u64 p = 0; p < timer_pages; p++) {
            volatile u64 *w = word(DATA_VA + p * PAGE_SIZE + (r % 512) * 8);
            u64 v = *w ^ pat(t, p * timer_rounds + r);
            *w = v * 0x9e3779b97f4a7c15UL + r;
            h = (h ^ v) * 0x100000001b3UL;
        }
    return h;
}

/* A fixed stretch of user computation: a dependent multiply chain. */
static u64 timer_spin(void)
{
    u64 x = 1;
    for (u64 i = 0; i < (1UL << 23); i++)
        x = x * 0x9e3779b97f4a7c15UL + i;
    return x;
}

static void __attribute__((noreturn)) timer_task(u64 t)
{
    task_sum[t] = timer_work(t);
    task_finished[t] = 1;
    sys(SYS_TASK_DONE, 0, 0, 0, 0, 0);
    for (;;)
        __asm__ volatile("pause");
}

/* p1 tasks (3), p2 pages each (64), p3 rounds (256), p4 timer period in
 * us (1000), p5 ticks to wait for at least (10). Records: each task's
 * hash. Checked against bounds (errors): ticks >= p5, switches >= tasks - 1
 * (each other task had to run) and <= ticks, one tick taken at CPL0. */
static u64 w_timer(void)
{
    u64 n = param(1, 3), period = param(4, 1000) * 1000, min_ticks = param(5, 10);
    timer_pages = param(2, 64);
    timer_rounds = param(3, 256);
    if (n > MAX_TASKS || timer_pages > 512)
        return STATUS_SETUP;
    if (sys(SYS_MAP, 0, DATA_VA, timer_pages, MAP_W | MAP_DEMAND, 0) < 0)
        return STATUS_SETUP;
    u64 t0 = rdtsc();
    if (sys(SYS_TIMER, period, n, (u64)timer_task, 0, 0) < 0)
        return STATUS_SETUP;
    task_sum[0] = timer_work(0);
    task_finished[0] = 1;
    for (;;) {
        u64 all = 1;
        for (u64 t = 0; t < n; t++)
            all &= task_finished[t];
        if (all && R[RH_TICKS] >= min_ticks)
            break;
        __asm__ volatile("pause");
    }
    u64 run = rdtsc() - t0;
    /* The cost of a tick: the same computation with the timer running
     * (alone now: no switch) and stopped, the difference per tick. */
    u64 k0 = R[RH_TICKS], a = rdtsc(), x = timer_spin(), b = rdtsc(), k1 = R[RH_TICKS];
    u64 ticks = (u64)sys(SYS_TIMER_STOP, 0, 0, 0, 0, 0);
    u64 c = rdtsc(), y = timer_spin(), d = rdtsc();
    errors += x != y;
    tsc_slot(0, run);
    tsc_slot(1, k1 > k0 && b - a > d - c ? ((b - a) - (d - c)) / (k1 - k0) : 0);
    for (u64 t = 0; t < n; t++)
        rec(task_sum[t]);
    u64 switches = R[RH_SWITCHES];
    errors += ticks < min_ticks;
    errors += switches < n - 1 || switches > ticks;
    errors += R[RH_KTICKS] < 1;
    return STATUS_OK;
}

/* ------------------------------------------------------------------- main */

static const char *const names[] = {"?", "touch", "spaces", "cow", "adbits", "huge", "access",
                                    "smp", "hostile", "hotplug", "remap", "attack", "spin-user",
                                    "spin-kernel", "fault-loop", "timer"};

void __attribute__((noreturn)) user_main(const struct uinfo *info, u64 cpu)
{
    ui = info;
    if (cpu != 0) {
        if (ui->workload == WL_ATTACK)
            attack_ap();
        smp_ap();
    }
    rng_state = ui->params[P_SEED] * 0x9e3779b97f4a7c15UL + 0x2545f4914f6cdd1dUL;
    if (!rng_state)
        rng_state = 1;
    u64 status;
    switch (ui->workload) {
    case WL_TOUCH: status = w_touch(); break;
    case WL_SPACES: status = w_spaces(); break;
    case WL_COW: status = w_cow(); break;
    case WL_ADBITS: status = w_adbits(); break;
    case WL_HUGE: status = w_huge(); break;
    case WL_ACCESS: status = w_access(); break;
    case WL_SMP: status = w_smp(); break;
    case WL_HOSTILE: status = w_hostile(); break;
    case WL_HOTPLUG: status = w_hotplug(); break;
    case WL_REMAP: status = w_remap(); break;
    case WL_ATTACK: status = w_attack(); break;
    case WL_SPIN_USER: status = w_spin_user(); break;
    case WL_SPIN_KERNEL: status = w_spin_kernel(); break;
    case WL_FAULT_LOOP: status = w_fault_loop(); break;
    case WL_TIMER: status = w_timer(); break;
    default: status = STATUS_SETUP; break;
    }
    R[RH_NRECORDS] = nrec;
    R[RH_ERRORS] = errors;
    R[RH_STATUS] = status;
    doorbell_puts("guest: ");
    doorbell_puts(ui->workload < sizeof(names) / sizeof(names[0]) ? names[ui->workload] : "?");
    doorbell_puts(status == STATUS_OK ? " ok\n" : " FAILED\n");
    doorbell_exit(status);
}
