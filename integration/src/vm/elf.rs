// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small ELF64 loader for guest kernels: `PT_LOAD` segments are copied to
//! their physical addresses, and the `ShadowMMU` ABI note gives the 64-bit
//! entry (`resources/ABI.md`). Kernels without the note are refused.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
/// Segments may not be loaded below this physical address: the VMM's boot
/// structures (boot page tables, GDT, TSS, boot info) live there.
pub const MIN_LOAD_ADDR: u64 = 0x10_0000;
/// `"ShadowMMU"` note type of the ABI note.
pub const ABI_NOTE_TYPE: u32 = 1;
/// The ABI versions this VMM speaks (the crate's).
pub use shadow_mmu::abi::{ABI_VERSION, MIN_ABI_VERSION};
/// Xen's `XEN_ELFNOTE_PHYS32_ENTRY`.
pub const XEN_PVH_NOTE_TYPE: u32 = 18;

/// Why a kernel ELF was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// The file ends inside a header or segment.
    #[error("truncated: {0} lies beyond the end of the file")]
    Truncated(&'static str),
    /// Not an ELF file.
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// Not 64-bit little-endian x86-64 executable.
    #[error("not an ELF64 little-endian x86-64 executable ({0})")]
    Unsupported(&'static str),
    /// A `PT_LOAD` segment does not fit in guest RAM or would overwrite the
    /// VMM's boot structures.
    #[error("segment at physical {paddr:#x} size {memsz:#x} is outside [{min:#x}, {ram:#x})")]
    SegmentOutOfRange {
        /// Physical address of the segment.
        paddr: u64,
        /// Size in memory.
        memsz: u64,
        /// Lowest allowed address.
        min: u64,
        /// Guest RAM size.
        ram: u64,
    },
    /// A segment's file size exceeds its memory size.
    #[error("segment at physical {0:#x}: file size exceeds memory size")]
    BadSegment(u64),
    /// The kernel does not advertise the ABI.
    #[error(
        "no \"ShadowMMU\" ABI note (type 1) in any PT_NOTE segment: not a shadow-mmu guest kernel"
    )]
    NoAbiNote,
    /// The ABI note is malformed or names an unsupported version or flags.
    #[error("bad \"ShadowMMU\" ABI note: {0}")]
    BadAbiNote(String),
    /// Writing guest memory failed.
    #[error("cannot write guest memory at {0:#x}")]
    Memory(u64),
}

/// What loading a kernel found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The 64-bit entry from the ABI note.
    pub entry64: u64,
    /// The 32-bit PVH entry from a Xen note, if any.
    pub pvh_entry: Option<u32>,
    /// Loaded segments as (physical address, size in memory).
    pub segments: Vec<(u64, u64)>,
}

fn slice<'a>(b: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::Truncated(what))?;
    let len = usize::try_from(len).map_err(|_| ElfError::Truncated(what))?;
    let end = start.checked_add(len).ok_or(ElfError::Truncated(what))?;
    b.get(start..end).ok_or(ElfError::Truncated(what))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// A note: (name without trailing NUL, type, descriptor).
type Note<'a> = (&'a [u8], u32, &'a [u8]);

fn notes(seg: &[u8]) -> Result<Vec<Note<'_>>, ElfError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let align4 = |x: usize| x.div_ceil(4) * 4;
    while off + 12 <= seg.len() {
        let namesz = u32_at(seg, off) as usize;
        let descsz = u32_at(seg, off + 4) as usize;
        let kind = u32_at(seg, off + 8);
        let name_start = off + 12;
        let desc_start = name_start
            .checked_add(align4(namesz))
            .ok_or(ElfError::Truncated("note"))?;
        let next = desc_start
            .checked_add(align4(descsz))
            .ok_or(ElfError::Truncated("note"))?;
        let name = seg
            .get(name_start..name_start + namesz)
            .ok_or(ElfError::Truncated("note name"))?;
        let desc = seg
            .get(desc_start..desc_start + descsz)
            .ok_or(ElfError::Truncated("note descriptor"))?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        out.push((name, kind, desc));
        off = next;
    }
    Ok(out)
}

