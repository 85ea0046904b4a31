//! The mailbox: the page at the start of each vCPU's block through which
//! the trampoline and the VMM talk, and the layout of what the trampoline
//! leaves on its stack. Must match `trampoline.S`.

/// Flags word: what the trampoline must do besides resuming.
pub const MB_FLAGS: u64 = 0x100;
/// Number of 2-byte touches.
pub const MB_N_TOUCH: u64 = 0x108;
/// Number of 8-byte entry rewrites.
pub const MB_N_WRITES: u64 = 0x110;
/// Number of `invlpg`s.
pub const MB_N_INVLPG: u64 = 0x118;
/// CR3 to load.
pub const MB_CR3: u64 = 0x120;
/// CR4 to load.
pub const MB_CR4: u64 = 0x128;
/// CR2 to set.
pub const MB_CR2: u64 = 0x130;
/// Replacement iret frame: RIP, CS, RFLAGS, RSP, SS.
pub const MB_FRAME: u64 = 0x140;
/// Touch addresses.
pub const MB_TOUCH: u64 = 0x200;
/// `invlpg` addresses.
pub const MB_INVLPG: u64 = 0x400;
/// Addresses of entries to rewrite with their current value.
pub const MB_WRITES: u64 = 0x600;

/// Capacity of the touch list.
pub const MAX_TOUCH: usize = 64;
/// Capacity of the `invlpg` list.
pub const MAX_INVLPG: usize = 64;
/// Capacity of the rewrite list.
pub const MAX_WRITES: usize = 320;

/// Load CR4.
pub const F_CR4: u64 = 1;
/// Load CR3 (a full TLB flush even if unchanged).
pub const F_CR3: u64 = 2;
/// Set CR2.
pub const F_CR2: u64 = 4;
/// Replace the iret frame.
pub const F_FRAME: u64 = 8;
/// Exit again for more commands after these.
pub const F_MORE: u64 = 16;
/// The lists are not empty (any non-zero flags word makes the trampoline
/// walk them).
pub const F_LISTS: u64 = 32;

/// What the trampoline saved, as offsets below the top of the vCPU block
/// (the IST stack top).
pub mod stack {
    /// CR2 at entry.
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

/// Offset of the stub for exception `vector` (0-31) in the trampoline.
pub const fn stub_offset(vector: u8) -> Option<u64> {
    match vector {
        0..=31 => Some(16 * vector as u64),
        _ => None,
    }
}
