// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenario files for `shadow-run walk`: parsing and validation.
//!
//! A scenario describes a vCPU's paging registers, a zero-filled guest RAM,
//! the writes that lay out page tables in it, and a list of accesses to
//! translate. The format is documented in `resources/SCENARIO.md`; this
//! module is its single implementation.
//!
//! Parsing never panics: every malformed input becomes a [`ScenarioError`]
//! that names the offending field by its path (`writes[2].width`,
//! `cpu.maxphyaddr`...). Validation is complete, so a [`Scenario`] that
//! parsed can be run without further checks on the input.

use serde_json::{Map, Value};
use shadow_mmu::{AccessKind, Cr0, Cr4, Efer, PagingMode, PagingState};
use thiserror::Error;

/// The largest guest RAM a scenario may ask for: 4 GiB.
///
/// Guest RAM is an anonymous mapping that is touched only where the
/// scenario writes or the walker reads, so the cap is about address space,
/// not memory use; it keeps a stray or fuzzed `memory_size` from asking the
/// host for terabytes.
pub const MAX_MEMORY_SIZE: u64 = 4 << 30;

/// The granularity of `memory_size`: 4 KiB.
pub const MEMORY_GRANULE: u64 = 4096;

/// The smallest MAXPHYADDR a scenario may give.
pub const MIN_MAXPHYADDR: u64 = 32;

/// The largest MAXPHYADDR a scenario may give.
pub const MAX_MAXPHYADDR: u64 = 52;

/// The MAXPHYADDR used when `cpu.maxphyaddr` is absent.
pub const DEFAULT_MAXPHYADDR: u8 = 48;

/// Why a scenario was rejected. Every variant but [`ScenarioError::Json`]
/// names the field it is about.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ScenarioError {
    /// The input is not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("{field}: missing required field")]
    Missing {
        /// Path of the missing field.
        field: String,
    },
    /// A field that the format does not define.
    #[error("{field}: unknown field")]
    Unknown {
        /// Path of the unknown field.
        field: String,
    },
    /// A field holds the wrong kind of JSON value.
    #[error("{field}: expected {expected}, found {found}")]
    Type {
        /// Path of the field.
        field: String,
        /// What the format wants there.
        expected: &'static str,
        /// The JSON type that was there.
        found: &'static str,
    },
    /// A number field holds neither a valid hex string nor a non-negative
    /// JSON integer that fits in 64 bits.
    #[error(
        "{field}: {text} is not a valid number (want a 0x-prefixed hex string or a \
         non-negative JSON integer, at most 64 bits)"
    )]
    BadNumber {
        /// Path of the field.
        field: String,
        /// The offending text, quoted and escaped.
        text: String,
    },
    /// A well-formed value that the format does not allow there.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
}

impl ScenarioError {
    /// The path of the field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Json(_) => None,
            ScenarioError::Missing { field }
            | ScenarioError::Unknown { field }
            | ScenarioError::Type { field, .. }
            | ScenarioError::BadNumber { field, .. }
            | ScenarioError::Invalid { field, .. } => Some(field),
        }
    }
}

/// The vCPU registers and CPUID facts that decide how addresses translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// PKRU.
    pub pkru: u32,
    /// IA32_PKRS.
    pub pkrs: u32,
    /// MAXPHYADDR, 32..=52.
    pub maxphyaddr: u8,
    /// 1 GiB pages supported.
    pub gbpages: bool,
    /// PSE-36 supported.
    pub pse36: bool,
}

impl Cpu {
    /// The paging state these registers describe, at CPL 0 with EFLAGS.AC
    /// clear and the PAE PDPTE registers zero (not yet loaded).
    pub fn paging_state(&self) -> PagingState {
        PagingState {
            cr0: Cr0::from_bits_retain(self.cr0),
            cr3: self.cr3,
            cr4: Cr4::from_bits_retain(self.cr4),
            efer: Efer::from_bits_retain(self.efer),
            pkru: self.pkru,
            pkrs: self.pkrs,
            cpl: 0,
            eflags_ac: false,
            maxphyaddr: self.maxphyaddr,
            pdptrs: [0; 4],
            gbpages: self.gbpages,
            pse36: self.pse36,
        }
    }

