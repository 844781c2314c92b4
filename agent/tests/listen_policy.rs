//! The guests' HTTPS API listens only on loopback or a configured bridge's address: the agent
//! refuses a wildcard or another interface's address before it starts anything, and a real
//! bridge in a network namespace of the test's own is found by the interface scan.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use felhom_agent::app::listen_policy::{self, ListenError, ListenPolicy};

/// Runs `felhom-agent run` with `[local_api] listen = [addr]` (as uid 65534 when root: the
/// agent refuses root) and returns what it printed; the agent must stop by itself.
fn run_agent_listening_on(dir: &Path, addr: &str) -> Output {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\nsocket = \"{}\"\nsocket_group = \"\"\n\n[local_api]\nlisten = [\"{addr}\"]\n",
            state.display(),
            dir.join("agent.sock").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let agent = env!("CARGO_BIN_EXE_felhom-agent");
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            agent,
        ]);
        c
    } else {
        Command::new(agent)
    };
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--config")
        .arg(&config)
        .arg("run");
    cmd.output().expect("run the agent")
}

#[test]
fn the_agent_refuses_a_wildcard_listen_address_before_serving_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_agent_listening_on(dir.path(), "0.0.0.0:18443");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "[local_api] listen 0.0.0.0:18443 is every address of the host (the LAN's too); name a bridge address, or set allow_any_address = true"
        ),
        "{stderr}"
    );
    assert!(
        !dir.path().join("agent.sock").exists(),
        "nothing was served"
    );
}

#[test]
fn the_agent_refuses_an_address_of_no_configured_bridge() {
    // This machine has no vmbr0: any non-loopback address is refused, naming the bridge.
    let ip = listen_policy::host_interfaces()
        .unwrap()
        .into_iter()
        .find(|a| !a.ip.is_loopback() && a.ip.is_ipv4() && a.interface != "vmbr0");
    let Some(ip) = ip else {
        println!("SKIPPED the_agent_refuses_an_address_of_no_configured_bridge: no IPv4 interface");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("{}:18443", ip.ip);
    let out = run_agent_listening_on(dir.path(), &addr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "[local_api] listen {addr} is not loopback nor an address of a configured bridge (vmbr0: no address)"
        )),
        "{stderr}"
    );
}

/// A network namespace with a bridge `vmbr0` (10.213.0.1/24) and a LAN-like dummy interface
/// (10.214.0.5/24), deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Result<Self, String> {
        let name = format!("felhom-listen-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip {args:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = Self(name.clone());
        ip(&["-n", &name, "link", "add", "vmbr0", "type", "bridge"])?;
        ip(&["-n", &name, "addr", "add", "10.213.0.1/24", "dev", "vmbr0"])?;
        ip(&["-n", &name, "link", "set", "vmbr0", "up"])?;
        ip(&["-n", &name, "link", "add", "lan0", "type", "dummy"])?;
        ip(&["-n", &name, "addr", "add", "10.214.0.5/24", "dev", "lan0"])?;
        ip(&["-n", &name, "link", "set", "lan0", "up"])?;
        Ok(ns)
    }

    /// The interface scan, run on a thread that joined the namespace.
    fn interfaces(&self) -> Vec<listen_policy::InterfaceAddr> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("join it");
            listen_policy::host_interfaces().expect("interfaces")
        })
        .join()
        .expect("scan thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_real_bridge_address_is_accepted_and_another_interface_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "SKIPPED a_real_bridge_address_is_accepted_and_another_interface_refused: needs root for a network namespace"
        );
        return;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            println!(
                "SKIPPED a_real_bridge_address_is_accepted_and_another_interface_refused: {why}"
            );
            return;
        }
    };
    let interfaces = ns.interfaces();
    let policy = ListenPolicy::default();
    let bridge = ["10.213.0.1:8443".parse().unwrap()];
    assert_eq!(listen_policy::check(&bridge, &policy, &interfaces), Ok(()));
    let lan = ["10.214.0.5:8443".parse().unwrap()];
    assert_eq!(
        listen_policy::check(&lan, &policy, &interfaces),
        Err(ListenError::NotOnBridge {
            addr: lan[0],
            found: "vmbr0: 10.213.0.1".into(),
        })
    );
}
