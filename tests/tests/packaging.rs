//! The shipped packaging: both systemd units pass `systemd-analyze verify`, their exposure
//! scores (`systemd-analyze security --offline=yes`) stay under the limits, they cap memory,
//! threads and open files, the agent may bind the local API's port only, and the Debian
//! package (cargo-deb) contains every file the install guide relies on.
//!
//! The real binaries are needed (verify checks every `ExecStart=` program, cargo-deb packs
//! them): the tests build them with the same cargo and target directory as the test run
//! (`cargo build -p felhom-agent -p felhom-helper`, instant when `cargo test --workspace` has
//! already built them), and copy them into a temporary root for `systemd-analyze --root=`.
//! The .deb is made with `cargo deb --no-build` from those debug binaries (no release build
//! inside the test run: seconds instead of many minutes on 2 cores).
//!
//! Tools that may be absent (systemd-analyze, cargo-deb, dpkg-deb): the test prints why it
//! skipped and returns; it never passes having checked nothing silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use felhom_localapi_gateway::config::{DEFAULT_PORT, Limits};
use felhom_simhost::packaging::{
    AGENT_MAX_EXPOSURE, HELPER_MAX_EXPOSURE, build_deb, built_binaries, cargo_deb_available,
    tool_available, workspace_root,
};

fn unit_path(name: &str) -> PathBuf {
    workspace_root().join("packaging/systemd").join(name)
}

fn copy(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).expect("create directory in the temp root");
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory in the temp root");
    for entry in std::fs::read_dir(from).expect("read system unit directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).expect("read symlink");
            std::os::unix::fs::symlink(link, &target).expect("recreate symlink");
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            copy(&entry.path(), &target);
        }
    }
}

#[test]
fn both_units_pass_systemd_analyze_verify() {
    let test = "both_units_pass_systemd_analyze_verify";
    if !tool_available("systemd-analyze", &["--version"], test) {
        return;
    }
    let bins = built_binaries();
    let root = tempfile::tempdir().expect("temp root");
    let r = root.path();
    // verify resolves the units' dependencies (sysinit.target, network-online.target, …) and
    // ExecStart= programs inside --root: give it the host's system units and the real binaries.
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &r.join("usr/lib/systemd/system"),
    );
    for unit in ["felhom-agent.service", "felhom-helper.service"] {
        copy(&unit_path(unit), &r.join("etc/systemd/system").join(unit));
    }
    copy(&bins.join("felhom-agent"), &r.join("usr/bin/felhom-agent"));
    copy(
        &bins.join("felhom-helper"),
        &r.join("usr/sbin/felhom-helper"),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args(["felhom-agent.service", "felhom-helper.service"])
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(
        stderr.trim().is_empty() && out.stdout.is_empty(),
        "verify warned:\n{stderr}"
    );
}

/// The "Overall exposure level" of one unit file.
fn exposure(unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path(unit))
        .output()
        .expect("systemd-analyze runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level for {unit}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"))
}

#[test]
fn agent_unit_exposure_is_at_most_1_5() {
    if !tool_available(
        "systemd-analyze",
        &["--version"],
        "agent_unit_exposure_is_at_most_1_5",
    ) {
        return;
    }
    let score = exposure("felhom-agent.service");
    println!("felhom-agent.service exposure: {score} (limit {AGENT_MAX_EXPOSURE})");
    assert!(score <= AGENT_MAX_EXPOSURE, "agent exposure {score}");
}

#[test]
fn helper_unit_exposure_is_at_most_4_3() {
    if !tool_available(
        "systemd-analyze",
        &["--version"],
        "helper_unit_exposure_is_at_most_4_3",
    ) {
        return;
    }
    let score = exposure("felhom-helper.service");
    println!("felhom-helper.service exposure: {score} (limit {HELPER_MAX_EXPOSURE})");
    assert!(score <= HELPER_MAX_EXPOSURE, "helper exposure {score}");
}

/// The `[Service]` assignments of a unit file by key, in order. An empty assignment resets
/// the key's list, as systemd does for list settings (`SocketBindAllow=`, …).
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(unit_path(unit)).expect("unit file in the repo");
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{unit}: not an assignment: {line:?}"));
        let values = settings.entry(key.trim().to_owned()).or_default();
        match value.trim() {
            "" => values.clear(),
            v => values.push(v.to_owned()),
        }
    }
    settings
}