    /// The paging mode these registers select.
    pub fn mode(&self) -> PagingMode {
        self.paging_state().mode()
    }
}

/// The width of a guest-memory write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// Four bytes.
    Four,
    /// Eight bytes.
    Eight,
}

impl Width {
    /// The width in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Width::Four => 4,
            Width::Eight => 8,
        }
    }
}

/// One little-endian store into guest RAM, made before any access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemWrite {
    /// Guest-physical address, aligned to the width.
    pub gpa: u64,
    /// Store width.
    pub width: Width,
    /// Value; fits in the width.
    pub value: u64,
}

/// One access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSpec {
    /// The linear address.
    pub gva: u64,
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// Made at CPL 3 (otherwise CPL 0).
    pub user: bool,
    /// EFLAGS.AC during the access.
    pub ac: bool,
    /// An implicit supervisor-mode access.
    pub implicit: bool,
}

/// A parsed and validated scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The vCPU.
    pub cpu: Cpu,
    /// Size of guest RAM in bytes, from GPA 0.
    pub memory_size: u64,
    /// Stores that lay out guest RAM, in order.
    pub writes: Vec<MemWrite>,
    /// Accesses to translate, in order.
    pub accesses: Vec<AccessSpec>,
}

impl Scenario {
    /// Parses and validates a scenario from its JSON text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| ScenarioError::Json(e.to_string()))?;
        Self::from_value(&root)
    }

    /// Validates a scenario already parsed as JSON.
    pub fn from_value(root: &Value) -> Result<Scenario, ScenarioError> {
        let root = Obj::new(root, String::new())?;
        root.allow_only(&["cpu", "memory_size", "writes", "accesses"])?;

        let cpu = parse_cpu(&Obj::new(root.required("cpu")?, root.path("cpu"))?)?;

        let memory_size = root.number("memory_size")?;
        let field = || root.path("memory_size");
        if memory_size == 0 {
            return Err(invalid(field(), "must not be 0"));
        }
        if memory_size > MAX_MEMORY_SIZE {
            return Err(invalid(
                field(),
                format!("{memory_size:#x} is larger than the maximum {MAX_MEMORY_SIZE:#x} (4 GiB)"),
            ));
        }
        if memory_size % MEMORY_GRANULE != 0 {
            return Err(invalid(
                field(),
                format!("{memory_size:#x} is not a multiple of 4 KiB ({MEMORY_GRANULE:#x})"),
            ));
        }

        let writes = root
            .array("writes")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_write(v, format!("writes[{i}]"), memory_size))
            .collect::<Result<Vec<_>, _>>()?;

        let accesses = root
            .array("accesses")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_access(v, format!("accesses[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Scenario {
            cpu,
            memory_size,
            writes,
            accesses,
        })
    }
}

fn parse_cpu(cpu: &Obj<'_>) -> Result<Cpu, ScenarioError> {
    cpu.allow_only(&[
        "cr0",
        "cr3",
        "cr4",
        "efer",
        "pkru",
        "pkrs",
        "maxphyaddr",
        "gbpages",
        "pse36",
    ])?;
    let cr0 = cpu.number("cr0")?;
    let cr3 = cpu.number("cr3")?;
    let cr4 = cpu.number("cr4")?;
    let efer = cpu.number("efer")?;
    let pkru = cpu.opt_u32("pkru")?.unwrap_or(0);
    let pkrs = cpu.opt_u32("pkrs")?.unwrap_or(0);
    let maxphyaddr = match cpu.opt_number("maxphyaddr")? {
        None => DEFAULT_MAXPHYADDR,
        Some(m) if (MIN_MAXPHYADDR..=MAX_MAXPHYADDR).contains(&m) => m as u8,
        Some(m) => {
            return Err(invalid(
                cpu.path("maxphyaddr"),
                format!("{m} is outside {MIN_MAXPHYADDR}..={MAX_MAXPHYADDR}"),
            ))
        }
    };
    let gbpages = cpu.opt_bool("gbpages")?.unwrap_or(true);
    let pse36 = cpu.opt_bool("pse36")?.unwrap_or(true);
    Ok(Cpu {
        cr0,
        cr3,
        cr4,
        efer,
        pkru,
        pkrs,
        maxphyaddr,
        gbpages,
        pse36,
    })
}

