// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How the VMM and the trampoline talk: what the trampoline leaves on its
//! IST stack at an exit, and the gadgets of the return chain through which
//! the VMM tells it what to do before it resumes the guest. Must match
//! `trampoline.S` (a unit test compares the offsets).

/// What the trampoline saved, as offsets below the top of the vCPU block
/// (the IST stack top).
pub mod stack {
    /// CR2 at entry (page faults only). The VMM then writes the first
    /// gadget of the chain here.
    pub const CR2: u64 = 80;
    /// Guest RDX.
    pub const RDX: u64 = 72;
    /// Guest RAX.
    pub const RAX: u64 = 64;
    /// Vector.
    pub const VECTOR: u64 = 56;
    /// Error code (0 for vectors without one).
    pub const ERROR_CODE: u64 = 48;
    /// Interrupted RIP.
    pub const RIP: u64 = 40;
    /// Interrupted CS.
    pub const CS: u64 = 32;
    /// Interrupted RFLAGS.
    pub const RFLAGS: u64 = 24;
    /// Interrupted RSP.
    pub const RSP: u64 = 16;
    /// Interrupted SS.
    pub const SS: u64 = 8;
}

/// Trampoline offsets of the chain gadgets.
pub mod gadget {
    /// Resume; RDX and RAX are where the entry saved them.
    pub const RESUME: u64 = 0x440;
    /// Resume; the VMM moved RAX and RDX to the vector and error-code slots.
    pub const RESUME_MOVED: u64 = 0x450;
    /// Pop a value into CR3.
    pub const CR3: u64 = 0x460;
    /// Pop a value into CR4.
    pub const CR4: u64 = 0x470;
    /// Pop a value into CR2.
    pub const CR2: u64 = 0x480;
    /// Pop an address and `invlpg` it.
    pub const INVLPG: u64 = 0x490;
    /// Pop the hole address of a shadow entry and rewrite it (8 bytes).
    pub const WRITE: u64 = 0x4a0;
    /// Pop the hole address of a reused shadow page and touch it (2 bytes).
    pub const TOUCH: u64 = 0x4b0;
    /// Pop a stack pointer and go on with the chain there.
    pub const FAR: u64 = 0x4c0;
    /// Pop a stack pointer, then RAX and RDX from there, and resume.
    pub const BACK: u64 = 0x4d0;
    /// Exit again; on return, go on with the chain at the start of the
    /// chain area.
    pub const AGAIN: u64 = 0x4e0;
}

/// Offset of the NMI entry in the trampoline.
pub const NMI_ENTRY: u64 = 0x400;
/// Distance between the exception entry stubs.
pub const STUB_STRIDE: u64 = 32;
/// Offset of the chain area in the vCPU block: where chains longer than the
/// slots below the hardware frame go.
pub const CHAIN: u64 = 0x100;
/// End of the chain area (the root cache and the IST stack lie above it).
pub const CHAIN_END: u64 = 0x3400;
/// Offset of the root cache in the vCPU block: `ROOT_SLOTS` pairs of (guest
/// CR3 with bit 63 set, shadow root), the slot of a CR3 given by its bits
/// 12 and up, modulo `ROOT_SLOTS`; an empty slot holds zeros.
pub const ROOTS: u64 = 0x3400;
/// Entries of the root cache.
pub const ROOT_SLOTS: u64 = 64;
/// Offset of the word where the trampoline leaves the last CR3 it switched
/// to by itself (0: none since the VMM last looked).
pub const SWITCHED: u64 = 0x3800;
/// Offset of the word that enables the root cache (nonzero: the trampoline
/// may read the `ud2` marker and switch by itself). The VMM sets it only
/// with one vCPU: with several, another vCPU's exit could take the shadow
/// mapping of the code page away between the `ud2`'s fetch and the
/// marker's read, and that #PF would land on the same IST stack.
pub const FAST_PATH: u64 = 0x3808;
/// Offset of the word giving the first guest-virtual address of the armed
/// dirty table (2 MiB aligned; [`DISARMED`]: none). See the #PF entry in
/// `trampoline.S`.
pub const ARM_BASE: u64 = 0x3810;
/// [`ARM_BASE`] when no table is armed: no 2 MiB-aligned address.
pub const DISARMED: u64 = 1;
/// An unarmed slot of the expected guest entries: its low four bits would
/// be the error code of a reserved-bit fault on a non-present entry, which
/// no CPU reports, so no fault matches it.
pub const UNARMED: u64 = 8;
/// Offset of the word giving the hole address of the armed table's shadow
/// page.
pub const ARM_SPT: u64 = 0x3818;
/// Offset of the word giving the CR2 the guest last saw, which the #PF
/// fast path puts back.
pub const ARM_CR2: u64 = 0x3820;
/// Offset of the #PF entry (the dirty-bit fast path), where the #PF gate
/// leads.
pub const PF_ENTRY: u64 = 0x1420;
/// Offset of the #UD entry (the register-form `LOAD_CR3` fast path).
pub const UD_ENTRY: u64 = 0x500;
/// Offset of the external-interrupt stubs (vectors 32-255).
pub const IRQ_STUBS: u64 = 0x600;
/// Distance between the external-interrupt stubs.
pub const IRQ_STRIDE: u64 = 16;
/// Offset of the exit the external-interrupt stubs share.
pub const IRQ_COMMON: u64 = 0x1400;
// The root cache follows the chain area; the IST stack above the switch
// word needs room for the entry's frame.
const _: () = assert!(CHAIN_END <= ROOTS && ROOTS + 16 * ROOT_SLOTS <= SWITCHED);
const _: () = assert!(
    SWITCHED < FAST_PATH
        && FAST_PATH < ARM_BASE
        && ARM_BASE < ARM_SPT
        && ARM_SPT < ARM_CR2
        && SWITCHED + 0x100 <= super::layout::VCPU_BLOCK_SIZE
);

