//! Proxmox Backup Server task identifiers (UPIDs).
//!
//! Confirmed in proxmox-backup (`pbs-api-types/src/upid.rs`, `PROXMOX_UPID_REGEX` and the
//! `Display` impl): a PBS UPID is
//! `UPID:<node>:<pid %08X>:<pstart %08X>:<task id %08X>:<starttime %08X>:<worker type>:<worker id>:<authid>:`
//! — one field more than PVE's (the task id inside the process, since one PBS daemon runs many
//! workers). The regex takes the node as `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`, pid as exactly
//! 8 hex digits, pstart as 8–9 (it outgrows 32 bits after ~497 days of uptime), task id as 8–16,
//! starttime as 8; worker type non-empty, worker id possibly empty, authid non-empty, none
//! holding `:` or whitespace. The worker id is escaped with systemd unit-name escaping
//! (`proxmox_systemd::escape_unit`): `/` becomes `-`, and every byte other than `[A-Za-z0-9_.]`
//! (and a leading `.`) becomes `\xNN` — so `felhom-spike` is sent as `felhom\x2dspike`, and a
//! snapshot verify's `felhom-store:/ct/101/6745A1C2` as `felhom\x2dstore\x3a-ct-101-6745A1C2`.
//! [`PbsUpid::worker_id`] undoes that for display; the raw text is kept byte for byte because
//! it is what the status URL and the snapshot's `verification.upid` carry. The field splitting
//! and hex parsing are shared with PVE's grammar (`crate::infra::proxmox::upid`); this module
//! is PBS's grammar on top.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::infra::proxmox::upid::{UpidShape, check_len, hex_field, non_empty, split_fields};

/// A parsed PBS UPID. Shared behind an `Arc`: it travels in errors and snapshots, and stays one
/// pointer wide there.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PbsUpid(Arc<Parts>);

#[derive(PartialEq, Eq, Hash)]
struct Parts {
    raw: String,
    node: String,
    pid: u32,
    pstart: u64,
    task_id: u64,
    starttime: u64,
    worker_type: String,
    worker_id: Option<String>,
    authid: String,
}

/// Why a string is not a PBS UPID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PbsUpidError {
    #[error("PBS UPID must start with 'UPID:'")]
    Prefix,
    #[error(
        "PBS UPID must have 8 colon-separated fields after 'UPID:' and end with ':', found {0} fields"
    )]
    FieldCount(usize),
    #[error("PBS UPID field '{0}' is empty")]
    Empty(&'static str),
    #[error("PBS UPID node '{0}' is not a valid node name")]
    Node(String),
    #[error("PBS UPID field '{field}' is not {digits} hexadecimal digits: '{value}'")]
    Hex {
        field: &'static str,
        digits: &'static str,
        value: String,
    },
    #[error("PBS UPID worker id '{0}' has a malformed '\\x' escape")]
    Escape(String),
    #[error("PBS UPID contains whitespace")]
    Whitespace,
    #[error("PBS UPID is longer than {MAX_UPID_LEN} bytes")]
    TooLong,
}

/// PBS's `UPID_SCHEMA` allows at most 128 bytes; a little slack for escaped worker ids.
const MAX_UPID_LEN: usize = 256;

impl PbsUpid {
    /// Node that runs the task: its status is read at `/nodes/<node>/tasks/<upid>/status`.
    pub fn node(&self) -> &str {
        &self.0.node
    }
    /// Process id of the PBS daemon that runs the worker.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }
    /// Process start time (clock ticks since boot).
    pub fn pstart(&self) -> u64 {
        self.0.pstart
    }
    /// Worker task number inside that process.
    pub fn task_id(&self) -> u64 {
        self.0.task_id
    }
    /// Task start, seconds since the Unix epoch.
    pub fn starttime(&self) -> u64 {
        self.0.starttime
    }
    /// Worker type, e.g. `verify`, `verify_group`, `verify_snapshot`, `garbage_collection`.
    pub fn worker_type(&self) -> &str {
        &self.0.worker_type
    }
    /// Worker id with systemd escaping undone (`felhom\x2dspike` → `felhom-spike`); `None`
    /// when the UPID carries none.
    pub fn worker_id(&self) -> Option<&str> {
        self.0.worker_id.as_deref()
    }
    /// The authid (user or token) that started the task.
    pub fn authid(&self) -> &str {
        &self.0.authid
    }
    /// The UPID text exactly as PBS sent it.
    pub fn as_str(&self) -> &str {
        &self.0.raw
    }
}

