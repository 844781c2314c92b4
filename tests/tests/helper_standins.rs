//! The simulated host's hardware path end to end: the agent's `HelperClient` → the real
//! helper service on a Unix socket → the `felhom-sim-smartctl` / `felhom-sim-sensors`
//! stand-ins printing recorded outputs.

use std::sync::Arc;
use std::time::Duration;

use felhom_agent::helper_client::{DriveProtocol, Helper, HelperClient, HelperError, SmartHealth};
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
    let dir = tempfile::tempdir().expect("temp dir");
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
        golden_vmids: 9000..=9099,
        pct: dir.path().join("no-pct"),
        smartctl: env!("CARGO_BIN_EXE_felhom-sim-smartctl").into(),
        sensors: env!("CARGO_BIN_EXE_felhom-sim-sensors").into(),
        blkid: "/usr/sbin/blkid".into(),
        pct_timeout: Duration::from_secs(60),
        read_timeout: Duration::from_secs(60),
        // In-process: the test process keeps its own identity and capabilities.
        unprivileged_dev: true,
    };
    let listener = server::bind(&cfg).expect("bind helper socket");
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
