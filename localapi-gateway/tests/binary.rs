//! The standalone binary: `--print-pins` prints the persisted identity's pins.

use felhom_localapi_gateway::cert;

#[test]
fn print_pins_creates_then_reuses_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_felhom-localapi-gateway"))
            .args(["--print-pins", "--state-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    let pins = cert::load(dir.path()).unwrap().pins().clone();
    assert_eq!(
        first,
        serde_json::json!({
            "leaf_sha256_hex": pins.leaf_sha256_hex,
            "spki_sha256_base64": pins.spki_sha256_base64,
        })
    );
    assert_eq!(run(), first);
}

#[test]
fn serving_without_a_listen_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_felhom-localapi-gateway"))
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "felhom-localapi-gateway: give at least one --listen ADDR:PORT"
    );
}