impl From<UpidShape> for PbsUpidError {
    fn from(shape: UpidShape) -> Self {
        match shape {
            UpidShape::Prefix => PbsUpidError::Prefix,
            UpidShape::FieldCount(n) => PbsUpidError::FieldCount(n),
            UpidShape::Empty(field) => PbsUpidError::Empty(field),
            // Only `hex` below produces it, and words it with the digit range.
            UpidShape::Hex { field, value } => PbsUpidError::Hex {
                field,
                digits: "8",
                value,
            },
            UpidShape::TooLong => PbsUpidError::TooLong,
        }
    }
}

/// A hex field of `min..=max` digits, named as `digits` in the error.
fn hex(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
    digits: &'static str,
) -> Result<u64, PbsUpidError> {
    hex_field(field, value, min, max).map_err(|e| match e {
        UpidShape::Hex { field, value } => PbsUpidError::Hex {
            field,
            digits,
            value,
        },
        other => other.into(),
    })
}

fn valid_node(node: &str) -> bool {
    let b = node.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Reverses systemd unit-name escaping: `-` → `/`, `\xNN` → byte NN.
pub fn unescape_worker_id(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.as_bytes();
    while let Some((&first, rest)) = bytes.split_first() {
        match first {
            b'\\' => {
                let [b'x', h, l, tail @ ..] = rest else {
                    return None;
                };
                let hex = [*h, *l];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                bytes = tail;
            }
            b'-' => {
                out.push(b'/');
                bytes = rest;
            }
            other => {
                out.push(other);
                bytes = rest;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Applies systemd unit-name escaping the way PBS does for worker ids (not path mode).
pub fn escape_worker_id(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for (i, &c) in text.as_bytes().iter().enumerate() {
        if c == b'/' {
            out.push('-');
        } else if (i == 0 && c == b'.') || !(c == b'_' || c == b'.' || c.is_ascii_alphanumeric()) {
            out.push_str(&format!("\\x{c:02x}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

impl FromStr for PbsUpid {
    type Err = PbsUpidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_len(s, MAX_UPID_LEN)?;
        if s.chars().any(char::is_whitespace) {
            return Err(PbsUpidError::Whitespace);
        }
        // No field may hold ':' (the regex forbids it), so a plain split is exact.
        let fields = split_fields(s, 8)?;
        let node = non_empty("node", fields[0])?;
        if !valid_node(node) {
            return Err(PbsUpidError::Node(node.to_owned()));
        }
        let pid = hex("pid", fields[1], 8, 8, "8")?;
        let pstart = hex("pstart", fields[2], 8, 9, "8 or 9")?;
        let task_id = hex("task id", fields[3], 8, 16, "8 to 16")?;
        let starttime = hex("starttime", fields[4], 8, 8, "8")?;
        non_empty("worker type", fields[5])?;
        let worker_id = match fields[6] {
            "" => None,
            raw => {
                Some(unescape_worker_id(raw).ok_or_else(|| PbsUpidError::Escape(raw.to_owned()))?)
            }
        };
        non_empty("authid", fields[7])?;
        Ok(PbsUpid(Arc::new(Parts {
            raw: s.to_owned(),
            node: node.to_owned(),
            // 8 hex digits always fit.
            pid: pid as u32,
            pstart,
            task_id,
            starttime,
            worker_type: fields[5].to_owned(),
            worker_id,
            authid: fields[7].to_owned(),
        })))
    }
}

impl fmt::Display for PbsUpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.raw)
    }
}

impl fmt::Debug for PbsUpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PbsUpid({})", self.0.raw)
    }
}

impl serde::Serialize for PbsUpid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.raw)
    }
}

impl<'de> serde::Deserialize<'de> for PbsUpid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-datastore verify started by a token, as the field spike saw it (pid etc. made up).
    const DATASTORE_VERIFY: &str =
        r"UPID:dooplex:000004D2:0000A1B2:00000003:6745A1C2:verify:felhom\x2dspike:felhom@pbs!n100:";
    /// The example in proxmox-backup's own doc comment.
    const GC: &str = "UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection::root@pam:";

    #[test]
    fn parses_a_datastore_verify_upid_and_unescapes_the_worker_id() {
        let upid: PbsUpid = DATASTORE_VERIFY.parse().unwrap();
        assert_eq!(upid.node(), "dooplex");
        assert_eq!(upid.pid(), 0x4D2);
        assert_eq!(upid.pstart(), 0xA1B2);
        assert_eq!(upid.task_id(), 3);
        assert_eq!(upid.starttime(), 0x6745_A1C2);
        assert_eq!(upid.worker_type(), "verify");
        assert_eq!(upid.worker_id(), Some("felhom-spike"));
        assert_eq!(upid.authid(), "felhom@pbs!n100");
        assert_eq!(upid.to_string(), DATASTORE_VERIFY);
    }

    #[test]
    fn parses_the_upstream_example_with_an_empty_worker_id() {
        let upid: PbsUpid = GC.parse().unwrap();
        assert_eq!(upid.node(), "elsa");
        assert_eq!(upid.worker_type(), "garbage_collection");
        assert_eq!(upid.worker_id(), None);
        assert_eq!(upid.authid(), "root@pam");
    }

    #[test]
    fn parses_a_snapshot_verify_worker_id_with_slashes_and_colon() {
        let text = r"UPID:pbs1:000004D2:0000A1B2:00000010:6745A1C2:verify_snapshot:felhom\x2dstore\x3a-ct-101-6745A1C2:felhom@pbs!agent:";
        let upid: PbsUpid = text.parse().unwrap();
        assert_eq!(upid.worker_id(), Some("felhom-store:/ct/101/6745A1C2"));
        assert_eq!(
            escape_worker_id("felhom-store:/ct/101/6745A1C2"),
            r"felhom\x2dstore\x3a-ct-101-6745A1C2"
        );
    }

    #[test]
    fn accepts_a_nine_digit_pstart_after_long_uptimes() {
        let text = "UPID:pbs1:000004D2:1000A1B2C:00000000:6745A1C2:verify:s:root@pam:";
        assert_eq!(text.parse::<PbsUpid>().unwrap().pstart(), 0x1_000A_1B2C);
    }

    #[test]
    fn a_pve_upid_is_not_a_pbs_upid() {
        let pve = "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:9001:felhom-agent@pve!agent:";
        assert_eq!(pve.parse::<PbsUpid>(), Err(PbsUpidError::FieldCount(7)));
    }

    #[test]
    fn rejects_malformed_upids_naming_the_problem() {
        let cases = [
            (
                "upid:a:000004D2:0000A1B2:00000000:6745A1C2:v::a@pbs:",
                PbsUpidError::Prefix,
            ),
            (
                "UPID:-bad:000004D2:0000A1B2:00000000:6745A1C2:v::a@pbs:",
                PbsUpidError::Node("-bad".into()),
            ),
            (
                "UPID:a:4D2:0000A1B2:00000000:6745A1C2:v::a@pbs:",
                PbsUpidError::Hex {
                    field: "pid",
                    digits: "8",
                    value: "4D2".into(),
                },
            ),
            (
                "UPID:a:000004D2:0000A1B2:00000000:6745A1C2:::a@pbs:",
                PbsUpidError::Empty("worker type"),
            ),
            (
                r"UPID:a:000004D2:0000A1B2:00000000:6745A1C2:v:x\x2:a@pbs:",
                PbsUpidError::Escape(r"x\x2".into()),
            ),
            (
                "UPID:a:000004D2:0000A1B2:00000000:6745A1C2:v:x::",
                PbsUpidError::Empty("authid"),
            ),
            (
                "UPID:a:000004D2:0000A1B2:00000000:6745A1C2:v:x:a@pbs",
                PbsUpidError::FieldCount(8),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<PbsUpid>(), Err(want), "{text}");
        }
    }

    #[test]
    fn escaping_round_trips() {
        for id in ["felhom-store", "a:/ns/x/ct/101", "store_1.2", ".hidden"] {
            assert_eq!(
                unescape_worker_id(&escape_worker_id(id)).as_deref(),
                Some(id)
            );
        }
    }
}
