// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest ABI (`resources/ABI.md`, version 2): hypercall numbers and the
//! decoding of hypercall blocks and `MMU_UPDATE` lists from guest memory.
//!
//! Everything here reads guest-controlled memory: malformed input is an
//! [`AbiError`], never a panic.

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

pub mod note;

/// The ABI version this crate implements (`resources/ABI.md`).
pub const ABI_VERSION: u32 = 2;
/// The oldest ABI version a VMM using this crate still runs: version 2 only
/// adds to version 1 (stores into page tables are emulated, `MEMORY_MAP`,
/// the boot info's options word), so a version 1 kernel runs unchanged.
pub const MIN_ABI_VERSION: u32 = 1;
/// Size of a hypercall block.
pub const BLOCK_SIZE: u64 = 64;
/// Offset of the result in a hypercall block.
pub const RESULT_OFFSET: u64 = 40;
/// Most entries one `MMU_UPDATE` may carry.
pub const MAX_MMU_UPDATES: u64 = 256;
/// Most (start, size) pairs one `MEMORY_MAP` may ask for.
pub const MAX_MEMORY_REGIONS: u64 = 64;
/// Handlers a trap table has unless `SET_TRAP_TABLE` says otherwise: the
/// exceptions, vectors 0-31 (version 1).
pub const TRAP_TABLE_EXCEPTIONS: u16 = 32;
/// Most handlers a trap table may have: every vector, external interrupts
/// 32-255 included (version 2).
pub const TRAP_TABLE_VECTORS: u16 = 256;

/// Hypercall numbers.
pub mod nr {
    /// Switch to the guest tables at CR3.
    pub const LOAD_CR3: u64 = 1;
    /// Invalidate one page.
    pub const INVLPG: u64 = 2;
    /// Flush the TLB.
    pub const FLUSH_TLB: u64 = 3;
    /// Register the trap table and kernel stack.
    pub const SET_TRAP_TABLE: u64 = 4;
    /// CR0.WP, CR4.SMEP, CR4.SMAP, EFER.NXE.
    pub const SET_PAGING_BITS: u64 = 5;
    /// Console output.
    pub const CONSOLE_WRITE: u64 = 6;
    /// Stop the VM.
    pub const EXIT: u64 = 7;
    /// Start an application vCPU.
    pub const START_VCPU: u64 = 8;
    /// Batched page-table entry writes.
    pub const MMU_UPDATE: u64 = 9;
    /// The guest RAM regions as they are now (memory hotplug).
    pub const MEMORY_MAP: u64 = 10;
}

/// Hypercall results.
pub mod result {
    /// Success.
    pub const OK: i64 = 0;
    /// Unknown hypercall.
    pub const E_UNKNOWN: i64 = -1;
    /// Bad argument.
    pub const E_INVALID: i64 = -2;
    /// Not available in this paging mode.
    pub const E_MODE: i64 = -3;
}

/// Why a hypercall could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AbiError {
    /// The block is not 8-byte aligned, not below 4 GiB or not in RAM.
    #[error("hypercall block at {0:#x} is not 8-byte aligned RAM below 4 GiB")]
    BadBlock(u64),
    /// An argument is out of range or misaligned.
    #[error("hypercall {nr}: invalid argument")]
    InvalidArgument {
        /// The hypercall number.
        nr: u64,
    },
}

/// A decoded hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// `LOAD_CR3`.
    LoadCr3 {
        /// New CR3.
        cr3: u64,
    },
    /// `INVLPG`.
    Invlpg {
        /// The page.
        gva: u64,
    },
    /// `FLUSH_TLB`.
    FlushTlb,
    /// `SET_TRAP_TABLE`.
    SetTrapTable {
        /// Guest-virtual address of `entries` handler addresses (0: none).
        table: u64,
        /// Kernel stack for exceptions and interrupts from CPL3.
        kernel_rsp: u64,
        /// Handlers in the table: [`TRAP_TABLE_EXCEPTIONS`] (argument 2
        /// is 0, as in version 1) up to [`TRAP_TABLE_VECTORS`].
        entries: u16,
    },
    /// `SET_PAGING_BITS`: bit 0 CR0.WP, 1 CR4.SMEP, 2 CR4.SMAP, 3 EFER.NXE.
    SetPagingBits {
        /// The bits.
        bits: u64,
    },
    /// `MMU_UPDATE`.
    MmuUpdate {
        /// GPA of the (gpa, value) list.
        list: u64,
        /// Number of pairs.
        count: u64,
    },
    /// `MEMORY_MAP`.
    MemoryMap {
        /// GPA of room for `capacity` (start, size) pairs.
        buf: u64,
        /// How many pairs fit there.
        capacity: u64,
    },
    /// Anything the MMU does not serve (console, exit, start vCPU, unknown).
    Other {
        /// The number.
        nr: u64,
        /// The arguments.
        args: [u64; 4],
    },
}

/// A hypercall block read from guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Where it is.
    pub gpa: GuestAddress,
    /// The number.
    pub nr: u64,
    /// The arguments.
    pub args: [u64; 4],
}

