// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The walker against a guest that changes its page tables under it.
//!
//! Flipper threads move each entry of a small tree between a few known
//! values (P, R/W, U/S, XD and the frame change) with compare-exchange,
//! carrying over the A and D flags the walkers set. One change in eight also
//! clears A and D, as a guest ageing its pages does, so that walkers keep
//! setting them and race with the flips and with each other; each clear
//! starts a new generation of the entry, numbered in bits the processor
//! ignores. Walker threads walk meanwhile. Checked:
//!
//! * every walk equals the reference model's answer for some choice of each
//!   entry's known values (each entry as it was at some instant: entries are
//!   read one at a time, by the CPU as by the walker);
//! * every walk that succeeds reports A in every entry it used and D in the
//!   leaf for a write, and those flags really reached memory: within one
//!   generation only walkers change A and D, so when the generation ends (or
//!   at the end of the run) the entry must have every flag a walk reported
//!   for that generation -- a lost update shows up as a missing flag;
//! * the walker never loses a flipper's update: before each change, the
//!   entry's other bits are exactly what that entry's only flipper last
//!   wrote.

mod oracle;

use oracle::glue::{self, Mem, Strictness};
use oracle::{Memory, A, D, P, PS, XD};
use shadow_mmu::{walk, Access, AccessKind, Cr0, Cr4, Efer, Gva, PagingState, WalkError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileMemory};

const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const AD: u64 = A | D;

/// Where an entry's generation number lives: bits the processor ignores in
/// every entry of the tree (IA-32e: 58:52 and 11:9; 32-bit: 11:9).
#[derive(Clone, Copy)]
struct Gen {
    mask: u64,
}

impl Gen {
    /// The largest generation that fits.
    fn max(self) -> u64 {
        (1 << self.mask.count_ones()) - 1
    }
    /// Generation `g` spread over the mask's bits, low to high.
    fn encode(self, mut g: u64) -> u64 {
        let mut v = 0;
        for b in (0..64).filter(|b| self.mask >> b & 1 != 0) {
            v |= (g & 1) << b;
            g >>= 1;
        }
        v
    }
    /// The generation recorded in `v`.
    fn of(self, v: u64) -> u64 {
        (0..64)
            .filter(|b| self.mask >> b & 1 != 0)
            .enumerate()
            .fold(0, |g, (i, b)| g | ((v >> b & 1) << i))
    }
}

/// One entry that flips between `values` (A and D clear in all of them).
struct Entry {
    gpa: u64,
    values: Vec<u64>,
}

/// A tree whose entries flip, and the addresses walked through it.
struct Tree {
    state: PagingState,
    size: usize,
    gen: Gen,
    entries: Vec<Entry>,
    /// Per address: the indices into `entries` along its walk, root first.
    paths: Vec<(u64, Vec<usize>)>,
}

fn tree_4level() -> Tree {
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
    let g0: u64 = 0x0000_7f12_3456_7000 & !0x1f_ffff; // 2 MiB aligned
    let idx = |gva: u64, l: u32| (gva >> (12 + 9 * (l - 1))) & 0x1ff;
    let (g1, g2) = (g0 + 0x1000, g0 + 0x20_0000 + 0x5123);
    let (fa, fb, fc) = (0x10_0000, 0x20_0000, 0x30_0000);
    let entries = vec![
        Entry {
            gpa: 0x1000 + 8 * idx(g0, 4),
            values: vec![0x2000 | P | W | U, 0x2000 | P | W | U | XD],
        },
        Entry {
            gpa: 0x2000 + 8 * idx(g0, 3),
            values: vec![0x3000 | P | W | U, 0x3000 | P | U],
        },
        Entry {
            gpa: 0x3000 + 8 * idx(g0, 2),
            values: vec![0x4000 | P | W | U, 0x4000 | W | U],
        },
        Entry {
            gpa: 0x4000 + 8 * idx(g0, 1),
            values: vec![fa | P | W | U, fb | P | U | XD, fa | W | U],
        },
        Entry {
            gpa: 0x4000 + 8 * idx(g1, 1),
            values: vec![fc | P | W | U, fc | P | W],
        },
        Entry {
            gpa: 0x3000 + 8 * idx(g2, 2),
            values: vec![
                0x4000_0000 | PS | P | W | U,
                0x4020_0000 | PS | P | W,
                0x4000_0000 | PS | W | U,
            ],
        },
    ];
    Tree {
        state: PagingState {
            cr0: Cr0::PE | Cr0::ET | Cr0::PG | Cr0::WP,
            cr3: 0x1000,
            cr4: Cr4::PAE | Cr4::SMEP,
            efer: Efer::LME | Efer::LMA | Efer::NXE,
            maxphyaddr: 40,
            ..Default::default()
        },
        size: 8,
        gen: Gen {
            mask: (0x7f << 52) | (7 << 9),
        },
        entries,
        paths: vec![
            (g0 + 0x123, vec![0, 1, 2, 3]),
            (g1 + 0x456, vec![0, 1, 2, 4]),
            (g2, vec![0, 1, 5]),
        ],
    }
}

