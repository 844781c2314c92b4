//! Shared fixture for the felhomctl tests: the agent's real gRPC server (Agent + reflection)
//! on a Unix socket in a temp dir, and a runner for the real `felhomctl` binary.

#![allow(dead_code)] // each test crate uses a different part of the fixture

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use felhom_agent::app::context::AgentContext;
use felhom_agent::frontends::grpc::{bind_unix, serve_agent};
use felhom_agent::infra::pve::{ApiToken, PveClient, PveClientConfig, TlsTrust, WaitOptions};

/// Generous bound for one felhomctl run on a loaded 2-core machine; only a hang reaches it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The agent's gRPC server (no Proxmox VE configured) running on its own thread.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// The agent without Proxmox VE: Selftest answers FAILED_PRECONDITION.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The agent configured for a Proxmox VE endpoint where nobody listens: Selftest answers
    /// with a report whose `version` check failed.
    pub fn start_with_unreachable_pve() -> Self {
        // A port that was free a moment ago; the listener is closed so connects are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("pick a loopback port")
            .port();
        let config = PveClientConfig {
            endpoint: reqwest::Url::parse(&format!("https://127.0.0.1:{port}")).expect("valid URL"),
            node: "pve1".to_owned(),
            token: ApiToken::parse("felhom@pve!agent=00000000-0000-0000-0000-000000000000")
                .expect("valid token shape"),
            trust: TlsTrust::InsecureSkipVerify,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(60),
        };
        let client = PveClient::new(config).expect("PVE client for a loopback endpoint");
        Self::start_with(Some((client, TlsTrust::InsecureSkipVerify)))
    }

    fn start_with(pve: Option<(PveClient, TlsTrust)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = socket.clone();
        let state_dir = dir.path().to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let ctx = AgentContext::start(
                    pve,
                    &state_dir,
                    WaitOptions::default(),
                    Default::default(),
                    Default::default(),
                )
                .await
                .expect("agent context");
                let listener = bind_unix(&path).expect("bind agent socket");
                ready_tx.send(()).expect("test thread waits for readiness");
                serve_agent(
                    listener,
                    ctx.capabilities.clone(),
                    ctx.local_api_gateway.clone(),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("agent gRPC server");
            });
        });
        ready_rx
            .recv_timeout(RUN_LIMIT)
            .expect("agent socket bound");
        Agent {
            dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Runs felhomctl against this agent's socket with `args`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        felhomctl(&self.socket, args, None)
    }

    /// Runs felhomctl with `stdin` as its standard input.
    pub fn ctl_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        felhomctl(&self.socket, args, Some(stdin))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Result of one felhomctl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// How the Selftest method's rpc line reads in a descriptor dump.
pub const SELFTEST_RPC: &str = "rpc Selftest ( .felhom.agent.v1.SelftestRequest ) returns ( .felhom.agent.v1.SelftestReport );";

/// What felhomctl prints when the agent has no Proxmox VE configured.
pub const PVE_NOT_CONFIGURED: &str =
    "felhomctl: FAILED_PRECONDITION: Proxmox VE is not configured ([proxmox] endpoint)\n";

impl Run {
    /// Asserts exit code 0 and returns stdout.
    pub fn success(&self) -> &str {
        assert_eq!(self.code, 0, "felhomctl failed: {self:?}");
        &self.stdout
    }

    /// Asserts exit code `code` and returns the run.
    #[track_caller]
    pub fn exits(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{self:?}");
        self
    }

    /// Asserts exit code `code` and exactly `stderr` on standard error.
    #[track_caller]
    pub fn fails_with(self, code: i32, stderr: &str) -> Self {
        let run = self.exits(code);
        assert_eq!(run.stderr, stderr);
        run
    }

    /// Asserts exit code `code`, exactly `stderr` on standard error and nothing on stdout.
    #[track_caller]
    pub fn fails_with_only(self, code: i32, stderr: &str) {
        let run = self.fails_with(code, stderr);
        assert_eq!(run.stdout, "");
    }

    /// Asserts exit code 0 and that the stdout table's first line is `header`; returns the
    /// whitespace-separated words of each line.
    #[track_caller]
    pub fn table_under(&self, header: &[&str]) -> Vec<Vec<&str>> {
        let out = self.success();
        let lines = self.table();
        assert_eq!(lines[0], header, "{out}");
        lines
    }

    /// The whitespace-separated words of each stdout line.
    pub fn table(&self) -> Vec<Vec<&str>> {
        self.stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect()
    }
}

pub fn felhomctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_felhomctl")
}

/// Runs felhomctl with `--socket socket` and `args`.
pub fn felhomctl(socket: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(felhomctl_bin());
    cmd.env_remove("FELHOMCTL_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args);
    run(cmd, stdin)
}

/// Runs `cmd` to completion (killing it if it hangs past [`RUN_LIMIT`]).
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if child.try_wait().expect("wait for command").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command did not finish within {RUN_LIMIT:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("collect output");
    Run {
        code: status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

/// The agent's `agent.toml` for the simulated Proxmox VE, parsed by the agent's own config
/// code: `[proxmox]` pinned to the simulator with its token in a private file under `root`,
/// `[agent] state_dir` (created) under `root`, then `extra` (more keys and sections, verbatim;
/// it may start with keys of `[agent]`). Returns the config and the state dir.
pub fn agent_config_for(
    sim: &felhom_simhost::pve::PveSimHandle,
    root: &Path,
    extra: &str,
) -> (felhom_agent::app::config::Config, PathBuf) {
    let token_file = root.join("pve-token");
    std::fs::write(
        &token_file,
        sim.token("felhom-agent@pve!agent")
            .expect("the fixture has the agent's token"),
    )
    .expect("write token file");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("make the token file private");
    let state = root.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let text = format!(
        "[proxmox]\nendpoint = \"{url}\"\nnode = \"{node}\"\ntoken_file = \"{token}\"\n\
         tls_fingerprint = \"{fp}\"\n\n[agent]\nstate_dir = \"{state}\"\n{extra}",
        url = sim.url(),
        node = sim.node(),
        token = token_file.display(),
        fp = sim.fingerprint(),
        state = state.display(),
    );
    let config = felhom_agent::app::config::Config::from_toml(
        &text,
        &root.join("agent.toml"),
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .expect("valid agent.toml");
    (config, state)
}