/// Parses `elf`, checks its ABI note and copies its `PT_LOAD` segments into
/// `mem` (zero-filling past each segment's file size). RAM is
/// `[0, ram_size)`.
pub fn load<M: GuestMemory>(elf: &[u8], mem: &M, ram_size: u64) -> Result<LoadedKernel, ElfError> {
    let eh = slice(elf, 0, 64, "ELF header")?;
    if eh[0..4] != [0x7f, b'E', b'L', b'F'] {
        return Err(ElfError::BadMagic);
    }
    if eh[4] != 2 {
        return Err(ElfError::Unsupported("not ELFCLASS64"));
    }
    if eh[5] != 1 {
        return Err(ElfError::Unsupported("not little-endian"));
    }
    if u16_at(eh, 16) != ET_EXEC {
        return Err(ElfError::Unsupported("not ET_EXEC"));
    }
    if u16_at(eh, 18) != EM_X86_64 {
        return Err(ElfError::Unsupported("not EM_X86_64"));
    }
    let phoff = u64_at(eh, 32);
    let phentsize = u64::from(u16_at(eh, 54));
    let phnum = u64::from(u16_at(eh, 56));
    if phentsize < 56 {
        return Err(ElfError::Unsupported(
            "program header entries shorter than 56 bytes",
        ));
    }
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let p = slice(elf, phoff + i * phentsize, 56, "program header")?;
        phdrs.push(Phdr {
            kind: u32_at(p, 0),
            offset: u64_at(p, 8),
            paddr: u64_at(p, 24),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        });
    }

    // The ABI note (any PT_NOTE) and the PVH note.
    let mut abi = None;
    let mut pvh_entry = None;
    for p in phdrs.iter().filter(|p| p.kind == PT_NOTE) {
        for (name, kind, desc) in notes(slice(elf, p.offset, p.filesz, "PT_NOTE segment")?)? {
            if name == b"ShadowMMU" && kind == ABI_NOTE_TYPE {
                if desc.len() < 16 {
                    return Err(ElfError::BadAbiNote(format!(
                        "descriptor is {} bytes, expected 16",
                        desc.len()
                    )));
                }
                abi = Some((u32_at(desc, 0), u32_at(desc, 4), u64_at(desc, 8)));
            } else if name == b"Xen" && kind == XEN_PVH_NOTE_TYPE && desc.len() >= 4 {
                pvh_entry = Some(u32_at(desc, 0));
            }
        }
    }
    let (version, flags, entry64) = abi.ok_or(ElfError::NoAbiNote)?;
    if !(MIN_ABI_VERSION..=ABI_VERSION).contains(&version) {
        return Err(ElfError::BadAbiNote(format!(
            "ABI version {version}, this VMM speaks versions {MIN_ABI_VERSION} to {ABI_VERSION}"
        )));
    }
    if flags != 0 {
        return Err(ElfError::BadAbiNote(format!("unknown flags {flags:#x}")));
    }

    let mut segments = Vec::new();
    for p in phdrs.iter().filter(|p| p.kind == PT_LOAD && p.memsz > 0) {
        let end = p.paddr.checked_add(p.memsz);
        if p.paddr < MIN_LOAD_ADDR || end.is_none_or(|e| e > ram_size) {
            return Err(ElfError::SegmentOutOfRange {
                paddr: p.paddr,
                memsz: p.memsz,
                min: MIN_LOAD_ADDR,
                ram: ram_size,
            });
        }
        if p.filesz > p.memsz {
            return Err(ElfError::BadSegment(p.paddr));
        }
        let data = slice(elf, p.offset, p.filesz, "PT_LOAD segment")?;
        mem.write_slice(data, GuestAddress(p.paddr))
            .map_err(|_| ElfError::Memory(p.paddr))?;
        let zeros = vec![0u8; 4096];
        let mut at = p.paddr + p.filesz;
        let end = p.paddr + p.memsz;
        while at < end {
            let n = (end - at).min(4096) as usize;
            mem.write_slice(&zeros[..n], GuestAddress(at))
                .map_err(|_| ElfError::Memory(at))?;
            at += n as u64;
        }
        segments.push((p.paddr, p.memsz));
    }
    if !segments
        .iter()
        .any(|&(a, len)| entry64 >= a && entry64 < a + len)
    {
        return Err(ElfError::BadAbiNote(format!(
            "entry64 {entry64:#x} is not inside a loaded segment"
        )));
    }
    Ok(LoadedKernel {
        entry64,
        pvh_entry,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("mmap")
    }

    /// A minimal ELF: one PT_LOAD at 1 MiB, one PT_NOTE with `note`.
    fn elf(note: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 2 * 56];
        f[0..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let data_off = f.len() as u64;
        let code = [0xf4u8; 16];
        let note_off = data_off + code.len() as u64;
        let ph = |kind: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[24..32].copy_from_slice(&paddr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            p
        };
        f[64..120].copy_from_slice(&ph(PT_LOAD, data_off, 0x10_0000, 16, 32));
        f[120..176].copy_from_slice(&ph(PT_NOTE, note_off, 0, note.len() as u64, 0));
        f.extend_from_slice(&code);
        f.extend_from_slice(note);
        f
    }

    fn abi_note(version: u32, entry: u64) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&10u32.to_le_bytes());
        n.extend_from_slice(&16u32.to_le_bytes());
        n.extend_from_slice(&1u32.to_le_bytes());
        n.extend_from_slice(b"ShadowMMU\0\0\0");
        n.extend_from_slice(&version.to_le_bytes());
        n.extend_from_slice(&0u32.to_le_bytes());
        n.extend_from_slice(&entry.to_le_bytes());
        n
    }

    #[test]
    fn loads_and_finds_entry() {
        let m = mem();
        let k = load(&elf(&abi_note(1, 0x10_0004)), &m, 4 << 20).expect("load");
        assert_eq!(k.entry64, 0x10_0004);
        assert_eq!(k.segments, vec![(0x10_0000, 32)]);
        let b: u8 = m.read_obj(GuestAddress(0x10_0000)).expect("read");
        assert_eq!(b, 0xf4);
    }

    #[test]
    fn refuses_missing_or_bad_note() {
        let m = mem();
        let mut xen = Vec::new();
        xen.extend_from_slice(&4u32.to_le_bytes());
        xen.extend_from_slice(&4u32.to_le_bytes());
        xen.extend_from_slice(&18u32.to_le_bytes());
        xen.extend_from_slice(b"Xen\0");
        xen.extend_from_slice(&0x10_0000u32.to_le_bytes());
        assert_eq!(load(&elf(&xen), &m, 4 << 20), Err(ElfError::NoAbiNote));
        // Versions 1 and 2 run (2 adds to 1); 0 and 3 do not.
        assert!(load(&elf(&abi_note(2, 0x10_0000)), &m, 4 << 20).is_ok());
        for version in [0, 3] {
            assert!(matches!(
                load(&elf(&abi_note(version, 0x10_0000)), &m, 4 << 20),
                Err(ElfError::BadAbiNote(_))
            ));
        }
        assert!(matches!(
            load(&elf(&abi_note(1, 0x20_0000)), &m, 4 << 20),
            Err(ElfError::BadAbiNote(_))
        ));
        assert_eq!(
            load(b"\x7fELF", &m, 4 << 20),
            Err(ElfError::Truncated("ELF header"))
        );
    }

    #[test]
    fn refuses_segment_outside_ram() {
        let m = mem();
        assert!(matches!(
            load(&elf(&abi_note(1, 0x10_0000)), &m, 0x10_0010),
            Err(ElfError::SegmentOutOfRange { .. })
        ));
    }
}
