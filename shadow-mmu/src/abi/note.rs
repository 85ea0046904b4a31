// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What a VMM needs to boot a kernel through the guest ABI
//! (`resources/ABI.md`, "Boot" and "ABI note"): the `"ShadowMMU"` ELF note
//! that a kernel advertises the ABI with, found in its `PT_NOTE` segments,
//! and the addresses and layout of the boot state (boot page tables, boot
//! info page) the VMM writes before the first vCPU runs.
//!
//! The kernel image comes from the user, not from the guest, but it is
//! still untrusted input: a truncated or malformed ELF file is a
//! [`NoteError`], never a panic, and nothing here allocates more than
//! [`MAX_NOTE_SEGMENT`] bytes whatever the headers say.

use std::io::{self, Read, Seek, SeekFrom};

use thiserror::Error;

use super::{ABI_VERSION, MIN_ABI_VERSION};

/// The name of the ABI note, without its terminating NUL.
pub const NOTE_NAME: &[u8] = b"ShadowMMU";
/// The type of the ABI note.
pub const NOTE_TYPE: u32 = 1;
/// The size of the ABI note's descriptor: `u32` version, `u32` flags,
/// `u64` `entry64`.
pub const NOTE_DESC_SIZE: usize = 16;
/// The largest `PT_NOTE` segment read; longer segments are read only up to
/// this size (a note beyond it is not found).
pub const MAX_NOTE_SEGMENT: u64 = 1 << 16;

/// The boot PML4 (the native CR3 at entry; its shadow under shadow paging).
pub const BOOT_PML4: u64 = 0x1000;
/// The boot PDPT.
pub const BOOT_PDPT: u64 = 0x2000;
/// The boot PD: 512 2 MiB pages identity-mapping the first GiB,
/// supervisor, writable, executable.
pub const BOOT_PD: u64 = 0x3000;
/// The boot info page, whose address the vCPUs get in RDI.
pub const BOOT_INFO: u64 = 0x7000;
/// The boot info's magic ("SHMMU" and the layout's revision).
pub const BOOT_INFO_MAGIC: u64 = 0x5348_4d4d_5530_0001;
/// The boot info's paging mode: the hypervisor pages (native).
pub const PAGING_NATIVE: u32 = 0;
/// The boot info's paging mode: shadow page tables kept by the VMM.
pub const PAGING_SHADOW: u32 = 1;
/// The longest kernel command line the boot info may name (version 2).
pub const CMDLINE_MAX: u64 = 4096;

/// Offsets of the boot info page's fields (all little-endian).
pub mod boot_info {
    /// `u64`: [`BOOT_INFO_MAGIC`](super::BOOT_INFO_MAGIC).
    pub const MAGIC: u64 = 0;
    /// `u32`: [`PAGING_NATIVE`](super::PAGING_NATIVE) or
    /// [`PAGING_SHADOW`](super::PAGING_SHADOW).
    pub const PAGING: u64 = 8;
    /// `u32`: the number of vCPUs.
    pub const VCPUS: u64 = 12;
    /// `u64`: guest RAM at boot in bytes (RAM is `[0, size)`).
    pub const RAM_SIZE: u64 = 16;
    /// `u64`: the workload id (this project's guest kernel).
    pub const WORKLOAD: u64 = 24;
    /// 8 × `u64`: the workload parameters.
    pub const PARAMS: u64 = 32;
    /// `u64`: the GPA of the doorbell page.
    pub const DOORBELL: u64 = 96;
    /// `u64`: the GPA of the kernel command line, 0 for none (version 2).
    pub const CMDLINE: u64 = 104;
    /// `u64`: the command line's length in bytes, at most
    /// [`CMDLINE_MAX`](super::CMDLINE_MAX) (version 2).
    pub const CMDLINE_LEN: u64 = 112;
}

const ELF_HEADER_SIZE: usize = 64;
const ELF_PHDR_SIZE: u64 = 56;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
/// At most this many program headers are looked at (`e_phnum` is a `u16`
/// anyway; this only says so).
const MAX_PHDRS: u64 = u16::MAX as u64;

/// The ABI note of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiNote {
    /// The oldest ABI version whose features the kernel needs.
    pub version: u32,
    /// Flags (0: none are defined).
    pub flags: u32,
    /// The 64-bit entry point.
    pub entry64: u64,
}

