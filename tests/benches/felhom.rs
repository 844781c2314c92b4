//! The host agent's benchmark (issue 20): one run, one markdown table of what the product costs.
//!
//! `cargo bench -p felhom-simhost --bench felhom` (about 20 s of measuring; after a source
//! change it first builds the release `felhom-agent` and `felhom-helper` for the start-up rows,
//! as the packaging tests do, which takes minutes on a small machine — the footer says how
//! long). Every figure is measured in this run against the simulators on loopback; nothing is
//! asserted, and a section that cannot run prints "not measured" with the reason instead of a
//! number.
//!
//! Sections, in the order of the table:
//! 1. `GET /storage` through the real agent (devhost: the agent daemon as its own process, the
//!    embedded gateway, a demo guest's token) at 1, 8 and 32 keep-alive clients: rate, p50,
//!    p99, and the agent process's CPU per request (`/proc/<pid>/stat`).
//! 2. A flood of well-formed made-up tokens against the same agent: its CPU per request, and
//!    whether the state database was written meanwhile (file and WAL mtime and size).
//! 3. One scheduler tick ([`felhom_agent::frontends::scheduler::tick_once`], the loop's own
//!    body) at 10, 100 and 1,000 guests: Proxmox calls (the simulator's answered-request
//!    counts) and CPU, the in-process simulator's threads subtracted.
//! 4. How late a finished PVE task (0.3 s, 7 s) and PBS verify (1 s) is noticed, and the
//!    status polls per second the wait costs (the approach of `agent/benches/task_wait.rs`).
//! 5. The gateway in front of a fake LocalApi, called in process (as embedded in the agent) and
//!    over a real Unix socket (standalone), next to a bare hyper + rustls server with the same
//!    bytes, at 32 clients (the approach of `localapi-gateway/benches/storage.rs`).
//! 6. Idle RSS and exec → `READY=1` of the release `felhom-agent` and `felhom-helper`, each
//!    given a `NOTIFY_SOCKET` of this bench's own.
//!
//! Limits: load generator, servers and simulators share this machine's cores, so rates and
//! latencies include the client's own cost; the CPU figures are the measured process's alone.

#[path = "../../localapi-gateway/tests/common/mod.rs"]
mod gateway_common;

use std::time::{Duration, Instant};

/// Whether a figure meets its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Met {
    Yes,
    No,
    /// The row has no goal (or was not measured).
    NoGoal,
}

impl Met {
    fn from(ok: bool) -> Self {
        if ok { Self::Yes } else { Self::No }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "**no**",
            Self::NoGoal => "—",
        }
    }
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    measurement: String,
    figure: String,
    goal: String,
    met: Met,
}

impl Row {
    fn new(
        measurement: impl Into<String>,
        figure: impl Into<String>,
        goal: &str,
        met: Met,
    ) -> Self {
        Self {
            measurement: measurement.into(),
            figure: figure.into(),
            goal: goal.to_owned(),
            met,
        }
    }

    fn not_measured(measurement: &str, why: &anyhow::Error) -> Self {
        Self::new(
            measurement,
            format!("not measured: {why:#}"),
            "—",
            Met::NoGoal,
        )
    }
}

fn main() {
    let started = Instant::now();
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime can be built in a bench");
    let mut rows = Vec::new();
    let mut collect = |section: &str, result: anyhow::Result<Vec<Row>>| match result {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(Row::not_measured(section, &e)),
    };
    collect(
        "GET /storage and unknown-token flood",
        runtime.block_on(local_api::rows()),
    );
    // Outside the shared runtime: the tick gets runtimes of its own (see the module).
    collect("scheduler tick", scheduler::rows());
    collect(
        "task-completion notice",
        runtime.block_on(task_wait::rows()),
    );
    collect(
        "gateway vs bare hyper+rustls",
        runtime.block_on(gateway::rows()),
    );
    collect(
        "idle RSS and exec → READY=1",
        runtime.block_on(startup::rows()),
    );
    print_table(&rows);
    print_legend();
    // Other processes on the machine share its cores with everything measured here.
    println!(
        "\n(ran {:.0} s, {:.0} s of it building or checking the release binaries, on {} cores; \
         1-minute load average {} before, {} after)",
        started.elapsed().as_secs_f64(),
        startup::BUILD_TIME.get().map_or(0.0, Duration::as_secs_f64),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_before,
        load_average()
    );
}

/// The 1-minute load average (`/proc/loadavg`), or `?`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn print_table(rows: &[Row]) {
    // A figure may carry an error text: keep it from splitting the cell.
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    println!();
    println!("| measurement | figure | goal | met? |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            cell(&r.measurement),
            cell(&r.figure),
            cell(&r.goal),
            r.met.word()
        );
    }
}

fn print_legend() {
    println!(
        "
Legend:
- Load rows: each client is its own reqwest client with one TLS keep-alive connection, pinned to the
  gateway's leaf certificate; one unmeasured warm-up request per client opens it, then all clients
  share a budget of {requests} requests or {secs} s. p50/p99 are per request, client side.
- Rows 1–2 run felhom-devhost's agent (the felhom-agent code, as its own process and uid, embedded
  gateway) against the PVE simulator. Its limits are raised through the agent's environment:
  FELHOM_AGENT_LOCAL_API_SOURCE_RATE_PER_SECOND, _SOURCE_RATE_BURST, _RATE_PER_SECOND and _RATE_BURST
  = 1000000 and _MAX_CONNECTIONS_PER_SOURCE = 256 (the defaults, 20/s burst 40 per source and
  10/s per token, would answer most requests 429 before the agent sees them), and
  FELHOM_AGENT_BACKUP_TICK_SECS = 3600 so no scheduler tick falls inside a measurement.
  Agent CPU = utime + stime of the whole agent process (/proc/<pid>/stat, clock ticks via
  sysconf(_SC_CLK_TCK)): TLS, HTTP, gateway, LocalApi gRPC and the token lookup together.
- Flood: {made_up} distinct made-up tokens (fhg_ + 43 random base64url characters), cycled; all must
  be answered 401. \"untouched\": state.db and state.db-wal have the same mtime and size before and
  after the flood (this shows no writes; a read served from SQLite's page cache would not show).
- Scheduler: tick_once in process on a current-thread runtime, a fresh PVE simulator per size on
  its own runtime thread. Every guest has a daily local and a weekly PBS policy and 3 backups per
  tier, all current (steady state: nothing due; no restore-test schedules). Mean of {ticks} ticks after
  a warm-up tick, each followed by {settle} ms for the leftover cleanup the tick starts beside it;
  \"due\" is counted after the ticks.
  Calls = all requests the simulator answered; CPU = this process's (getrusage) minus the
  simulator threads' (/proc/self/task/*/schedstat).
- Task notice: the real PVE/PBS clients with default WaitOptions; 8 tasks per case, each wait
  starting at another phase of the poll grid. Notice = wait returned − simulator stopped the task;
  polls/s = the task's status reads ÷ the wait's duration (a short wait's first and last read
  weigh heavily: hence the reads per wait). Met is judged on the worst task.
- Gateway vs bare: the gateway with a fake LocalApi (limits raised) called in process, as the
  agent's embedded gateway does, and over a real Unix socket, as a standalone gateway does, next to
  a bare hyper + rustls server answering the gateway's own response bytes; 32 clients each, the
  three servers loaded in {rounds} turns each that share one budget of {gw_requests} requests or
  {gw_secs} s per server (p99 is a tail figure: it needs more samples than the other rows).
- Start-up: target/<profile>/felhom-agent and felhom-helper, each with a NOTIFY_SOCKET datagram
  socket of this bench; exec → READY = spawn until the READY=1 datagram. The agent runs as uid
  65534 (when root) against the PVE simulator with the gateway on; first start = fresh state
  directory (database created, certificate generated), restart = the same directory again.
  The helper runs as root confined to a temporary directory (socket, state, mount prefix), in
  this process's mount namespace, with /bin/false as pct, smartctl, sensors and blkid; it
  mounts nothing. RSS = VmRSS after {idle} s idle.",
        requests = load::BUDGET_REQUESTS,
        secs = load::BUDGET_TIME.as_secs(),
        made_up = local_api::MADE_UP_TOKENS,
        ticks = scheduler::TICKS,
        settle = scheduler::SETTLE.as_millis(),
        idle = startup::IDLE.as_secs(),
        rounds = gateway::ROUNDS,
        gw_requests = gateway::BUDGET.requests,
        gw_secs = gateway::BUDGET.time.as_secs(),
    );
}

