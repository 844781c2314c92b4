//! Friendly shortcuts for common reads: `felhomctl selftest` instead of
//! `felhomctl call felhom.agent.v1.Agent/Selftest`, printed as a table (or JSON with `--json`).
//!
//! A shortcut is one row of [`SHORTCUTS`]: the method it calls (with an empty request), where
//! the table rows are in the response, which columns to show, and which boolean field (if any)
//! decides the exit code. The CLI builds its subcommands from this table (a two-word name is a
//! nested subcommand, e.g. `audit verify`). Only shortcuts whose RPCs are implemented are listed.

use std::path::Path;

use serde_json::Value;

use super::{CtlError, RequestSource, Session};

/// One shortcut subcommand.
#[derive(Debug)]
pub struct Shortcut {
    /// Subcommand name.
    pub name: &'static str,
    /// One-line help.
    pub about: &'static str,
    /// `pkg.Service/Method` to call with an empty request.
    pub method: &'static str,
    /// JSON field of the response that holds the list of rows; `None`: the response is one row.
    pub rows: Option<&'static str>,
    /// Table columns, left to right.
    pub columns: &'static [Column],
    /// Boolean JSON field of the response that must be true for exit code 0 (else 1).
    pub verdict: Option<&'static str>,
}

/// One table column.
#[derive(Debug)]
pub struct Column {
    /// Header text; when every column's header is empty no header line is printed.
    pub header: &'static str,
    /// JSON field (proto3 JSON name, lowerCamelCase) of a row.
    pub field: &'static str,
    /// How the value is shown.
    pub style: Style,
}

/// How a column value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Strings as they are, other values as compact JSON, missing as empty.
    Text,
    /// A boolean as `ok` or `FAIL`.
    OkFail,
}

