//! The fuzz targets (`fuzz/`, a cargo-fuzz crate outside the workspace) survive a short run
//! over their committed corpora: `fuzz/run ci` builds them once and runs each for
//! `FUZZ_CI_SECS` seconds (default 10), so a parser change that panics, hangs or leaks on an
//! input the campaign already found shows up here. The long runs are `fuzz/run campaign`.
//!
//! Needs the nightly toolchain and cargo-fuzz; without either the script says SKIPPED (exit
//! 0) and so does this test.

use std::process::Command;

use felhom_simhost::packaging::workspace_root;

#[test]
fn fuzz_targets_survive_a_short_run() {
    let test = "fuzz_targets_survive_a_short_run";
    let script = workspace_root().join("fuzz/run");
    let out = Command::new("bash")
        .arg(&script)
        .arg("ci")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success()
        && let Some(line) = stdout.lines().find(|l| l.starts_with("SKIPPED"))
    {
        println!("SKIPPED {test}: {line}");
        return;
    }
    assert!(
        out.status.success(),
        "fuzz/run ci failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("no crash"),
        "fuzz/run ci ran nothing:\n{stdout}"
    );
    println!("{stdout}");
}
