// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests: on random page-table trees in every paging mode, the walker
//! agrees with the reference model of `oracle/` -- outcome, every field of
//! the walk, and all of memory afterwards -- and never panics or hangs.
//!
//! A scenario is a set of table pages (RAM with a hole, so that some table
//! pointers lead nowhere) each holding entries at the same four slots, random
//! registers, and a sequence of accesses whose addresses are built from those
//! slots so that walks go deep. Entries are mostly plausible (a table frame,
//! random flag bits, P usually set) with random large pages, XD, protection
//! keys and the odd reserved bit.

mod oracle;

use oracle::glue::{self, EXACT};
use oracle::{bits, Memory, Outcome, PF_P, PF_PK, PF_RSVD};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shadow_mmu::{
    gva_to_gpa, load_pdptrs, walk, Access, AccessKind, Cr0, Cr4, Efer, GuestAddress, Gva,
    PagingState, WalkError,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// RAM: gfns 0..6 and 8..10; gfns 6, 7 and 10.. are not RAM.
const RAM: [(u64, usize); 2] = [(0, 6 << 12), (8 << 12, 2 << 12)];
const RAM_GFNS: [u64; 8] = [0, 1, 2, 3, 4, 5, 8, 9];
/// Frames entries point at: every RAM gfn and a few that are not RAM.
const FRAMES: u64 = 12;
const SLOTS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mm {
    Off,
    Bits32,
    Pae,
    L4,
    L5,
}

#[derive(Clone, Copy, Debug)]
enum Frame {
    /// A frame in 0..FRAMES (mostly tables).
    Gfn(u64),
    /// Random address bits, limited to MAXPHYADDR.
    Random(u64),
}

#[derive(Clone, Copy, Debug)]
struct EntrySpec {
    frame: Frame,
    /// Bits 11:0 (P and PS are replaced by the next two fields).
    low: u16,
    present: bool,
    ps: bool,
    xd: bool,
    key: u8,
    /// One more bit set anywhere in 63:12 (often a reserved one).
    stray: Option<u8>,
}

impl EntrySpec {
    /// The entry. `tidy` drops noise that ends most walks early: 1 drops the
    /// stray bit, 2 also the protection key where it is reserved (PAE), 3 also
    /// XD where it is reserved (NXE = 0).
    fn value(&self, maxphyaddr: u32, tidy: u8, pae: bool, nxe: bool) -> u64 {
        let frame = match self.frame {
            Frame::Gfn(g) => g << 12,
            Frame::Random(x) => x & bits(maxphyaddr - 1, 12),
        };
        let mut v = frame | u64::from(self.low & 0xf7e);
        if self.present {
            v |= oracle::P;
        }
        if self.ps {
            v |= oracle::PS;
        }
        if self.xd && (tidy < 3 || nxe) {
            v |= oracle::XD;
        }
        if tidy < 2 || !pae {
            v |= u64::from(self.key & 15) << 59;
        }
        if let Some(b) = self.stray.filter(|_| tidy < 1) {
            v |= 1 << b;
        }
        v
    }
}

fn entry() -> impl Strategy<Value = EntrySpec> {
    (
        prop_oneof![
            18 => prop::sample::select(RAM_GFNS.to_vec()).prop_map(Frame::Gfn),
            1 => (0..FRAMES).prop_map(Frame::Gfn),
            1 => any::<u64>().prop_map(Frame::Random),
        ],
        any::<u16>(),
        prop::bool::weighted(0.92),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        prop_oneof![2 => Just(0u8), 1 => 0u8..16],
        prop::option::weighted(0.1, 12u8..64),
    )
        .prop_map(|(frame, low, present, ps, xd, key, stray)| EntrySpec {
            frame,
            low,
            present,
            ps,
            xd,
            key,
            stray,
        })
}

/// PAE PDPTEs: mostly well-formed (frame, P, PWT/PCD, ignored bits), else
/// anything.
fn pdpte() -> impl Strategy<Value = EntrySpec> {
    prop_oneof![
        9 => (
            prop_oneof![9 => prop::sample::select(RAM_GFNS.to_vec()), 1 => 0..FRAMES],
            any::<u16>(),
            prop::bool::weighted(0.9),
        )
            .prop_map(|(g, low, p)| {
            EntrySpec {
                frame: Frame::Gfn(g),
                low: low & 0xe18,
                present: p,
                ps: false,
                xd: false,
                key: 0,
                stray: None,
            }
        }),
        1 => entry(),
    ]
}

#[derive(Clone, Copy, Debug)]
struct AccessSpec {
    /// Slot choice per level (for the PAE PDPTE: the PDPTE index).
    sel: [u8; 5],
    offset: u16,
    kind: u8,
    user: bool,
    implicit: bool,
    /// Make the address non-canonical / wider than 32 bits.
    mangle: Option<u8>,
    /// Use `gva_to_gpa` rather than `walk`.
    via_gva_to_gpa: bool,
}

fn access() -> impl Strategy<Value = AccessSpec> {
    (
        prop::array::uniform5(0u8..4),
        0u16..4096,
        0u8..3,
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.05, any::<u8>()),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(sel, offset, kind, user, implicit, mangle, via_gva_to_gpa)| AccessSpec {
                sel,
                offset,
                kind,
                user,
                implicit,
                mangle,
                via_gva_to_gpa,
            },
        )
}

