//! `felhomctl backup now|list|status|due`, `felhomctl restore-test run|status` and
//! `felhomctl verify run|status`: the operator surface of the agent's backups.
//!
//! Unlike the reflection-driven `call` and shortcuts, these speak the typed
//! `felhom.agent.v1.Agent` client: `--wait` must read phases, results and states to decide
//! when a job has ended and what the exit code is, and typed fields make a renamed field a
//! compile error instead of a wrong decision. `--json` still prints proto3 JSON with defaults
//! included, like every other felhomctl command (converted through felhom's own descriptors).
//!
//! Exit codes: 0 when the call succeeded and nothing it reports failed; 1 when the report says
//! the newest backup failed, the newest restore-test failed, or the newest verify could not run
//! or did not verify the snapshot ok (with `--wait`: how the started job ended); the other
//! codes as for every command ([`Exit`]). Idle and running are not failures. `backup now`,
//! `restore-test run` and `verify run` without `--wait` exit 0 once the agent accepted the job.
//!
//! `--wait` polls the status RPC about once a second until the job the start call returned has
//! ended (see `wait` for how a job is followed). On a terminal (and without `--json`) it
//! shows one updating progress line and a summary line; otherwise it prints only the final
//! status, so scripts and logs get no carriage returns.

use std::io::Write;
use std::path::Path;

use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::agent_client::AgentClient;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;
use tonic::transport::Channel;

use super::wait::{
    self, EverySecond, Job, JobKind, JobStatus, Progress, Silent, StatusSource, TerminalLine,
};
use super::{CtlError, Exit, connect, json, shortcut};
use crate::infra::pbs::types::epoch_to_rfc3339_utc;

/// One backup-related command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `backup now --vmid N [--tier NAME]`.
    BackupNow { vmid: u32, tier: Option<String> },
    /// `backup list [--vmid N]`; `None`: every guest with a policy.
    BackupList { vmid: Option<u32> },
    /// `backup status --vmid N`.
    BackupStatus { vmid: u32 },
    /// `backup due --vmid N`.
    BackupDue { vmid: u32 },
    /// `restore-test run --vmid N`.
    RestoreTestRun { vmid: u32 },
    /// `restore-test status --vmid N`.
    RestoreTestStatus { vmid: u32 },
    /// `verify run --vmid N [--tier NAME]`.
    VerifyRun { vmid: u32, tier: Option<String> },
    /// `verify status --vmid N`.
    VerifyStatus { vmid: u32 },
}

/// How the output is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Print proto3 JSON instead of text.
    pub json: bool,
    /// For the start commands: follow the job until it has ended.
    pub wait: bool,
    /// Standard output is a terminal: `--wait` shows a progress line (unless `json`).
    pub terminal: bool,
}