fn parse_write(v: &Value, path: String, memory_size: u64) -> Result<MemWrite, ScenarioError> {
    let w = Obj::new(v, path)?;
    w.allow_only(&["gpa", "width", "value"])?;
    let gpa = w.number("gpa")?;
    let width = match w.number("width")? {
        4 => Width::Four,
        8 => Width::Eight,
        n => return Err(invalid(w.path("width"), format!("{n} is not 4 or 8"))),
    };
    let value = w.number("value")?;
    let bytes = width.bytes();
    if width == Width::Four && value > u64::from(u32::MAX) {
        return Err(invalid(
            w.path("value"),
            format!("{value:#x} does not fit in 4 bytes"),
        ));
    }
    if gpa % bytes != 0 {
        return Err(invalid(
            w.path("gpa"),
            format!("{gpa:#x} is not aligned to the width ({bytes} bytes)"),
        ));
    }
    // Aligned and below memory_size (a multiple of 4 KiB) means the whole
    // store is inside guest RAM.
    if gpa >= memory_size {
        return Err(invalid(
            w.path("gpa"),
            format!("{gpa:#x} is outside guest RAM (memory_size {memory_size:#x})"),
        ));
    }
    Ok(MemWrite { gpa, width, value })
}

fn parse_access(v: &Value, path: String) -> Result<AccessSpec, ScenarioError> {
    let a = Obj::new(v, path)?;
    a.allow_only(&["gva", "kind", "user", "ac", "implicit"])?;
    let gva = a.number("gva")?;
    let kind = match a.required("kind")? {
        Value::String(s) => match s.as_str() {
            "read" => AccessKind::Read,
            "write" => AccessKind::Write,
            "fetch" => AccessKind::Fetch,
            _ => {
                return Err(invalid(
                    a.path("kind"),
                    format!("{} is not \"read\", \"write\" or \"fetch\"", quote(s)),
                ))
            }
        },
        other => return Err(type_error(a.path("kind"), "a string", other)),
    };
    Ok(AccessSpec {
        gva,
        kind,
        user: a.opt_bool("user")?.unwrap_or(false),
        ac: a.opt_bool("ac")?.unwrap_or(false),
        implicit: a.opt_bool("implicit")?.unwrap_or(false),
    })
}

/// Parses a number: a JSON integer in `0..=u64::MAX`, or a string `0x`
/// (or `0X`) followed by 1 or more hex digits whose value fits in 64 bits.
pub fn parse_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_hex(s),
        _ => None,
    }
}

/// Parses `0x`-prefixed hex text (no sign, no separators, no whitespace).
pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// A JSON object being validated, with its path for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: String) -> Result<Obj<'a>, ScenarioError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => {
                let field = if path.is_empty() {
                    "(top level)".to_string()
                } else {
                    path
                };
                Err(type_error(field, "an object", other))
            }
        }
    }

    /// The path of `key` inside this object.
    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn allow_only(&self, known: &[&str]) -> Result<(), ScenarioError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ScenarioError::Unknown {
                field: self.path(&escape(k)),
            }),
            None => Ok(()),
        }
    }

    fn required(&self, key: &str) -> Result<&'a Value, ScenarioError> {
        self.map.get(key).ok_or_else(|| ScenarioError::Missing {
            field: self.path(key),
        })
    }

    fn number(&self, key: &str) -> Result<u64, ScenarioError> {
        let v = self.required(key)?;
        self.to_number(key, v)
    }

    fn opt_number(&self, key: &str) -> Result<Option<u64>, ScenarioError> {
        self.map
            .get(key)
            .map(|v| self.to_number(key, v))
            .transpose()
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, ScenarioError> {
        match self.opt_number(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| invalid(self.path(key), format!("{n:#x} does not fit in 32 bits"))),
        }
    }

    fn to_number(&self, key: &str, v: &Value) -> Result<u64, ScenarioError> {
        match v {
            Value::Number(_) | Value::String(_) => {
                parse_number(v).ok_or_else(|| ScenarioError::BadNumber {
                    field: self.path(key),
                    text: match v {
                        Value::String(s) => quote(s),
                        other => other.to_string(),
                    },
                })
            }
            other => Err(type_error(
                self.path(key),
                "a hex string or an integer",
                other,
            )),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ScenarioError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(type_error(self.path(key), "true or false", other)),
        }
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, ScenarioError> {
        match self.required(key)? {
            Value::Array(a) => Ok(a),
            other => Err(type_error(self.path(key), "an array", other)),
        }
    }
}

