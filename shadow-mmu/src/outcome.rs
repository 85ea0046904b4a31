// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What a page fault comes to: the outcome the VMM acts on, and the
//! exception the guest receives when its own tables deny an access.

use crate::addr::{GuestAddress, Gva};
use crate::arch::PfErrorCode;

/// An exception the guest must receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestException {
    /// #PF with this error code; CR2 is the faulting address.
    PageFault {
        /// The error code to push.
        error_code: PfErrorCode,
        /// The value for CR2.
        cr2: Gva,
    },
    /// #GP(0).
    GeneralProtection,
}

/// How a page fault was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// A shadow entry now allows the access: resume the guest.
    Fixed,
    /// Nothing the guest can see changed (a race with another change, or no
    /// free shadow page until the returned flush completes): resume, and the
    /// access faults again if it still must.
    Retry,
    /// The guest's own tables deny the access: deliver this exception.
    Inject(GuestException),
    /// The address is not RAM: emulate the access as MMIO.
    Mmio {
        /// The guest-physical address accessed.
        gpa: GuestAddress,
    },
    /// A write to a shadowed guest page table: emulate it, then report it
    /// with [`ShadowMmu::track_write`](crate::ShadowMmu::track_write).
    Emulate {
        /// The guest-physical address written.
        gpa: GuestAddress,
    },
}
