//! Request handling of the PBS simulator: the four API paths the agent uses (plus `/version`),
//! with PBS's parameter checks, privilege checks, answers and error texts.
//!
//! Answers follow proxmox-rest-server's JSON formatter: success `{"data": …}`; errors carry the
//! message as the plain body with the error's status (400 for anything that is not an explicit
//! HTTP error), content type `application/json;charset=UTF-8`, canonical reason phrase. Unknown
//! paths: 404 `Path '<path>' not found.`. Parameter errors use the shape
//! `parameter verification errors\n\nparameter '<name>': <why>` (proxmox-schema's
//! `ParameterError`, reproduced from memory — the agent only shows these texts).
//!
//! Task status: the node in the path must be the simulator's node. Real PBS reads the task by
//! its UPID whatever the node segment says, but the field spike saw `localhost` answer
//! `exitstatus: unknown` for a real task — so any other node, `localhost` included, answers
//! `{status: "stopped", exitstatus: "unknown"}` here, which makes a client that does not use the
//! UPID's node fail visibly.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::acl::{
    PRIV_DATASTORE_AUDIT, PRIV_DATASTORE_BACKUP, PRIV_DATASTORE_VERIFY, check_backup_owner,
};
use super::model::BackupType;
use super::state::{PbsState, SimTask, VerifyJob, VerifyTarget, verify_worker};

/// Request parameters (query or form), last value wins.
pub type Params = BTreeMap<String, String>;

/// An error answer: status and the message PBS would put in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
}

/// A successful answer: the `data` value, or (task log) a whole body.
#[derive(Debug)]
pub enum Answer {
    Data(Value),
    Body(Value),
}

fn param_error(name: &str, why: &str) -> ApiError {
    ApiError::bad(format!(
        "parameter verification errors\n\nparameter '{name}': {why}\n"
    ))
}

fn check_allowed(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(param_error(
            k,
            "schema does not allow additional properties.",
        )),
        None => Ok(()),
    }
}

fn safe_id(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-'))
}

fn opt_backup_type(params: &Params) -> Result<Option<BackupType>, ApiError> {
    params
        .get("backup-type")
        .map(|v| {
            BackupType::parse(v).ok_or_else(|| {
                param_error(
                    "backup-type",
                    &format!("value '{v}' is not defined in the enumeration."),
                )
            })
        })
        .transpose()
}

fn opt_backup_id(params: &Params) -> Result<Option<String>, ApiError> {
    params
        .get("backup-id")
        .map(|v| {
            if safe_id(v) {
                Ok(v.clone())
            } else {
                Err(param_error(
                    "backup-id",
                    "value does not match the regex pattern",
                ))
            }
        })
        .transpose()
}

fn opt_ns(params: &Params) -> Result<Option<String>, ApiError> {
    match params.get("ns").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(ns) if ns.split('/').all(safe_id) && ns.split('/').count() <= 7 => {
            Ok(Some(ns.to_owned()))
        }
        Some(_) => Err(param_error("ns", "value does not match the regex pattern")),
    }
}

fn opt_int(params: &Params, name: &str, min: i64) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|v| match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(n),
            Ok(_) => Err(param_error(
                name,
                &format!("value must have a minimum value of {min}"),
            )),
            Err(_) => Err(param_error(name, "Expected integer value.")),
        })
        .transpose()
}

fn opt_bool(params: &Params, name: &str) -> Result<Option<bool>, ApiError> {
    params
        .get(name)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(param_error(name, "Unable to parse boolean option.")),
        })
        .transpose()
}

fn acl_path(store: &str, ns: Option<&str>) -> String {
    match ns {
        None => format!("/datastore/{store}"),
        Some(ns) => format!("/datastore/{store}/{ns}"),
    }
}

fn check_store_name(store: &str) -> Result<(), ApiError> {
    if (3..=32).contains(&store.len()) && safe_id(store) {
        Ok(())
    } else {
        Err(param_error(
            "store",
            "value does not match the regex pattern",
        ))
    }
}

/// Dispatches one authenticated request.
pub fn route(
    state: &PbsState,
    authid: &str,
    method: &str,
    full_path: &str,
    segs: &[String],
    params: &Params,
) -> Result<Answer, ApiError> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method, s.as_slice()) {
        ("GET", ["version"]) => {
            check_allowed(params, &[])?;
            Ok(Answer::Data(
                json!({"version": "4.2.1", "release": "1", "repoid": "felhom-pbssim"}),
            ))
        }
        ("GET", ["admin", "datastore", store, "snapshots"]) => {
            list_snapshots(state, authid, store, params)
        }
        ("POST", ["admin", "datastore", store, "verify"]) => verify(state, authid, store, params),
        ("GET", ["nodes", node, "tasks", upid, "status"]) => {
            task_status(state, authid, node, upid, params)
        }
        ("GET", ["nodes", node, "tasks", upid, "log"]) => {
            task_log(state, authid, node, upid, params)
        }
        _ => Err(ApiError::new(404, format!("Path '{full_path}' not found."))),
    }
}

