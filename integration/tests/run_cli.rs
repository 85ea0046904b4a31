// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End-to-end tests of the `shadow-run` command line other than `walk`
//! (`tests/walk_cli.rs`): help on every subcommand, usage errors that name
//! the bad value, `run --kernel`, and the main job's progress lines.
//!
//! The tests that boot a guest need `/dev/kvm`: without it they FAIL (they
//! never skip).

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use shadow_mmu_integration::suite::SUITE;
use shadow_mmu_integration::vm::guest::KERNEL_ELF;

const BIN: &str = env!("CARGO_BIN_EXE_shadow-run");

fn shadow_run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start shadow-run")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `shadow-run` for a test that boots a guest: a missing `/dev/kvm` is
/// a failure, never a skip.
fn shadow_run_kvm(args: &[&str]) -> Output {
    let out = shadow_run(args);
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("cannot open /dev/kvm"),
        "these tests need /dev/kvm and cannot run without it: {stderr}"
    );
    out
}

/// Asserts that `out` is a clean usage error: exit 2, nothing on stdout,
/// one line on stderr that names every one of `needles`.
fn assert_usage_error(out: &Output, needles: &[&str], what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: stderr {stderr:?}");
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout {:?}",
        text(&out.stdout)
    );
    assert!(
        stderr.starts_with("shadow-run: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "{what}: want one line on stderr, got {stderr:?}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: stderr {stderr:?} does not name {needle:?}"
        );
    }
}

/// A file under the test's scratch directory, named after the test.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run_cli-{name}"));
    std::fs::write(&path, bytes).expect("cannot write a scratch file");
    path
}

#[test]
fn help_works_on_every_subcommand_and_names_the_options() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["run", "--help"],
            &[
                "--paging",
                "native",
                "shadow",
                "--vcpus",
                "--mem",
                "--seed",
                "--param",
                "--timeout",
                "--max-pages",
                "--console",
                "--records",
                "--kernel",
                "ABI note",
                // Every workload and its parameters.
                "touch",
                "demand-mib",
                "spaces",
                "rounds",
                "cow",
                "adbits",
                "large-pages",
                "try-1g",
                "access",
                "cases",
                "smp",
                "iterations",
                "hostile",
                "[default: 256]",
                "[default: 300]",
                "[default: 16384]",
            ],
        ),
        (&["walk", "--help"], &["SCENARIO.json", "standard input"]),
        (&["bench", "--help"], &["--runs", "[default: 5]", "--json"]),
        (&["help", "run"], &["--paging", "--kernel"]),
        (&["run", "-h"], &["--paging", "--kernel"]),
        (
            &["--help"],
            &["bench", "walk SCENARIO.json", "run WORKLOAD", "--json"],
        ),
    ];
    for (args, needles) in cases {
        let out = shadow_run(args);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}, stderr {}",
            out.status.code(),
            text(&out.stderr)
        );
        for needle in *needles {
            assert!(
                stdout.contains(needle),
                "{args:?} does not mention {needle:?}:\n{stdout}"
            );
        }
    }
    let version = shadow_run(&["--version"]);
    assert!(version.status.success());
    assert!(text(&version.stdout).starts_with("shadow-run "));
}

#[test]
fn usage_errors_exit_2_naming_the_bad_value() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["run", "frobnicate", "--paging", "native"],
            &["'frobnicate'", "touch"],
        ),
        (
            &["run", "touch", "--paging", "sideways"],
            &["'sideways'", "native", "shadow"],
        ),
        (&["run", "touch"], &["--paging"]),
        (
            &["run", "touch", "--paging", "native", "--param", "nope=1"],
            &["\"nope\"", "mib"],
        ),
        (
            &["run", "touch", "--paging", "native", "--param", "mib"],
            &["'mib'", "NAME=VALUE"],
        ),
        (
            &["run", "touch", "--paging", "native", "--mem", "lots"],
            &["'lots'", "--mem"],
        ),
        (
            &["run", "touch", "--paging", "native", "--vcpus", "9"],
            &["'9'", "--vcpus"],
        ),
        (
            &["run", "touch", "--paging", "shadow", "--max-pages", "7"],
            &["'7'", "--max-pages"],
        ),
        (
            &["run", "touch", "--paging", "native", "--max-pages", "100"],
            &["--max-pages needs --paging shadow"],
        ),
        (
            &["run", "smp", "--paging", "native", "--vcpus", "1"],
            &["smp needs --vcpus 2"],
        ),
        (
            &["run", "touch", "--paging", "native", "--bogus"],
            &["'--bogus'"],
        ),
        (&["bench", "--runs", "101"], &["'101'", "--runs"]),
        (&["--json", "x.json", "bench"], &["bench", "--json"]),
    ];
    for (args, needles) in cases {
        assert_usage_error(&shadow_run(args), needles, &format!("{args:?}"));
    }
}

