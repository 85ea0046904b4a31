// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Builds the guest kernel of `resources/guests/` with the machine's gcc and
//! binutils (`gcc`, `ld`, `objcopy`; override with `SHADOW_GUEST_CC`,
//! `SHADOW_GUEST_LD`, `SHADOW_GUEST_OBJCOPY`) into `$OUT_DIR/kernel.elf`,
//! which `src/vm/guest.rs` embeds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags of every guest object: freestanding, no SSE (this host cannot
/// emulate SSE at CPL0), no red zone (exceptions push on the current stack),
/// absolute addressing below 2 GiB.
const CFLAGS: &[&str] = &[
    "-O2",
    "-std=gnu11",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-mcmodel=small",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-builtin",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// User-image symbols the kernel refers to; every other user symbol is made
/// local so that the kernel and user images never share code.
const USER_EXPORTS: &[&str] = &[
    "user_entry",
    "usys_gate",
    "uprobe_read_insn",
    "uprobe_read_end",
    "uprobe_write_insn",
    "uprobe_write_end",
    "uprobe_fetch_end",
    "uprobe_read",
    "__ubss_start",
    "__ubss_end",
];

fn tool(var: &str, default: &str) -> String {
    println!("cargo:rerun-if-env-changed={var}");
    env::var(var).unwrap_or_else(|_| default.to_string())
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("guest build: {shown} failed with {s}"),
        Err(e) => {
            panic!("guest build: cannot run {shown}: {e} (the guest kernel needs gcc and binutils)")
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../resources/guests");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let cc = tool("SHADOW_GUEST_CC", "gcc");
    let ld = tool("SHADOW_GUEST_LD", "ld");
    let objcopy = tool("SHADOW_GUEST_OBJCOPY", "objcopy");

    for f in [
        "guest.h",
        "kernel.ld",
        "entry.S",
        "kernel.c",
        "u_entry.S",
        "u_user.c",
    ] {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }

    let compile = |name: &str| -> PathBuf {
        let obj = out.join(format!(
            "{}.o",
            Path::new(name).with_extension("").display()
        ));
        run(Command::new(&cc)
            .args(CFLAGS)
            .arg("-I")
            .arg(&src)
            .arg("-c")
            .arg(src.join(name))
            .arg("-o")
            .arg(&obj));
        obj
    };
    let entry = compile("entry.S");
    let kernel = compile("kernel.c");
    let u_entry = compile("u_entry.S");
    let u_user = compile("u_user.c");

    // The user image: one relocatable object whose only globals are the
    // symbols the kernel needs (the linker script matches `u_*.o`).
    let u_all = out.join("u_all.o");
    run(Command::new(&ld)
        .arg("-r")
        .arg("-o")
        .arg(&u_all)
        .arg(&u_entry)
        .arg(&u_user));
    let u_image = out.join("u_image.o");
    let mut oc = Command::new(&objcopy);
    for s in USER_EXPORTS {
        oc.arg("-G").arg(s);
    }
    run(oc.arg(&u_all).arg(&u_image));

    let elf = out.join("kernel.elf");
    run(Command::new(&ld)
        .args([
            "-nostdlib",
            "-static",
            "-no-pie",
            "-z",
            "noexecstack",
            "-z",
            "max-page-size=4096",
            "--no-warn-rwx-segments",
            "-T",
        ])
        .arg(src.join("kernel.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(&entry)
        .arg(&kernel)
        .arg(&u_image));
}