#[derive(Clone, Debug)]
struct Scenario {
    mode: Mm,
    /// WP, NXE, SMEP, SMAP, AC, PKE, PKS, CR4.PSE, PSE-36, 1G pages, CPL
    /// (2 bits).
    switches: u16,
    /// See `EntrySpec::value`.
    tidy: u8,
    maxphyaddr: u8,
    pkru: u32,
    pkrs: u32,
    root: u64,
    cr3_low: u16,
    slots: [u16; SLOTS],
    entries: Vec<EntrySpec>,
    pdptes: [EntrySpec; 4],
    /// PAE: overwrite a PDPTE in memory after loading the registers.
    stale: Option<(u8, EntrySpec)>,
    accesses: Vec<AccessSpec>,
}

fn scenario(mode: Mm) -> impl Strategy<Value = Scenario> {
    (
        (any::<u16>(), 0u8..4),
        prop::sample::select(vec![32u8, 36, 39, 40, 46, 48, 52]),
        (any::<u32>(), any::<u32>()),
        prop_oneof![9 => prop::sample::select(RAM_GFNS.to_vec()), 1 => 0..FRAMES],
        any::<u16>(),
        prop::array::uniform4(0u16..1024),
        prop::collection::vec(entry(), RAM_GFNS.len() * SLOTS),
        prop::array::uniform4(pdpte()),
        prop::option::weighted(0.2, (0u8..4, entry())),
        prop::collection::vec(access(), 1..8),
    )
        .prop_map(
            move |(
                (switches, tidy),
                maxphyaddr,
                (pkru, pkrs),
                root,
                cr3_low,
                slots,
                entries,
                pdptes,
                stale,
                accesses,
            )| {
                Scenario {
                    mode,
                    switches,
                    tidy,
                    maxphyaddr,
                    pkru,
                    pkrs,
                    root,
                    cr3_low,
                    slots,
                    entries,
                    pdptes,
                    stale,
                    accesses,
                }
            },
        )
}

impl Scenario {
    fn on(&self, bit: u32) -> bool {
        self.switches >> bit & 1 != 0
    }

    fn value(&self, e: &EntrySpec) -> u64 {
        e.value(
            u32::from(self.maxphyaddr),
            self.tidy,
            self.mode == Mm::Pae,
            self.on(1),
        )
    }

    fn entry_size(&self) -> u64 {
        if self.mode == Mm::Bits32 {
            4
        } else {
            8
        }
    }

    fn slot(&self, k: usize) -> u64 {
        let s = u64::from(self.slots[k]);
        if self.mode == Mm::Bits32 {
            s % 1024
        } else {
            s % 512
        }
    }

    fn state(&self) -> PagingState {
        let mut cr0 = Cr0::PE | Cr0::ET;
        let mut cr4 = Cr4::empty();
        let mut efer = Efer::empty();
        match self.mode {
            Mm::Off => {}
            Mm::Bits32 => cr0 |= Cr0::PG,
            Mm::Pae => {
                cr0 |= Cr0::PG;
                cr4 |= Cr4::PAE;
            }
            Mm::L4 => {
                cr0 |= Cr0::PG;
                cr4 |= Cr4::PAE;
                efer |= Efer::LME | Efer::LMA;
            }
            Mm::L5 => {
                cr0 |= Cr0::PG;
                cr4 |= Cr4::PAE | Cr4::LA57;
                efer |= Efer::LME | Efer::LMA;
            }
        }
        let flag = |bit, c4: Cr4| if self.on(bit) { c4 } else { Cr4::empty() };
        if self.on(0) {
            cr0 |= Cr0::WP;
        }
        if self.on(1) {
            efer |= Efer::NXE;
        }
        cr4 |= flag(2, Cr4::SMEP) | flag(3, Cr4::SMAP) | flag(5, Cr4::PKE) | flag(6, Cr4::PKS);
        cr4 |= flag(7, Cr4::PSE);
        // Bits 11:0 are PCID or PWT/PCD; with PAE, bits 11:5 place the PDPT
        // within the page and bits 4:0 are ignored.
        let cr3 = (self.root << 12) | u64::from(self.cr3_low & 0xfff);
        PagingState {
            cr0,
            cr3,
            cr4,
            efer,
            pkru: self.pkru,
            pkrs: self.pkrs,
            // Not used by the walker: `Access` says who accesses.
            cpl: (self.switches >> 10) as u8 & 3,
            eflags_ac: self.on(4),
            maxphyaddr: self.maxphyaddr,
            pdptrs: [0; 4],
            gbpages: self.on(9),
            pse36: self.on(8),
        }
    }