fn list_snapshots(
    state: &PbsState,
    authid: &str,
    store: &str,
    params: &Params,
) -> Result<Answer, ApiError> {
    check_allowed(params, &["ns", "backup-type", "backup-id"])?;
    check_store_name(store)?;
    let ns = opt_ns(params)?;
    let backup_type = opt_backup_type(params)?;
    let backup_id = opt_backup_id(params)?;
    let w = state.lock();
    let limited = w
        .access
        .check_datastore_privs(
            authid,
            &acl_path(store, ns.as_deref()),
            PRIV_DATASTORE_AUDIT,
            PRIV_DATASTORE_BACKUP,
        )
        .map_err(|m| ApiError::new(403, m))?;
    let snaps = w
        .datastores
        .get(store)
        .ok_or_else(|| ApiError::bad(format!("no such datastore '{store}'")))?;
    let mut list: Vec<_> = snaps
        .iter()
        .filter(|s| s.in_ns(ns.as_deref()))
        .filter(|s| backup_type.is_none_or(|t| s.backup_type == t))
        .filter(|s| backup_id.as_deref().is_none_or(|id| s.backup_id == id))
        .filter(|s| !limited || check_backup_owner(&s.owner, authid).is_ok())
        .collect();
    list.sort_by(|a, b| {
        (a.backup_type, &a.backup_id, a.backup_time).cmp(&(
            b.backup_type,
            &b.backup_id,
            b.backup_time,
        ))
    });
    Ok(Answer::Data(Value::Array(
        list.iter().map(|s| s.listing()).collect(),
    )))
}

fn verify(
    state: &PbsState,
    authid: &str,
    store: &str,
    params: &Params,
) -> Result<Answer, ApiError> {
    check_allowed(
        params,
        &[
            "ns",
            "backup-type",
            "backup-id",
            "backup-time",
            "ignore-verified",
            "outdated-after",
            "max-depth",
        ],
    )?;
    check_store_name(store)?;
    let ns = opt_ns(params)?;
    let backup_type = opt_backup_type(params)?;
    let backup_id = opt_backup_id(params)?;
    let backup_time = opt_int(params, "backup-time", 1)?;
    let ignore_verified = opt_bool(params, "ignore-verified")?.unwrap_or(true);
    let outdated_after = opt_int(params, "outdated-after", 1)?;
    opt_int(params, "max-depth", 0)?;

    let (owner_check, target) = {
        let w = state.lock();
        let owner_check = w
            .access
            .check_datastore_privs(
                authid,
                &acl_path(store, ns.as_deref()),
                PRIV_DATASTORE_VERIFY,
                PRIV_DATASTORE_BACKUP,
            )
            .map_err(|m| ApiError::new(403, m))?;
        let snaps = w
            .datastores
            .get(store)
            .ok_or_else(|| ApiError::bad(format!("no such datastore '{store}'")))?;
        let target = match (backup_type, backup_id, backup_time) {
            (Some(t), Some(id), Some(time)) => VerifyTarget::Snapshot(t, id, time),
            (Some(t), Some(id), None) => VerifyTarget::Group(t, id),
            (None, None, None) => VerifyTarget::All,
            _ => {
                return Err(ApiError::bad(
                    "parameters do not specify a backup group or snapshot",
                ));
            }
        };
        if owner_check {
            let group = match &target {
                VerifyTarget::Snapshot(t, id, _) | VerifyTarget::Group(t, id) => Some((*t, id)),
                VerifyTarget::All => None,
            };
            if let Some((t, id)) = group {
                let owner = snaps
                    .iter()
                    .find(|s| s.in_ns(ns.as_deref()) && s.backup_type == t && &s.backup_id == id)
                    .map(|s| s.owner.clone())
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "unable to read owner for group {}/{id}",
                            t.as_str()
                        ))
                    })?;
                check_backup_owner(&owner, authid).map_err(ApiError::bad)?;
            }
        }
        (owner_check, target)
    };
    let (worker_type, worker_id) = verify_worker(store, ns.as_deref(), &target);
    let job = VerifyJob {
        store: store.to_owned(),
        ns,
        target,
        ignore_verified,
        outdated_after,
        owner: owner_check.then(|| authid.to_owned()),
    };
    let upid = state.start_verify(worker_type, worker_id, authid, job);
    Ok(Answer::Data(Value::String(upid)))
}

