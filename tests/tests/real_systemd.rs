//! The package under a real systemd: the `felhom-host-agent` .deb installed into a Debian
//! bookworm booted with systemd as PID 1 (`systemd-nspawn --boot`), configured by the install
//! guide's own commands, pointed at the simulated Proxmox VE on the host's loopback (the
//! container shares the host's network namespace).
//!
//! What only a booted systemd shows, and the devhost (no sandbox) and the offline unit scoring
//! in `packaging.rs` cannot: the units' system-call filter, file-system sandbox, credentials,
//! `Type=notify` readiness, the watchdog, restarts, stop timeouts, the resource limits and bind
//! allow-list as loaded and applied, and the exposure score of the loaded units.
//!
//! How: a minimal bookworm rootfs is made once with debootstrap (mirror from the machine's apt
//! sources) and cached under `target/real-systemd/`; every run boots a fresh copy of it. The
//! copy gets the .deb (packed from this run's debug binaries, as `packaging.rs` does), the
//! `run` blocks of `packaging/INSTALL.md` as scripts (so guide and test cannot drift), the
//! simulator's coordinates, and a oneshot unit running `tests/fixtures/real_systemd/check.sh`,
//! which installs, configures and starts the package by running those blocks verbatim, checks
//! what an operator would see, writes one finding per line and powers the container off. The
//! test then requires a PASS for every check it knows and the exposure scores within limits.
//!
//! Needs root, systemd-nspawn (package systemd-container), debootstrap (or a cached rootfs),
//! cargo-deb and dpkg-deb, and the Debian mirror for the first run; without one of them, or when
//! the container cannot boot on this machine, it prints `SKIPPED` with the reason.
//!
//! Secrets: the simulator's token secret reaches the container in a 0600 file and the guide's
//! `read` on standard input; the test fails (without printing them) if it shows up in any
//! output the container wrote.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use felhom_localapi_gateway::config::DEFAULT_PORT;
use felhom_simhost::packaging::{
    AGENT_MAX_EXPOSURE, HELPER_MAX_EXPOSURE, build_deb, cargo_deb_available, target_dir,
    tool_available, workspace_root,
};
use felhom_simhost::pve::{Fixture, PveSim, PveSimOptions};

const TEST: &str = "package_runs_under_a_booted_systemd";

/// The guide's `run` blocks, in the order the guide has them (check.sh runs them by name).
const GUIDE_RUN_BLOCKS: &[&str] = &["install", "token", "config", "start", "operators"];

/// Every check check.sh reports; each needs a PASS line.
const CHECKS: &[&str] = &[
    "guide:install",
    "guide:token",
    "guide:config",
    "guide:start",
    "guide:operators",
    "running:felhom-helper",
    "running:felhom-agent",
    "status:serving",
    "socket-access",
    "selftest:operator",
    "selftest:outsider",
    "helper:agent",
    "helper:refuses",
    "helper:dir",
    "limits:felhom-helper",
    "limits:felhom-agent",
    "socket-bind",
    "local-api",
    "no-restarts",
    "kill-restart",
    "stop:felhom-agent",
    "stop:felhom-helper",
    "status:fatal-error",
    "journal:plain",
];

/// The debootstrap the issue asks for, plus curl (the guests' HTTPS client in check.sh) and
/// the package's Recommends (read from the .deb), so `apt install` in the container has
/// nothing to download.
const SUITE: &str = "bookworm";
const BASE_INCLUDES: &[&str] = &["systemd", "systemd-sysv", "dbus", "curl"];

/// The agent's token in the simulator's default fixture.
const AGENT_AUTHID: &str = "felhom-agent@pve!agent";
/// A backup archive of the default fixture, provisioned (and interrupted) by check.sh.
const GOLDEN_ARCHIVE: &str = "local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst";

/// The guest check.sh provisions (its request names it too).
const PROVISIONED_VMID: u32 = 9100;

/// Longest the container may run: check.sh's own unit times out at 240 s and powers off.
const CONTAINER_DEADLINE: Duration = Duration::from_secs(300);