/// Runs `action` against the agent on `socket`, writing what it prints to `out`.
pub async fn run(
    socket: &Path,
    action: &Action,
    options: Options,
    out: &mut impl Write,
) -> Result<Exit, CtlError> {
    let mut client = AgentClient::new(connect::unix_channel(socket).await?);
    match action {
        Action::BackupNow { vmid, tier } => {
            let accepted = client
                .backup_now(pb::BackupNowRequest {
                    vmid: *vmid,
                    tier: tier.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            let started = Started {
                kind: JobKind::Backup,
                vmid: accepted.vmid,
                job_id: accepted.job_id.clone(),
                new_job: accepted.new_job,
            };
            finish_start(client, started, &accepted, options, out).await
        }
        Action::RestoreTestRun { vmid } => {
            let accepted = client
                .run_restore_test(pb::GuestBackupRequest { vmid: *vmid })
                .await?
                .into_inner();
            let started = Started {
                kind: JobKind::RestoreTest,
                vmid: accepted.vmid,
                job_id: accepted.job_id.clone(),
                new_job: accepted.new_job,
            };
            finish_start(client, started, &accepted, options, out).await
        }
        Action::VerifyRun { vmid, tier } => {
            let accepted = client
                .run_verify(pb::RunVerifyRequest {
                    vmid: *vmid,
                    tier: tier.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            let started = Started {
                kind: JobKind::Verify,
                vmid: accepted.vmid,
                job_id: accepted.job_id.clone(),
                new_job: accepted.new_job,
            };
            finish_start(client, started, &accepted, options, out).await
        }
        Action::BackupStatus { vmid } => {
            let status = fetch(&mut client, JobKind::Backup, *vmid).await?;
            print_status(&status, options, out)
        }
        Action::RestoreTestStatus { vmid } => {
            let status = fetch(&mut client, JobKind::RestoreTest, *vmid).await?;
            print_status(&status, options, out)
        }
        Action::VerifyStatus { vmid } => {
            let status = fetch(&mut client, JobKind::Verify, *vmid).await?;
            print_status(&status, options, out)
        }
        Action::BackupList { vmid } => {
            let list = client
                .list_backups(pb::ListBackupsRequest {
                    vmid: vmid.unwrap_or(0),
                })
                .await?
                .into_inner();
            let text = if options.json {
                json_text(&list)?
            } else {
                render_list(&list)
            };
            write(out, &text)?;
            // An incomplete list is not a clean answer: scripts must not take it for one.
            Ok(if list.unreachable.is_empty() {
                Exit::Ok
            } else {
                Exit::NotOk
            })
        }
        Action::BackupDue { vmid } => {
            let due = client
                .get_backup_due(pb::GuestBackupRequest { vmid: *vmid })
                .await?
                .into_inner();
            let text = if options.json {
                json_text(&due)?
            } else {
                render_due(&due)
            };
            write(out, &text)?;
            Ok(Exit::Ok)
        }
    }
}

/// What a start call answered, whatever its message type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Started {
    kind: JobKind,
    vmid: u32,
    job_id: String,
    new_job: bool,
}

/// After a start call: print the acceptance, or wait for the job and print how it ended.
async fn finish_start(
    client: AgentClient<Channel>,
    started: Started,
    accepted: &impl Named,
    options: Options,
    out: &mut impl Write,
) -> Result<Exit, CtlError> {
    if !options.wait {
        let text = if options.json {
            json_text(accepted)?
        } else {
            render_started(&started)
        };
        write(out, &text)?;
        return Ok(Exit::Ok);
    }
    let job = Job {
        kind: started.kind,
        vmid: started.vmid,
        id: started.job_id,
    };
    let mut source = AgentStatus {
        client,
        kind: job.kind,
        vmid: job.vmid,
    };
    let mut pacer = EverySecond::start();
    let (status, verdict) = if options.terminal && !options.json {
        follow(
            &job,
            &mut source,
            &mut pacer,
            &mut TerminalLine::new(&mut *out),
        )
        .await?
    } else {
        follow(&job, &mut source, &mut pacer, &mut Silent).await?
    };
    print_report(&status, options, out)?;
    Ok(verdict.exit())
}

async fn follow(
    job: &Job,
    source: &mut AgentStatus,
    pacer: &mut EverySecond,
    progress: &mut impl Progress,
) -> Result<(JobStatus, wait::Verdict), CtlError> {
    wait::wait(job, source, pacer, progress).await
}

/// The status RPC of one kind of job for one guest.
struct AgentStatus {
    client: AgentClient<Channel>,
    kind: JobKind,
    vmid: u32,
}

impl StatusSource for AgentStatus {
    async fn status(&mut self) -> Result<JobStatus, CtlError> {
        fetch(&mut self.client, self.kind, self.vmid).await
    }
}

async fn fetch(
    client: &mut AgentClient<Channel>,
    kind: JobKind,
    vmid: u32,
) -> Result<JobStatus, CtlError> {
    let request = pb::GuestBackupRequest { vmid };
    Ok(match kind {
        JobKind::Backup => JobStatus::Backup(client.get_backup_status(request).await?.into_inner()),
        JobKind::RestoreTest => {
            JobStatus::RestoreTest(client.get_restore_test_status(request).await?.into_inner())
        }
        JobKind::Verify => JobStatus::Verify(client.get_verify_status(request).await?.into_inner()),
    })
}

/// A `status` command: the report, exit code from its verdict.
fn print_status(
    status: &JobStatus,
    options: Options,
    out: &mut impl Write,
) -> Result<Exit, CtlError> {
    let verdict = status.verdict()?;
    print_report(status, options, out)?;
    Ok(verdict.exit())
}

fn print_report(
    status: &JobStatus,
    options: Options,
    out: &mut impl Write,
) -> Result<(), CtlError> {
    let text = match (options.json, status) {
        (true, JobStatus::Backup(s)) => json_text(s)?,
        (true, JobStatus::RestoreTest(s)) => json_text(s)?,
        (true, JobStatus::Verify(s)) => json_text(s)?,
        (false, status) => render_status(status),
    };
    write(out, &text)
}

fn write(out: &mut impl Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CtlError::Output)
}

/// A generated message and its full proto name, for the JSON output.
trait Named: prost::Message {
    const NAME: &'static str;
}

macro_rules! named {
    ($($ty:ident),* $(,)?) => {
        $(impl Named for pb::$ty {
            const NAME: &'static str = concat!("felhom.agent.v1.", stringify!($ty));
        })*
    };
}

named!(
    BackupAccepted,
    RestoreTestAccepted,
    VerifyAccepted,
    BackupStatus,
    RestoreTestStatus,
    VerifyStatus,
    ListBackupsResponse,
    BackupDue,
);

/// `message` as pretty proto3 JSON (defaults included), with a final newline.
fn json_text<M: Named>(message: &M) -> Result<String, CtlError> {
    let value = message_json(message)?;
    let mut text =
        serde_json::to_string_pretty(&value).expect("a serde_json::Value always serialises");
    text.push('\n');
    Ok(text)
}

fn message_json<M: Named>(message: &M) -> Result<Value, CtlError> {
    let pool = DescriptorPool::decode(felhom_proto::FILE_DESCRIPTOR_SET).map_err(|e| {
        CtlError::Reflection {
            detail: format!("felhom's descriptor set: {e}"),
        }
    })?;
    let desc = pool
        .get_message_by_name(M::NAME)
        .ok_or_else(|| CtlError::Reflection {
            detail: format!("felhom's descriptor set lacks {}", M::NAME),
        })?;
    let dynamic =
        DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).map_err(|e| {
            CtlError::Reflection {
                detail: format!("cannot decode a {}: {e}", M::NAME),
            }
        })?;
    json::to_json(&dynamic)
}

/// `backup of 101: job J queued` or `…: joined job J already under way`, with the next step.
fn render_started(s: &Started) -> String {
    let kind = s.kind.noun();
    let how = if s.new_job {
        format!("job {} queued", s.job_id)
    } else {
        format!("joined job {} already under way", s.job_id)
    };
    format!(
        "{kind} of {}: {how}\nfollow it with `felhomctl {kind} status --vmid {}`\n",
        s.vmid, s.vmid
    )
}

/// A status report: aligned `key value` lines (empty values left out), then for a backup one
/// table row per tier run.
fn render_status(status: &JobStatus) -> String {
    let time = |secs: i64| {
        if secs == 0 {
            String::new()
        } else {
            epoch_to_rfc3339_utc(secs)
        }
    };
    match status {
        JobStatus::Backup(s) => {
            let mut text = fields(&[
                ("guest", s.vmid.to_string()),
                ("phase", s.phase.clone()),
                ("job", s.job_id.clone()),
                ("trigger", s.trigger.clone()),
                ("consistency", s.consistency.clone()),
                ("started", time(s.started_at)),
                ("finished", time(s.finished_at)),
                ("error", s.error.clone()),
            ]);
            if !s.runs.is_empty() {
                let mut rows = vec![
                    ["TIER", "STORAGE", "PHASE", "MODE", "VOLID", "ERROR"]
                        .map(str::to_owned)
                        .to_vec(),
                ];
                rows.extend(s.runs.iter().map(|r| {
                    vec![
                        dash(&r.tier),
                        dash(&r.storage),
                        dash(&r.phase),
                        modes(&r.requested_mode, &r.actual_mode),
                        dash(&r.volid),
                        dash(&r.error),
                    ]
                }));
                text.push('\n');
                text.push_str(&shortcut::render(&rows));
            }
            text
        }
        JobStatus::RestoreTest(s) => fields(&[
            ("guest", s.vmid.to_string()),
            ("phase", s.phase.clone()),
            ("result", s.result.clone()),
            ("job", s.job_id.clone()),
            ("last run", time(s.last_run_at)),
            ("tier", s.tier.clone()),
            ("backup", s.volid.clone()),
            (
                "scratch guest",
                match s.scratch_vmid {
                    0 => String::new(),
                    v => v.to_string(),
                },
            ),
            (
                "duration",
                match s.duration_ms {
                    0 => String::new(),
                    ms => format!("{:.1}s", ms as f64 / 1000.0),
                },
            ),
            ("detail", s.detail.clone()),
        ]),
        JobStatus::Verify(s) => fields(&[
            ("guest", s.vmid.to_string()),
            ("phase", s.phase.clone()),
            ("state", s.state.clone()),
            ("job", s.job_id.clone()),
            ("tier", s.tier.clone()),
            ("snapshot", s.snapshot.clone()),
            ("task", s.upid.clone()),
            ("started", time(s.started_at)),
            ("finished", time(s.finished_at)),
            ("error", s.error.clone()),
        ]),
    }
}

/// `backup list`: one row per archive, newest first as the agent answers them, then a warning
/// line per tier that could not be listed.
fn render_list(list: &pb::ListBackupsResponse) -> String {
    let mut text = if list.backups.is_empty() && !list.unreachable.is_empty() {
        "no backups on the tiers that could be listed\n".to_owned()
    } else {
        render_rows(&list.backups)
    };
    for line in &list.unreachable {
        text.push_str(&format!("warning: not listed, {line}\n"));
    }
    text
}

fn render_rows(backups: &[pb::BackupEntry]) -> String {
    if backups.is_empty() {
        return "no backups\n".to_owned();
    }
    let mut rows = vec![
        [
            "VMID",
            "TIER",
            "VOLID",
            "TIME",
            "SIZE",
            "VERIFY",
            "ENCRYPTED",
            "CONSISTENCY",
            "MODE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(backups.iter().map(|b| {
        vec![
            b.vmid.to_string(),
            dash(&b.tier),
            dash(&b.volid),
            epoch_to_rfc3339_utc(b.ctime),
            size(b.size),
            dash(&b.verify_state),
            if b.encrypted { "yes" } else { "no" }.to_owned(),
            dash(&b.consistency),
            modes(&b.requested_mode, &b.actual_mode),
        ]
    }));
    shortcut::render(&rows)
}