fn tree_32bit() -> Tree {
    // PD 0x1000 -> PT 0x2000; a 4-MByte page beside.
    let g0: u64 = 0x8040_0000;
    let (g1, g2) = (g0 + 0x1000, g0 + 0x40_0000 + 0x1234);
    let pd = |gva: u64| 0x1000 + 4 * (gva >> 22);
    let pt = |gva: u64| 0x2000 + 4 * ((gva >> 12) & 0x3ff);
    let entries = vec![
        Entry {
            gpa: pd(g0),
            values: vec![0x2000 | P | W | U, 0x2000 | P | U, 0x2000 | W | U],
        },
        Entry {
            gpa: pt(g0),
            values: vec![0x10_0000 | P | W | U, 0x20_0000 | P, 0x10_0000 | W],
        },
        Entry {
            gpa: pt(g1),
            values: vec![0x30_0000 | P | W | U, 0x30_0000 | P | U],
        },
        Entry {
            gpa: pd(g2),
            values: vec![
                0x0040_0000 | PS | P | W | U,
                0x0080_0000 | PS | P | U,
                0x0040_0000 | PS | W | U,
            ],
        },
    ];
    Tree {
        state: PagingState {
            cr0: Cr0::PE | Cr0::ET | Cr0::PG,
            cr3: 0x1000,
            cr4: Cr4::PSE,
            maxphyaddr: 36,
            ..Default::default()
        },
        size: 4,
        gen: Gen { mask: 7 << 9 },
        entries,
        paths: vec![
            (g0 + 0x123, vec![0, 1]),
            (g1 + 0x456, vec![0, 2]),
            (g2, vec![3]),
        ],
    }
}

fn load(mem: &Mem, gpa: u64, size: usize) -> u64 {
    let s = mem.get_slice(GuestAddress(gpa), size).expect("slice");
    if size == 4 {
        u64::from(
            s.get_atomic_ref::<AtomicU32>(0)
                .expect("atomic")
                .load(Ordering::SeqCst),
        )
    } else {
        s.get_atomic_ref::<AtomicU64>(0)
            .expect("atomic")
            .load(Ordering::SeqCst)
    }
}

fn cas(mem: &Mem, gpa: u64, size: usize, cur: u64, new: u64) -> bool {
    let s = mem.get_slice(GuestAddress(gpa), size).expect("slice");
    if size == 4 {
        s.get_atomic_ref::<AtomicU32>(0)
            .expect("atomic")
            .compare_exchange(cur as u32, new as u32, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    } else {
        s.get_atomic_ref::<AtomicU64>(0)
            .expect("atomic")
            .compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Default)]
struct Tally {
    walks: u64,
    ok: u64,
    faults: u64,
    retries: u64,
    mismatches: Vec<String>,
    /// (entry gpa, generation) -> A/D flags successful walks reported.
    ad: HashMap<(u64, u64), u64>,
}

/// Checks one walk against every combination of the path's entry values.
fn check(
    tree: &Tree,
    model: &mut Memory,
    gva: u64,
    path: &[usize],
    access: Access,
    got: &Result<shadow_mmu::GuestWalk, WalkError>,
    tally: &mut Tally,
) {
    tally.walks += 1;
    if let Err(WalkError::TooManyRetries) = got {
        tally.retries += 1;
        return;
    }
    let regs = glue::regs(&tree.state);
    let how = Strictness {
        pte_ignore: AD | tree.gen.mask,
    };
    let choices: Vec<usize> = path.iter().map(|&e| tree.entries[e].values.len()).collect();
    let combos: usize = choices.iter().product();
    let mut matched = false;
    let mut first_want = None;
    for mut c in 0..combos {
        for (k, &e) in path.iter().enumerate() {
            let entry = &tree.entries[e];
            let v = entry.values[c % choices[k]];
            c /= choices[k];
            assert!(model.write(entry.gpa, tree.size, v));
        }
        let want = oracle::translate(model, &regs, gva, glue::acc(access));
        if glue::diff_outcome(gva, &want, got, how).is_ok() {
            matched = true;
            break;
        }
        first_want.get_or_insert(want);
    }
    if !matched {
        if tally.mismatches.len() < 20 {
            tally.mismatches.push(format!(
                "{gva:#x} {access:?}: walker {} matches no combination of entry values \
                 (e.g. model {})",
                glue::show(got),
                first_want.map_or_else(String::new, |w| glue::show_model(&w))
            ));
        }
        return;
    }
    match got {
        Ok(w) => {
            tally.ok += 1;
            for l in w.level..=w.root_level {
                let i = usize::from(l) - 1;
                let mut need = A;
                if l == w.level && access.kind == AccessKind::Write {
                    need |= D;
                }
                if w.ptes[i] & need != need && tally.mismatches.len() < 20 {
                    tally.mismatches.push(format!(
                        "{gva:#x} {access:?}: level {l} entry reported as {:#x}, \
                         without {need:#x}",
                        w.ptes[i]
                    ));
                }
                let key = (w.pte_gpas[i].0, tree.gen.of(w.ptes[i]));
                *tally.ad.entry(key).or_default() |= need;
            }
        }
        Err(_) => tally.faults += 1,
    }
}

/// Shared between the threads of a run.
struct Shared<'a> {
    tree: &'a Tree,
    mem: &'a Mem,
    stop: AtomicBool,
    flips: AtomicU64,
    conflicts: AtomicU64,
    problems: Mutex<Vec<String>>,
    /// (entry gpa, generation) -> A/D flags found when the generation ended.
    ended: Mutex<HashMap<(u64, u64), u64>>,
    /// Walks done so far, of `total_walks`.
    walks_done: AtomicU64,
    total_walks: u64,
}