/// Why a kernel's ABI note could not be found or is not usable.
#[derive(Debug, Error)]
pub enum NoteError {
    /// Reading the kernel failed (not because it ended early).
    #[error("cannot read the kernel")]
    Read(#[source] io::Error),
    /// Not an ELF64 little-endian x86-64 file.
    #[error("the kernel is not an x86-64 ELF64 file: {0}")]
    NotElf64(&'static str),
    /// The file ends inside a header or a `PT_NOTE` segment.
    #[error("the kernel is truncated: its {0} lies beyond the end of the file")]
    Truncated(&'static str),
    /// No `PT_NOTE` segment holds the note.
    #[error("the kernel has no \"ShadowMMU\" ELF note (type 1) in its PT_NOTE segments")]
    NoAbiNote,
    /// A note's sizes run past the end of its segment, or the ABI note's
    /// descriptor is shorter than [`NOTE_DESC_SIZE`].
    #[error("the kernel has a malformed ELF note: {0}")]
    Malformed(&'static str),
    /// The note asks for an ABI version or flags this crate does not speak.
    #[error(
        "the kernel's \"ShadowMMU\" ELF note asks for guest ABI version {version} with flags \
         {flags:#x}, only versions {MIN_ABI_VERSION} to {ABI_VERSION} without flags are supported"
    )]
    Unsupported {
        /// The version the note names.
        version: u32,
        /// The flags the note names.
        flags: u32,
    },
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// Reads exactly `buf.len()` bytes at `offset`; a file that ends first is
/// [`NoteError::Truncated`] naming `what`.
fn read_at<F: Read + Seek>(
    file: &mut F,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), NoteError> {
    file.seek(SeekFrom::Start(offset))
        .map_err(NoteError::Read)?;
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => NoteError::Truncated(what),
        _ => NoteError::Read(e),
    })
}

/// Finds the ABI note of the ELF64 x86-64 `kernel` in any of its `PT_NOTE`
/// segments (the first one found wins) and checks that this crate speaks
/// the version and flags it asks for.
///
/// Notes are padded to 4 bytes, or to 8 in a segment aligned to 8 (as
/// linkers emit `.note.gnu.property`).
pub fn find_abi_note<F: Read + Seek>(kernel: &mut F) -> Result<AbiNote, NoteError> {
    let mut ehdr = [0; ELF_HEADER_SIZE];
    read_at(kernel, 0, &mut ehdr, "ELF header")?;
    if ehdr[..4] != *b"\x7fELF" {
        return Err(NoteError::NotElf64("bad magic"));
    }
    if ehdr[4] != 2 {
        return Err(NoteError::NotElf64("not ELFCLASS64"));
    }
    if ehdr[5] != 1 {
        return Err(NoteError::NotElf64("not little-endian"));
    }
    if le16(&ehdr, 0x12) != EM_X86_64 {
        return Err(NoteError::NotElf64("not EM_X86_64"));
    }
    let phoff = le64(&ehdr, 0x20);
    let phentsize = u64::from(le16(&ehdr, 0x36));
    let phnum = u64::from(le16(&ehdr, 0x38)).min(MAX_PHDRS);
    if phnum > 0 && phentsize < ELF_PHDR_SIZE {
        return Err(NoteError::NotElf64(
            "program header entries shorter than 56 bytes",
        ));
    }
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or(NoteError::Truncated("program headers"))?;
        let mut phdr = [0; ELF_PHDR_SIZE as usize];
        read_at(kernel, at, &mut phdr, "program headers")?;
        if le32(&phdr, 0) != PT_NOTE {
            continue;
        }
        let (offset, size, align) = (le64(&phdr, 8), le64(&phdr, 32), le64(&phdr, 48));
        let mut notes = vec![0; size.min(MAX_NOTE_SEGMENT) as usize];
        read_at(kernel, offset, &mut notes, "PT_NOTE segment")?;
        if let Some(desc) = find_in_segment(&notes, if align == 8 { 8 } else { 4 })? {
            let note = AbiNote {
                version: le32(desc, 0),
                flags: le32(desc, 4),
                entry64: le64(desc, 8),
            };
            if !(MIN_ABI_VERSION..=ABI_VERSION).contains(&note.version) || note.flags != 0 {
                return Err(NoteError::Unsupported {
                    version: note.version,
                    flags: note.flags,
                });
            }
            return Ok(note);
        }
    }
    Err(NoteError::NoAbiNote)
}

