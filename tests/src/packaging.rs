//! Test support for the shipped package: the workspace paths, the shipped binaries built with
//! the test run's own cargo and profile, and the `.deb` packed from them with cargo-deb.
//! Shared by `tests/tests/packaging.rs` (offline checks of the units and the .deb) and
//! `tests/tests/real_systemd.rs` (the .deb installed into a booted systemd).
//!
//! These helpers run inside test binaries and panic with the failing command's output: the
//! panic is the test's failure report.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Highest accepted exposure of felhom-agent.service (`systemd-analyze security`): the score
/// it has (1.5 offline, 0.1 of it AF_NETLINK for the listen-address check), so a change that
/// loosens the sandbox shows up as a failure.
pub const AGENT_MAX_EXPOSURE: f64 = 1.5;
/// Highest accepted exposure of felhom-helper.service: the score it has. The helper runs in
/// a private mount namespace (ProtectSystem=strict, PrivateTmp=, ProtectKernel*=, …) and
/// performs host mounts and pct through PID 1's mount namespace (helper/src/hostns.rs); each
/// remaining exposure is explained in the unit.
pub const HELPER_MAX_EXPOSURE: f64 = 4.3;

/// The workspace root (the tests crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_owned()
}

/// The profile directory the running test binary was built into (`target/<dir>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}

/// The target directory of this run (parent of [`profile_dir`]).
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the profile directory lives in the target directory")
        .to_owned()
}

/// The cargo profile name of [`profile_dir`] (`debug` is the `dev` profile).
pub fn cargo_profile() -> String {
    match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => panic!("unexpected target directory {}", profile_dir().display()),
    }
}

/// True when `program ARGS` runs and succeeds; otherwise prints `SKIPPED <test>: …` with why.
pub fn tool_available(program: &str, args: &[&str], test: &str) -> bool {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            println!(
                "SKIPPED {test}: `{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            println!("SKIPPED {test}: cannot run {program}: {e}");
            false
        }
    }
}

/// True when cargo-deb is installed (as a cargo subcommand); otherwise prints why the test skips.
pub fn cargo_deb_available(test: &str) -> bool {
    tool_available(env!("CARGO"), &["deb", "--version"], test)
}

/// Builds the three shipped binaries with this run's cargo and profile (instant when `cargo
/// test --workspace` has built them already); returns the directory holding them.
pub fn built_binaries() -> PathBuf {
    let dir = profile_dir();
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["build", "--locked", "--profile", &cargo_profile()])
        .args(["-p", "felhom-agent", "-p", "felhom-helper", "--bins"])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building the packaged binaries failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bin in ["felhom-agent", "felhomctl", "felhom-helper"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} missing in {}",
            dir.display()
        );
    }
    dir
}

/// Builds the binaries ([`built_binaries`]) and packs `felhom-host-agent_*.deb` into `out_dir`
/// with `cargo deb --no-build` from them (no release build inside a test run: seconds instead
/// of many minutes on 2 cores); returns the .deb's path.
pub fn build_deb(out_dir: &Path) -> PathBuf {
    built_binaries();
    let build = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["deb", "--locked", "-p", "felhom-agent", "--no-build"])
        .args(["--profile", &cargo_profile(), "--no-strip", "--fast", "-o"])
        .arg(out_dir)
        .output()
        .expect("cargo deb runs");
    assert!(
        build.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let deb = std::fs::read_dir(out_dir)
        .expect("read the .deb output directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb");
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(name.starts_with("felhom-host-agent_"), "{name}");
    deb
}