/// Checks a UPID's shape the way `UPID_SCHEMA` does.
fn parse_upid(text: &str) -> Result<(), ApiError> {
    let ok = text
        .strip_prefix("UPID:")
        .map(|rest| rest.split(':').collect::<Vec<_>>())
        .is_some_and(|f| {
            f.len() == 9
                && f[8].is_empty()
                && !f[0].is_empty()
                && f[1].len() == 8
                && (8..=9).contains(&f[2].len())
                && (8..=16).contains(&f[3].len())
                && f[4].len() == 8
                && f[1..5]
                    .iter()
                    .all(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                && !f[5].is_empty()
                && !f[7].is_empty()
        });
    // UPID_SCHEMA caps at 128; escaped worker ids can make ours a little longer.
    if ok && text.len() <= 256 {
        Ok(())
    } else {
        Err(param_error(
            "upid",
            "value does not match the regex pattern",
        ))
    }
}

fn readable_task(state: &PbsState, authid: &str, upid: &str) -> Result<Option<SimTask>, ApiError> {
    parse_upid(upid)?;
    let task_authid = upid
        .trim_end_matches(':')
        .rsplit(':')
        .next()
        .unwrap_or_default();
    let w = state.lock();
    if !w.may_read_task(authid, task_authid) {
        return Err(ApiError::bad("task access not allowed"));
    }
    Ok(w.tasks.get(upid).cloned())
}

fn task_status(
    state: &PbsState,
    authid: &str,
    node: &str,
    upid: &str,
    params: &Params,
) -> Result<Answer, ApiError> {
    check_allowed(params, &[])?;
    let task = readable_task(state, authid, upid)?;
    if let Some(t) = state.lock().tasks.get_mut(upid) {
        t.status_reads += 1;
    }
    let sim_node = state.node();
    let fields: Vec<&str> = upid["UPID:".len()..].split(':').collect();
    let task_authid = fields[7];
    let (user, tokenid) = match task_authid.split_once('!') {
        Some((u, t)) => (u, Some(t)),
        None => (task_authid, None),
    };
    let worker_id = fields[6];
    let mut v = json!({
        "upid": upid,
        "node": fields[0],
        "pid": i64::from_str_radix(fields[1], 16).unwrap_or_default(),
        "pstart": u64::from_str_radix(fields[2], 16).unwrap_or_default(),
        "starttime": i64::from_str_radix(fields[4], 16).unwrap_or_default(),
        "type": fields[5],
        "id": if worker_id.is_empty() { Value::Null } else { unescape(worker_id).map_or(Value::Null, Value::String) },
        "user": user,
    });
    if let Some(t) = tokenid {
        v["tokenid"] = t.into();
    }
    match task {
        Some(t) if node == sim_node => match t.exitstatus {
            None => v["status"] = "running".into(),
            Some(exit) => {
                v["status"] = "stopped".into();
                v["exitstatus"] = exit.into();
            }
        },
        // Unknown task, or asked on another node name: what PBS answers when it cannot read
        // the task's state.
        Some(_) | None => {
            v["status"] = "stopped".into();
            v["exitstatus"] = "unknown".into();
        }
    }
    Ok(Answer::Data(v))
}

fn unescape(text: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let hex = b.get(i + 2..i + 4)?;
                if b.get(i + 1) != Some(&b'x') {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 4;
            }
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn task_log(
    state: &PbsState,
    authid: &str,
    _node: &str,
    upid: &str,
    params: &Params,
) -> Result<Answer, ApiError> {
    check_allowed(params, &["start", "limit", "download", "test-status"])?;
    let start = opt_int(params, "start", 0)?.unwrap_or(0);
    let limit = opt_int(params, "limit", 0)?.unwrap_or(50);
    let test_status = opt_bool(params, "test-status")?.unwrap_or(false);
    if opt_bool(params, "download")?.unwrap_or(false) {
        return Err(ApiError::bad("download is not supported by the simulator"));
    }
    let task = readable_task(state, authid, upid)?
        .ok_or_else(|| ApiError::bad("No such file or directory (os error 2)"))?;
    // `read_task_log`: lines numbered from 1; lines before `start` skipped; `limit` 0 = all.
    let mut lines = Vec::new();
    let mut remaining = limit;
    for (i, t) in task.log.iter().enumerate() {
        let n = i as i64 + 1;
        if n < start {
            continue;
        }
        if limit != 0 {
            if remaining == 0 {
                continue;
            }
            remaining -= 1;
        }
        lines.push(json!({"n": n, "t": t}));
    }
    let mut body = json!({"data": lines, "total": task.log.len(), "success": 1});
    if test_status {
        body["active"] = task.exitstatus.is_none().into();
    }
    Ok(Answer::Body(body))
}