/// Most 8-byte slots of one batch in the chain area.
pub const CHAIN_SLOTS: usize = ((CHAIN_END - CHAIN) / 8) as usize;

/// Offset of the entry stub for `vector` in the trampoline: an exception
/// (0-31) or an external interrupt (32-255).
pub const fn stub_offset(vector: u8) -> Option<u64> {
    match vector {
        0..=31 => Some(STUB_STRIDE * vector as u64),
        _ => Some(IRQ_STUBS + IRQ_STRIDE * (vector as u64 - 32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.set` constants of trampoline.S.
    fn assembly_constant(name: &str) -> u64 {
        let src = include_str!("trampoline.S");
        let line = src
            .lines()
            .map(str::trim)
            .find(|l| {
                l.strip_prefix(".set ")
                    .and_then(|r| r.split(',').next())
                    .is_some_and(|n| n.trim() == name)
            })
            .unwrap_or_else(|| panic!("{name} not in trampoline.S"));
        let value = line.split(',').nth(1).expect("a value").trim();
        let value = value.split_whitespace().next().expect("a value");
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
            None => value.parse().expect("decimal"),
        }
    }

    use super::super::layout;

    #[test]
    fn offsets_match_the_assembly() {
        let pairs = [
            ("G_RESUME", gadget::RESUME),
            ("G_RESUME_MOVED", gadget::RESUME_MOVED),
            ("G_CR3", gadget::CR3),
            ("G_CR4", gadget::CR4),
            ("G_CR2", gadget::CR2),
            ("G_INVLPG", gadget::INVLPG),
            ("G_WRITE", gadget::WRITE),
            ("G_TOUCH", gadget::TOUCH),
            ("G_FAR", gadget::FAR),
            ("G_BACK", gadget::BACK),
            ("G_AGAIN", gadget::AGAIN),
            ("NMI_ENTRY", NMI_ENTRY),
            ("STUB_STRIDE", STUB_STRIDE),
            ("CHAIN", CHAIN),
            ("ROOTS", ROOTS),
            ("ROOT_MASK", ROOT_SLOTS - 1),
            ("SWITCHED", SWITCHED),
            ("FAST_PATH", FAST_PATH),
            ("UD_ENTRY", UD_ENTRY),
            ("IRQ_STUBS", IRQ_STUBS),
            ("IRQ_STRIDE", IRQ_STRIDE),
            ("IRQ_COMMON", IRQ_COMMON),
            ("BLOCK_SIZE", super::super::layout::VCPU_BLOCK_SIZE),
            ("ARM_BASE", ARM_BASE),
            ("ARM_SPT", ARM_SPT),
            ("ARM_CR2", ARM_CR2),
            ("DISARMED", DISARMED),
            ("UNARMED", UNARMED),
            ("PF_ENTRY", PF_ENTRY),
            ("ARM_GPTES", layout::ARM_GPTES),
            ("ARM_SPTES", layout::ARM_SPTES),
            (
                "ARM_DIST",
                layout::ARMS + layout::ARM_WINDOW - layout::VCPU_BLOCKS,
            ),
            ("NMI_DIST", layout::NMI_BLOCKS - layout::VCPU_BLOCKS),
        ];
        for (name, value) in pairs {
            assert_eq!(assembly_constant(name), value, "{name}");
        }
        assert_eq!(
            assembly_constant("EXIT_PORT"),
            u64::from(super::super::EXIT_PORT)
        );
    }

    #[test]
    fn gadgets_are_in_the_code() {
        // Each gadget starts with the byte the assembly says: a `pop` for
        // those taking an operand, found at its offset in trampoline.bin.
        let code = super::super::TRAMPOLINE_CODE;
        let byte = |off: u64| code.get(off as usize).copied();
        let pop_rax = Some(0x58);
        for g in [gadget::CR3, gadget::CR4, gadget::CR2, gadget::INVLPG] {
            assert_eq!(byte(g), pop_rax, "{g:#x}");
        }
        assert_eq!(byte(gadget::WRITE), pop_rax);
        assert_eq!(byte(gadget::TOUCH), pop_rax);
        assert_eq!(byte(gadget::RESUME), Some(0x5a)); // pop rdx
        assert_eq!(byte(gadget::RESUME_MOVED), pop_rax);
        assert_eq!(byte(gadget::FAR), Some(0x5c)); // pop rsp
        assert_eq!(byte(gadget::BACK), Some(0x5c));
        assert_eq!(byte(gadget::AGAIN), Some(0xba)); // mov edx, imm32
                                                     // Every interrupt stub pushes 0 and its vector (one byte,
                                                     // sign-extended), then jumps to the common exit.
        for vector in 32..=255u8 {
            let stub = stub_offset(vector).expect("interrupt stub");
            let at = |i: u64| byte(stub + i);
            assert_eq!(
                [at(0), at(1), at(2), at(3)],
                [Some(0x6a), Some(0), Some(0x6a), Some(vector)]
            );
        }
        assert_eq!(byte(IRQ_COMMON), Some(0x50)); // push rax
        assert_eq!([byte(PF_ENTRY), byte(PF_ENTRY + 1)], [Some(0x6a), Some(14)]);
        // push 14
    }
}