    fn gva(&self, a: &AccessSpec) -> u64 {
        let pick = |l: usize| self.slot(usize::from(a.sel[l - 1]) % SLOTS);
        let off = u64::from(a.offset);
        let (mut gva, width) = match self.mode {
            Mm::Off => (
                (u64::from(a.sel[0]) << 30) | (pick(2) << 21) | (pick(1) << 12) | off,
                32,
            ),
            Mm::Bits32 => ((pick(2) << 22) | (pick(1) << 12) | off, 32),
            Mm::Pae => (
                (u64::from(a.sel[2] % 4) << 30) | (pick(2) << 21) | (pick(1) << 12) | off,
                32,
            ),
            Mm::L4 | Mm::L5 => {
                let levels = if self.mode == Mm::L5 { 5 } else { 4 };
                let mut g = off;
                for l in 1..=levels {
                    g |= pick(l) << (12 + 9 * (l as u32 - 1));
                }
                let top = 12 + 9 * levels as u32;
                // Sign-extend from the top bit.
                let g = ((g << (64 - top)) as i64 >> (64 - top)) as u64;
                (g, top)
            }
        };
        if let Some(m) = a.mangle {
            let span = 64 - width;
            gva ^= 1 << (width + u32::from(m) % span);
        }
        gva
    }

    fn access(&self, a: &AccessSpec) -> Access {
        Access {
            kind: match a.kind {
                0 => AccessKind::Read,
                1 => AccessKind::Write,
                _ => AccessKind::Fetch,
            },
            user: a.user,
            implicit: a.implicit,
        }
    }
}

/// Aborts the process if a test stops making progress (a walk that never
/// returns would otherwise hang CI).
struct Watchdog {
    beats: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Outcomes seen: Ok at level 1..=3, not present, reserved, protection,
    /// protection key, #GP.
    stats: [AtomicU64; 8],
}

impl Watchdog {
    fn new(name: &'static str, limit: Duration) -> Watchdog {
        let beats = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (beats.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            let mut idle = Duration::ZERO;
            let tick = Duration::from_millis(200);
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let now = b.load(Ordering::Relaxed);
                if now == last {
                    idle += tick;
                    if idle >= limit {
                        eprintln!("{name}: no walk completed for {limit:?}: the walker hangs");
                        std::process::abort();
                    }
                } else {
                    last = now;
                    idle = Duration::ZERO;
                }
            }
        });
        Watchdog {
            beats,
            stop,
            stats: Default::default(),
        }
    }

    fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, o: &Outcome) {
        let i = match o {
            Outcome::Ok(t) => usize::from(t.level.clamp(1, 3)) - 1,
            Outcome::PageFault(ec) if ec & PF_P == 0 => 3,
            Outcome::PageFault(ec) if ec & PF_RSVD != 0 => 4,
            Outcome::PageFault(ec) if ec & PF_PK != 0 => 6,
            Outcome::PageFault(_) => 5,
            Outcome::Gp => 7,
        };
        self.stats[i].fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, name: &str) -> [u64; 8] {
        let n: [u64; 8] = std::array::from_fn(|i| self.stats[i].load(Ordering::Relaxed));
        eprintln!(
            "{name}: ok 4K/2M-4M/1G {}/{}/{}, #PF not-present {}, reserved {}, \
             protection {}, pkey {}, #GP {}",
            n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]
        );
        n
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