const CHECK_SH: &str = include_str!("../fixtures/real_systemd/check.sh");
const EDITOR: &str = include_str!("../fixtures/real_systemd/editor");
const CHECK_UNIT: &str = include_str!("../fixtures/real_systemd/felhom-real-systemd-check.service");
const CHECK_UNIT_NAME: &str = "felhom-real-systemd-check.service";

/// One fenced `sh` block of INSTALL.md and the marker comment right above it.
#[derive(Debug)]
struct GuideBlock {
    /// `Some(name)` for `<!-- real_systemd: run NAME -->`, `None` for `skip (…)`.
    run: Option<String>,
    script: String,
}

/// Every `sh` block of the guide; panics on a block without a marker, so a new step has to
/// say whether this test runs it.
fn guide_blocks(md: &str) -> Vec<GuideBlock> {
    let lines: Vec<&str> = md.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```sh" {
            i += 1;
            continue;
        }
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim())
            .unwrap_or_default();
        let Some(what) = marker
            .strip_prefix("<!-- real_systemd: ")
            .and_then(|m| m.strip_suffix(" -->"))
        else {
            panic!(
                "INSTALL.md line {}: the sh block has no `<!-- real_systemd: run NAME -->` or \
                 `<!-- real_systemd: skip (why) -->` marker right above it (found {marker:?})",
                i + 1
            );
        };
        let run = if let Some(name) = what.strip_prefix("run ") {
            Some(name.trim().to_owned())
        } else if what.starts_with("skip (") && what.ends_with(')') {
            None
        } else {
            panic!("INSTALL.md line {i}: unknown marker {marker:?}");
        };
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .unwrap_or_else(|| panic!("INSTALL.md line {}: unterminated sh block", i + 1));
        let mut script = lines[i + 1..end].join("\n");
        script.push('\n');
        blocks.push(GuideBlock { run, script });
        i = end + 1;
    }
    blocks
}

fn install_guide() -> String {
    std::fs::read_to_string(workspace_root().join("packaging/INSTALL.md"))
        .expect("packaging/INSTALL.md")
}

/// The guide's `run` blocks by name, checked against what check.sh runs.
fn guide_run_blocks() -> Vec<(String, String)> {
    let run: Vec<(String, String)> = guide_blocks(&install_guide())
        .into_iter()
        .filter_map(|b| b.run.map(|name| (name, b.script)))
        .collect();
    let names: Vec<&str> = run.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names, GUIDE_RUN_BLOCKS,
        "INSTALL.md's `run` blocks, in order, must be the ones check.sh runs"
    );
    run
}

#[test]
fn every_install_guide_block_is_marked_for_the_real_systemd_test() {
    let blocks = guide_blocks(&install_guide());
    assert!(blocks.len() > GUIDE_RUN_BLOCKS.len(), "{blocks:?}");
    guide_run_blocks();
    // check.sh runs each of them (and nothing else) by name.
    for name in GUIDE_RUN_BLOCKS {
        assert!(
            CHECK_SH.contains(&format!("\nguide {name}")),
            "check.sh does not run the guide block {name}"
        );
    }
}

/// The Debian mirror of this machine's apt sources (deb822 `debian.sources` first, then
/// `sources.list`): the `URIs:` of the stanza with a plain suite (not `-security`/`-updates`).
fn debian_mirror() -> Option<String> {
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources") {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
            };
            let plain_suite = field("Suites:")
                .split_whitespace()
                .any(|s| !s.contains('-'));
            let deb = field("Types:").split_whitespace().any(|t| t == "deb");
            if let (true, true, Some(uri)) =
                (deb, plain_suite, field("URIs:").split_whitespace().next())
            {
                return Some(uri.to_owned());
            }
        }
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").ok()?;
    list.lines().find_map(|line| {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        match words.as_slice() {
            ["deb", uri, suite, ..] if !suite.contains('-') => Some((*uri).to_owned()),
            _ => None,
        }
    })
}

/// The cached rootfs for `includes` (made with debootstrap when missing), or why it cannot be.
fn cached_rootfs(includes: &[String]) -> Result<PathBuf, String> {
    use sha2::Digest as _;
    let key = format!(
        "{SUITE} minbase {}",
        includes.join(",") // order is part of the key: same list, same rootfs
    );
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let cache = target_dir().join("real-systemd");
    let dir = cache.join(format!("rootfs-{SUITE}-{}", &hash[..12]));
    let stamp = dir.join(".felhom-rootfs-complete");
    if stamp.is_file() {
        println!("rootfs: cached {} ({key})", dir.display());
        return Ok(dir);
    }
    let mut version = Command::new("debootstrap");
    version.arg("--version");
    if !matches!(version.output(), Ok(o) if o.status.success()) {
        return Err("debootstrap is not installed and no rootfs is cached \
                    (apt-get install debootstrap)"
            .to_owned());
    }
    let mirror = debian_mirror().ok_or_else(|| {
        "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
            .to_owned()
    })?;
    std::fs::create_dir_all(&cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let partial = cache.join(format!("rootfs-{SUITE}-{}.partial", &hash[..12]));
    let _ = std::fs::remove_dir_all(&partial);
    let _ = std::fs::remove_dir_all(&dir);
    let log = cache.join("debootstrap.log");
    let started = Instant::now();
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", includes.join(",")))
        .arg(SUITE)
        .arg(&partial)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).map_err(|e| format!("debootstrap log: {e}"))?)
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .map_err(|e| format!("debootstrap log: {e}"))?,
        ))
        .status()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!(
            "debootstrap {SUITE} from {mirror} failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    std::fs::write(
        partial.join(".felhom-rootfs-complete"),
        format!("{key}\n{mirror}\n"),
    )
    .map_err(|e| format!("cannot mark the rootfs complete: {e}"))?;
    std::fs::rename(&partial, &dir).map_err(|e| format!("cannot move the rootfs in place: {e}"))?;
    println!(
        "rootfs: debootstrap {SUITE} from {mirror} took {:.0?} ({key})",
        started.elapsed()
    );
    Ok(dir)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create a directory in the container");
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_runs_under_a_booted_systemd() {
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED {TEST}: needs root (systemd-nspawn, debootstrap)");
        return;
    }
    if !tool_available("systemd-nspawn", &["--version"], TEST)
        || !cargo_deb_available(TEST)
        || !tool_available("dpkg-deb", &["--version"], TEST)
    {
        return;
    }
    let guide = guide_run_blocks();

    // The package, from this run's binaries.
    let work = target_dir().join("real-systemd");
    std::fs::create_dir_all(&work).expect("create target/real-systemd");
    let deb_dir = tempfile::tempdir_in(&work).expect("temp .deb directory");
    let deb = build_deb(deb_dir.path());
    let deb_name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the .deb has a name")
        .to_owned();
    let install = &guide[0].1;
    assert!(
        install.contains(&format!("./{deb_name}")),
        "INSTALL.md step 2 must install the package cargo deb builds ({deb_name}):\n{install}"
    );
    let recommends = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Recommends")
        .output()
        .expect("dpkg-deb runs");
    let mut includes: Vec<String> = BASE_INCLUDES.iter().map(|s| (*s).to_owned()).collect();
    includes.extend(
        String::from_utf8_lossy(&recommends.stdout)
            .split(',')
            .map(|p| p.split_whitespace().next().unwrap_or_default().to_owned())
            .filter(|p| !p.is_empty()),
    );
    let deb_built = started.elapsed();

    let rootfs = match cached_rootfs(&includes) {
        Ok(dir) => dir,
        Err(reason) => {
            println!("SKIPPED {TEST}: {reason}");
            return;
        }
    };
    let rootfs_ready = started.elapsed();

    // The simulated Proxmox VE on the host's loopback. Tasks take 4 s, so check.sh can kill
    // the agent while a provisioning's restore is recorded but unfinished.
    let sim = PveSim::start(PveSimOptions {
        fixture: Fixture::default_host(),
        task_duration: Duration::from_secs(4),
        ..PveSimOptions::default()
    })
    .await
    .expect("the simulated Proxmox VE starts");
    let token = sim
        .token(AGENT_AUTHID)
        .expect("the default fixture has the agent's token");
    let (_, secret) = token
        .split_once('=')
        .expect("a PVE API token is AUTHID=SECRET");
    // The local API listens on the packaged port: the agent's unit allows binding no other
    // (SocketBindAllow=). The container shares the host's network, so the port must be free
    // here; it is outside the ephemeral range, so only a real service can hold it.
    let local_api_port = DEFAULT_PORT;
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", local_api_port)) {
        println!(
            "SKIPPED {TEST}: the local API's port 127.0.0.1:{local_api_port} is taken on this \
             machine ({e}); the container shares its network"
        );
        sim.shutdown().await;
        return;
    }

    // A fresh copy of the rootfs, with the test's files in it.
    let run = tempfile::Builder::new()
        .prefix("boot-")
        .tempdir_in(&work)
        .expect("temp boot directory");
    let root = run.path().join("root");
    let copy = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&rootfs)
        .arg(&root)
        .status()
        .expect("cp runs");
    assert!(copy.success(), "copying the rootfs failed");
    let t = root.join("root/felhom-test");
    std::fs::create_dir_all(t.join("guide")).expect("create /root/felhom-test");
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::copy(&deb, t.join(&deb_name)).expect("copy the .deb into the container");
    for (name, script) in &guide {
        write_file(
            &t.join("guide").join(format!("{name}.sh")),
            script.as_bytes(),
            0o600,
        );
    }
    write_file(&t.join("check.sh"), CHECK_SH.as_bytes(), 0o700);
    write_file(
        &t.join("pve-secret"),
        format!("{secret}\n").as_bytes(),
        0o600,
    );
    let sim_env = format!(
        "PVE_URL='{}'\nPVE_NODE='{}'\nPVE_FINGERPRINT='{}'\nLOCAL_API_PORT='{local_api_port}'\n\
         GOLDEN_ARCHIVE='{GOLDEN_ARCHIVE}'\n",
        sim.url(),
        sim.node(),
        sim.fingerprint()
    );
    write_file(&t.join("sim.env"), sim_env.as_bytes(), 0o600);
    write_file(&root.join("usr/local/bin/editor"), EDITOR.as_bytes(), 0o755);
    let unit_dir = root.join("etc/systemd/system");
    write_file(
        &unit_dir.join(CHECK_UNIT_NAME),
        CHECK_UNIT.as_bytes(),
        0o644,
    );
    let wants = unit_dir.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("create multi-user.target.wants");
    std::os::unix::fs::symlink(
        format!("/etc/systemd/system/{CHECK_UNIT_NAME}"),
        wants.join(CHECK_UNIT_NAME),
    )
    .expect("enable the check unit");

    // Boot it; check.sh powers it off when done.
    let boot_log_path = run.path().join("boot.log");
    let boot_log = std::fs::File::create(&boot_log_path).expect("boot log");
    let mut nspawn = tokio::process::Command::new("systemd-nspawn")
        .args(["--boot", "--register=no", "--keep-unit", "-D"])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(boot_log.try_clone().expect("boot log"))
        .stderr(boot_log)
        .kill_on_drop(true)
        .spawn()
        .expect("systemd-nspawn starts");
    let booted_at = started.elapsed();
    let status = match tokio::time::timeout(CONTAINER_DEADLINE, nspawn.wait()).await {
        Ok(status) => Some(status.expect("wait for systemd-nspawn")),
        Err(_) => {
            // SIGTERM makes nspawn halt the container; kill_on_drop covers the rest.
            if let Some(pid) = nspawn.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), nspawn.wait()).await;
            None
        }
    };
    let container_time = started.elapsed() - booted_at;
    let guest_left = sim.state().guest(PROVISIONED_VMID).is_some();
    sim.shutdown().await;

    let read = |name: &str| std::fs::read_to_string(t.join(name)).unwrap_or_default();
    let findings = read("findings");
    let output = read("output.log");
    let journal = read("journal.txt");
    let boot_log = std::fs::read_to_string(&boot_log_path).unwrap_or_default();

    if !findings.contains("BOOTED") {
        // check.sh writes BOOTED first. Without it, either systemd never got the system up
        // (this machine cannot boot a container: a SKIP with nspawn's own words) or it did
        // and the check unit broke (a failure).
        if boot_log.contains("Multi-User System") {
            panic!(
                "the container booted but check.sh reported nothing (nspawn: {status:?}):\n{}",
                tail(&boot_log, 40)
            );
        }
        println!(
            "SKIPPED {TEST}: systemd-nspawn --boot did not bring the container up \
             (exit {status:?}): {}",
            tail(&boot_log, 15).replace('\n', " | ")
        );
        return;
    }

    // House rule: the token secret never shows up in anything the container wrote.
    for (name, text) in [
        ("findings", &findings),
        ("output.log", &output),
        ("journal.txt", &journal),
        ("boot log", &boot_log),
    ] {
        assert!(
            !text.contains(secret),
            "the PVE token secret appears in the container's {name} (not printed)"
        );
    }

    println!("findings from inside the container:\n{findings}");
    let mut failures = String::new();
    if status.is_none() {
        let _ = writeln!(
            failures,
            "the container did not power off within {CONTAINER_DEADLINE:?}"
        );
    }
    for check in CHECKS {
        let prefix = format!(" {check}: ");
        let line = findings.lines().find(|l| {
            (l.starts_with("PASS") || l.starts_with("FAIL")) && l[4..].starts_with(&prefix)
        });
        match line {
            Some(l) if l.starts_with("PASS") => {}
            Some(l) => {
                let _ = writeln!(failures, "{l}");
            }
            None => {
                let _ = writeln!(failures, "MISSING {check}: check.sh never reported it");
            }
        }
    }
    if !findings.lines().any(|l| l == "DONE") {
        let _ = writeln!(failures, "check.sh did not finish (no DONE line)");
    }
    for (unit, limit) in [
        ("felhom-agent.service", AGENT_MAX_EXPOSURE),
        ("felhom-helper.service", HELPER_MAX_EXPOSURE),
    ] {
        let score = findings
            .lines()
            .find_map(|l| l.strip_prefix(&format!("SCORE {unit} ")))
            .and_then(|s| s.trim().parse::<f64>().ok());
        match score {
            Some(s) if s <= limit => {
                println!("{unit}: exposure {s} inside the container (limit {limit})")
            }
            Some(s) => {
                let _ = writeln!(
                    failures,
                    "{unit}: exposure {s} inside the container, limit {limit}"
                );
            }
            None => {
                let _ = writeln!(
                    failures,
                    "{unit}: no exposure score from inside the container"
                );
            }
        }
    }
    // What recovery decided for the interrupted provisioning holds on the (simulated) host
    // too, not just in the agent's journal: rolled back leaves no guest, completed leaves one.
    let recovered = findings
        .lines()
        .find(|l| l.starts_with("PASS kill-restart: "))
        .unwrap_or_default();
    for (state, want_guest) in [("compensated", false), ("completed", true)] {
        if recovered.contains(&format!("provision {PROVISIONED_VMID} {state}"))
            && guest_left != want_guest
        {
            let _ = writeln!(
                failures,
                "the operation was {state}, but guest {PROVISIONED_VMID} on the simulator: {}",
                if guest_left { "exists" } else { "absent" }
            );
        }
    }
    println!(
        "wall time: {:.1?} (deb after {:.1?}, rootfs after {:.1?}, container {:.1?})",
        started.elapsed(),
        deb_built,
        rootfs_ready,
        container_time
    );
    assert!(
        failures.is_empty(),
        "under a booted systemd:\n{failures}\n--- check.sh output (tail) ---\n{}\n--- journal of both units (tail) ---\n{}",
        tail(&output, 60),
        tail(&journal, 40)
    );
}