/// The one value of `key` (panics when unset or set more than once).
fn single<'a>(settings: &'a BTreeMap<String, Vec<String>>, unit: &str, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{unit}: {key}= must be set exactly once, found {other:?}"),
    }
}

/// A number of the unit's, as a plain integer (a `SOFT:HARD` pair or `infinity` fails).
fn integer(settings: &BTreeMap<String, Vec<String>>, unit: &str, key: &str) -> u64 {
    let value = single(settings, unit, key);
    value
        .parse()
        .unwrap_or_else(|_| panic!("{unit}: {key}={value} is not a plain number"))
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// `MemoryMax=` as bytes: a number with an optional K/M/G/T suffix (base 1024, as systemd
/// reads it); a percentage or `infinity` fails: the limit must be absolute.
fn memory_max(settings: &BTreeMap<String, Vec<String>>, unit: &str) -> u64 {
    let value = single(settings, unit, "MemoryMax");
    let (digits, factor) = match value.as_bytes().last() {
        Some(b'K') => (&value[..value.len() - 1], 1024),
        Some(b'M') => (&value[..value.len() - 1], MIB),
        Some(b'G') => (&value[..value.len() - 1], GIB),
        Some(b'T') => (&value[..value.len() - 1], 1024 * GIB),
        _ => (value, 1),
    };
    digits
        .parse::<u64>()
        .map(|n| n * factor)
        .unwrap_or_else(|_| panic!("{unit}: MemoryMax={value} is not an absolute size"))
}

#[test]
fn agent_unit_caps_resources_and_binds_only_the_local_api_port() {
    let unit = "felhom-agent.service";
    let s = service_settings(unit);

    let memory = memory_max(&s, unit);
    assert!(
        (256 * MIB..=2 * GIB).contains(&memory),
        "{unit}: MemoryMax {memory} bytes: want 256 MiB..=2 GiB (the agent buffers no backup data)"
    );
    // tokio: one worker per CPU plus up to 512 blocking threads; the agent runs no programs.
    let tasks = integer(&s, unit, "TasksMax");
    assert!(
        (512 + 128..=4096).contains(&tasks),
        "{unit}: TasksMax={tasks}: want room for 512 blocking threads and 128 workers, at most 4096"
    );
    // One descriptor per local-API connection, and as many again for everything else.
    let files = integer(&s, unit, "LimitNOFILE");
    let connections = u64::try_from(Limits::default().max_connections).expect("fits in u64");
    assert!(
        (8 * connections..=65_536).contains(&files),
        "{unit}: LimitNOFILE={files}: want 8 × the default {connections} connections..=65536"
    );

    // Binding: the local API's port, nothing else (outbound connections bind nothing).
    let port = format!("tcp:{DEFAULT_PORT}");
    assert_eq!(
        s.get("SocketBindAllow").map(Vec::as_slice),
        Some([port.clone()].as_slice()),
        "{unit}: SocketBindAllow="
    );
    assert_eq!(
        s.get("SocketBindDeny").map(Vec::as_slice),
        Some(["any".to_owned()].as_slice()),
        "{unit}: SocketBindDeny="
    );
    // The example configuration and the guide name the port the unit allows.
    let example = std::fs::read_to_string(workspace_root().join("packaging/agent.example.toml"))
        .expect("example configuration in the repo");
    let listen = example
        .lines()
        .find(|l| l.starts_with("# listen = ["))
        .expect("the example shows a [local_api] listen line");
    assert!(
        listen.contains(&format!(":{DEFAULT_PORT}\"")),
        "the example's {listen:?} is not on the unit's port {DEFAULT_PORT}"
    );
    let guide = std::fs::read_to_string(workspace_root().join("packaging/INSTALL.md"))
        .expect("packaging/INSTALL.md");
    assert!(
        guide.contains(&format!("`SocketBindAllow={port}`"))
            && guide.contains("felhom-agent.service.d/local-api-port.conf"),
        "INSTALL.md must name the allowed port and the drop-in for another one"
    );
}

#[test]
fn helper_unit_caps_resources() {
    let unit = "felhom-helper.service";
    let s = service_settings(unit);

    // Its programs share the cgroup: pct create with template extraction is the largest.
    let memory = memory_max(&s, unit);
    assert!(
        (512 * MIB..=4 * GIB).contains(&memory),
        "{unit}: MemoryMax {memory} bytes: want 512 MiB (room for pct create)..=4 GiB"
    );
    let tasks = integer(&s, unit, "TasksMax");
    assert!(
        (64..=1024).contains(&tasks),
        "{unit}: TasksMax={tasks}: want 64..=1024"
    );
    let files = integer(&s, unit, "LimitNOFILE");
    assert!(
        (1024..=4096).contains(&files),
        "{unit}: LimitNOFILE={files}: want 1024..=4096"
    );
    // No IP at all, so no port to allow: the address-family and IP filters stay.
    assert_eq!(
        s.get("RestrictAddressFamilies").map(Vec::as_slice),
        Some(["AF_UNIX".to_owned()].as_slice())
    );
    assert_eq!(
        s.get("IPAddressDeny").map(Vec::as_slice),
        Some(["any".to_owned()].as_slice())
    );
}

/// Every file the package must contain (as `dpkg-deb -c` lists them).
const DEB_FILES: &[&str] = &[
    "./usr/bin/felhom-agent",
    "./usr/bin/felhomctl",
    "./usr/sbin/felhom-helper",
    "./usr/lib/systemd/system/felhom-agent.service",
    "./usr/lib/systemd/system/felhom-helper.service",
    "./usr/lib/sysusers.d/felhom.conf",
    "./usr/lib/tmpfiles.d/felhom.conf",
    "./etc/felhom/agent.toml.example",
    "./usr/share/doc/felhom-host-agent/INSTALL.md",
];

#[test]
fn deb_contains_binaries_units_and_configuration() {
    let test = "deb_contains_binaries_units_and_configuration";
    if !cargo_deb_available(test) || !tool_available("dpkg-deb", &["--version"], test) {
        return;
    }
    let out_dir = tempfile::tempdir().expect("temp output dir");
    let deb = build_deb(out_dir.path());

    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs");
    let listing = String::from_utf8_lossy(&listing.stdout);
    println!("{listing}");
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for want in DEB_FILES {
        assert!(
            paths.contains(want),
            "{want} missing from the .deb:\n{listing}"
        );
    }

    let control = Command::new("dpkg-deb")
        .arg("--ctrl-tarfile")
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs");
    let ctrl_dir = tempfile::tempdir().expect("temp control dir");
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(ctrl_dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tar runs");
    std::io::Write::write_all(
        tar.stdin.as_mut().expect("tar stdin is piped"),
        &control.stdout,
    )
    .expect("feed the control archive to tar");
    drop(tar.stdin.take());
    assert!(tar.wait().expect("tar finishes").success());
    for script in ["postinst", "prerm", "postrm"] {
        let shipped = std::fs::read_to_string(ctrl_dir.path().join(script))
            .unwrap_or_else(|e| panic!("{script} missing from the .deb: {e}"));
        let ours = std::fs::read_to_string(workspace_root().join("packaging/debian").join(script))
            .expect("maintainer script in the repo");
        assert_eq!(
            shipped, ours,
            "{script} differs from packaging/debian/{script}"
        );
    }
    let conffiles = std::fs::read_to_string(ctrl_dir.path().join("conffiles"))
        .expect("the example config is a conffile");
    assert!(
        conffiles.contains("/etc/felhom/agent.toml.example"),
        "{conffiles}"
    );
}

#[test]
fn postinst_never_starts_a_service() {
    let postinst = std::fs::read_to_string(workspace_root().join("packaging/debian/postinst"))
        .expect("postinst in the repo");
    // Commands only (the closing message tells the operator how to start the service).
    for line in postinst.lines().map(str::trim_start) {
        let mut words = line.split_whitespace();
        let program = words.next().unwrap_or_default();
        if program == "systemctl" || program == "deb-systemd-invoke" {
            let verbs: Vec<&str> = words.filter(|w| !w.starts_with('-')).collect();
            let verb = verbs.first().copied().unwrap_or_default();
            assert!(
                !["start", "restart", "reload", "reload-or-restart"].contains(&verb)
                    && !line.contains("--now"),
                "postinst starts a service: {line}"
            );
        }
    }
}