fn run(s: &Scenario, dog: &Watchdog) -> Result<(), TestCaseError> {
    let mut model = Memory::new(&RAM);
    let size = s.entry_size();
    for (k, e) in s.entries.iter().enumerate() {
        let gpa = (RAM_GFNS[k / SLOTS] << 12) + size * s.slot(k % SLOTS);
        assert!(model.write(gpa, size as usize, s.value(e)));
    }
    let mut state = s.state();
    let regs = glue::regs(&state);
    if state.mode() != glue::paging_mode(oracle::mode_of(&regs)) {
        return Err(fail(format!(
            "PagingState::mode {:?}, model {:?}",
            state.mode(),
            oracle::mode_of(&regs)
        )));
    }
    if state.reports_fetch() != oracle::reports_fetch(&regs) {
        return Err(fail(
            "PagingState::reports_fetch differs from SDM 4.7".into(),
        ));
    }

    if s.mode == Mm::Pae {
        let pdpt = state.cr3 & bits(31, 5);
        for (i, e) in s.pdptes.iter().enumerate() {
            // (Nothing is written where the PDPT is not RAM.)
            model.write(pdpt + 8 * i as u64, 8, s.value(e));
        }
        let mem = glue::mmap_of(&model);
        let got = load_pdptrs(&mem, &state);
        let want = oracle::load_pdptrs(&model, &glue::regs(&state));
        match (&got, &want) {
            (Ok(g), Some(w)) if g == w => state.pdptrs = *g,
            (Err(WalkError::GeneralProtection), None) => {}
            _ => {
                let got = match &got {
                    Ok(g) => format!("Ok({g:#x?})"),
                    Err(e) => glue::show_err(e),
                };
                return Err(fail(format!("load_pdptrs: walker {got}, model {want:#x?}")));
            }
        }
        if let Some((i, e)) = s.stale {
            // The registers, not memory, are used until CR3 is reloaded.
            model.write(pdpt + 8 * u64::from(i), 8, s.value(&e));
        }
    }

    let mem = glue::mmap_of(&model);
    let regs = glue::regs(&state);
    for (n, a) in s.accesses.iter().enumerate() {
        let gva = s.gva(a);
        let access = s.access(a);
        let want = oracle::translate(&mut model, &regs, gva, glue::acc(access));
        dog.count(&want);
        if a.via_gva_to_gpa {
            let got = gva_to_gpa(&mem, &state, Gva(gva), access);
            dog.beat();
            let ok = match (&got, &want) {
                (Ok(g), Outcome::Ok(t)) => *g == GuestAddress(t.gpa),
                (Err(WalkError::PageFault(ec)), Outcome::PageFault(w)) => ec.bits() == *w,
                (Err(WalkError::GeneralProtection), Outcome::Gp) => true,
                _ => false,
            };
            if !ok {
                let got = match &got {
                    Ok(g) => format!("Ok({:#x})", g.0),
                    Err(e) => glue::show_err(e),
                };
                return Err(fail(format!(
                    "access {n} at {gva:#x} ({access:?}) via gva_to_gpa: model {}, walker {got}",
                    glue::show_model(&want)
                )));
            }
        } else {
            let got = walk(&mem, &state, Gva(gva), access);
            dog.beat();
            glue::diff_outcome(gva, &want, &got, EXACT)
                .map_err(|e| fail(format!("access {n} at {gva:#x} ({access:?}): {e}")))?;
        }
        glue::diff_memory(&mem, &model)
            .map_err(|e| fail(format!("after access {n} at {gva:#x} ({access:?}): {e}")))?;
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        // Scenarios are cheap; keep shrinking bounded.
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

macro_rules! mode_test {
    ($name:ident, $mode:expr) => {
        #[test]
        #[cfg_attr(
            miri,
            ignore = "10 000 proptest cases with coverage bounds; too slow under Miri"
        )]
        fn $name() {
            let dog = Watchdog::new(stringify!($name), Duration::from_secs(60));
            proptest!(config(), |(s in scenario($mode))| {
                run(&s, &dog)?;
            });
            let n = dog.report(stringify!($name));
            // The generator must keep reaching every kind of outcome.
            let want_levels = match $mode {
                Mm::Off => 1,
                Mm::Bits32 | Mm::Pae => 2,
                Mm::L4 | Mm::L5 => 3,
            };
            for (i, what) in ["4K", "large", "1G"].iter().enumerate().take(want_levels) {
                // (1G leaves show up ~150 times in 10 000 cases; the bound leaves
                // room for the randomness of each run.)
                assert!(n[i] > 30, "only {} successful {what} walks", n[i]);
            }
            if $mode != Mm::Off {
                for (i, what) in [(3, "not-present"), (4, "reserved"), (5, "protection")] {
                    assert!(n[i] > 100, "only {} {what} faults", n[i]);
                }
            }
            if matches!($mode, Mm::L4 | Mm::L5) {
                assert!(n[6] > 100, "only {} protection-key faults", n[6]);
            }
            assert!(n[7] > 10, "only {} #GP", n[7]);
        }
    };
}

mode_test!(walker_matches_model_paging_off, Mm::Off);
mode_test!(walker_matches_model_32bit, Mm::Bits32);
mode_test!(walker_matches_model_pae, Mm::Pae);
mode_test!(walker_matches_model_4level, Mm::L4);
mode_test!(walker_matches_model_5level, Mm::L5);