impl Block {
    /// Reads the block at `gpa`.
    pub fn read(mem: &impl GuestMemoryBackend, gpa: u64) -> Result<Block, AbiError> {
        if !gpa.is_multiple_of(8)
            || gpa >= 1 << 32
            || !mem.check_range(GuestAddress(gpa), BLOCK_SIZE as usize)
        {
            return Err(AbiError::BadBlock(gpa));
        }
        let word = |i: u64| {
            mem.read_obj::<u64>(GuestAddress(gpa + 8 * i))
                .map_err(|_| AbiError::BadBlock(gpa))
        };
        Ok(Block {
            gpa: GuestAddress(gpa),
            nr: word(0)?,
            args: [word(1)?, word(2)?, word(3)?, word(4)?],
        })
    }

    /// Decodes the hypercall, checking its arguments.
    pub fn decode(&self) -> Result<Hypercall, AbiError> {
        let [a0, a1, a2, a3] = self.args;
        let invalid = AbiError::InvalidArgument { nr: self.nr };
        Ok(match self.nr {
            nr::LOAD_CR3 => Hypercall::LoadCr3 { cr3: a0 },
            nr::INVLPG => Hypercall::Invlpg { gva: a0 },
            nr::FLUSH_TLB => Hypercall::FlushTlb,
            nr::SET_TRAP_TABLE => {
                let entries = match a2 {
                    0 => TRAP_TABLE_EXCEPTIONS,
                    n if (u64::from(TRAP_TABLE_EXCEPTIONS)..=u64::from(TRAP_TABLE_VECTORS))
                        .contains(&n) =>
                    {
                        n as u16
                    }
                    _ => return Err(invalid),
                };
                if !a0.is_multiple_of(8) {
                    return Err(invalid);
                }
                Hypercall::SetTrapTable {
                    table: a0,
                    kernel_rsp: a1,
                    entries,
                }
            }
            nr::SET_PAGING_BITS => {
                if a0 & !0xf != 0 {
                    return Err(invalid);
                }
                Hypercall::SetPagingBits { bits: a0 }
            }
            nr::MMU_UPDATE => {
                if a1 > MAX_MMU_UPDATES || !a0.is_multiple_of(8) {
                    return Err(invalid);
                }
                Hypercall::MmuUpdate {
                    list: a0,
                    count: a1,
                }
            }
            nr::MEMORY_MAP => {
                if a1 > MAX_MEMORY_REGIONS || !a0.is_multiple_of(8) {
                    return Err(invalid);
                }
                Hypercall::MemoryMap {
                    buf: a0,
                    capacity: a1,
                }
            }
            nr => Hypercall::Other {
                nr,
                args: [a0, a1, a2, a3],
            },
        })
    }

    /// Writes `result` into the block.
    pub fn complete(&self, mem: &impl GuestMemoryBackend, result: i64) {
        // The block was RAM when read; if it went away, nobody reads it.
        let _ = mem.write_obj(result, GuestAddress(self.gpa.0 + RESULT_OFFSET));
    }
}

/// Reads the (gpa, value) pairs of an `MMU_UPDATE`: every target must be an
/// 8-byte aligned RAM address.
pub fn read_mmu_updates(
    mem: &impl GuestMemoryBackend,
    list: u64,
    count: u64,
) -> Result<Vec<(GuestAddress, u64)>, AbiError> {
    let invalid = AbiError::InvalidArgument { nr: nr::MMU_UPDATE };
    if count > MAX_MMU_UPDATES || !list.is_multiple_of(8) {
        return Err(invalid);
    }
    let mut pairs = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = list.checked_add(16 * i).ok_or(invalid)?;
        let gpa = mem.read_obj::<u64>(GuestAddress(at)).map_err(|_| invalid)?;
        let value = mem
            .read_obj::<u64>(GuestAddress(at.checked_add(8).ok_or(invalid)?))
            .map_err(|_| invalid)?;
        if !gpa.is_multiple_of(8) || !mem.check_range(GuestAddress(gpa), 8) {
            return Err(invalid);
        }
        pairs.push((GuestAddress(gpa), value));
    }
    Ok(pairs)
}

