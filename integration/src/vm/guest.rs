// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest kernel of `resources/guests/`, built by `build.rs` with gcc and
//! binutils.

/// The guest kernel ELF: ABI note (`"ShadowMMU"`, entry64) and Xen PVH note.
pub const KERNEL_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kernel.elf"));

#[cfg(test)]
mod tests {
    use shadow_mmu::kvm::{layout, mailbox, TRAMPOLINE_CODE};

    /// The value of `#define NAME <number>UL` in the guest kernel's source.
    fn define(name: &str) -> Option<u64> {
        let src = include_str!("../../../resources/guests/kernel.c");
        let line = src
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))?;
        let value = line.split_whitespace().nth(2)?.trim_end_matches("UL");
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        }
    }

    /// The attack workload writes the hidden region by the glue's layout,
    /// which its kernel repeats as constants: they must not drift apart.
    #[test]
    fn the_attack_kernel_knows_the_glue_s_layout() {
        let pairs = [
            ("L_HOLE_PT", layout::HOLE_PT),
            ("L_GDT", layout::GDT),
            ("L_TSS", layout::TSS),
            ("L_TSS_STRIDE", layout::TSS_STRIDE),
            ("L_TRAMPOLINE", layout::TRAMPOLINE),
            ("L_TRAMPOLINE_LEN", TRAMPOLINE_CODE.len() as u64),
            ("L_BLOCKS", layout::VCPU_BLOCKS),
            ("L_BLOCK", layout::VCPU_BLOCK_SIZE),
            ("L_IDT_STRIDE", layout::IDT_STRIDE),
            ("L_CHAIN", mailbox::CHAIN),
            ("L_CHAIN_END", mailbox::CHAIN_END),
            ("L_ROOTS", mailbox::ROOTS),
            ("L_ROOT_SLOTS", mailbox::ROOT_SLOTS),
            ("L_SWITCHED", mailbox::SWITCHED),
            ("L_STUB", mailbox::STUB_STRIDE),
            ("L_FRAME", mailbox::stack::CR2),
            ("L_ARM_GPTES", layout::ARM_GPTES),
            ("L_ARM_SPTES", layout::ARM_SPTES),
            ("L_ARM_BASE", mailbox::ARM_BASE),
            ("L_ARM_SPT", mailbox::ARM_SPT),
            ("L_ARM_CR2", mailbox::ARM_CR2),
        ];
        for (name, value) in pairs {
            assert_eq!(define(name), Some(value), "{name}");
        }
        // Derived in the kernel from the ones above.
        assert_eq!(
            layout::NMI_BLOCKS,
            layout::VCPU_BLOCKS + 32 * layout::VCPU_BLOCK_SIZE
        );
        assert_eq!(
            layout::IDTS,
            layout::NMI_BLOCKS + 32 * layout::VCPU_BLOCK_SIZE
        );
        assert_eq!(layout::ARMS, layout::IDTS + 32 * layout::IDT_STRIDE);
    }
}