/// The descriptor of the ABI note in the note segment `notes`, whose
/// entries are padded to `align` bytes. Bytes after the last whole entry
/// (fewer than an entry's 12-byte header) are padding.
fn find_in_segment(mut notes: &[u8], align: usize) -> Result<Option<&[u8]>, NoteError> {
    let pad = |n: usize| {
        n.checked_next_multiple_of(align)
            .ok_or(NoteError::Malformed("note sizes overflow"))
    };
    while notes.len() >= 12 {
        let namesz = le32(notes, 0) as usize;
        let descsz = le32(notes, 4) as usize;
        let kind = le32(notes, 8);
        let name_end = 12usize
            .checked_add(namesz)
            .ok_or(NoteError::Malformed("note sizes overflow"))?;
        let desc_start = pad(name_end)?;
        let desc_end = desc_start
            .checked_add(descsz)
            .ok_or(NoteError::Malformed("note sizes overflow"))?;
        if desc_end > notes.len() {
            return Err(NoteError::Malformed(
                "a note runs past the end of its segment",
            ));
        }
        let name = &notes[12..name_end];
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        if name == NOTE_NAME && kind == NOTE_TYPE {
            if descsz < NOTE_DESC_SIZE {
                return Err(NoteError::Malformed(
                    "the \"ShadowMMU\" note's descriptor is shorter than 16 bytes",
                ));
            }
            return Ok(Some(&notes[desc_start..desc_end]));
        }
        notes = notes.get(pad(desc_end)?..).unwrap_or_default();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A note entry of `kind` named `name` (with its NUL), padded to
    /// `align`.
    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut n = Vec::new();
        for word in [name.len() as u32, desc.len() as u32, kind] {
            n.extend_from_slice(&word.to_le_bytes());
        }
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(align), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(align), 0);
        n
    }

    fn abi_desc(version: u32, flags: u32, entry64: u64) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&version.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&entry64.to_le_bytes());
        d
    }

    /// An ELF64 x86-64 file with one `PT_LOAD` (no bytes) and one
    /// `PT_NOTE` segment per entry of `segments` (its notes and alignment).
    fn elf(segments: &[(Vec<u8>, u64)]) -> Vec<u8> {
        let phnum = 1 + segments.len();
        let mut e = Vec::new();
        e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e.extend_from_slice(&EM_X86_64.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
        e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        e.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 56, phnum as u16, 64, 0, 0] {
            e.extend_from_slice(&half.to_le_bytes());
        }
        let mut offset = 64 + 56 * phnum as u64;
        let mut phdrs = vec![(1u32, offset, 0u64, 0x1000u64)];
        for (notes, align) in segments {
            phdrs.push((PT_NOTE, offset, notes.len() as u64, *align));
            offset += notes.len() as u64;
        }
        for (kind, offset, size, align) in phdrs {
            e.extend_from_slice(&kind.to_le_bytes());
            e.extend_from_slice(&4u32.to_le_bytes());
            for value in [offset, 0x10_0000, 0x10_0000, size, size, align] {
                e.extend_from_slice(&value.to_le_bytes());
            }
        }
        for (notes, _) in segments {
            e.extend_from_slice(notes);
        }
        e
    }

    fn find(bytes: &[u8]) -> Result<AbiNote, NoteError> {
        find_abi_note(&mut Cursor::new(bytes))
    }

    fn pvh_note() -> Vec<u8> {
        note(b"Xen\0", 18, &0x10_0000u32.to_le_bytes(), 4)
    }

    #[test]
    fn finds_the_note_in_any_note_segment() {
        let abi = note(b"ShadowMMU\0", NOTE_TYPE, &abi_desc(2, 0, 0x10_1000), 4);
        let want = AbiNote {
            version: 2,
            flags: 0,
            entry64: 0x10_1000,
        };
        // Alone, after another note in its segment, in a later segment.
        assert_eq!(find(&elf(&[(abi.clone(), 4)])).unwrap(), want);
        let mut both = pvh_note();
        both.extend_from_slice(&abi);
        assert_eq!(find(&elf(&[(both, 4)])).unwrap(), want);
        assert_eq!(
            find(&elf(&[(pvh_note(), 4), (abi.clone(), 4)])).unwrap(),
            want
        );
        // Entries padded to 8 in a segment aligned to 8.
        let mut eight = note(b"GNU\0", 5, &[0; 12], 8);
        eight.extend_from_slice(&note(
            b"ShadowMMU\0",
            NOTE_TYPE,
            &abi_desc(1, 0, 0x10_1000),
            8,
        ));
        assert_eq!(find(&elf(&[(eight, 8)])).unwrap().version, 1);
        // A name without its NUL, as some tools write it.
        let bare = note(b"ShadowMMU", NOTE_TYPE, &abi_desc(2, 0, 0x10_1000), 4);
        assert_eq!(find(&elf(&[(bare, 4)])).unwrap(), want);
    }

    #[test]
    fn a_kernel_without_the_note_is_refused() {
        let err = find(&elf(&[(pvh_note(), 4)])).unwrap_err();
        assert!(matches!(err, NoteError::NoAbiNote), "{err:?}");
        assert!(err.to_string().contains("has no \"ShadowMMU\" ELF note"));
        // Same name, other type; other name, same type.
        let other_type = note(b"ShadowMMU\0", 2, &abi_desc(2, 0, 0), 4);
        let other_name = note(b"ShadowMMX\0", NOTE_TYPE, &abi_desc(2, 0, 0), 4);
        for notes in [other_type, other_name] {
            assert!(matches!(
                find(&elf(&[(notes, 4)])),
                Err(NoteError::NoAbiNote)
            ));
        }
        assert!(matches!(find(&elf(&[])), Err(NoteError::NoAbiNote)));
    }

    #[test]
    fn versions_and_flags_this_crate_does_not_speak_are_refused() {
        for (version, flags) in [(0, 0), (ABI_VERSION + 1, 0), (1, 1), (2, 0x8000_0000)] {
            let abi = note(b"ShadowMMU\0", NOTE_TYPE, &abi_desc(version, flags, 0), 4);
            match find(&elf(&[(abi, 4)])) {
                Err(NoteError::Unsupported {
                    version: v,
                    flags: f,
                }) => {
                    assert_eq!((v, f), (version, flags))
                }
                other => panic!("{version} {flags:#x}: {other:?}"),
            }
        }
    }

    #[test]
    fn files_that_are_not_elf64_x86_64_are_refused() {
        let good = elf(&[]);
        for (at, byte, why) in [
            (0, b'X', "bad magic"),
            (4, 1, "not ELFCLASS64"),
            (5, 2, "not little-endian"),
            (0x12, 40, "not EM_X86_64"),
        ] {
            let mut bad = good.clone();
            bad[at] = byte;
            match find(&bad) {
                Err(NoteError::NotElf64(w)) => assert_eq!(w, why),
                other => panic!("{why}: {other:?}"),
            }
        }
        let mut short_phdrs = good.clone();
        short_phdrs[0x36] = 32;
        assert!(matches!(find(&short_phdrs), Err(NoteError::NotElf64(_))));
    }

    #[test]
    fn truncated_files_are_errors() {
        let abi = note(b"ShadowMMU\0", NOTE_TYPE, &abi_desc(2, 0, 0x10_1000), 4);
        let full = elf(&[(abi, 4)]);
        assert!(find(&full).is_ok());
        // Every prefix: an error that names what is missing, never a panic
        // and never a note.
        for len in 0..full.len() {
            match find(&full[..len]) {
                Err(NoteError::Truncated(_)) => {}
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        // Program headers or a note segment said to lie far beyond the end.
        let mut far = full.clone();
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(find(&far), Err(NoteError::Truncated(_))));
        let mut huge = full.clone();
        let note_phdr = 64 + 56;
        huge[note_phdr + 32..note_phdr + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(find(&huge), Err(NoteError::Truncated(_))));
    }

    #[test]
    fn malformed_notes_are_errors() {
        for (namesz, descsz) in [(u32::MAX, 16), (10, u32::MAX), (10, 1000), (1000, 16)] {
            let mut n = Vec::new();
            for word in [namesz, descsz, NOTE_TYPE] {
                n.extend_from_slice(&word.to_le_bytes());
            }
            n.extend_from_slice(b"ShadowMMU\0\0\0");
            n.extend_from_slice(&abi_desc(2, 0, 0));
            match find(&elf(&[(n, 4)])) {
                Err(NoteError::Malformed(_)) => {}
                other => panic!("{namesz:#x} {descsz:#x}: {other:?}"),
            }
        }
        let short = note(b"ShadowMMU\0", NOTE_TYPE, &[2, 0, 0, 0, 0, 0, 0, 0], 4);
        assert!(matches!(
            find(&elf(&[(short, 4)])),
            Err(NoteError::Malformed(_))
        ));
    }

    #[test]
    // 20,000 parses: minutes under Miri, whose subset the other tests of
    // this module cover.
    #[cfg_attr(miri, ignore)]
    fn random_bytes_never_panic() {
        // A seeded xorshift over headers that are mostly right: any result
        // but a panic is fine.
        let abi = note(b"ShadowMMU\0", NOTE_TYPE, &abi_desc(2, 0, 0x10_1000), 4);
        let good = elf(&[(pvh_note(), 4), (abi, 8)]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut bad = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % bad.len() as u64) as usize;
                bad[at] = (x >> 32) as u8;
            }
            let _ = find(&bad);
        }
    }
}
