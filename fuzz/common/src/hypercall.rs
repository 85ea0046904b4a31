// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! (c) Hypercalls: the ABI decoder and the MMU calls they turn into.

use shadow_mmu::abi::{self, AbiError, Block, Hypercall};
use shadow_mmu::hypercall::{HypercallVcpu, Served};
use shadow_mmu::{Changes, GuestAddress, MmuError, PagingState, ShadowMmu};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use crate::mmu_ops::*;
use crate::Input;

/// Where the hypercall harness places blocks and `MMU_UPDATE` lists.
const BLOCK_PAGE: u64 = 0x8000;
const LIST_PAGE: u64 = 0x9000;

/// The guest vCPU state the hypercall glue keeps besides the MMU.
#[derive(Debug, Default)]
// Kept as the glue keeps it; nothing here delivers exceptions.
#[allow(dead_code)]
struct Glue {
    trap_table: u64,
    kernel_rsp: u64,
}

/// A vCPU of the hypercall harness, as the shared hypercall service
/// ([`shadow_mmu::hypercall::serve`], which the KVM glue runs too) sees it.
struct FuzzVcpu<'a> {
    d: &'a mut MmuDriver,
    glue: &'a mut Glue,
    vcpu: usize,
}

impl HypercallVcpu for FuzzVcpu<'_> {
    type Error = MmuError;

    fn mmu(&self) -> &dyn ShadowMmu {
        &self.d.m
    }

    fn index(&self) -> usize {
        self.vcpu
    }

    fn paging_state(&self) -> Option<PagingState> {
        Some(self.d.states[self.vcpu])
    }

    fn load_paging_state(&mut self, state: PagingState) -> Result<(), MmuError> {
        self.d.log.push(Op::LoadCr3 {
            vcpu: self.vcpu,
            state: Box::new(state),
            result: "hypercall",
        });
        self.d.load(self.vcpu, state);
        Ok(())
    }

    fn set_trap_table(&mut self, table: u64, kernel_rsp: u64, _entries: u16) {
        self.glue.trap_table = table;
        self.glue.kernel_rsp = kernel_rsp;
    }

    fn apply(&mut self, changes: Changes) {
        apply(&self.d.m, changes);
    }

    fn wrote(&mut self, gpa: GuestAddress, len: usize) {
        let mem = self.d.guest_mem();
        let mut bytes = vec![0u8; len];
        let _ = mem.read_slice(&mut bytes, gpa);
        self.d.log.push(Op::Write {
            vcpu: self.vcpu,
            gpa: gpa.0,
            bytes,
            flush: Flush::Nothing,
            emulated: true,
        });
    }
}

/// Checks `Block::read` against the ABI's rules for a block at `gpa`.
fn check_block(mem: &GuestMemoryMmap, gpa: u64, read: &Result<Block, AbiError>) {
    let in_ram = gpa.is_multiple_of(8) && gpa < 1 << 32 && mem.check_range(GuestAddress(gpa), 64);
    match read {
        Ok(b) => {
            assert!(in_ram, "Block::read accepted a bad block at {gpa:#x}");
            assert_eq!(b.gpa, GuestAddress(gpa));
            let word = |i: u64| mem.read_obj::<u64>(GuestAddress(gpa + 8 * i)).ok();
            assert_eq!(Some(b.nr), word(0), "block number");
            for (i, a) in b.args.iter().enumerate() {
                assert_eq!(Some(*a), word(1 + i as u64), "block argument {i}");
            }
        }
        Err(AbiError::BadBlock(at)) => {
            assert!(!in_ram, "Block::read refused a good block at {gpa:#x}");
            assert_eq!(*at, gpa);
        }
        Err(e) => panic!("Block::read failed with {e:?}"),
    }
}

/// Checks `Block::decode` against the ABI's argument rules.
fn check_decode(b: &Block, decoded: &Result<Hypercall, AbiError>) {
    let [a0, a1, a2, a3] = b.args;
    let valid = match b.nr {
        // ABI.md: 0 (32 handlers) or 32 to 256 handlers.
        abi::nr::SET_TRAP_TABLE => a0.is_multiple_of(8) && (a2 == 0 || (32..=256).contains(&a2)),
        abi::nr::SET_PAGING_BITS => a0 & !0xf == 0,
        abi::nr::MMU_UPDATE => a0.is_multiple_of(8) && a1 <= abi::MAX_MMU_UPDATES,
        // ABI.md: an 8-byte aligned buffer, room for at most 64 regions.
        abi::nr::MEMORY_MAP => a0.is_multiple_of(8) && a1 <= 64,
        _ => true,
    };
    match decoded {
        Ok(call) => {
            assert!(valid, "decode accepted invalid {b:?} as {call:?}");
            let expected = match b.nr {
                abi::nr::LOAD_CR3 => Hypercall::LoadCr3 { cr3: a0 },
                abi::nr::INVLPG => Hypercall::Invlpg { gva: a0 },
                abi::nr::FLUSH_TLB => Hypercall::FlushTlb,
                abi::nr::SET_TRAP_TABLE => Hypercall::SetTrapTable {
                    table: a0,
                    kernel_rsp: a1,
                    entries: if a2 == 0 { 32 } else { a2 as u16 },
                },
                abi::nr::SET_PAGING_BITS => Hypercall::SetPagingBits { bits: a0 },
                abi::nr::MMU_UPDATE => Hypercall::MmuUpdate {
                    list: a0,
                    count: a1,
                },
                abi::nr::MEMORY_MAP => Hypercall::MemoryMap {
                    buf: a0,
                    capacity: a1,
                },
                nr => Hypercall::Other {
                    nr,
                    args: [a0, a1, a2, a3],
                },
            };
            assert_eq!(*call, expected, "decode of {b:?}");
        }
        Err(AbiError::InvalidArgument { nr }) => {
            assert!(!valid, "decode refused valid {b:?}");
            assert_eq!(*nr, b.nr);
        }
        Err(e) => panic!("decode of {b:?} failed with {e:?}"),
    }
}

