//! Proxmox VE task identifiers (UPIDs).
//!
//! Every mutating PVE call answers with a UPID and runs as a task. The format, from
//! pve-common `PVE::Tools::upid_encode`, is
//! `UPID:<node>:<pid 8 hex>:<pstart 8 hex>:<starttime 8 hex>:<type>:<id>:<authid>:`
//! with upper-case hex, a possibly empty `id`, and a trailing colon. The node name in the UPID is
//! where the task's status must be read. The field splitting and hex parsing are shared with
//! PBS's grammar (`crate::infra::proxmox::upid`); this module is PVE's grammar on top.

use std::fmt;
use std::str::FromStr;

use crate::infra::proxmox::upid::{UpidShape, check_len, hex_field, non_empty, split_fields};

/// A parsed Proxmox VE UPID. The original text is kept so it round-trips byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    pid: u32,
    pstart: u64,
    starttime: u64,
    // Byte ranges of the text fields inside `raw`; keeps the type small (it travels in errors).
    node: Span,
    task_type: Span,
    id: Span,
    authid: Span,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Span(u16, u16);

impl Span {
    fn of(raw: &str, field: &str) -> Self {
        // `field` is a sub-slice of `raw`; raw is at most MAX_UPID_LEN bytes, so offsets fit u16.
        let start = field.as_ptr() as usize - raw.as_ptr() as usize;
        Span(start as u16, (start + field.len()) as u16)
    }
    fn get(self, raw: &str) -> &str {
        &raw[usize::from(self.0)..usize::from(self.1)]
    }
}

/// Why a string is not a UPID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpidError {
    #[error("UPID must start with 'UPID:'")]
    Prefix,
    #[error("UPID must have 8 colon-separated fields and end with ':', found {0} fields")]
    FieldCount(usize),
    #[error("UPID field '{0}' is empty")]
    Empty(&'static str),
    #[error("UPID field '{field}' is not hexadecimal: '{value}'")]
    Hex { field: &'static str, value: String },
    #[error("UPID is longer than {MAX_UPID_LEN} bytes")]
    TooLong,
}

/// PVE's own limit is generous; anything longer is not a UPID we issued or will poll.
const MAX_UPID_LEN: usize = 512;

impl Upid {
    /// Node that runs the task (where its status is read).
    pub fn node(&self) -> &str {
        self.node.get(&self.raw)
    }
    /// Worker process id on the node.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Process start time in clock ticks since boot (identifies the worker with the pid).
    pub fn pstart(&self) -> u64 {
        self.pstart
    }
    /// Task start, seconds since the Unix epoch.
    pub fn starttime(&self) -> u64 {
        self.starttime
    }
    /// Task type, e.g. `vzdump`, `vzsnapshot`, `vzstart`.
    pub fn task_type(&self) -> &str {
        self.task_type.get(&self.raw)
    }
    /// Task object id, usually the vmid; may be empty.
    pub fn id(&self) -> &str {
        self.id.get(&self.raw)
    }
    /// The authid (user or token) that started the task.
    pub fn authid(&self) -> &str {
        self.authid.get(&self.raw)
    }
    /// The UPID text exactly as Proxmox sent it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl From<UpidShape> for UpidError {
    fn from(shape: UpidShape) -> Self {
        match shape {
            UpidShape::Prefix => UpidError::Prefix,
            UpidShape::FieldCount(n) => UpidError::FieldCount(n),
            UpidShape::Empty(field) => UpidError::Empty(field),
            UpidShape::Hex { field, value } => UpidError::Hex { field, value },
            UpidShape::TooLong => UpidError::TooLong,
        }
    }
}

/// A hex field: PVE writes `%08X`, so at least 8 digits (more once the value outgrows them).
fn hex(field: &'static str, value: &str) -> Result<u64, UpidError> {
    Ok(hex_field(field, value, 8, usize::MAX)?)
}

impl FromStr for Upid {
    type Err = UpidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_len(s, MAX_UPID_LEN)?;
        // `<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<authid>:` — the authid cannot hold a
        // colon, so a plain split is exact.
        let fields = split_fields(s, 7)?;
        let node = non_empty("node", fields[0])?;
        let pid = hex("pid", fields[1])?;
        let pstart = hex("pstart", fields[2])?;
        let starttime = hex("starttime", fields[3])?;
        non_empty("type", fields[4])?;
        non_empty("authid", fields[6])?;
        Ok(Upid {
            raw: s.to_owned(),
            node: Span::of(s, node),
            pid: u32::try_from(pid).map_err(|_| UpidError::Hex {
                field: "pid",
                value: fields[1].to_owned(),
            })?,
            pstart,
            starttime,
            task_type: Span::of(s, fields[4]),
            id: Span::of(s, fields[5]),
            authid: Span::of(s, fields[6]),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.raw)
    }
}

impl serde::Serialize for Upid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Upid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VZDUMP: &str = "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:9001:felhom-agent@pve!agent:";

    #[test]
    fn parses_a_real_vzdump_upid() {
        let upid: Upid = VZDUMP.parse().unwrap();
        assert_eq!(upid.node(), "pve1");
        assert_eq!(upid.pid(), 0x0001_E240);
        assert_eq!(upid.pstart(), 0x00A2_F3B1);
        assert_eq!(upid.starttime(), 0x6745_A1C2);
        assert_eq!(upid.task_type(), "vzdump");
        assert_eq!(upid.id(), "9001");
        assert_eq!(upid.authid(), "felhom-agent@pve!agent");
        assert_eq!(upid.to_string(), VZDUMP);
    }

    #[test]
    fn accepts_an_empty_id_as_real_node_tasks_have() {
        let upid: Upid = "UPID:pve1:00003A1F:0002B2C3:6745A1C2:aptupdate::root@pam:"
            .parse()
            .unwrap();
        assert_eq!(upid.id(), "");
        assert_eq!(upid.authid(), "root@pam");
    }

    #[test]
    fn rejects_a_pbs_upid_with_its_extra_field() {
        let pbs = "UPID:dooplex:000004D2:0000A1B2:00000003:6745A1C2:verify:felhom\\x2dspike:felhom@pbs!n100:";
        assert_eq!(pbs.parse::<Upid>(), Err(UpidError::FieldCount(8)));
    }

    #[test]
    fn rejects_malformed_upids_naming_the_problem() {
        let cases = [
            ("", UpidError::Prefix),
            (
                "upid:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:1:a@pve:",
                UpidError::Prefix,
            ),
            (
                "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:1:a@pve",
                UpidError::FieldCount(7),
            ),
            (
                "UPID::0001E240:00A2F3B1:6745A1C2:vzdump:1:a@pve:",
                UpidError::Empty("node"),
            ),
            (
                "UPID:pve1:0001E24G:00A2F3B1:6745A1C2:vzdump:1:a@pve:",
                UpidError::Hex {
                    field: "pid",
                    value: "0001E24G".into(),
                },
            ),
            (
                "UPID:pve1:0001E240:00A2F3B1:6745A1C2::1:a@pve:",
                UpidError::Empty("type"),
            ),
            (
                "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:1::",
                UpidError::Empty("authid"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Upid>(), Err(want), "{text}");
        }
    }

    #[test]
    fn error_text_names_the_bad_field() {
        let err = "UPID:pve1:zz:00A2F3B1:6745A1C2:vzdump:1:a@pve:"
            .parse::<Upid>()
            .unwrap_err();
        assert_eq!(err.to_string(), "UPID field 'pid' is not hexadecimal: 'zz'");
    }
}
