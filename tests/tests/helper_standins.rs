//! The simulated host's helper paths end to end: the agent's `HelperClient` → the real
//! helper service on a Unix socket → the stand-ins: `felhom-sim-smartctl` / `felhom-sim-sensors`
//! printing recorded outputs, and `felhom-sim-pct` creating the golden container in the
//! Proxmox VE simulator as root on the node.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use felhom_agent::infra::helper::{DriveProtocol, Helper, HelperClient, HelperError, SmartHealth};
use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};

mod common;
use felhom_helper::audit::Audit;
use felhom_helper::config::Config;
use felhom_helper::server;

struct Running {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), server::ServeError>>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task joins")
                .expect("server stops cleanly");
        }
    }
}

fn start_helper() -> Running {
    start_helper_with_pct(None)
}

fn start_helper_with_pct(pct: Option<std::path::PathBuf>) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    // The in-process helper binds under a umask of its own, and the umask is the process's:
    // a tempdir another test thread creates meanwhile is born without 0700. Say it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod temp dir");
    let socket = dir.path().join("helper.sock");
    let cfg = Config {
        socket: socket.clone(),
        socket_gid: own_gid(),
        agent_uid: own_uid(),
        audit_file: None,
        state_dir: dir.path().join("state"),
        mount_prefix: dir.path().join("mnt"),
        by_uuid_dir: dir.path().join("by-uuid"),
        mountinfo: "/proc/self/mountinfo".into(),
        host_mount_ns: "/proc/self/ns/mnt".into(),
        golden_vmids: 9000..=9099,
        pct: pct.unwrap_or_else(|| dir.path().join("no-pct")),
        smartctl: env!("CARGO_BIN_EXE_felhom-sim-smartctl").into(),
        sensors: env!("CARGO_BIN_EXE_felhom-sim-sensors").into(),
        blkid: "/usr/sbin/blkid".into(),
        pct_timeout: Duration::from_secs(60),
        read_timeout: Duration::from_secs(60),
        // In-process: the test process keeps its own identity and capabilities.
        unprivileged_dev: true,
    };
    // One bind at a time: each sets the process-wide umask while it binds.
    static BIND: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let listener = {
        let _one = BIND
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        server::bind(&cfg).expect("bind helper socket")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let audit = Arc::new(Audit::open(None).expect("log-only audit"));
    let task = tokio::spawn(server::serve(listener, Arc::new(cfg), audit, async {
        let _ = stopped.await;
    }));
    Running {
        _dir: dir,
        socket,
        stop: Some(stop),
        task: Some(task),
    }
}

/// This process's uid/gid (owner of /proc/self), so the helper's peer check admits the test
/// whether or not it runs as root.
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

fn own_gid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::gid(&m))
}

#[tokio::test]
async fn recorded_drives_read_through_agent_client_and_helper() {
    let helper = start_helper();
    let client = HelperClient::new(&helper.socket);

    let hdd = client.read_smart("/dev/sda").await.expect("SATA HDD");
    assert_eq!(hdd.health(), SmartHealth::Passed);
    assert_eq!(hdd.model, "WDC WD40EFRX-68N32N0");

    let nvme = client.read_smart("/dev/nvme0n1").await.expect("NVMe");
    assert_eq!(nvme.protocol(), DriveProtocol::Nvme);
    assert_eq!(nvme.percentage_used, Some(4));

    let usb = client
        .read_smart("/dev/sde")
        .await
        .expect("USB NVMe bridge");
    assert_eq!(usb.device_type, "sntjmicron");

    let failing = client.read_smart("/dev/sdd").await.expect("failing drive");
    assert_eq!(failing.health(), SmartHealth::Failed);
    assert_eq!(failing.failing_attributes, ["Reallocated_Sector_Ct"]);

    assert_eq!(
        client.read_smart("/dev/sdz").await,
        Err(HelperError::NotFound(
            "smartctl cannot open /dev/sdz (exit status 2)".into()
        ))
    );

    let temps = client.read_sensors().await.expect("sensors");
    assert!(
        temps.iter().any(|t| t.chip == "coretemp-isa-0000"
            && t.label == "Package id 0"
            && t.current_celsius == 46.0),
        "{temps:?}"
    );
    helper.stop().await;
}

#[tokio::test]
async fn invalid_device_is_rejected_naming_the_field() {
    let helper = start_helper();
    let client = HelperClient::new(&helper.socket);
    let err = client
        .read_smart("/dev/sda; reboot")
        .await
        .expect_err("metacharacters refused");
    let HelperError::InvalidArgument { field, .. } = err else {
        panic!("expected InvalidArgument, got {err:?}");
    };
    assert_eq!(field, "device");
    helper.stop().await;
}