/// Serves `MEMORY_MAP`: writes the first `capacity` RAM regions of `mem`,
/// in ascending order, as (start, size) pairs of `u64` at `buf`, and returns
/// how many regions there are (possibly more than were written). Returns the
/// guest-physical ranges written, which a shadow MMU must treat as guest
/// stores.
pub fn write_memory_map(
    mem: &impl GuestMemoryBackend,
    buf: u64,
    capacity: u64,
) -> Result<(u64, Option<(GuestAddress, usize)>), AbiError> {
    let invalid = AbiError::InvalidArgument { nr: nr::MEMORY_MAP };
    if capacity > MAX_MEMORY_REGIONS || !buf.is_multiple_of(8) {
        return Err(invalid);
    }
    // vm-memory keeps the regions sorted and disjoint.
    let regions: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    let written = regions.len().min(capacity as usize);
    let bytes = 16 * written;
    if bytes == 0 {
        return Ok((regions.len() as u64, None));
    }
    if !mem.check_range(GuestAddress(buf), bytes) {
        return Err(invalid);
    }
    let mut raw = Vec::with_capacity(bytes);
    for (start, size) in &regions[..written] {
        raw.extend_from_slice(&start.to_le_bytes());
        raw.extend_from_slice(&size.to_le_bytes());
    }
    mem.write_slice(&raw, GuestAddress(buf))
        .map_err(|_| invalid)?;
    Ok((regions.len() as u64, Some((GuestAddress(buf), bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn blocks() {
        let m = mem();
        for (i, v) in [nr::SET_TRAP_TABLE, 0x9000, 0x7f000].iter().enumerate() {
            m.write_obj(*v, GuestAddress(0x8000 + 8 * i as u64))
                .unwrap();
        }
        let b = Block::read(&m, 0x8000).unwrap();
        assert_eq!(
            b.decode(),
            Ok(Hypercall::SetTrapTable {
                table: 0x9000,
                kernel_rsp: 0x7f000,
                entries: 32,
            })
        );
        // Argument 2: how many vectors the table has, 32 to 256 (0: 32).
        for (entries, decoded) in [(256, Some(256)), (33, Some(33)), (31, None), (257, None)] {
            m.write_obj(entries, GuestAddress(0x8018)).unwrap();
            let want = decoded
                .map(|entries| Hypercall::SetTrapTable {
                    table: 0x9000,
                    kernel_rsp: 0x7f000,
                    entries,
                })
                .ok_or(AbiError::InvalidArgument {
                    nr: nr::SET_TRAP_TABLE,
                });
            assert_eq!(Block::read(&m, 0x8000).unwrap().decode(), want, "{entries}");
        }
        assert_eq!(Block::read(&m, 0x8004), Err(AbiError::BadBlock(0x8004)));
        assert_eq!(Block::read(&m, 0xfff8), Err(AbiError::BadBlock(0xfff8)));
        assert_eq!(Block::read(&m, 1 << 32), Err(AbiError::BadBlock(1 << 32)));
        m.write_obj(nr::SET_PAGING_BITS, GuestAddress(0x8000))
            .unwrap();
        m.write_obj(0x10u64, GuestAddress(0x8008)).unwrap();
        assert!(Block::read(&m, 0x8000).unwrap().decode().is_err());
        b.complete(&m, result::E_INVALID);
        assert_eq!(m.read_obj::<i64>(GuestAddress(0x8028)).unwrap(), -2);
    }

    #[test]
    fn mmu_update_lists() {
        let m = mem();
        m.write_obj(0x3000u64, GuestAddress(0x100)).unwrap();
        m.write_obj(0x1234u64, GuestAddress(0x108)).unwrap();
        m.write_obj(0x3004u64, GuestAddress(0x110)).unwrap();
        assert_eq!(
            read_mmu_updates(&m, 0x100, 1),
            Ok(vec![(GuestAddress(0x3000), 0x1234)])
        );
        assert!(read_mmu_updates(&m, 0x100, 2).is_err(), "misaligned target");
        assert!(read_mmu_updates(&m, 0xfff8, 1).is_err(), "list beyond RAM");
        assert!(read_mmu_updates(&m, !7, 2).is_err(), "wrapping list");
        assert!(read_mmu_updates(&m, 0x100, 257).is_err());
    }

    #[test]
    fn memory_maps() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x1_0000_0000), 0x20000),
        ])
        .unwrap();
        assert_eq!(
            write_memory_map(&m, 0x100, 4),
            Ok((2, Some((GuestAddress(0x100), 32))))
        );
        let words: Vec<u64> = (0..4)
            .map(|i| m.read_obj(GuestAddress(0x100 + 8 * i)).unwrap())
            .collect();
        assert_eq!(words, [0, 0x10000, 0x1_0000_0000, 0x20000]);
        // Room for one: the count still says two.
        m.write_obj(!0u64, GuestAddress(0x200 + 16)).unwrap();
        assert_eq!(
            write_memory_map(&m, 0x200, 1),
            Ok((2, Some((GuestAddress(0x200), 16))))
        );
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x200 + 16)).unwrap(), !0);
        assert_eq!(write_memory_map(&m, 0x300, 0), Ok((2, None)));
        assert!(write_memory_map(&m, 0x104, 1).is_err(), "misaligned");
        assert!(write_memory_map(&m, 0xfff8, 1).is_err(), "beyond RAM");
        assert!(write_memory_map(&m, 0x100, 65).is_err(), "too many");
        let decoded = Block {
            gpa: GuestAddress(0),
            nr: nr::MEMORY_MAP,
            args: [0x100, 2, 0, 0],
        }
        .decode();
        assert_eq!(
            decoded,
            Ok(Hypercall::MemoryMap {
                buf: 0x100,
                capacity: 2
            })
        );
    }
}