/// `d` in milliseconds, two decimals.
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time and memory of processes and threads, from the kernel.
mod usage {
    use std::time::Duration;

    use anyhow::Context;

    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/<pid>/stat` times.
    pub fn clock_ticks() -> anyhow::Result<u64> {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .context("sysconf(_SC_CLK_TCK) failed")?
            .context("sysconf(_SC_CLK_TCK) has no value")?;
        u64::try_from(ticks)
            .ok()
            .filter(|&t| t > 0)
            .with_context(|| format!("sysconf(_SC_CLK_TCK) is {ticks}"))
    }

    /// User + system CPU of process `pid`, all its threads (`/proc/<pid>/stat` utime + stime).
    pub fn process_cpu(pid: u32, ticks: u64) -> anyhow::Result<Duration> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // The command name may hold spaces; fields are counted after its closing parenthesis,
        // where field 3 (state) comes first: utime (14) and stime (15) are the 12th and 13th.
        let rest = &stat[stat.rfind(')').context("no command name in stat")? + 1..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("{path} has no field {}", i + 3))
        };
        let total = field(11)? + field(12)?;
        Ok(Duration::from_nanos(total * 1_000_000_000 / ticks))
    }

    /// `VmRSS` of process `pid`, KiB.
    pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("{path} has no VmRSS"))
    }

    /// User + system CPU of this process, threads that have ended included (`getrusage`).
    pub fn own_cpu() -> anyhow::Result<Duration> {
        use nix::sys::resource::{UsageWho, getrusage};
        let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage failed")?;
        let d = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
        };
        Ok(d(u.user_time()) + d(u.system_time()))
    }

    /// CPU of this process's live threads named `name` (`/proc/self/task/*/schedstat`, ns).
    pub fn threads_cpu(name: &str) -> anyhow::Result<Duration> {
        let mut total = 0u64;
        for task in std::fs::read_dir("/proc/self/task").context("cannot list own threads")? {
            let dir = task?.path();
            // A thread may end between listing and reading: it is then simply not counted.
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
                continue;
            };
            if comm.trim_end() != name {
                continue;
            }
            let Ok(sched) = std::fs::read_to_string(dir.join("schedstat")) else {
                continue;
            };
            total += sched
                .split_ascii_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .with_context(|| format!("unreadable {}/schedstat", dir.display()))?;
        }
        Ok(Duration::from_nanos(total))
    }
}

/// The HTTP load generator the request rows share.
mod load {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::bail;

    /// Requests one load measurement may send at most …
    pub const BUDGET_REQUESTS: usize = 5_000;
    /// … and how long it may take at most.
    pub const BUDGET_TIME: Duration = Duration::from_secs(5);

    /// How much one run may send.
    #[derive(Debug, Clone, Copy)]
    pub struct Budget {
        pub requests: usize,
        pub time: Duration,
    }

    /// One whole measurement's budget.
    pub const FULL: Budget = Budget {
        requests: BUDGET_REQUESTS,
        time: BUDGET_TIME,
    };

    /// What one load run saw.
    pub struct Outcome {
        /// Requests answered with the expected status.
        pub answered: usize,
        /// Requests answered otherwise, or not at all.
        pub unexpected: usize,
        pub elapsed: Duration,
        /// Latencies of the answered requests, sorted.
        latencies: Vec<Duration>,
    }

    impl Outcome {
        pub fn requests(&self) -> usize {
            self.answered + self.unexpected
        }

        pub fn rate(&self) -> f64 {
            self.answered as f64 / self.elapsed.as_secs_f64()
        }

        pub fn percentile(&self, p: f64) -> Duration {
            let n = self.latencies.len();
            if n == 0 {
                return Duration::ZERO;
            }
            self.latencies[((n as f64 * p) as usize).min(n - 1)]
        }

        /// Both runs as one (the same clients measured in turns).
        pub fn merge(mut self, other: Self) -> Self {
            self.answered += other.answered;
            self.unexpected += other.unexpected;
            self.elapsed += other.elapsed;
            self.latencies.extend(other.latencies);
            self.latencies.sort_unstable();
            self
        }

        /// ` (N unexpected)` when some requests were not answered as expected, else nothing.
        pub fn unexpected_note(&self) -> String {
            match self.unexpected {
                0 => String::new(),
                n => format!(" ({n} not answered as expected)"),
            }
        }
    }

    /// One request per client (token `i` of `tokens` for client `i`), each answered `expect`:
    /// opens the connections and does the handshakes before anything is measured.
    pub async fn warm_up(
        clients: &[reqwest::Client],
        url: &str,
        tokens: &[String],
        expect: u16,
    ) -> anyhow::Result<()> {
        for (i, client) in clients.iter().enumerate() {
            let token = &tokens[i % tokens.len()];
            let response = client.get(url).bearer_auth(token).send().await?;
            let status = response.status().as_u16();
            response.bytes().await?;
            if status != expect {
                bail!("warm-up request answered {status}, expected {expect}");
            }
        }
        Ok(())
    }

    /// All `clients` at once send GET `url` until `budget` is used up, cycling through
    /// `tokens`.
    pub async fn run(
        url: &str,
        clients: &[reqwest::Client],
        tokens: Arc<[String]>,
        expect: u16,
        budget: Budget,
    ) -> Outcome {
        let requests = budget.requests;
        let budget_left = Arc::new(AtomicUsize::new(requests));
        let started = Instant::now();
        let deadline = started + budget.time;
        let workers: Vec<_> = clients
            .iter()
            .cloned()
            .map(|client| {
                let (url, budget, tokens) = (url.to_owned(), budget_left.clone(), tokens.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut unexpected = 0;
                    while Instant::now() < deadline {
                        let Ok(left) =
                            budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                        else {
                            break;
                        };
                        let token = &tokens[left % tokens.len()];
                        let t = Instant::now();
                        let ok = match client.get(&url).bearer_auth(token).send().await {
                            Ok(r) => r.status().as_u16() == expect && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok {
                            latencies.push(t.elapsed());
                        } else {
                            unexpected += 1;
                        }
                    }
                    (latencies, unexpected)
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(requests);
        let mut unexpected = 0;
        for w in workers {
            match w.await {
                Ok((l, u)) => {
                    latencies.extend(l);
                    unexpected += u;
                }
                // A worker that panicked lost its tally: it counts as one unexpected answer.
                Err(_) => unexpected += 1,
            }
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Outcome {
            answered: latencies.len(),
            unexpected,
            elapsed,
            latencies,
        }
    }
}

/// Rows 1 and 2: the guests' local API through the real agent (devhost).
mod local_api {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use anyhow::{Context, bail};
    use base64::Engine as _;
    use felhom_simhost::devhost::{Devhost, DevhostOptions, TempDevhost};
    use felhom_simhost::pinned::pinned_client;

    use crate::{Met, Row, load, ms, usage};

    const CLIENT_COUNTS: [usize; 3] = [1, 8, 32];
    const FLOOD_CLIENTS: usize = 32;
    /// Distinct made-up tokens the flood cycles through.
    pub const MADE_UP_TOKENS: usize = 1_000;
    /// Goal: agent CPU per unknown token.
    const FLOOD_CPU_GOAL: Duration = Duration::from_micros(20);

    /// Limits out of the load's way, and no scheduler tick inside a measurement (see the
    /// legend); the maximum accepted values are 1,000,000 and 3,600 s.
    const AGENT_ENV: [(&str, &str); 6] = [
        ("FELHOM_AGENT_LOCAL_API_SOURCE_RATE_PER_SECOND", "1000000"),
        ("FELHOM_AGENT_LOCAL_API_SOURCE_RATE_BURST", "1000000"),
        ("FELHOM_AGENT_LOCAL_API_RATE_PER_SECOND", "1000000"),
        ("FELHOM_AGENT_LOCAL_API_RATE_BURST", "1000000"),
        ("FELHOM_AGENT_LOCAL_API_MAX_CONNECTIONS_PER_SOURCE", "256"),
        ("FELHOM_AGENT_BACKUP_TICK_SECS", "3600"),
    ];

    pub async fn rows() -> anyhow::Result<Vec<Row>> {
        let options = DevhostOptions {
            agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
            agent_env: AGENT_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..DevhostOptions::default()
        };
        let host = Box::pin(TempDevhost::start(&options))
            .await
            .context("cannot start the devhost")?;
        let measured = measure(host.dh()).await;
        let stopped = host.stop().await;
        let rows = measured?;
        stopped.context("the devhost did not stop cleanly")?;
        Ok(rows)
    }

    async fn measure(dh: &Devhost) -> anyhow::Result<Vec<Row>> {
        let info = &dh.info;
        let url = format!("https://{}/storage", info.local_api_endpoint);
        let pin = &info.local_api_pin_sha256;
        let guest = info
            .guests
            .first()
            .context("devhost minted no guest token")?;
        let ticks = usage::clock_ticks()?;
        let mut rows = Vec::new();

        let token: Arc<[String]> = Arc::from(vec![guest.token.clone()]);
        for n in CLIENT_COUNTS {
            let clients: Vec<_> = (0..n).map(|_| pinned_client(pin)).collect();
            load::warm_up(&clients, &url, &token, 200).await?;
            let cpu_before = usage::process_cpu(info.agent_pid, ticks)?;
            let run = load::run(&url, &clients, token.clone(), 200, load::FULL).await;
            let cpu = usage::process_cpu(info.agent_pid, ticks)? - cpu_before;
            rows.push(Row::new(
                format!(
                    "GET /storage via the agent, {n} client{}",
                    if n == 1 { "" } else { "s" }
                ),
                format!(
                    "{:.0} req/s, p50 {}, p99 {}, agent CPU {:.0} µs/req{}",
                    run.rate(),
                    ms(run.percentile(0.50)),
                    ms(run.percentile(0.99)),
                    per_request_us(cpu, run.requests()),
                    run.unexpected_note()
                ),
                "—",
                Met::NoGoal,
            ));
        }

        let made_up: Arc<[String]> = Arc::from(made_up_tokens()?);
        let db_dir = info.state_dir.join("agent-state");
        let db_before = db_files(&db_dir)?;
        let clients: Vec<_> = (0..FLOOD_CLIENTS).map(|_| pinned_client(pin)).collect();
        load::warm_up(&clients, &url, &made_up, 401).await?;
        let cpu_before = usage::process_cpu(info.agent_pid, ticks)?;
        let run = load::run(&url, &clients, made_up, 401, load::FULL).await;
        let cpu = usage::process_cpu(info.agent_pid, ticks)? - cpu_before;
        let db_after = db_files(&db_dir)?;
        let cpu_us = per_request_us(cpu, run.requests());
        rows.push(Row::new(
            format!("unknown-token flood, {FLOOD_CLIENTS} clients: agent CPU per token"),
            format!(
                "{cpu_us:.0} µs/req ({} requests at {:.0} req/s, all 401{})",
                run.requests(),
                run.rate(),
                run.unexpected_note()
            ),
            "≤ 20 µs",
            Met::from(cpu_us <= FLOOD_CPU_GOAL.as_secs_f64() * 1e6 && run.unexpected == 0),
        ));
        let changed: Vec<&str> = db_before
            .iter()
            .zip(&db_after)
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        rows.push(Row::new(
            "unknown-token flood: state database",
            if changed.is_empty() {
                "untouched (state.db, state.db-wal: mtime and size unchanged)".to_owned()
            } else {
                format!("written: {} changed", changed.join(", "))
            },
            "no SQLite access",
            Met::from(changed.is_empty()),
        ));
        Ok(rows)
    }

    fn per_request_us(cpu: Duration, requests: usize) -> f64 {
        cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
    }

    /// Tokens of the agent's shape (`fhg_` + 43 base64url) that no guest holds.
    fn made_up_tokens() -> anyhow::Result<Vec<String>> {
        let tokens: Vec<String> = (0..MADE_UP_TOKENS)
            .map(|_| {
                let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(rand::random::<[u8; 32]>());
                format!("{}{body}", felhom_proto::guest_token::PREFIX)
            })
            .collect();
        if !tokens
            .iter()
            .all(|t| felhom_proto::guest_token::is_well_formed(t))
        {
            bail!("a made-up token is not of the agent's shape");
        }
        Ok(tokens)
    }

    /// Name, mtime and size of the database file and its WAL (`None`: absent).
    type FileStamp = (&'static str, Option<(SystemTime, u64)>);

    fn db_files(dir: &Path) -> anyhow::Result<Vec<FileStamp>> {
        let db = felhom_agent::infra::state::DB_FILE_NAME;
        if !dir.join(db).is_file() {
            bail!("no state database at {}", dir.join(db).display());
        }
        ["state.db", "state.db-wal"]
            .into_iter()
            .map(|name| {
                let stamp = match std::fs::metadata(dir.join(name)) {
                    Ok(m) => Some((m.modified()?, m.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e.into()),
                };
                Ok((name, stamp))
            })
            .collect()
    }
}

/// Row 3: one scheduler tick, in process.
///
/// The simulator runs in this process too, on a runtime thread of its own ([`SIM_THREAD`]);
/// the tick's CPU is this process's minus that thread's. The agent side gets a current-thread
/// runtime (plus its blocking pool for SQLite), like nothing else runs meanwhile.
mod scheduler {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use felhom_agent::app::context::{AgentContext, BackupSetup, GuestSetup};
    use felhom_agent::capabilities::backup::{
        BackupSettings, Policy, Retention, Schedule, Tier, TierKind,
    };
    use felhom_agent::frontends::scheduler::{TickState, tick_once};
    use felhom_agent::infra::pve::{
        ApiToken, BackupMode, CertFingerprint, PveClient, PveClientConfig, TlsTrust, WaitOptions,
    };
    use felhom_simhost::pve::fixture::GuestStatus;
    use felhom_simhost::pve::state::Backup;
    use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};
    use tokio_util::sync::CancellationToken;

    use crate::{Met, Row, ms, usage};

    const GUEST_COUNTS: [u32; 3] = [10, 100, 1_000];
    /// Measured ticks per guest count (after one warm-up tick).
    pub const TICKS: u32 = 5;
    /// Waited after each tick, for the leftover cleanup it starts beside itself.
    pub const SETTLE: Duration = Duration::from_millis(100);
    /// Backups per guest on each tier.
    const BACKUPS_PER_TIER: i64 = 3;
    const FIRST_VMID: u32 = 2_000;
    const SIM_THREAD: &str = "bench-pvesim";
    const CALLS_GOAL_PER_TIER: f64 = 3.0;
    const CPU_GOAL_AT_1000: Duration = Duration::from_millis(50);

    /// Mean cost of one tick.
    struct TickCost {
        calls: f64,
        cpu: Duration,
        wall: Duration,
        tiers: usize,
        /// Guests that were due (none, when the fixture is what it means to be).
        due: u32,
    }

    pub fn rows() -> anyhow::Result<Vec<Row>> {
        // Neither runtime lets a thread go while the bench runs: a thread that ended would take
        // its CPU out of the per-thread figures.
        let sim_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(SIM_THREAD)
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()?;
        let agent_rt = tokio::runtime::Builder::new_current_thread()
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()?;
        let mut rows = Vec::new();
        for n in GUEST_COUNTS {
            let sim = sim_rt.block_on(PveSim::start(PveSimOptions::default()))?;
            let cost = populate(&sim, n).and_then(|()| agent_rt.block_on(measure(&sim, n)));
            sim_rt.block_on(sim.shutdown());
            let cost = cost?;
            let per_tier = cost.calls / cost.tiers as f64;
            rows.push(Row::new(
                format!("scheduler tick, {n} guests: Proxmox calls"),
                format!("{:.1} per tick = {per_tier:.1} per tier", cost.calls),
                "≤ 3 per tier",
                Met::from(per_tier <= CALLS_GOAL_PER_TIER),
            ));
            let (goal, met) = if n == 1_000 {
                ("≤ 50 ms", Met::from(cost.cpu <= CPU_GOAL_AT_1000))
            } else {
                ("—", Met::NoGoal)
            };
            rows.push(Row::new(
                format!("scheduler tick, {n} guests: agent CPU"),
                format!(
                    "{} per tick ({} wall; {} of {n} guests due)",
                    ms(cost.cpu),
                    ms(cost.wall),
                    cost.due
                ),
                goal,
                met,
            ));
        }
        Ok(rows)
    }

    /// Adds `n` running guests, each with [`BACKUPS_PER_TIER`] current backups on both tiers.
    fn populate(sim: &PveSimHandle, n: u32) -> anyhow::Result<()> {
        let config = sim
            .state()
            .guest(101)
            .context("the default fixture has no guest 101")?
            .config;
        let now = chrono::Utc::now().timestamp();
        for vmid in FIRST_VMID..FIRST_VMID + n {
            sim.state()
                .add_guest(vmid, GuestStatus::Running, config.clone())
                .map_err(anyhow::Error::msg)?;
        }
        sim.state().with(|w| -> anyhow::Result<()> {
            for vmid in FIRST_VMID..FIRST_VMID + n {
                for k in 0..BACKUPS_PER_TIER {
                    let ctime = now - k * 86_400;
                    let at = chrono::DateTime::from_timestamp(ctime, 0).context("time range")?;
                    for volid in [
                        format!(
                            "local:backup/vzdump-lxc-{vmid}-{}.tar.zst",
                            at.format("%Y_%m_%d-%H_%M_%S")
                        ),
                        format!(
                            "felhom-pbs:backup/ct/{vmid}/{}",
                            at.format("%Y-%m-%dT%H:%M:%SZ")
                        ),
                    ] {
                        w.backups.push(Backup {
                            volid,
                            vmid,
                            ctime,
                            size: 1 << 30,
                            notes: None,
                            protected: false,
                            config: BTreeMap::new(),
                        });
                    }
                }
            }
            Ok(())
        })
    }

    fn settings(n: u32) -> anyhow::Result<BackupSettings> {
        let daily: Schedule = "daily 02:30".parse()?;
        let weekly: Schedule = "sun 03:00".parse()?;
        let policy = |vmid: u32, tier: usize, schedule: &Schedule| Policy {
            vmid,
            tier,
            schedule: schedule.clone(),
            mode: BackupMode::Snapshot,
            retention: Retention {
                keep_last: Some(3),
                ..Retention::default()
            },
            restore_test: None,
            probe_interface: None,
        };
        Ok(BackupSettings {
            tiers: vec![
                Tier {
                    name: "local".into(),
                    storage: "local".into(),
                    kind: TierKind::Local,
                    encrypted: false,
                    key_fingerprint: None,
                },
                Tier {
                    name: "offsite".into(),
                    storage: "felhom-pbs".into(),
                    kind: TierKind::Pbs,
                    encrypted: false,
                    key_fingerprint: None,
                },
            ],
            policies: (FIRST_VMID..FIRST_VMID + n)
                .flat_map(|vmid| [policy(vmid, 0, &daily), policy(vmid, 1, &weekly)])
                .collect(),
            ..BackupSettings::default()
        })
    }

    async fn measure(sim: &PveSimHandle, n: u32) -> anyhow::Result<TickCost> {
        let dir = tempfile::tempdir()?;
        let token = sim
            .token("felhom-agent@pve!agent")
            .context("the fixture has no agent token")?;
        let trust = TlsTrust::Pinned(CertFingerprint::parse(sim.fingerprint())?);
        let pve = PveClient::new(PveClientConfig {
            endpoint: sim.url().parse()?,
            node: sim.node(),
            token: ApiToken::parse(&token)?,
            trust: trust.clone(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        })?;
        let ctx = AgentContext::start(
            Some((pve, trust)),
            dir.path(),
            WaitOptions::default(),
            GuestSetup::default(),
            BackupSetup {
                settings: settings(n)?,
                pbs: None,
            },
        )
        .await?;
        let svc = ctx.capabilities.backup.service().clone();
        let guests = svc.settings().guests();
        let tiers = svc.settings().tiers.len();
        let shutdown = CancellationToken::new();
        let mut state = TickState::default();
        // Warm-up: the Proxmox connection, SQLite's page cache.
        tick_once(&svc, &guests, &mut state, &shutdown).await;
        tokio::time::sleep(SETTLE).await;
        let answered = || -> u64 {
            sim.state()
                .with(|w| w.request_counts.values().map(|&c| u64::from(c)).sum())
        };
        let (mut calls, mut cpu, mut wall) = (0, Duration::ZERO, Duration::ZERO);
        for _ in 0..TICKS {
            let calls_before = answered();
            let own_before = usage::own_cpu()?;
            let sim_before = usage::threads_cpu(SIM_THREAD)?;
            let t = Instant::now();
            tick_once(&svc, &guests, &mut state, &shutdown).await;
            wall += t.elapsed();
            tokio::time::sleep(SETTLE).await;
            let sim_cpu = usage::threads_cpu(SIM_THREAD)?.saturating_sub(sim_before);
            cpu += (usage::own_cpu()? - own_before).saturating_sub(sim_cpu);
            calls += answered() - calls_before;
        }
        // After the measurement: how many guests the ticks found due (the steady state
        // this row means to show has none).
        let listings = svc.tier_listings().await;
        let mut due = 0;
        for &vmid in &guests {
            if svc.due_with(vmid, &listings).await?.due {
                due += 1;
            }
        }
        ctx.queue.shutdown().await;
        Ok(TickCost {
            calls: calls as f64 / f64::from(TICKS),
            cpu: cpu / TICKS,
            wall: wall / TICKS,
            tiers,
            due,
        })
    }
}

/// Row 4: how late a finished Proxmox task is noticed (after `agent/benches/task_wait.rs`).
mod task_wait {
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use felhom_agent::infra::pbs::{
        BackupType, PbsClient, PbsClientConfig, PbsToken, VerifyRequest,
    };
    use felhom_agent::infra::pve::{
        ApiToken, CertFingerprint, PveClient, PveClientConfig, TlsTrust, Vmid, WaitOptions,
    };
    use felhom_simhost::pbs::{PbsSim, PbsSimOptions};
    use felhom_simhost::pve::fixture::GuestStatus;
    use felhom_simhost::pve::{PveSim, PveSimOptions};
    use tokio_util::sync::CancellationToken;

    use crate::{Met, Row};

    /// Tasks waited for per case.
    const TASKS: usize = 8;
    const LATENCY_GOAL: Duration = Duration::from_millis(250);
    const POLLS_GOAL: f64 = 2.0;
    /// The PBS fixture's datastore and a snapshot in it (tests/fixtures/pbs-default.json).
    const STORE: &str = "felhom-store";
    const CT101_NEW: i64 = 1_781_058_600;

    /// One waited-for task.
    struct Sample {
        latency: Duration,
        polls_per_sec: f64,
        polls: u32,
    }

    pub async fn rows() -> anyhow::Result<Vec<Row>> {
        // All three at once: the 7 s tasks set the pace (about 8 s).
        let pve_short = tokio::spawn(pve_case(Duration::from_millis(300)));
        let pve_long = tokio::spawn(pve_case(Duration::from_secs(7)));
        let pbs = tokio::spawn(pbs_case(Duration::from_secs(1)));
        let mut rows = Vec::new();
        for (what, run) in [
            ("PVE task of 0.3 s", pve_short),
            ("PVE task of 7 s", pve_long),
            ("PBS verify of 1 s", pbs),
        ] {
            let measurement = format!("task-completion notice, {what}");
            match run.await.context("the case panicked").and_then(|r| r) {
                Ok(samples) => rows.push(row(&measurement, &samples)),
                Err(e) => rows.push(Row::not_measured(&measurement, &e)),
            }
        }
        Ok(rows)
    }

    fn row(measurement: &str, samples: &[Sample]) -> Row {
        let n = samples.len() as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mean_lat = samples.iter().map(|s| ms(s.latency)).sum::<f64>() / n;
        let max_lat = samples.iter().map(|s| s.latency).max().unwrap_or_default();
        let mean_polls = samples.iter().map(|s| s.polls_per_sec).sum::<f64>() / n;
        let max_polls = samples.iter().map(|s| s.polls_per_sec).fold(0.0, f64::max);
        let polls_per_task = samples.iter().map(|s| f64::from(s.polls)).sum::<f64>() / n;
        Row::new(
            measurement,
            format!(
                "notice mean {mean_lat:.0} ms, max {:.0} ms; {mean_polls:.2} polls/s mean, {max_polls:.2} max ({polls_per_task:.1} status reads per wait, {} tasks)",
                ms(max_lat),
                samples.len()
            ),
            "≤ 250 ms, ≤ 2 polls/s",
            Met::from(max_lat <= LATENCY_GOAL && max_polls <= POLLS_GOAL),
        )
    }

    /// When the `i`-th wait starts after its task: evenly over the first half of the task, at
    /// most 500 ms (the steady poll period), so each task ends at another phase of the poll
    /// grid and every wait still starts while its task runs.
    fn start_delay(length: Duration, i: usize) -> Duration {
        let span = (length / 2).min(Duration::from_millis(500));
        span.mul_f64(i as f64 / TASKS as f64)
    }

    fn pin(fingerprint: &str) -> anyhow::Result<TlsTrust> {
        Ok(TlsTrust::Pinned(CertFingerprint::parse(fingerprint)?))
    }

    async fn pve_case(length: Duration) -> anyhow::Result<Vec<Sample>> {
        let sim = PveSim::start(PveSimOptions {
            task_duration: length,
            ..PveSimOptions::default()
        })
        .await?;
        // One guest per concurrent snapshot: a snapshot locks its guest.
        let config = sim
            .state()
            .guest(101)
            .context("the default fixture has no guest 101")?
            .config;
        let vmids: Vec<u32> = (500..).take(TASKS).collect();
        for &vmid in &vmids {
            sim.state()
                .add_guest(vmid, GuestStatus::Running, config.clone())
                .map_err(anyhow::Error::msg)?;
        }
        let token = sim
            .token("felhom-agent@pve!agent")
            .context("the fixture has no agent token")?;
        let pve = PveClient::new(PveClientConfig {
            endpoint: sim.url().parse()?,
            node: sim.node(),
            token: ApiToken::parse(&token)?,
            trust: pin(sim.fingerprint())?,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        })?;
        let waits = vmids.iter().enumerate().map(|(i, &vmid)| {
            let (pve, sim) = (&pve, &sim);
            async move {
                let upid = pve.snapshot(Vmid::new(vmid)?, "bench", None).await?;
                tokio::time::sleep(start_delay(length, i)).await;
                let started = Instant::now();
                pve.wait_task(&upid, &WaitOptions::default(), &CancellationToken::new())
                    .await?;
                let noticed = Instant::now();
                let timing = sim
                    .state()
                    .with(|w| w.task_timing.get(upid.as_str()).copied())
                    .context("the simulator has no timing for the task")?;
                let ended = timing
                    .ended_at
                    .context("the simulator did not stop the task")?;
                Ok(sample(ended, started, noticed, timing.status_reads))
            }
        });
        let samples = join_all(waits).await;
        sim.shutdown().await;
        samples.into_iter().collect()
    }

    async fn pbs_case(length: Duration) -> anyhow::Result<Vec<Sample>> {
        let sim = PbsSim::start(PbsSimOptions {
            task_duration: length,
            ..PbsSimOptions::default()
        })
        .await?;
        let token = sim
            .token("felhom@pbs!agent")
            .context("the PBS fixture has no agent token")?;
        let pbs = PbsClient::new(PbsClientConfig {
            endpoint: sim.url().parse()?,
            token: PbsToken::parse(&token)?,
            trust: pin(sim.fingerprint())?,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        })?;
        let req = VerifyRequest {
            backup_type: Some(BackupType::Ct),
            backup_id: Some("101".into()),
            backup_time: Some(CT101_NEW),
            ignore_verified: Some(false),
            ..VerifyRequest::default()
        };
        let waits = (0..TASKS).map(|i| {
            let (pbs, sim, req) = (&pbs, &sim, &req);
            async move {
                let upid = pbs.verify(STORE, req).await?;
                tokio::time::sleep(start_delay(length, i)).await;
                let started = Instant::now();
                pbs.wait_task(&upid, &WaitOptions::default(), &CancellationToken::new())
                    .await?;
                let noticed = Instant::now();
                let task = sim
                    .state()
                    .lock()
                    .tasks
                    .get(upid.as_str())
                    .cloned()
                    .context("the simulator has no such task")?;
                let ended = task
                    .ended_at
                    .context("the simulator did not stop the task")?;
                Ok(sample(ended, started, noticed, task.status_reads))
            }
        });
        let samples = join_all(waits).await;
        sim.shutdown().await;
        samples.into_iter().collect()
    }

    fn sample(ended: Instant, started: Instant, noticed: Instant, reads: u32) -> Sample {
        Sample {
            latency: noticed.saturating_duration_since(ended),
            polls_per_sec: f64::from(reads) / (noticed - started).as_secs_f64(),
            polls: reads,
        }
    }

    /// Runs the futures concurrently on this task and collects their outputs in order. (They
    /// borrow the client and the simulator, so they cannot be spawned; polling a handful of them
    /// on every wake-up is cheap.)
    async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut pinned: Vec<_> = futs.map(Box::pin).collect();
        let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (fut, slot) in pinned.iter_mut().zip(out.iter_mut()) {
                if slot.is_none() {
                    match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *slot = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().flatten().collect()
    }
}

/// Row 5: the gateway's own cost (after `localapi-gateway/benches/storage.rs`).
mod gateway {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use anyhow::Context;
    use felhom_localapi_gateway::{Limits, cert};

    use crate::gateway_common::{Harness, TOKEN_A, leaf_pinned_client, start_bare};
    use crate::{Met, Row, load, ms};

    const CLIENTS: usize = 32;
    /// Turns per server (see [`measure`]).
    pub const ROUNDS: usize = 8;
    /// What each server gets over all its turns: 40,000 requests is about a second at the
    /// rates seen here, enough samples for a p99 that does not hang on a handful of them.
    pub const BUDGET: load::Budget = load::Budget {
        requests: 40_000,
        time: std::time::Duration::from_secs(10),
    };
    const THROUGHPUT_GOAL: f64 = 0.7;
    const P99_GOAL: f64 = 2.0;

    pub async fn rows() -> anyhow::Result<Vec<Row>> {
        // Every client uses the same token from the same address: limits out of the way.
        let limits = Limits {
            rate_per_second: 1_000_000,
            rate_burst: 1_000_000,
            source_rate_per_second: 1_000_000,
            source_rate_burst: 1_000_000,
            max_connections_per_source: 1_000,
            ..Limits::default()
        };
        let embedded = Harness::in_process_with_limits(limits.clone()).await;
        let standalone = Harness::with_limits(limits).await;
        let measured = measure_against_bare(&embedded, &standalone).await;
        embedded.shutdown().await;
        standalone.shutdown().await;
        let [in_process, socket, bare] = measured?;
        let mut rows = Vec::new();
        for (transport, gateway) in [
            ("LocalApi in process, as embedded in the agent", &in_process),
            ("LocalApi over its socket, as standalone", &socket),
        ] {
            let throughput = gateway.rate() / bare.rate();
            let p99 = gateway.percentile(0.99).as_secs_f64() / bare.percentile(0.99).as_secs_f64();
            rows.push(Row::new(
                format!("gateway ({transport}) ÷ bare hyper+rustls, {CLIENTS} clients: throughput"),
                format!(
                    "{throughput:.2}× ({:.0} vs {:.0} req/s){}{}",
                    gateway.rate(),
                    bare.rate(),
                    gateway.unexpected_note(),
                    bare.unexpected_note()
                ),
                "≥ 0.7×",
                Met::from(throughput >= THROUGHPUT_GOAL),
            ));
            rows.push(Row::new(
                format!("gateway ({transport}) ÷ bare hyper+rustls, {CLIENTS} clients: p99"),
                format!(
                    "{p99:.2}× ({} vs {})",
                    ms(gateway.percentile(0.99)),
                    ms(bare.percentile(0.99))
                ),
                "≤ 2×",
                Met::from(p99 <= P99_GOAL),
            ));
        }
        Ok(rows)
    }

    /// Both gateways and a bare server answering the gateway's own bytes, loaded in turns.
    async fn measure_against_bare(
        embedded: &Harness,
        standalone: &Harness,
    ) -> anyhow::Result<[load::Outcome; 3]> {
        let token: Arc<[String]> = Arc::from(vec![TOKEN_A.to_owned()]);
        let embedded_pin = embedded.gateway.pins().leaf_sha256_hex;
        let standalone_pin = standalone.gateway.pins().leaf_sha256_hex;
        let reference = leaf_pinned_client(&standalone_pin)
            .get(standalone.url("/storage"))
            .bearer_auth(TOKEN_A)
            .send()
            .await?
            .bytes()
            .await?;
        let bare_dir = tempfile::tempdir()?;
        let bare_pin = cert::load_or_create(bare_dir.path())?
            .pins()
            .leaf_sha256_hex
            .clone();
        let bare_addr = start_bare(bare_dir.path(), reference).await;
        measure(
            [
                (embedded.addr, embedded_pin.as_str()),
                (standalone.addr, standalone_pin.as_str()),
                (bare_addr, bare_pin.as_str()),
            ],
            &token,
        )
        .await
    }

    /// Loads the servers in [`ROUNDS`] turns each of an equal share of the budget, one server
    /// after the other, so a change in what else this machine runs meanwhile weighs on all
    /// alike.
    async fn measure<const N: usize>(
        servers: [(SocketAddr, &str); N],
        token: &Arc<[String]>,
    ) -> anyhow::Result<[load::Outcome; N]> {
        let share = load::Budget {
            requests: BUDGET.requests / ROUNDS,
            time: BUDGET.time / u32::try_from(ROUNDS)?,
        };
        let mut prepared = Vec::new();
        for (addr, pin) in servers {
            let url = format!("https://{addr}/storage");
            let clients: Vec<_> = (0..CLIENTS).map(|_| leaf_pinned_client(pin)).collect();
            load::warm_up(&clients, &url, token, 200).await?;
            prepared.push((url, clients));
        }
        let mut outcomes: [Option<load::Outcome>; N] = std::array::from_fn(|_| None);
        for _ in 0..ROUNDS {
            for ((url, clients), slot) in prepared.iter().zip(outcomes.iter_mut()) {
                let run = load::run(url, clients, token.clone(), 200, share).await;
                *slot = Some(match slot.take() {
                    Some(earlier) => earlier.merge(run),
                    None => run,
                });
            }
        }
        let mut done = Vec::with_capacity(N);
        for outcome in outcomes {
            done.push(outcome.context("a server was not measured")?);
        }
        done.try_into()
            .map_err(|_| anyhow::anyhow!("not every server was measured"))
    }
}

/// Row 6: idle memory and start-up time of the shipped binaries.
mod startup {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use felhom_simhost::devhost::write_private;
    use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};

    use crate::{Met, Row, ms, usage};

    /// How long building (or finding up to date) the release binaries took in this run.
    pub static BUILD_TIME: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    /// How long both processes idle before their RSS is read.
    pub const IDLE: Duration = Duration::from_secs(2);
    /// uid/gid the agent runs as when the bench is root (it refuses root).
    const AGENT_ID: u32 = 65534;
    const READY_GOAL: Duration = Duration::from_millis(150);
    const AGENT_RSS_GOAL_KIB: u64 = 20 * 1024;
    const HELPER_RSS_GOAL_KIB: u64 = 6 * 1024;
    /// Longest a start may take before the bench gives up on it.
    const START_TIMEOUT: Duration = Duration::from_secs(30);

    pub async fn rows() -> anyhow::Result<Vec<Row>> {
        // The packaging tests' helper: builds the shipped binaries with this run's profile
        // (instant once built) and says where they are.
        let building = Instant::now();
        let bins = tokio::task::spawn_blocking(|| {
            std::panic::catch_unwind(felhom_simhost::packaging::built_binaries)
        })
        .await?
        .map_err(|_| anyhow::anyhow!("cannot build felhom-agent and felhom-helper (see above)"))?;
        let _ = BUILD_TIME.set(building.elapsed());
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        // Everything below is reached by the agent's uid too.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let notify = Notify::bind(&dir.join("notify.sock"))?;
        let root = nix::unistd::geteuid().is_root();

        let mut rows = Vec::new();
        let mut helper = None;
        if root {
            match start_helper(&bins, dir, &notify).await {
                Ok(h) => helper = Some(h),
                Err(e) => rows.push(Row::not_measured("felhom-helper", &e)),
            }
        } else {
            rows.push(Row::not_measured(
                "felhom-helper",
                &anyhow::anyhow!("needs root (the helper refuses to run otherwise)"),
            ));
        }
        let sim = PveSim::start(PveSimOptions::default()).await?;
        let agent = measure_agent(&bins, dir, &notify, &sim).await;
        sim.shutdown().await;
        // Read while both run (the helper has idled at least as long as the agent).
        let helper_rss = helper.as_ref().map(|(child, _)| usage::rss_kib(child.id()));
        if let Some((child, _)) = &mut helper {
            stop(child).await;
        }
        match agent {
            Ok(agent) => rows.extend(agent_rows(&agent)),
            Err(e) => rows.push(Row::not_measured("felhom-agent", &e)),
        }
        if let (Some((_, ready)), Some(rss)) = (helper, helper_rss) {
            let rss = rss?;
            rows.push(Row::new(
                "felhom-helper: idle RSS",
                format!("{:.1} MiB", rss as f64 / 1024.0),
                "≤ 6 MiB",
                Met::from(rss <= HELPER_RSS_GOAL_KIB),
            ));
            rows.push(Row::new(
                "felhom-helper: exec → READY=1",
                ms(ready),
                "≤ 150 ms",
                Met::from(ready <= READY_GOAL),
            ));
        }
        Ok(rows)
    }

    /// What the agent's start-up showed.
    struct AgentStarts {
        first_ready: Duration,
        restart_ready: Duration,
        rss_kib: u64,
    }

    fn agent_rows(a: &AgentStarts) -> [Row; 2] {
        [
            Row::new(
                "felhom-agent: idle RSS",
                format!("{:.1} MiB", a.rss_kib as f64 / 1024.0),
                "≤ 20 MiB",
                Met::from(a.rss_kib <= AGENT_RSS_GOAL_KIB),
            ),
            Row::new(
                "felhom-agent: exec → READY=1",
                format!(
                    "first start {}, restart {}",
                    ms(a.first_ready),
                    ms(a.restart_ready)
                ),
                "≤ 150 ms",
                Met::from(a.first_ready.max(a.restart_ready) <= READY_GOAL),
            ),
        ]
    }

    /// Starts the agent on a fresh state directory, stops it, starts it again on the same one,
    /// lets it idle for [`IDLE`] and stops it.
    async fn measure_agent(
        bins: &Path,
        dir: &Path,
        notify: &Notify,
        sim: &PveSimHandle,
    ) -> anyhow::Result<AgentStarts> {
        let root = nix::unistd::geteuid().is_root();
        let config = write_agent_config(dir, sim, root)?;
        let log = dir.join("agent.log");
        let command = || -> anyhow::Result<Command> {
            let mut cmd = Command::new(bins.join("felhom-agent"));
            cmd.arg("--config")
                .arg(&config)
                .arg("run")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("NOTIFY_SOCKET", &notify.path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(append(&log)?);
            if root {
                std::os::unix::process::CommandExt::uid(&mut cmd, AGENT_ID);
                std::os::unix::process::CommandExt::gid(&mut cmd, AGENT_ID);
            }
            Ok(cmd)
        };
        let (mut first, first_ready) = notify
            .start(&mut command()?, &log)
            .await
            .context("cannot start felhom-agent")?;
        stop(&mut first).await;
        let first_ready = first_ready.context("first start")?;
        let (mut second, restart_ready) = notify
            .start(&mut command()?, &log)
            .await
            .context("cannot start felhom-agent again")?;
        if restart_ready.is_ok() {
            tokio::time::sleep(IDLE).await;
        }
        let rss_kib = usage::rss_kib(second.id());
        stop(&mut second).await;
        Ok(AgentStarts {
            first_ready,
            restart_ready: restart_ready.context("restart")?,
            rss_kib: rss_kib?,
        })
    }

    /// The agent's files in `dir`: config, token, state and socket directories (owned by the
    /// agent's uid when root, as the packaging sets them up).
    fn write_agent_config(dir: &Path, sim: &PveSimHandle, root: bool) -> anyhow::Result<PathBuf> {
        let owner = root.then_some(AGENT_ID);
        let state = dir.join("agent-state");
        let run = dir.join("agent-run");
        for (d, mode) in [(&state, 0o700), (&run, 0o755)] {
            std::fs::create_dir_all(d)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
            chown(d, owner)?;
        }
        let token = dir.join("pve-token");
        write_private(
            &token,
            &sim.token("felhom-agent@pve!agent")
                .context("the fixture has no agent token")?,
            owner,
        )?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let config = dir.join("agent.toml");
        write_private(
            &config,
            &format!(
                "[proxmox]\nendpoint = \"{url}\"\nnode = \"{node}\"\ntoken_file = \"{token}\"\n\
                 tls_fingerprint = \"{fp}\"\n\n\
                 [agent]\nstate_dir = \"{state}\"\nsocket = \"{sock}\"\nhelper_socket = \"{helper}\"\n\
                 socket_group = \"\"\n\n\
                 [local_api]\nlisten = [\"127.0.0.1:{port}\"]\n",
                url = sim.url(),
                node = sim.node(),
                token = token.display(),
                fp = sim.fingerprint(),
                state = state.display(),
                sock = run.join("agent.sock").display(),
                helper = helper_socket(dir).display(),
            ),
            owner,
        )?;
        Ok(config)
    }

    fn helper_socket(dir: &Path) -> PathBuf {
        dir.join("helper-run").join("helper.sock")
    }

    /// Starts the helper confined to `dir` (see the legend); returns it and its start time.
    async fn start_helper(
        bins: &Path,
        dir: &Path,
        notify: &Notify,
    ) -> anyhow::Result<(Child, Duration)> {
        let state = dir.join("helper-state");
        std::fs::create_dir_all(&state)?;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
        let log = dir.join("helper.log");
        let mut cmd = Command::new(bins.join("felhom-helper"));
        cmd.arg("--socket")
            .arg(helper_socket(dir))
            .args(["--socket-group", &AGENT_ID.to_string()])
            .args(["--agent-user", &AGENT_ID.to_string()])
            .arg("--audit-file")
            .arg(dir.join("helper-audit.log"))
            .arg("--state-dir")
            .arg(&state)
            .arg("--mount-prefix")
            .arg(dir.join("mnt"))
            .arg("--host-mount-ns")
            .arg(format!("/proc/{}/ns/mnt", std::process::id()))
            .args(["--pct", "/bin/false", "--smartctl", "/bin/false"])
            .args(["--sensors", "/bin/false", "--blkid", "/bin/false"])
            .env_clear()
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append(&log)?);
        let (mut child, ready) = notify
            .start(&mut cmd, &log)
            .await
            .context("cannot start felhom-helper")?;
        match ready {
            Ok(ready) => Ok((child, ready)),
            Err(e) => {
                stop(&mut child).await;
                Err(e)
            }
        }
    }

    /// A `NOTIFY_SOCKET` of our own: the datagram socket systemd would listen on.
    struct Notify {
        path: PathBuf,
        socket: tokio::net::UnixDatagram,
    }

    impl Notify {
        fn bind(path: &Path) -> anyhow::Result<Self> {
            let socket = tokio::net::UnixDatagram::bind(path)
                .with_context(|| format!("cannot bind {}", path.display()))?;
            // The agent sends as its own uid.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
            Ok(Self {
                path: path.to_owned(),
                socket,
            })
        }

        /// Spawns `cmd` and times it from the spawn until its `READY=1` datagram. What earlier
        /// processes left on the socket is dropped first, and none of them sends `READY=1`
        /// again, so the one that arrives is the new process's. The child is returned even when
        /// the wait failed (it exited first, or took longer than [`START_TIMEOUT`]; the error
        /// names the end of its `log`), so the caller can stop it.
        async fn start(
            &self,
            cmd: &mut Command,
            log: &Path,
        ) -> anyhow::Result<(Child, anyhow::Result<Duration>)> {
            let mut buf = vec![0u8; 4096];
            while self.socket.try_recv(&mut buf).is_ok() {}
            let spawned = Instant::now();
            let mut child = cmd.spawn()?;
            let ready = loop {
                let got =
                    tokio::time::timeout(Duration::from_millis(50), self.socket.recv(&mut buf))
                        .await;
                if let Ok(n) = got {
                    let n = n?;
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1")
                    {
                        break Ok(spawned.elapsed());
                    }
                }
                if let Some(status) = child.try_wait()? {
                    break Err(anyhow::anyhow!(
                        "exited with {status} before READY=1: {}",
                        log_tail(log)
                    ));
                }
                if spawned.elapsed() > START_TIMEOUT {
                    break Err(anyhow::anyhow!(
                        "no READY=1 within {START_TIMEOUT:?}: {}",
                        log_tail(log)
                    ));
                }
            };
            Ok((child, ready))
        }
    }

    fn log_tail(log: &Path) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }

    /// SIGTERM, then SIGKILL after 20 s; reaps the child.
    async fn stop(child: &mut Child) {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn append(log: &Path) -> anyhow::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))
    }

    fn chown(path: &Path, owner: Option<u32>) -> anyhow::Result<()> {
        if let Some(id) = owner {
            nix::unistd::chown(path, Some(id.into()), Some(id.into()))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        Ok(())
    }
}