impl Shared<'_> {
    fn problem(&self, p: String) {
        let mut v = self.problems.lock().expect("problems");
        if v.len() < 40 {
            v.push(p);
        }
    }

    /// A flipper: changes the entries it owns until told to stop; returns
    /// what each holds apart from A and D.
    fn flip(&self, mine: &[usize], seed: u64) -> HashMap<usize, u64> {
        let (tree, gen) = (self.tree, self.tree.gen);
        let mut last: HashMap<usize, u64> = mine
            .iter()
            .map(|&e| (e, tree.entries[e].values[0]))
            .collect();
        let mut rng = Rng(seed);
        while !self.stop.load(Ordering::Relaxed) {
            let e = mine[(rng.next() % mine.len() as u64) as usize];
            let entry = &tree.entries[e];
            let r = rng.next();
            let value = entry.values[(r % entry.values.len() as u64) as usize];
            // Clears are spread evenly over the walkers' run, so that A/D
            // updates race with flips throughout.
            let g = gen.of(last[&e]);
            let due = (g + 1) * self.total_walks / (gen.max() + 1);
            let clear = g < gen.max() && self.walks_done.load(Ordering::Relaxed) >= due;
            loop {
                let cur = load(self.mem, entry.gpa, tree.size);
                if cur & !AD != last[&e] {
                    self.problem(format!(
                        "entry at {:#x}: expected {:#x} (+A/D), found {cur:#x}: \
                         a flipper's update was lost",
                        entry.gpa, last[&e]
                    ));
                    last.insert(e, cur & !AD);
                }
                let g = gen.of(cur);
                let next = if clear {
                    value | gen.encode(g + 1)
                } else {
                    value | gen.encode(g) | (cur & AD)
                };
                if cas(self.mem, entry.gpa, tree.size, cur, next) {
                    if clear {
                        let mut ended = self.ended.lock().expect("ended");
                        ended.insert((entry.gpa, g), cur & AD);
                    }
                    last.insert(e, next & !AD);
                    break;
                }
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            self.flips.fetch_add(1, Ordering::Relaxed);
            std::hint::spin_loop();
        }
        last
    }

    /// A walker: `n` random walks, each checked.
    fn walk(&self, n: u64, seed: u64) -> Tally {
        let tree = self.tree;
        let mut model = Memory::new(&[(0, RAM)]);
        let mut tally = Tally::default();
        let mut rng = Rng(seed);
        for _ in 0..n {
            let r = rng.next();
            let (gva, path) = &tree.paths[(r % tree.paths.len() as u64) as usize];
            let kind = match (r >> 8) % 3 {
                0 => AccessKind::Read,
                1 => AccessKind::Write,
                _ => AccessKind::Fetch,
            };
            let access = Access {
                kind,
                user: (r >> 16) & 1 != 0,
                implicit: false,
            };
            let got = walk(self.mem, &tree.state, Gva(*gva), access);
            self.walks_done.fetch_add(1, Ordering::Relaxed);
            check(tree, &mut model, *gva, path, access, &got, &mut tally);
        }
        tally
    }
}

const RAM: usize = 8 << 12;

const WALKERS: u64 = 2;

