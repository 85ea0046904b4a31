// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The frame an exception pushes in 64-bit mode and `iretq` pops: where the
//! trampoline finds the interrupted context, and what the VMM writes back
//! when the guest must resume elsewhere.

/// RFLAGS.TF.
pub(super) const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF.
pub(super) const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.NT.
pub(super) const RFLAGS_NT: u64 = 1 << 14;
/// RFLAGS.RF.
pub(super) const RFLAGS_RF: u64 = 1 << 16;
/// RFLAGS.VM.
pub(super) const RFLAGS_VM: u64 = 1 << 17;
/// RFLAGS.AC.
pub(super) const RFLAGS_AC: u64 = 1 << 18;

/// An interrupt-return frame, in the order `iretq` pops it (lowest address
/// first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct IretFrame {
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl IretFrame {
    /// Its five words, lowest address first.
    pub fn words(self) -> [u64; 5] {
        [self.rip, self.cs, self.rflags, self.rsp, self.ss]
    }

    /// From five words, lowest address first.
    #[cfg(test)]
    pub fn from_words([rip, cs, rflags, rsp, ss]: [u64; 5]) -> IretFrame {
        IretFrame {
            rip,
            cs,
            rflags,
            rsp,
            ss,
        }
    }

    /// The privilege level of the interrupted code.
    pub fn cpl(self) -> u8 {
        (self.cs & 3) as u8
    }

    /// Whether the interrupted code ran at CPL 3.
    pub fn is_user(self) -> bool {
        self.cpl() == 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_in_iretq_order() {
        let f = IretFrame::from_words([1, 0x23, 0x202, 4, 0x1b]);
        assert_eq!(
            (f.rip, f.cs, f.rflags, f.rsp, f.ss),
            (1, 0x23, 0x202, 4, 0x1b)
        );
        assert_eq!(f.words(), [1, 0x23, 0x202, 4, 0x1b]);
        assert!(f.is_user());
        assert_eq!(IretFrame { cs: 0x08, ..f }.cpl(), 0);
    }
}