/// Hand-picked edges the random trees reach only rarely.
#[test]
fn edges() {
    let dog = Watchdog::new("edges", Duration::from_secs(60));
    let plain = |g: u64| EntrySpec {
        frame: Frame::Gfn(g),
        low: 0x6, // R/W, U/S
        present: true,
        ps: false,
        xd: false,
        key: 0,
        stray: None,
    };
    let read = AccessSpec {
        sel: [0; 5],
        offset: 0x123,
        kind: 0,
        user: true,
        implicit: false,
        mangle: None,
        via_gva_to_gpa: false,
    };
    // A self-referencing table at every level: the walk must end after the
    // mode's levels, whatever the tables point to.
    for mode in [Mm::Bits32, Mm::Pae, Mm::L4, Mm::L5] {
        for maxphyaddr in [32u8, 36, 40, 52] {
            for switches in [0u16, 0x3ff, 0x180, 0x201] {
                let s = Scenario {
                    mode,
                    switches,
                    tidy: 3,
                    maxphyaddr,
                    pkru: 0,
                    pkrs: 0,
                    root: 1,
                    cr3_low: 0,
                    slots: [0, 1, 2, 3],
                    entries: (0..RAM_GFNS.len() * SLOTS)
                        .map(|k| {
                            let mut e = plain(1);
                            e.ps = k % 3 == 1;
                            e.xd = k % 5 == 2;
                            e
                        })
                        .collect(),
                    pdptes: [plain(1); 4],
                    stale: None,
                    accesses: (0..3u8)
                        .flat_map(|kind| {
                            (0..4u8).map(move |sel| AccessSpec {
                                sel: [sel, sel, sel, 3 - sel, sel],
                                kind,
                                ..read
                            })
                        })
                        .collect(),
                };
                if let Err(e) = run(&s, &dog) {
                    panic!("{mode:?} M={maxphyaddr} switches={switches:#x}: {e}");
                }
            }
        }
    }
}

/// The answer a hand-checked case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Translated: gpa and page size.
    Ok(u64, u64),
    /// #PF with this error code.
    Pf(u32),
    /// #GP.
    Gp,
}

/// Builds `entries` (gpa, size, value) in 16 pages of RAM, makes the access
/// with the walker and the model, and checks both against `want` and each
/// other.
fn hand_check(
    what: &str,
    state: PagingState,
    entries: &[(u64, usize, u64)],
    gva: u64,
    access: Access,
    want: Want,
) {
    let mut model = Memory::new(&[(0, 16 << 12)]);
    for &(gpa, size, v) in entries {
        assert!(model.write(gpa, size, v));
    }
    let mem = glue::mmap_of(&model);
    let got = walk(&mem, &state, Gva(gva), access);
    let modeled = oracle::translate(&mut model, &glue::regs(&state), gva, glue::acc(access));
    let as_want = |o: &Outcome| match *o {
        Outcome::Ok(t) => Want::Ok(t.gpa, t.page_size),
        Outcome::PageFault(ec) => Want::Pf(ec),
        Outcome::Gp => Want::Gp,
    };
    assert_eq!(as_want(&modeled), want, "{what}: the model");
    if let Err(e) = glue::diff_outcome(gva, &modeled, &got, EXACT) {
        panic!("{what}: {e}");
    }
    if let Err(e) = glue::diff_memory(&mem, &model) {
        panic!("{what}: {e}");
    }
}