/// Writes what `felhom-pvesim --state-json` writes (state JSON and CA PEM, mode 0600) and a
/// `pct` wrapper script adding `--sim-state` (the helper passes no flags or environment).
fn sim_pct_wrapper(sim: &PveSimHandle, dir: &Path) -> PathBuf {
    let ca = dir.join("pvesim.ca.pem");
    let state = dir.join("pvesim.json");
    let private = |path: &Path, data: &[u8]| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .expect("create private file");
        f.write_all(data).expect("write private file");
    };
    private(&ca, sim.ca_pem().as_bytes());
    let tokens = serde_json::json!({
        "root@pam!sim": sim.token("root@pam!sim").expect("fixture root token"),
    });
    let json = serde_json::json!({
        "url": sim.url(),
        "fingerprint": sim.fingerprint(),
        "ca_pem_path": ca,
        "node": sim.node(),
        "tokens": tokens,
    });
    private(&state, json.to_string().as_bytes());
    let wrapper = dir.join("pct");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --sim-state {} \"$@\"\n",
            env!("CARGO_BIN_EXE_felhom-sim-pct"),
            state.display()
        ),
    )
    .expect("write pct wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("make wrapper executable");
    wrapper
}

/// A simulator with short tasks, a helper whose `pct` is the simulator's stand-in, and a
/// client of that helper.
struct GoldenSim {
    sim: PveSimHandle,
    /// The stand-in's state; lives as long as the helper.
    _files: tempfile::TempDir,
    helper: Running,
    client: HelperClient,
}

impl GoldenSim {
    /// Starts the pair and has the helper create golden container `vmid` (asserted to succeed).
    async fn with_golden(vmid: u32) -> Self {
        let sim = PveSim::start(PveSimOptions {
            task_duration: Duration::from_millis(100),
            ..PveSimOptions::default()
        })
        .await
        .expect("simulator starts");
        let files = tempfile::tempdir().expect("temp dir");
        let helper = start_helper_with_pct(Some(sim_pct_wrapper(&sim, files.path())));
        let client = HelperClient::new(&helper.socket);
        assert_eq!(
            client.create_golden(common::golden_spec(vmid)).await,
            Ok(vmid)
        );
        Self {
            sim,
            _files: files,
            helper,
            client,
        }
    }

    async fn shutdown(self) {
        self.helper.stop().await;
        self.sim.shutdown().await;
    }
}

#[tokio::test]
async fn golden_create_builds_a_keyctl_container_in_the_simulator() {
    let golden = GoldenSim::with_golden(9001).await;
    let guest = golden
        .sim
        .state()
        .guest(9001)
        .expect("golden container exists");
    let config = &guest.config;
    let get = |k: &str| config.get(k).map(String::as_str);
    assert_eq!(get("features"), Some("nesting=1,keyctl=1"));
    assert_eq!(get("unprivileged"), Some("1"));
    assert_eq!(get("hostname"), Some("golden"));
    assert_eq!(get("memory"), Some("1024"));
    assert_eq!(get("cores"), Some("2"));
    assert_eq!(get("rootfs"), Some("local-lvm:vm-9001-disk-0,size=8G"));
    assert!(
        get("net0").is_some_and(|n| n.starts_with("name=eth0,bridge=vmbr0,ip=dhcp,hwaddr=")),
        "{config:?}"
    );
    golden.shutdown().await;
}

#[tokio::test]
async fn golden_create_of_a_taken_vmid_fails() {
    let golden = GoldenSim::with_golden(9002).await;
    assert_eq!(
        golden.client.create_golden(common::golden_spec(9002)).await,
        Err(HelperError::Failed(
            "pct create failed with exit status: 255".into()
        ))
    );
    golden.shutdown().await;
}

#[tokio::test]
async fn simulated_root_cli_refuses_tokens_of_other_users() {
    let sim = common::start().await;
    let resp = common::client(&sim)
        .post(format!("{}/_sim/cli/pct-create", sim.url()))
        .header(
            "Authorization",
            format!(
                "PVEAPIToken={}",
                sim.token(common::AGENT).expect("fixture agent token")
            ),
        )
        .form(&[("vmid", "9003"), ("ostemplate", "local:vztmpl/x.tar.zst")])
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        common::reason_of(&resp),
        "felhom-agent@pve!agent is not root@pam on the node"
    );
    assert!(sim.state().guest(9003).is_none());
    sim.shutdown().await;
}