/// Fuzzes the guest ABI: hypercall blocks and `MMU_UPDATE` lists written
/// into guest memory from `data` (any number, arguments raw or pointing at
/// the guest's tables, blocks anywhere), read with [`Block::read`], decoded
/// with [`Block::decode`], and served as the KVM glue serves them, against
/// a shadow MMU with live shadow state (accesses between hypercalls).
///
/// Panics if the decoder breaks the ABI's rules (`resources/ABI.md`), if a
/// served call breaks the MMU's audit, or if an access that reached the MMU
/// disagrees with the guest's tables.
///
/// This drives [`shadow_mmu::abi`] and the MMU without KVM; the glue's own
/// code (`ShadowVm::hypercall`, the mailbox batching) needs `/dev/kvm` to
/// construct and is not reached.
pub fn hypercall(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mut d) = MmuDriver::new(&mut inp) else {
        return;
    };
    let mut glue = Glue::default();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        if inp.below(3) == 0 {
            // Shadow state to hit: accesses, table writes, CR3 loads...
            d.step(&mut inp);
            d.audit();
            continue;
        }
        let vcpu = d.vcpu(&mut inp);
        // The block: usually in the block page, sometimes anywhere.
        let gpa = match inp.below(8) {
            0 => inp.u64(),
            1 => LOW_RAM + HIGH_RAM - 64 + 8 * inp.below(16),
            2 => LOW_RAM - 8 * inp.below(16),
            3 => (1 << 32) - 8 * inp.below(16),
            4 => table_gpa(inp.u8().into()) + 8 * inp.below(512),
            _ => BLOCK_PAGE + 8 * inp.below(32) + if inp.below(8) == 0 { 4 } else { 0 },
        };
        let nr = if inp.below(8) == 0 {
            inp.u64()
        } else {
            1 + inp.below(10)
        };
        let mut args = [0u64; 4];
        for a in args.iter_mut() {
            *a = match inp.below(8) {
                0 => inp.u64(),
                1 => inp.below(32),
                2 => table_gpa(inp.u8().into()) | (inp.u16() & 0xfff) as u64,
                3 => LIST_PAGE + 16 * inp.below(256),
                4 => d.gva(&mut inp, vcpu),
                5 => abi::MAX_MMU_UPDATES + inp.below(3) - 1,
                _ => inp.below(16),
            };
        }
        // The guest writes an MMU_UPDATE list, then the block, with its
        // own stores (emulated where they hit a write-protected table).
        if nr == abi::nr::MMU_UPDATE {
            let entries = inp.below(6);
            let mut at = args[0];
            for _ in 0..entries {
                let target = match inp.below(6) {
                    0 => inp.u64(),
                    1 => table_gpa(inp.u8().into()) + inp.below(4096),
                    _ => table_gpa(inp.u8().into()) + 8 * inp.below(512),
                };
                let value = mmu_entry(&mut inp);
                let mut pair = target.to_le_bytes().to_vec();
                pair.extend_from_slice(&value.to_le_bytes());
                d.guest_write(vcpu, at, pair, Flush::Nothing);
                at = at.wrapping_add(16);
            }
        }
        let mut words = Vec::with_capacity(40);
        for w in [nr, args[0], args[1], args[2], args[3]] {
            words.extend_from_slice(&w.to_le_bytes());
        }
        d.guest_write(vcpu, gpa, words, Flush::Nothing);
        d.audit();

        let mem = d.guest_mem();
        let read = Block::read(&*mem, gpa);
        check_block(&mem, gpa, &read);
        d.log.push(Op::Hypercall {
            vcpu,
            gpa,
            block: read.ok(),
            decoded: None,
            result: None,
        });
        let Ok(block) = read else {
            continue;
        };
        let decoded = block.decode();
        check_decode(&block, &decoded);
        if let Some(Op::Hypercall { decoded: dec, .. }) = d.log.last_mut() {
            *dec = decoded.ok();
        }
        let served = {
            let mut v = FuzzVcpu {
                d: &mut d,
                glue: &mut glue,
                vcpu,
            };
            match shadow_mmu::hypercall::serve(&*mem, &mut v, &block) {
                Ok(served) => served,
                Err(e) => d.fail(&format!("hypercall: {e}")),
            }
        };
        let result = match served {
            Served::Done(result) => result,
            Served::Vmm { .. } => {
                // Console, exit, start vCPU and unknown numbers: the VMM
                // answers, a store into guest memory reported to the MMU
                // as the KVM glue's `complete_hypercall` does.
                let result = abi::result::E_UNKNOWN;
                block.complete(&*mem, result);
                apply(
                    &d.m,
                    d.m.track_write(GuestAddress(gpa + abi::RESULT_OFFSET), 8),
                );
                result
            }
        };
        d.log.push(Op::Hypercall {
            vcpu,
            gpa,
            block: None,
            decoded: None,
            result: Some(result),
        });
        let written = mem.read_obj::<i64>(GuestAddress(gpa + abi::RESULT_OFFSET));
        assert_eq!(written.ok(), Some(result), "the result is not in the block");
        d.audit();
    }
}