/// Corners of the SDM's rules, with expectations worked out by hand.
#[test]
fn hand_checked_corners() {
    const P: u64 = oracle::P;
    const W: u64 = oracle::RW;
    const U: u64 = oracle::US;
    const PS: u64 = oracle::PS;
    let sup = |kind| Access {
        kind,
        user: false,
        implicit: false,
    };
    let usr = |kind| Access {
        kind,
        user: true,
        implicit: false,
    };
    let read = sup(AccessKind::Read);

    // 32-bit paging, 4-MByte page (SDM Table 4-4): PDE bits (M-20):13 are
    // physical-address bits (M-1):32 with M = min(MAXPHYADDR, 40); bits
    // 21:(M-19) are reserved.
    let b32 = |maxphyaddr: u8, pse36: bool| PagingState {
        cr0: Cr0::PE | Cr0::PG,
        cr3: 0x1000,
        cr4: Cr4::PSE,
        maxphyaddr,
        pse36,
        ..Default::default()
    };
    let gva = 0x0065_4321; // PDE index 1, offset 0x25_4321
    let pde = |high: u64| vec![(0x1004, 4, 0x0040_0000 | (high << 13) | PS | P)];
    let ok4m = |high: u64| Want::Ok((high << 32) | 0x0040_0000 | 0x25_4321, 4 << 20);
    hand_check(
        "PSE-36, M=40",
        b32(40, true),
        &pde(0xff),
        gva,
        read,
        ok4m(0xff),
    );
    hand_check(
        "PSE-36, M=52",
        b32(52, true),
        &pde(0xff),
        gva,
        read,
        ok4m(0xff),
    );
    hand_check(
        "PSE-36, M=36",
        b32(36, true),
        &pde(0xf),
        gva,
        read,
        ok4m(0xf),
    );
    hand_check(
        "PSE-36, M=36, bit 17",
        b32(36, true),
        &pde(0x1f),
        gva,
        read,
        Want::Pf(0x9),
    );
    hand_check(
        "PSE-36, M=40, bit 21",
        b32(40, true),
        &pde(0x100),
        gva,
        read,
        Want::Pf(0x9),
    );
    hand_check(
        "PSE-36, M=32",
        b32(32, true),
        &pde(1),
        gva,
        read,
        Want::Pf(0x9),
    );
    hand_check(
        "no PSE-36, bit 13",
        b32(40, false),
        &pde(1),
        gva,
        read,
        Want::Pf(0x9),
    );
    hand_check("no PSE-36", b32(40, false), &pde(0), gva, read, ok4m(0));
    // CR4.PSE = 0: PS is ignored and the PDE references a page table at
    // 0x40_0000 + (bits 21:12), here outside RAM: not present.
    let mut nopse = b32(40, true);
    nopse.cr4 = Cr4::empty();
    hand_check("CR4.PSE=0", nopse, &pde(1), gva, read, Want::Pf(0x0));

    // PAE paging: bits 62:M of PDEs and PTEs are reserved (SDM Tables 4-9 to
    // 4-11), not only 51:M.
    let mut pae = PagingState {
        cr0: Cr0::PE | Cr0::PG,
        cr3: 0x1000,
        cr4: Cr4::PAE,
        maxphyaddr: 36,
        ..Default::default()
    };
    pae.pdptrs = [0x2000 | P, 0, 0, 0];
    let pae_tree = |pte: u64| vec![(0x2000, 8, 0x3000 | P | W | U), (0x3000 + 8, 8, pte)];
    let gva = 0x1abc;
    let pte = 0x5000 | P | W | U;
    hand_check(
        "PAE",
        pae,
        &pae_tree(pte),
        gva,
        read,
        Want::Ok(0x5abc, 4096),
    );
    for bit in [36, 51, 52, 58, 59, 62, 63] {
        let what = format!("PAE PTE bit {bit}");
        hand_check(
            &what,
            pae,
            &pae_tree(pte | 1 << bit),
            gva,
            read,
            Want::Pf(0x9),
        );
    }
    // Bits 11:9 are ignored; bit 7 is PAT, bit 8 G.
    let quiet = pte | 0xf80;
    hand_check(
        "PAE PTE 11:7",
        pae,
        &pae_tree(quiet),
        gva,
        read,
        Want::Ok(0x5abc, 4096),
    );

    // 4-level paging: bits 51:M reserved, 58:52 ignored, 62:59 the key
    // (ignored without CR4.PKE), 63 XD (reserved without NXE).
    let l4 = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PAE,
        efer: Efer::LME | Efer::LMA,
        maxphyaddr: 36,
        gbpages: true,
        ..Default::default()
    };
    let tree = |pdpte: u64, pde: u64, pte: u64| {
        vec![
            (0x1000, 8, 0x2000 | P | W | U),
            (0x2000, 8, pdpte),
            (0x3000, 8, pde),
            (0x4000, 8, pte),
        ]
    };
    let t = |pte| tree(0x3000 | P | W | U, 0x4000 | P | W | U, pte);
    let pte = 0x5000 | P | W | U;
    hand_check("4-level", l4, &t(pte), 0x123, read, Want::Ok(0x5123, 4096));
    for bit in [52, 58, 59, 62] {
        let what = format!("4-level PTE bit {bit}");
        hand_check(
            &what,
            l4,
            &t(pte | 1 << bit),
            0x123,
            read,
            Want::Ok(0x5123, 4096),
        );
    }
    for bit in [36, 51, 63] {
        let what = format!("4-level PTE bit {bit}");
        hand_check(&what, l4, &t(pte | 1 << bit), 0x123, read, Want::Pf(0x9));
    }
    // 2-MByte page: PAT (bit 12) is not an address bit; 20:13 are reserved.
    let big = 0x20_0000 | P | W | U | PS;
    let t2 = |pde| tree(0x3000 | P | W | U, pde, 0);
    let gva = 0x1_2345;
    hand_check("2M", l4, &t2(big), gva, read, Want::Ok(0x21_2345, 2 << 20));
    hand_check(
        "2M PAT",
        l4,
        &t2(big | 1 << 12),
        gva,
        read,
        Want::Ok(0x21_2345, 2 << 20),
    );
    hand_check(
        "2M bit 13",
        l4,
        &t2(big | 1 << 13),
        gva,
        read,
        Want::Pf(0x9),
    );
    hand_check(
        "2M bit 20",
        l4,
        &t2(big | 1 << 20),
        gva,
        read,
        Want::Pf(0x9),
    );
    // 1-GByte page: 29:13 reserved; PS reserved without 1-GByte pages.
    let huge = 0x4000_0000 | P | W | U | PS;
    let t1 = |pdpte| tree(pdpte, 0, 0);
    let gva = 0x2345_6789;
    let ok1g = Want::Ok(0x6345_6789, 1 << 30);
    hand_check("1G", l4, &t1(huge), gva, read, ok1g);
    hand_check("1G PAT", l4, &t1(huge | 1 << 12), gva, read, ok1g);
    hand_check(
        "1G bit 29",
        l4,
        &t1(huge | 1 << 29),
        gva,
        read,
        Want::Pf(0x9),
    );
    let no1g = PagingState {
        gbpages: false,
        ..l4
    };
    hand_check("1G unsupported", no1g, &t1(huge), gva, read, Want::Pf(0x9));
    // PS in a PML4E is reserved.
    let mut ps4 = t(pte);
    ps4[0].2 |= PS;
    hand_check("PML4E.PS", l4, &ps4, 0x123, read, Want::Pf(0x9));

    // Linear-address width: 4-level addresses are canonical in 48 bits,
    // 5-level in 57; legacy modes have 32-bit addresses.
    let high = 0x0000_8000_0000_0123;
    hand_check("non-canonical", l4, &t(pte), high, read, Want::Gp);
    let l5 = PagingState {
        cr3: 0x6000,
        cr4: Cr4::PAE | Cr4::LA57,
        ..l4
    };
    let mut t5 = t(pte);
    // PML5 index 1 (bit 48) -> the same PML4.
    t5.push((0x6008, 8, 0x1000 | P | W | U));
    hand_check(
        "5-level",
        l5,
        &t5,
        0x0001_0000_0000_0123,
        read,
        Want::Ok(0x5123, 4096),
    );
    hand_check("5-level non-canonical", l5, &t5, 1 << 57, read, Want::Gp);
    hand_check(
        "PAE, 33-bit address",
        pae,
        &pae_tree(pte),
        1 << 32,
        read,
        Want::Gp,
    );

    // Implicit supervisor accesses (SDM 4.6.1): supervisor whatever the CPL,
    // and SMAP applies whatever EFLAGS.AC says.
    let smap = PagingState {
        cr4: Cr4::PAE | Cr4::SMAP,
        eflags_ac: true,
        ..l4
    };
    let implicit = Access {
        kind: AccessKind::Read,
        user: true,
        implicit: true,
    };
    hand_check(
        "SMAP, AC=1",
        smap,
        &t(pte),
        0x123,
        read,
        Want::Ok(0x5123, 4096),
    );
    hand_check(
        "SMAP implicit",
        smap,
        &t(pte),
        0x123,
        implicit,
        Want::Pf(0x1),
    );
    let sup_page = t(0x5000 | P | W);
    hand_check(
        "implicit, CPL3",
        l4,
        &sup_page,
        0x123,
        implicit,
        Want::Ok(0x5123, 4096),
    );
    let user_read = usr(AccessKind::Read);
    hand_check(
        "user, sup page",
        l4,
        &sup_page,
        0x123,
        user_read,
        Want::Pf(0x5),
    );

    // Protection keys (SDM 4.6.2, 4.7): PKRU for user pages, PKRS for
    // supervisor pages, key from the leaf; WD stops supervisor writes only
    // with CR0.WP = 1; PK is reported with P.
    let pks = PagingState {
        cr4: Cr4::PAE | Cr4::PKS | Cr4::PKE,
        pkrs: 0b10 << 4,  // key 2: WD (bit 2i+1)
        pkru: 0b01 << 12, // key 6: AD (bit 2i)
        ..l4
    };
    let write = sup(AccessKind::Write);
    let keyed = |key: u64, u: u64| t(0x5000 | P | W | u | key << 59);
    hand_check("PKRS WD", pks, &keyed(2, 0), 0x123, write, Want::Pf(0x23));
    hand_check(
        "PKRS WD read",
        pks,
        &keyed(2, 0),
        0x123,
        read,
        Want::Ok(0x5123, 4096),
    );
    let nowp = PagingState {
        cr0: Cr0::PE | Cr0::PG,
        ..pks
    };
    hand_check(
        "PKRS WD, WP=0",
        nowp,
        &keyed(2, 0),
        0x123,
        write,
        Want::Ok(0x5123, 4096),
    );
    hand_check(
        "PKRU AD",
        pks,
        &keyed(6, U),
        0x123,
        user_read,
        Want::Pf(0x25),
    );
    hand_check(
        "PKRU not for sup pages",
        pks,
        &keyed(6, 0),
        0x123,
        read,
        Want::Ok(0x5123, 4096),
    );
    hand_check(
        "PKRS not for user pages",
        pks,
        &keyed(2, U),
        0x123,
        write,
        Want::Ok(0x5123, 4096),
    );
    let fetch = usr(AccessKind::Fetch);
    hand_check(
        "keys ignore fetches",
        pks,
        &keyed(6, U),
        0x123,
        fetch,
        Want::Ok(0x5123, 4096),
    );
    // Both a U/S violation and a key denial: P | W | U | PK (KVM's
    // permission_fault; the SDM's PK definition holds for both).
    let user_write = usr(AccessKind::Write);
    hand_check(
        "PKRS and U/S",
        pks,
        &keyed(2, 0),
        0x123,
        user_write,
        Want::Pf(0x27),
    );

    // PAE: the PDPTE registers are used, not the PDPT in memory (SDM 4.4.1),
    // and they get no A flag.
    let mut tree = pae_tree(pte);
    tree.push((0x1000, 8, 0)); // the PDPT in memory: not present
    hand_check(
        "PDPTE register",
        pae,
        &tree,
        0x1abc,
        read,
        Want::Ok(0x5abc, 4096),
    );
    let mut tree = pae_tree(pte);
    tree.push((0x1000, 8, 0x2000 | P)); // present in memory only
    let unloaded = PagingState {
        pdptrs: [0; 4],
        ..pae
    };
    hand_check("stale PDPTE", unloaded, &tree, 0x1abc, read, Want::Pf(0x0));
}