fn run(tree: Tree, walks_per_thread: u64) {
    // Every table entry on the walked paths is in `entries`.
    let mut initial = Memory::new(&[(0, RAM)]);
    for e in &tree.entries {
        assert!(initial.write(e.gpa, tree.size, e.values[0]));
    }
    let mem = glue::mmap_of(&initial);
    let sh = Shared {
        tree: &tree,
        mem: &mem,
        stop: AtomicBool::new(false),
        flips: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
        ended: Mutex::new(HashMap::new()),
        walks_done: AtomicU64::new(0),
        total_walks: WALKERS * walks_per_thread,
    };
    const FLIPPERS: usize = 2;

    let mut tallies = Vec::new();
    std::thread::scope(|s| {
        let sh = &sh;
        let flippers: Vec<_> = (0..FLIPPERS)
            .map(|f| {
                // Flipper f owns entries f, f + FLIPPERS, ...
                let mine: Vec<usize> = (f..tree.entries.len()).step_by(FLIPPERS).collect();
                s.spawn(move || (sh.flip(&mine, 0x9e37_79b9 ^ f as u64), mine))
            })
            .collect();
        let walkers: Vec<_> = (0..WALKERS)
            .map(|t| s.spawn(move || sh.walk(walks_per_thread, 0x2545_f491 ^ (t + 7))))
            .collect();
        for w in walkers {
            tallies.push(w.join().expect("walker thread"));
        }
        sh.stop.store(true, Ordering::Relaxed);
        for f in flippers {
            let (last, _) = f.join().expect("flipper thread");
            for (e, v) in last {
                let gpa = tree.entries[e].gpa;
                let cur = load(&mem, gpa, tree.size);
                if cur & !AD != v {
                    sh.problem(format!(
                        "entry at {gpa:#x} ends as {cur:#x}, its flipper last wrote {v:#x}"
                    ));
                }
            }
        }
    });

    let (mut walks, mut ok, mut faults, mut retries) = (0, 0, 0, 0);
    let mut ad: HashMap<(u64, u64), u64> = HashMap::new();
    for t in &tallies {
        walks += t.walks;
        ok += t.ok;
        faults += t.faults;
        retries += t.retries;
        for m in &t.mismatches {
            sh.problem(m.clone());
        }
        for (&key, &bits) in &t.ad {
            *ad.entry(key).or_default() |= bits;
        }
    }
    let ended = sh.ended.lock().expect("ended").clone();
    for (&(gpa, g), &bits) in &ad {
        // The flags the entry had when generation g ended, or has now.
        let found = match ended.get(&(gpa, g)) {
            Some(&f) => f,
            None => {
                let cur = load(&mem, gpa, tree.size);
                if tree.gen.of(cur) != g {
                    sh.problem(format!(
                        "entry at {gpa:#x}: a walk reported generation {g}, which never existed"
                    ));
                }
                cur & AD
            }
        };
        if found & bits != bits {
            sh.problem(format!(
                "entry at {gpa:#x}, generation {g}: walks reported {bits:#x} set, the entry \
                 had {found:#x} when the generation ended: an A/D update was lost"
            ));
        }
    }
    let flips = sh.flips.load(Ordering::Relaxed);
    eprintln!(
        "{:?}: {walks} walks ({ok} ok, {faults} faults, {retries} TooManyRetries); \
         {flips} flips ({} compare-exchange conflicts, {} A/D clears); A/D checked in {} \
         entry generations",
        tree.state.mode(),
        sh.conflicts.load(Ordering::Relaxed),
        ended.len(),
        ad.len()
    );
    let problems = sh.problems.lock().expect("problems").clone();
    for p in &problems {
        eprintln!("  {p}");
    }
    assert!(problems.is_empty(), "{} problems", problems.len());
    assert_eq!(walks, WALKERS * walks_per_thread);
    // The run must see both outcomes and really contend with the flippers.
    // (Under Miri the few walks of a run do not reach these bounds; the
    // checks above still apply to every walk.)
    if cfg!(miri) {
        return;
    }
    assert!(ok > walks / 20, "only {ok} successful walks");
    assert!(faults > walks / 20, "only {faults} faulting walks");
    assert!(flips > 1000, "only {flips} flips");
    let want_clears = tree.gen.max() as usize * tree.entries.len() / 2;
    assert!(
        ended.len() >= want_clears,
        "only {} A/D clears",
        ended.len()
    );
    // Retrying forever is not an option, but a few give-ups under this much
    // contention are allowed; more means the retry loop gives up too early.
    assert!(retries <= walks / 1000, "{retries} walks gave up retrying");
}

/// Walks per walker thread: a few under Miri (scripts/miri.sh).
const WALKS: u64 = if cfg!(miri) { 100 } else { 100_000 };

#[test]
fn concurrent_flips_4level() {
    run(tree_4level(), WALKS);
}

#[test]
fn concurrent_flips_32bit() {
    run(tree_32bit(), WALKS);
}