/// Little-endian bytes of `words`.
fn le(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Message the foreign kernel writes to the console.
const HELLO: &[u8] = b"hello from a foreign kernel\n";

/// A minimal kernel that is not the project's: it writes [`HELLO`] to the
/// console and exits with `status` through the ABI's hypercalls (native:
/// `out 0x5a0`; shadow: `ud2; "SHM"`), and keeps no results buffer. With
/// `abi_note` false it lacks the "ShadowMMU" note.
fn foreign_kernel(status: u64, abi_note: bool) -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    const DATA: u64 = BASE + 0x1000;
    let mut code = vec![
        0x83, 0x7f, 0x08, 0x01, // cmp dword [rdi + 8], 1 (boot info: shadow?)
        0x74, 0x14, // je shadow
        0xb8, 0x00, 0x10, 0x10, 0x00, // mov eax, DATA (CONSOLE_WRITE block)
        0xba, 0xa0, 0x05, 0x00, 0x00, // mov edx, 0x5a0
        0xef, // out dx, eax
        0xb8, 0x40, 0x10, 0x10, 0x00, // mov eax, DATA + 0x40 (EXIT block)
        0xef, // out dx, eax
        0xf4, 0xeb, 0xfd, // hlt; jmp hlt
        // shadow:
        0xb8, 0x00, 0x10, 0x10, 0x00, // mov eax, DATA
        0x0f, 0x0b, b'S', b'H', b'M', // ud2; "SHM"
        0xb8, 0x40, 0x10, 0x10, 0x00, // mov eax, DATA + 0x40
        0x0f, 0x0b, b'S', b'H', b'M', // ud2; "SHM"
        0xf4, 0xeb, 0xfd, // hlt; jmp hlt
    ];
    code.resize(0x1000, 0xf4);
    let mut image = code;
    image.extend(le(&[6, DATA + 0x80, HELLO.len() as u64, 0, 0, 0, 0, 0]));
    image.extend(le(&[7, status, 0, 0, 0, 0, 0, 0]));
    image.extend_from_slice(HELLO);

    let mut note = Vec::new();
    note.extend(10u32.to_le_bytes());
    note.extend(16u32.to_le_bytes());
    note.extend(1u32.to_le_bytes());
    note.extend(b"ShadowMMU\0\0\0");
    note.extend(1u32.to_le_bytes()); // ABI version
    note.extend(0u32.to_le_bytes()); // flags
    note.extend(BASE.to_le_bytes()); // entry64

    let phnum: u16 = if abi_note { 2 } else { 1 };
    let note_off = 64 + 56 * u64::from(phnum);
    let image_off = 0x1000u64;
    let phdr = |kind: u32, flags: u32, off: u64, addr: u64, size: u64| {
        let mut p = Vec::new();
        p.extend(kind.to_le_bytes());
        p.extend(flags.to_le_bytes());
        p.extend(le(&[off, addr, addr, size, size, 8]));
        p
    };
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
    elf.resize(16, 0);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend(le(&[BASE, 64, 0])); // entry, phoff, shoff
    elf.extend(0u32.to_le_bytes()); // flags
    for half in [64u16, 56, phnum, 64, 0, 0] {
        elf.extend(half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    elf.extend(phdr(1, 7, image_off, BASE, image.len() as u64));
    if abi_note {
        elf.extend(phdr(4, 4, note_off, 0, note.len() as u64));
        elf.extend(&note);
    }
    elf.resize(image_off as usize, 0);
    elf.extend(image);
    elf
}

#[test]
fn kernel_without_the_abi_note_is_refused() {
    let path = scratch("no-note.elf", &foreign_kernel(0, false));
    let p = path.to_str().expect("UTF-8 scratch path");
    let out = shadow_run(&["run", "touch", "--paging", "shadow", "--kernel", p]);
    assert_usage_error(
        &out,
        &[
            p,
            "no \"ShadowMMU\" ABI note",
            "not a shadow-mmu guest kernel",
        ],
        "--kernel without the note",
    );

    let path = scratch(
        "not-elf",
        "#!/bin/sh\n# longer than an ELF header\n"
            .repeat(4)
            .as_bytes(),
    );
    let p = path.to_str().expect("UTF-8 scratch path");
    let out = shadow_run(&["run", "touch", "--paging", "native", "--kernel", p]);
    assert_usage_error(&out, &[p, "not an ELF file"], "--kernel of a script");

    let out = shadow_run(&[
        "run",
        "touch",
        "--paging",
        "native",
        "--kernel",
        "no/such/kernel",
    ]);
    assert_usage_error(
        &out,
        &["no/such/kernel", "cannot read"],
        "--kernel of nothing",
    );
}

#[test]
fn embedded_kernel_from_a_file_runs_touch_with_shadow_paging() {
    let path = scratch("embedded.elf", KERNEL_ELF);
    let p = path.to_str().expect("UTF-8 scratch path");
    let out = shadow_run_kvm(&["run", "touch", "--paging", "shadow", "--kernel", p]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    assert!(
        stdout.starts_with("touch shadow: status 0 (ok)"),
        "{stdout}"
    );
    assert!(stdout.contains("checksum 0x"), "{stdout}");
    // --kernel implies --console.
    assert!(stderr.contains("[guest] guest: touch ok"), "{stderr}");
}

#[test]
fn foreign_kernel_reports_its_exit_status_and_console() {
    for paging in ["native", "shadow"] {
        for (status, code) in [(0u64, 0), (5, 1)] {
            let path = scratch(
                &format!("foreign-{paging}-{status}.elf"),
                &foreign_kernel(status, true),
            );
            let p = path.to_str().expect("UTF-8 scratch path");
            let out = shadow_run_kvm(&["run", "touch", "--paging", paging, "--kernel", p]);
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            let what = format!("{paging}, status {status}: stdout {stdout:?}, stderr {stderr:?}");
            assert_eq!(out.status.code(), Some(code), "{what}");
            assert!(
                stdout.starts_with(&format!(
                    "touch {paging}: exit status {status:#x}, no results"
                )),
                "{what}"
            );
            assert!(
                stderr.contains("[guest] hello from a foreign kernel\n"),
                "{what}"
            );
            assert_eq!(
                stderr.contains(&format!("the guest exited with status {status:#x}")),
                status != 0,
                "{what}"
            );
        }
    }
}

/// Runs the main job with standard error on a pseudo-terminal; returns
/// what it wrote there and its exit status.
fn suite_on_a_terminal() -> (String, Option<i32>) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the given integers and
    // reads nothing else (the name, termios and window size are null).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are open and owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = Command::new(BIN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(slave)
        .spawn()
        .expect("cannot start shadow-run");
    // Drain the terminal while the suite runs; reads end with EIO once the
    // child, the last holder of the other side, has exited.
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let status = child.wait().expect("wait for shadow-run");
    (reader.join().expect("pty reader"), status.code())
}

#[test]
fn main_job_shows_progress_only_on_a_terminal() {
    let json = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run_cli-suite.json");
    let j = json.to_str().expect("UTF-8 scratch path");
    let out = shadow_run_kvm(&["--json", j]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    for writes in ["hypercall", "direct"] {
        assert!(
            stdout.contains(&format!("| touch | {writes} | pass |")),
            "{stdout}"
        );
    }
    assert_eq!(stderr, "", "progress written to a pipe");
    let written = std::fs::read_to_string(&json).expect("the --json file");
    assert!(written.contains("\"touch\""), "{written}");

    let (terminal, code) = suite_on_a_terminal();
    assert_eq!(code, Some(0), "on a terminal: {terminal}");
    let first = format!("[1/{}] {} native...", SUITE.len(), SUITE[0]);
    assert!(terminal.contains(&first), "{terminal:?}");
    assert!(terminal.contains("done."), "{terminal:?}");
}