/// `backup due`: `guest 101: due — never backed up`.
fn render_due(d: &pb::BackupDue) -> String {
    let due = if d.due { "due" } else { "not due" };
    if d.reason.is_empty() {
        format!("guest {}: {due}\n", d.vmid)
    } else {
        format!("guest {}: {due} — {}\n", d.vmid, d.reason)
    }
}

/// Aligned `key value` lines; pairs with an empty value are left out.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k:<width$} {v}\n"))
        .collect()
}

/// A table cell: `-` for unknown, so whitespace-separated columns stay aligned for `awk`.
fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// `snapshot→stop`: the mode asked for and the one vzdump used; one word when they agree.
fn modes(requested: &str, actual: &str) -> String {
    match (requested, actual) {
        ("", "") => "-".to_owned(),
        (r, a) if r == a => r.to_owned(),
        (r, "") => format!("{r}→?"),
        ("", a) => format!("?→{a}"),
        (r, a) => format!("{r}→{a}"),
    }
}

/// Bytes in binary units with one decimal (`1.5GiB`); plain bytes below 1 KiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(volid: &str) -> pb::BackupEntry {
        pb::BackupEntry {
            vmid: 101,
            tier: "local".into(),
            storage: "local".into(),
            volid: volid.into(),
            ctime: 1_781_014_713,
            size: 3 * 1024 * 1024 * 1024 / 2,
            format: "tar.zst".into(),
            protected: false,
            verify_state: "none".into(),
            encrypted: false,
            job_id: "j1".into(),
            consistency: "crash".into(),
            requested_mode: "snapshot".into(),
            actual_mode: "stop".into(),
        }
    }

    #[test]
    fn backup_list_shows_one_row_per_archive_with_unknowns_as_dashes() {
        let mut foreign = entry("local:backup/vzdump-lxc-101-2026_06_01-03_00_00.tar.zst");
        foreign.consistency.clear();
        foreign.requested_mode.clear();
        foreign.actual_mode.clear();
        foreign.size = 512;
        let text = render_rows(&[
            entry("local:backup/vzdump-lxc-101-2026_06_09-14_18_33.tar.zst"),
            foreign,
        ]);
        assert_eq!(
            text,
            "VMID TIER  VOLID                                                   TIME                 SIZE   VERIFY ENCRYPTED CONSISTENCY MODE\n\
             101  local local:backup/vzdump-lxc-101-2026_06_09-14_18_33.tar.zst 2026-06-09T14:18:33Z 1.5GiB none   no        crash       snapshot→stop\n\
             101  local local:backup/vzdump-lxc-101-2026_06_01-03_00_00.tar.zst 2026-06-09T14:18:33Z 512B   none   no        -           -\n"
        );
    }

    #[test]
    fn an_empty_backup_list_says_so() {
        assert_eq!(
            render_list(&pb::ListBackupsResponse::default()),
            "no backups\n"
        );
    }

    #[test]
    fn a_tier_that_could_not_be_listed_is_named_after_the_rows() {
        let list = pb::ListBackupsResponse {
            backups: Vec::new(),
            unreachable: vec![
                "tier 'offsite' (storage felhom-pbs): Proxmox VE answered 500".into(),
            ],
        };
        assert_eq!(
            render_list(&list),
            "no backups on the tiers that could be listed\nwarning: not listed, tier 'offsite' (storage felhom-pbs): Proxmox VE answered 500\n"
        );
    }

    #[test]
    fn backup_status_lists_each_tier_run() {
        let status = JobStatus::Backup(pb::BackupStatus {
            vmid: 101,
            phase: "failed".into(),
            job_id: "j1".into(),
            error: "vzdump failed on tier offsite".into(),
            trigger: "operator".into(),
            consistency: "crash".into(),
            runs: vec![
                pb::BackupRun {
                    tier: "local".into(),
                    storage: "local".into(),
                    phase: "done".into(),
                    requested_mode: "snapshot".into(),
                    actual_mode: "snapshot".into(),
                    volid: "local:backup/a.tar.zst".into(),
                    upid: "UPID:x".into(),
                    error: String::new(),
                },
                pb::BackupRun {
                    tier: "offsite".into(),
                    storage: "felhom-pbs".into(),
                    phase: "failed".into(),
                    requested_mode: "snapshot".into(),
                    actual_mode: String::new(),
                    volid: String::new(),
                    upid: String::new(),
                    error: "encryption key missing".into(),
                },
            ],
            started_at: 1_781_014_713,
            finished_at: 0,
        });
        assert_eq!(
            render_status(&status),
            "guest       101\n\
             phase       failed\n\
             job         j1\n\
             trigger     operator\n\
             consistency crash\n\
             started     2026-06-09T14:18:33Z\n\
             error       vzdump failed on tier offsite\n\
             \n\
             TIER    STORAGE    PHASE  MODE       VOLID                  ERROR\n\
             local   local      done   snapshot   local:backup/a.tar.zst -\n\
             offsite felhom-pbs failed snapshot→? -                      encryption key missing\n"
        );
        assert_eq!(status.verdict().ok(), Some(wait::Verdict::NotOk));
    }

    #[test]
    fn a_guest_never_backed_up_is_idle() {
        let status = JobStatus::Backup(pb::BackupStatus {
            vmid: 102,
            phase: "idle".into(),
            ..Default::default()
        });
        assert_eq!(
            render_status(&status),
            "guest       102\nphase       idle\n"
        );
    }

    #[test]
    fn restore_test_status_shows_result_and_scratch_guest() {
        let status = JobStatus::RestoreTest(pb::RestoreTestStatus {
            vmid: 101,
            phase: "done".into(),
            last_run_at: 1_781_014_713,
            result: "pass".into(),
            detail: "scratch guest ran for 1s".into(),
            job_id: "j2".into(),
            volid: "local:backup/a.tar.zst".into(),
            tier: "local".into(),
            scratch_vmid: 9900,
            duration_ms: 4300,
        });
        assert_eq!(
            render_status(&status),
            "guest         101\n\
             phase         done\n\
             result        pass\n\
             job           j2\n\
             last run      2026-06-09T14:18:33Z\n\
             tier          local\n\
             backup        local:backup/a.tar.zst\n\
             scratch guest 9900\n\
             duration      4.3s\n\
             detail        scratch guest ran for 1s\n"
        );
    }

    #[test]
    fn verify_status_shows_state_and_snapshot() {
        let status = JobStatus::Verify(pb::VerifyStatus {
            vmid: 101,
            phase: "done".into(),
            job_id: "j3".into(),
            tier: "offsite".into(),
            snapshot: "ct/101/2026-06-09T14:18:33Z".into(),
            state: "failed".into(),
            ..Default::default()
        });
        assert_eq!(
            render_status(&status),
            "guest    101\n\
             phase    done\n\
             state    failed\n\
             job      j3\n\
             tier     offsite\n\
             snapshot ct/101/2026-06-09T14:18:33Z\n"
        );
        assert_eq!(status.verdict().ok(), Some(wait::Verdict::NotOk));
    }

    #[test]
    fn due_reads_as_a_sentence() {
        let due = pb::BackupDue {
            vmid: 101,
            due: true,
            reason: "never backed up".into(),
        };
        assert_eq!(render_due(&due), "guest 101: due — never backed up\n");
    }

    #[test]
    fn an_accepted_job_names_how_to_follow_it() {
        let started = Started {
            kind: JobKind::RestoreTest,
            vmid: 101,
            job_id: "j4".into(),
            new_job: false,
        };
        assert_eq!(
            render_started(&started),
            "restore-test of 101: joined job j4 already under way\n\
             follow it with `felhomctl restore-test status --vmid 101`\n"
        );
    }

    #[test]
    fn json_output_includes_defaults_and_uses_proto_json_names() {
        let value = message_json(&pb::BackupStatus {
            vmid: 101,
            phase: "idle".into(),
            ..Default::default()
        })
        .expect("BackupStatus is in felhom's descriptors");
        assert_eq!(value["phase"], "idle");
        assert_eq!(value["jobId"], "");
        assert_eq!(value["startedAt"], "0");
        assert_eq!(value["runs"], serde_json::json!([]));
    }

    #[test]
    fn every_named_message_is_in_the_descriptor_set() {
        message_json(&pb::BackupAccepted::default()).expect("BackupAccepted");
        message_json(&pb::RestoreTestAccepted::default()).expect("RestoreTestAccepted");
        message_json(&pb::VerifyAccepted::default()).expect("VerifyAccepted");
        message_json(&pb::RestoreTestStatus::default()).expect("RestoreTestStatus");
        message_json(&pb::VerifyStatus::default()).expect("VerifyStatus");
        message_json(&pb::ListBackupsResponse::default()).expect("ListBackupsResponse");
        message_json(&pb::BackupDue::default()).expect("BackupDue");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(1024), "1.0KiB");
        assert_eq!(size(5 * 1024 * 1024 * 1024 * 1024), "5.0TiB");
    }
}