/// Every shortcut felhomctl offers. A name with a space (`audit verify`) is a subcommand of
/// the shortcut named by its first word.
pub const SHORTCUTS: &[Shortcut] = &[
    Shortcut {
        name: "selftest",
        about: "Check the agent's Proxmox VE connection, token and privileges (read-only)",
        method: "felhom.agent.v1.Agent/Selftest",
        rows: Some("checks"),
        columns: &[
            Column {
                header: "",
                field: "ok",
                style: Style::OkFail,
            },
            Column {
                header: "",
                field: "name",
                style: Style::Text,
            },
            Column {
                header: "",
                field: "detail",
                style: Style::Text,
            },
        ],
        verdict: Some("ok"),
    },
    Shortcut {
        name: "guests",
        about: "List the guests on this node with status, lock and token",
        method: "felhom.agent.v1.Agent/ListGuests",
        rows: Some("guests"),
        columns: &[
            Column {
                header: "VMID",
                field: "vmid",
                style: Style::Text,
            },
            Column {
                header: "NAME",
                field: "name",
                style: Style::Text,
            },
            Column {
                header: "STATUS",
                field: "status",
                style: Style::Text,
            },
            Column {
                header: "LOCK",
                field: "lock",
                style: Style::Text,
            },
            Column {
                header: "TOKEN",
                field: "hasToken",
                style: Style::Text,
            },
        ],
        verdict: None,
    },
    Shortcut {
        name: "tasks",
        about: "List recent Proxmox VE tasks on this node",
        method: "felhom.agent.v1.Agent/ListTasks",
        rows: Some("tasks"),
        columns: &[
            Column {
                header: "TYPE",
                field: "type",
                style: Style::Text,
            },
            Column {
                header: "ID",
                field: "id",
                style: Style::Text,
            },
            Column {
                header: "USER",
                field: "user",
                style: Style::Text,
            },
            Column {
                header: "STATUS",
                field: "status",
                style: Style::Text,
            },
            Column {
                header: "UPID",
                field: "upid",
                style: Style::Text,
            },
        ],
        verdict: None,
    },
    Shortcut {
        name: "jobs",
        about: "List the agent's recent jobs (per-guest work queue)",
        method: "felhom.agent.v1.Agent/ListJobs",
        rows: Some("jobs"),
        columns: &[
            Column {
                header: "JOB",
                field: "jobId",
                style: Style::Text,
            },
            Column {
                header: "VMID",
                field: "vmid",
                style: Style::Text,
            },
            Column {
                header: "KIND",
                field: "kind",
                style: Style::Text,
            },
            Column {
                header: "PHASE",
                field: "phase",
                style: Style::Text,
            },
            Column {
                header: "CREATED",
                field: "createdAt",
                style: Style::Text,
            },
            Column {
                header: "ERROR",
                field: "error",
                style: Style::Text,
            },
        ],
        verdict: None,
    },
    Shortcut {
        name: "journal",
        about: "List recent journaled operations",
        method: "felhom.agent.v1.Agent/ListOperations",
        rows: Some("operations"),
        columns: &[
            Column {
                header: "ID",
                field: "id",
                style: Style::Text,
            },
            Column {
                header: "KIND",
                field: "kind",
                style: Style::Text,
            },
            Column {
                header: "VMID",
                field: "vmid",
                style: Style::Text,
            },
            Column {
                header: "STATE",
                field: "state",
                style: Style::Text,
            },
            Column {
                header: "CREATED",
                field: "createdAt",
                style: Style::Text,
            },
            Column {
                header: "ERROR",
                field: "error",
                style: Style::Text,
            },
        ],
        verdict: None,
    },
    Shortcut {
        name: "audit",
        about: "Show the newest audit-log rows",
        method: "felhom.agent.v1.Agent/AuditTail",
        rows: Some("entries"),
        columns: &[
            Column {
                header: "SEQ",
                field: "seq",
                style: Style::Text,
            },
            Column {
                header: "AT",
                field: "at",
                style: Style::Text,
            },
            Column {
                header: "ACTOR",
                field: "actor",
                style: Style::Text,
            },
            Column {
                header: "ACTION",
                field: "action",
                style: Style::Text,
            },
            Column {
                header: "TARGET",
                field: "target",
                style: Style::Text,
            },
            Column {
                header: "DETAIL",
                field: "detail",
                style: Style::Text,
            },
        ],
        verdict: None,
    },
    Shortcut {
        name: "audit verify",
        about: "Re-check the audit log's hash chain",
        method: "felhom.agent.v1.Agent/AuditVerify",
        rows: None,
        columns: &[
            Column {
                header: "OK",
                field: "ok",
                style: Style::OkFail,
            },
            Column {
                header: "ROWS",
                field: "rows",
                style: Style::Text,
            },
            Column {
                header: "HEAD",
                field: "headHash",
                style: Style::Text,
            },
            Column {
                header: "PROBLEM",
                field: "problem",
                style: Style::Text,
            },
        ],
        verdict: Some("ok"),
    },
    Shortcut {
        name: "pins",
        about: "Show the local API certificate pins and listen addresses (for guests' bootstrap)",
        method: "felhom.agent.v1.Agent/GetLocalApiPins",
        rows: None,
        columns: &[
            Column {
                header: "LEAF SHA-256",
                field: "leafSha256Hex",
                style: Style::Text,
            },
            Column {
                header: "SPKI SHA-256 (BASE64)",
                field: "spkiSha256Base64",
                style: Style::Text,
            },
            Column {
                header: "LISTEN",
                field: "listen",
                style: Style::Text,
            },
        ],
        verdict: None,
    },
];

/// The shortcut called `name`.
pub fn find(name: &str) -> Option<&'static Shortcut> {
    SHORTCUTS.iter().find(|s| s.name == name)
}

/// What a shortcut produced.
#[derive(Debug, Clone)]
pub struct ShortcutOutput {
    /// The response as proto3 JSON (defaults included); an array if the method streamed
    /// several messages.
    pub json: Value,
    /// The verdict: false when the shortcut's verdict field is false (exit code 1).
    pub ok: bool,
    table: String,
}