/// load_pdptrs: #GP for a present PDPTE with bits 2:1, 8:5 or 63:M set
/// (SDM 4.4.1, Table 4-8), or a PDPT outside RAM; not-present PDPTEs are
/// not checked.
#[test]
fn hand_checked_pdptes() {
    let state = PagingState {
        cr0: Cr0::PE | Cr0::PG,
        cr3: 0x1fe0, // the last 32 bytes of the page at 0x1000
        cr4: Cr4::PAE,
        maxphyaddr: 36,
        ..Default::default()
    };
    let cases: &[(u64, bool)] = &[
        (0x2000 | 1, true),
        (0x2000 | 1 | 0x18 | 0xe00, true), // PWT, PCD, ignored 11:9
        (0x2000 | 1 | 2, false),
        (0x2000 | 1 | 4, false),
        (0x2000 | 1 | 1 << 5, false),
        (0x2000 | 1 | 1 << 8, false),
        (0x2000 | 1 | 1 << 36, false),
        (0x2000 | 1 | 1 << 52, false),
        (0x2000 | 1 | 1 << 63, false),
        (0xffff_ffff_ffff_fffe, true), // not present
    ];
    for &(e, ok) in cases {
        for slot in 0..4u64 {
            let mut model = Memory::new(&[(0, 4 << 12)]);
            assert!(model.write(0x1fe0 + 8 * slot, 8, e));
            let mem = glue::mmap_of(&model);
            let got = load_pdptrs(&mem, &state);
            let modeled = oracle::load_pdptrs(&model, &glue::regs(&state));
            assert_eq!(modeled.is_some(), ok, "model, PDPTE {e:#x}");
            match got {
                Ok(p) => {
                    assert!(ok, "walker accepted PDPTE {e:#x}");
                    assert_eq!(Some(p), modeled);
                }
                Err(WalkError::GeneralProtection) => assert!(!ok, "walker refused {e:#x}"),
                Err(other) => panic!("load_pdptrs: {}", glue::show_err(&other)),
            }
        }
    }
    let outside = PagingState {
        cr3: 0x10_0000,
        ..state
    };
    let model = Memory::new(&[(0, 4 << 12)]);
    let mem = glue::mmap_of(&model);
    assert!(matches!(
        load_pdptrs(&mem, &outside),
        Err(WalkError::GeneralProtection)
    ));
}