fn invalid(field: String, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn type_error(field: String, expected: &'static str, found: &Value) -> ScenarioError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ScenarioError::Type {
        field,
        expected,
        found,
    }
}

/// Longest piece of input text quoted in an error message.
const QUOTE_MAX: usize = 40;

/// Quotes input text for an error message: escaped (so the message stays on
/// one line) and shortened.
fn quote(s: &str) -> String {
    let short: String = s.chars().take(QUOTE_MAX).collect();
    if short.len() < s.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

/// Escapes a key for use in a field path, keeping it on one line.
fn escape(k: &str) -> String {
    let plain = k.chars().count() <= QUOTE_MAX
        && !k.is_empty()
        && k.chars().all(|c| !c.is_control() && c != '"' && c != '\\');
    if plain {
        k.to_string()
    } else {
        quote(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"cpu": {"cr0": "0x80000001", "cr3": 0, "cr4": "0x20",
        "efer": "0x500"}, "memory_size": "0x1000", "writes": [], "accesses": []}"#;

    #[test]
    fn hex() {
        assert_eq!(parse_hex("0x0"), Some(0));
        assert_eq!(parse_hex("0XfF"), Some(255));
        assert_eq!(parse_hex("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex("0x0000000000000000001"), Some(1));
        assert_eq!(parse_hex("0x10000000000000000"), None);
        assert_eq!(parse_hex("0x"), None);
        assert_eq!(parse_hex("0x+1"), None);
        assert_eq!(parse_hex("0x-1"), None);
        assert_eq!(parse_hex("0x 1"), None);
        assert_eq!(parse_hex("10"), None);
        assert_eq!(parse_hex(""), None);
        assert_eq!(parse_hex("0x1_0"), None);
    }

    #[test]
    fn json_numbers() {
        assert_eq!(parse_number(&serde_json::json!(42)), Some(42));
        assert_eq!(parse_number(&serde_json::json!(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_number(&serde_json::json!(-1)), None);
        assert_eq!(parse_number(&serde_json::json!(1.5)), None);
        assert_eq!(parse_number(&serde_json::json!(true)), None);
    }

    #[test]
    fn defaults() {
        let s = Scenario::parse(MINIMAL).unwrap();
        assert_eq!(s.cpu.maxphyaddr, 48);
        assert!(s.cpu.gbpages && s.cpu.pse36);
        assert_eq!((s.cpu.pkru, s.cpu.pkrs), (0, 0));
        assert_eq!(s.cpu.mode(), PagingMode::Level4);
    }

    #[test]
    fn errors_name_fields() {
        let cases: &[(&str, &str)] = &[
            (r#"{"cpu": 1}"#, "cpu"),
            (r#"[]"#, "(top level)"),
            (
                r#"{"cpu": {"cr0": 1, "cr3": 0, "cr4": 0, "efer": 0, "bogus": 1}}"#,
                "cpu.bogus",
            ),
            (
                r#"{"cpu": {"cr0": 1, "cr3": 0, "cr4": 0, "efer": 0, "maxphyaddr": 53},
                    "memory_size": 4096, "writes": [], "accesses": []}"#,
                "cpu.maxphyaddr",
            ),
            (
                r#"{"cpu": {"cr0": 1, "cr3": 0, "cr4": 0, "efer": 0},
                    "memory_size": 4096, "writes": [{"gpa": 0, "width": 8, "value": 1},
                    {"gpa": 8, "width": 2, "value": 1}], "accesses": []}"#,
                "writes[1].width",
            ),
        ];
        for (text, field) in cases {
            let e = Scenario::parse(text).unwrap_err();
            assert_eq!(e.field(), Some(*field), "{text}: {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    #[test]
    fn messages_stay_on_one_line() {
        let e = Scenario::parse(r#"{"a\nb": 1}"#).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        let long = "x".repeat(1000);
        let text = format!(r#"{{"cpu": {{"cr0": "{long}", "cr3": 0, "cr4": 0, "efer": 0}}}}"#);
        let e = Scenario::parse(&text).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }
}