impl ShortcutOutput {
    /// The human-readable table (ends with a newline unless empty).
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// Runs `shortcut` against the server on `socket`.
pub async fn run(socket: &Path, shortcut: &Shortcut) -> Result<ShortcutOutput, CtlError> {
    let mut session = Session::connect(socket).await?;
    let mut responses = Vec::new();
    session
        .call(shortcut.method, &RequestSource::Empty, |r| {
            responses.push(r.clone());
            Ok(())
        })
        .await?;
    output(shortcut, responses)
}

/// Builds the table and verdict of `shortcut` from its responses.
fn output(shortcut: &Shortcut, responses: Vec<Value>) -> Result<ShortcutOutput, CtlError> {
    let missing = |field: &str| CtlError::ResponseShape {
        method: shortcut.method.to_owned(),
        field: field.to_owned(),
    };
    let mut ok = true;
    let mut rows: Vec<Vec<String>> = Vec::new();
    for response in &responses {
        if let Some(field) = shortcut.verdict {
            ok &= response
                .get(field)
                .and_then(Value::as_bool)
                .ok_or_else(|| missing(field))?;
        }
        let items = match shortcut.rows {
            Some(field) => response
                .get(field)
                .and_then(Value::as_array)
                .ok_or_else(|| missing(field))?
                .iter()
                .collect(),
            None => vec![response],
        };
        for item in items {
            let row = shortcut
                .columns
                .iter()
                .map(|c| cell(item.get(c.field), c.style).ok_or_else(|| missing(c.field)))
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(row);
        }
    }
    let headers: Vec<String> = shortcut
        .columns
        .iter()
        .map(|c| c.header.to_owned())
        .collect();
    if headers.iter().any(|h| !h.is_empty()) {
        rows.insert(0, headers);
    }
    let json = match <[Value; 1]>::try_from(responses) {
        Ok([one]) => one,
        Err(many) => Value::Array(many),
    };
    Ok(ShortcutOutput {
        json,
        ok,
        table: render(&rows),
    })
}

fn cell(value: Option<&Value>, style: Style) -> Option<String> {
    let value = value?;
    match style {
        Style::OkFail => value
            .as_bool()
            .map(|ok| if ok { "ok" } else { "FAIL" }.to_owned()),
        Style::Text => Some(match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }),
    }
}

/// Left-aligned columns, one space apart; the last column is not padded.
pub(super) fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, text)| {
                if i == last {
                    text.clone()
                } else {
                    format!("{text:<width$}", width = widths[i])
                }
            })
            .collect();
        out.push_str(line.join(" ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GUESTS: Shortcut = Shortcut {
        name: "guests",
        about: "a table with headers and one row per response",
        method: "x.Y/Z",
        rows: None,
        columns: &[
            Column {
                header: "VMID",
                field: "vmid",
                style: Style::Text,
            },
            Column {
                header: "NAME",
                field: "name",
                style: Style::Text,
            },
        ],
        verdict: None,
    };

    #[test]
    fn selftest_rows_render_as_ok_fail_lines() {
        let shortcut = find("selftest").expect("selftest is a shortcut");
        let out = output(
            shortcut,
            vec![json!({"ok": false, "checks": [
                {"ok": true, "name": "version", "detail": "8.2.4"},
                {"ok": false, "name": "privileges", "detail": "missing VM.Audit"},
            ]})],
        )
        .expect("well-formed report");
        assert!(!out.ok);
        assert_eq!(
            out.table(),
            "ok   version    8.2.4\nFAIL privileges missing VM.Audit\n"
        );
    }

    #[test]
    fn headers_are_printed_when_columns_have_them() {
        let out = output(
            &GUESTS,
            vec![
                json!({"vmid": 100, "name": "web"}),
                json!({"vmid": 101, "name": "db"}),
            ],
        )
        .expect("well-formed rows");
        assert!(out.ok);
        assert_eq!(out.table(), "VMID NAME\n100  web\n101  db\n");
        assert_eq!(
            out.json,
            json!([{"vmid": 100, "name": "web"}, {"vmid": 101, "name": "db"}])
        );
    }

    #[test]
    fn a_column_missing_from_the_response_is_an_error() {
        let err = output(&GUESTS, vec![json!({"vmid": 100})]).expect_err("name is missing");
        assert_eq!(
            err.to_string(),
            "response of x.Y/Z lacks field `name` needed for the table"
        );
    }

    #[test]
    fn every_shortcut_has_a_unique_name_and_a_method_path() {
        for (i, s) in SHORTCUTS.iter().enumerate() {
            assert!(s.method.contains('/'), "{} method {}", s.name, s.method);
            assert!(
                SHORTCUTS[i + 1..].iter().all(|o| o.name != s.name),
                "duplicate shortcut {}",
                s.name
            );
        }
    }
}
