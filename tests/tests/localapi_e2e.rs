//! The guests' local API end to end: a pinned HTTPS client → the gateway embedded in the real
//! agent daemon (a separate process, started by [`Devhost`]) → the agent's LocalApi over its
//! own Unix socket → the simulated Proxmox VE. Tokens are minted through the agent's operator
//! RPCs, as `felhomctl token mint` does.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;
use std::time::Duration;

use felhom_agent::ctl::token::{self, TokenAction};
use felhom_agent::ctl::{self, CtlError};
use felhom_simhost::devhost::{Devhost, DevhostOptions, TempDevhost};
use felhom_simhost::pinned::{pinned_client, pinned_tls};
use felhom_simhost::pve::fixture::GuestStatus;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

/// A running devhost with its temporary directory (removed after the devhost stops).
struct Host(TempDevhost);

impl Host {
    async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// With `env` added to the agent's environment (`FELHOM_AGENT_*` config overrides).
    async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let options = DevhostOptions {
            agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
            agent_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..DevhostOptions::default()
        };
        Self(TempDevhost::start(&options).await.unwrap())
    }

    /// `POST /snapshot` as guest 101 with `name`.
    async fn snapshot_101(&self, name: &str) -> (u16, String) {
        send(
            self.client()
                .post(self.url("/snapshot"))
                .bearer_auth(self.token(101))
                .json(&serde_json::json!({ "name": name })),
        )
        .await
    }

    fn snapshots_of_101(&self) -> Vec<String> {
        let g = self.dh().pve().state().guest(101).unwrap();
        g.snapshots.iter().map(|s| s.name.clone()).collect()
    }

    fn dh(&self) -> &Devhost {
        self.0.dh()
    }

    fn token(&self, vmid: u32) -> String {
        let guest = self.dh().info.guests.iter().find(|g| g.vmid == vmid);
        guest.unwrap().token.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.dh().info.local_api_endpoint)
    }

    /// A client that trusts exactly the leaf devhost.json names.
    fn client(&self) -> reqwest::Client {
        pinned_client(&self.dh().info.local_api_pin_sha256)
    }

    async fn stop(self) {
        self.0.stop().await.unwrap();
    }
}

/// A pinned TLS connection to the gateway.
async fn connect(
    addr: &str,
    pin: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pinned_tls(pin)));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localapi.felhom.invalid").unwrap();
    connector.connect(name, tcp).await
}

/// A pinned TLS handshake with the gateway, nothing more.
async fn handshake(addr: &str, pin: &str) -> std::io::Result<()> {
    connect(addr, pin).await.map(drop)
}

/// Status and raw body text.
async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn envelope(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn failure(error: &str) -> serde_json::Value {
    serde_json::json!({"ok": false, "data": null, "error": error})
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_of_guest_101_has_the_documented_shape() {
    let h = Host::start().await;
    let (status, body) = send(h.client().get(h.url("/storage")).bearer_auth(h.token(101))).await;
    assert_eq!(status, 200, "{body}");
    // Byte for byte: vmid first, mount fields in LOCAL-API.md order, classes from devhost's
    // [local_api.storage_classes] (local-lvm = fast), backup=0 on mp0 honoured.
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"mounts":[{"key":"rootfs","storage":"local-lvm","mount_point":"/","class":"fast","backup":true},{"key":"mp0","storage":"local-lvm","mount_point":"/mnt/bulk","class":"fast","backup":false}]},"error":""}"#
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_fails_at_the_handshake() {
    let h = Host::start().await;
    let addr = h.dh().info.local_api_endpoint.clone();
    handshake(&addr, &h.dh().info.local_api_pin_sha256)
        .await
        .unwrap();
    let err = handshake(&addr, &"0".repeat(64)).await.unwrap_err();
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        inner,
        Some(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure
        )),
        "{err:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_published_pins_are_the_served_certificate() {
    let h = Host::start().await;
    let info = &h.dh().info;
    let pins = ctl::shortcut::run(&info.agent_socket, ctl::shortcut::find("pins").unwrap())
        .await
        .unwrap();
    assert_eq!(pins.json["leafSha256Hex"], info.local_api_pin_sha256);
    assert_eq!(
        pins.json["spkiSha256Base64"],
        info.local_api_pin_spki_sha256
    );
    assert_eq!(
        pins.json["listen"],
        serde_json::json!([info.local_api_endpoint])
    );
    handshake(&info.local_api_endpoint, &info.local_api_pin_sha256)
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_token_get_401() {
    let h = Host::start().await;
    let (status, body) = send(h.client().get(h.url("/storage"))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(envelope(&body), failure("missing Authorization header"));

    let (status, body) = send(
        h.client()
            .get(h.url("/storage"))
            .header("Authorization", "Basic Zm9vOmJhcg=="),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        envelope(&body),
        failure("malformed Authorization header: expected 'Bearer <token>'")
    );

    // Well formed, never minted.
    let unknown = format!("fhg_{}", "A".repeat(43));
    let (status, body) = send(h.client().get(h.url("/storage")).bearer_auth(unknown)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(envelope(&body), failure("unknown or revoked token"));

    let (status, body) = send(
        h.client()
            .get(h.url("/storage"))
            .bearer_auth("not-a-felhom-token"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(envelope(&body), failure("unknown or revoked token"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_102_token_only_ever_sees_guest_102() {
    let h = Host::start().await;
    let (status, body) = send(h.client().get(h.url("/storage")).bearer_auth(h.token(102))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":102,"mounts":[{"key":"rootfs","storage":"local-lvm","mount_point":"/","class":"fast","backup":true}]},"error":""}"#
    );

    // A snapshot of 101 cannot be rolled back with 102's token; nothing happens to 101.
    let (status, body) = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(h.token(101))
            .json(&serde_json::json!({"name": "only_101"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        h.client()
            .post(h.url("/rollback"))
            .bearer_auth(h.token(102))
            .json(&serde_json::json!({"snapshot": "only_101"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        envelope(&body),
        failure("guest 102 has no snapshot 'only_101'")
    );
    let rollbacks = h.dh().pve().state().tasks();
    assert!(
        !rollbacks.iter().any(|t| t.kind == "vzrollback"),
        "no rollback task may run: {rollbacks:?}"
    );
    assert_eq!(
        h.dh().pve().state().guest(101).unwrap().status,
        GuestStatus::Running
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_rollback_round_trip_through_the_simulator() {
    let h = Host::start().await;
    let (status, body) = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(h.token(101))
            .json(&serde_json::json!({"name": "e2e_before", "description": "end to end"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let snap = envelope(&body);
    assert_eq!(snap["ok"], true);
    assert_eq!(snap["data"]["vmid"], 101);
    assert_eq!(snap["data"]["snapshot"], "e2e_before");
    let snap_job = snap["data"]["job_id"].as_str().unwrap().to_owned();
    assert!(!snap_job.is_empty(), "{body}");
    let g101 = h.dh().pve().state().guest(101).unwrap();
    let taken = g101.snapshots.iter().find(|s| s.name == "e2e_before");
    assert_eq!(taken.map(|s| s.description.as_str()), Some("end to end"));

    let (status, body) = send(
        h.client()
            .post(h.url("/rollback"))
            .bearer_auth(h.token(101))
            .json(&serde_json::json!({"snapshot": "e2e_before"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let back = envelope(&body);
    assert_eq!(back["data"]["vmid"], 101);
    assert_eq!(back["data"]["snapshot"], "e2e_before");
    let rollback_job = back["data"]["job_id"].as_str().unwrap();
    assert!(
        !rollback_job.is_empty() && rollback_job != snap_job,
        "{body}"
    );
    let g101 = h.dh().pve().state().guest(101).unwrap();
    assert_eq!(
        g101.config.get("parent").map(String::as_str),
        Some("e2e_before")
    );
    assert_eq!(g101.status, GuestStatus::Running, "guest runs again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_at_its_snapshot_cap_gets_409_and_no_snapshot() {
    let h = Host::start_with_env(&[
        ("FELHOM_AGENT_SNAPSHOTS_MAX_PER_GUEST", "2"),
        ("FELHOM_AGENT_SNAPSHOTS_MIN_INTERVAL_SECS", "0"),
    ])
    .await;
    let before = h.snapshots_of_101();
    for name in ["cap_1", "cap_2"] {
        let (status, body) = h.snapshot_101(name).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = h.snapshot_101("cap_3").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        envelope(&body),
        failure(
            "guest 101 already has 2 agent-made snapshots (the limit is 2); an operator must delete one first"
        )
    );
    let after = h.snapshots_of_101();
    assert_eq!(after.len(), before.len() + 2, "{after:?}");
    assert!(!after.contains(&"cap_3".to_owned()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_snapshot_within_the_minimum_interval_gets_429() {
    let h = Host::start().await;
    let (status, body) = h.snapshot_101("first").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.snapshot_101("second").await;
    assert_eq!(status, 429, "{body}");
    let error = envelope(&body)["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("guest 101 took a snapshot 0 s ago; the next one is allowed in 30"),
        "{error}"
    );
    assert!(!h.snapshots_of_101().contains(&"second".to_owned()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_is_refused_while_the_guests_storage_is_past_the_warning_fill() {
    let h = Host::start_with_env(&[("FELHOM_AGENT_SNAPSHOTS_MIN_INTERVAL_SECS", "0")]).await;
    let before = h.snapshots_of_101();
    h.dh().pve().state().with(|w| {
        let s = w
            .storages
            .iter_mut()
            .find(|s| s.storage == "local-lvm")
            .unwrap();
        s.used = s.total / 100 * 85;
    });
    let (status, body) = h.snapshot_101("full_data").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        envelope(&body),
        failure(
            "storage local-lvm of guest 101 is 85% full (used space); snapshots are refused from 80% on"
        )
    );
    // Data fill fine, but the thin pool's metadata is at 91 %.
    h.dh().pve().state().with(|w| {
        let s = w
            .storages
            .iter_mut()
            .find(|s| s.storage == "local-lvm")
            .unwrap();
        s.used = s.total / 2;
        let pool = &mut w.node.lvmthin[0];
        let size = pool["metadata_size"].as_u64().unwrap();
        pool["metadata_used"] = serde_json::json!(size / 100 * 91);
    });
    let (status, body) = h.snapshot_101("full_meta").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        envelope(&body),
        failure(
            "storage local-lvm of guest 101 is 91% full (thin pool metadata); snapshots are refused from 80% on"
        )
    );
    assert_eq!(h.snapshots_of_101(), before);
    h.stop().await;
}

/// Texts a guest must never see: they belong to the host operator.
fn assert_no_host_detail(body: &str) {
    for secret in [
        "UPID:",
        "felhom-agent@pve",
        "/vms/",
        "/dev/",
        "nodes/",
        "Permission check",
    ] {
        assert!(
            !body.contains(secret),
            "{secret:?} reached the guest: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_snapshot_task_gives_the_guest_a_fixed_text_without_proxmox_detail() {
    let h = Host::start().await;
    h.dh().pve().faults().fail_next_tasks(
        "vzsnapshot",
        1,
        Some("command '/sbin/lvcreate -s -n snap_vm-101-disk-0_x pve/vm-101-disk-0' failed: exit code 5"),
    );
    let (status, body) = h.snapshot_101("will_fail").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        envelope(&body),
        failure("the Proxmox task failed; the host operator can see why in the agent's log")
    );
    assert_no_host_detail(&body);
    assert!(!body.contains("lvcreate"), "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_privilege_the_agent_lacks_is_named_to_the_guest_without_the_acl_path() {
    let h = Host::start().await;
    h.dh().pve().state().with(|w| {
        w.access
            .roles
            .get_mut("FelhomAgent")
            .unwrap()
            .remove("VM.Snapshot");
    });
    let (status, body) = h.snapshot_101("no_priv").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        envelope(&body),
        failure(
            "the host agent is not permitted to do this on Proxmox; the host operator must fix the agent's role"
        )
    );
    assert_no_host_detail(&body);
    h.stop().await;
}

/// Backing up is not allowed for a guest no policy names (403); asking whether one is due is,
/// and says why not.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_without_a_backup_policy_gets_403_for_a_backup() {
    let h = Host::start().await;
    let minted = token::run(&h.dh().info.agent_socket, TokenAction::Mint, 103)
        .await
        .unwrap();
    let (status, body) = send(
        h.client()
            .post(h.url("/backup"))
            .bearer_auth(&minted.line)
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        envelope(&body),
        failure("backups are not enabled for this guest")
    );
    let (status, body) = send(
        h.client()
            .get(h.url("/backup/due"))
            .bearer_auth(&minted.line),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let due = envelope(&body);
    assert_eq!(due["data"]["due"], false, "{body}");
    println!("due for a guest without policy: {body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_gets_401() {
    let h = Host::start().await;
    let (status, _) = send(h.client().get(h.url("/storage")).bearer_auth(h.token(101))).await;
    assert_eq!(status, 200);
    let revoked = token::run(&h.dh().info.agent_socket, TokenAction::Revoke, 101)
        .await
        .unwrap();
    assert_eq!((revoked.line.as_str(), revoked.ok), ("revoked", true));
    let (status, body) = send(h.client().get(h.url("/storage")).bearer_auth(h.token(101))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(envelope(&body), failure("unknown or revoked token"));
    // The other guest is unaffected.
    let (status, _) = send(h.client().get(h.url("/storage")).bearer_auth(h.token(102))).await;
    assert_eq!(status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_token_replaces_the_old_one() {
    let h = Host::start().await;
    let socket = &h.dh().info.agent_socket;
    let fresh = token::run(socket, TokenAction::Rotate, 102).await.unwrap();
    assert_ne!(fresh.line, h.token(102));
    let (status, _) = send(h.client().get(h.url("/storage")).bearer_auth(h.token(102))).await;
    assert_eq!(status, 401);
    let (status, body) = send(h.client().get(h.url("/storage")).bearer_auth(&fresh.line)).await;
    assert_eq!(status, 200, "{body}");
    // Minting again for a guest that has a token is refused, naming the guest.
    let err = token::run(socket, TokenAction::Mint, 102)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CtlError::Status { status } if status.code() == tonic::Code::AlreadyExists),
        "{err}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_gets_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Host::start().await;
    // Only the head: the gateway answers from Content-Length alone, and a client still writing
    // a body the server will not read could see its connection reset before the answer.
    let mut tls = connect(
        &h.dh().info.local_api_endpoint,
        &h.dh().info.local_api_pin_sha256,
    )
    .await
    .unwrap();
    let head = format!(
        "POST /snapshot HTTP/1.1\r\nHost: localapi\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        h.token(101),
        70 * 1024
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    let env = envelope(body);
    assert_eq!(
        (env["ok"].clone(), env["data"].clone()),
        (false.into(), serde_json::Value::Null),
        "{body}"
    );
    assert!(!env["error"].as_str().unwrap().is_empty(), "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_certificate_changes_the_served_pin() {
    let h = Host::start().await;
    let info = &h.dh().info;
    let old = info.local_api_pin_sha256.clone();
    let mut session = ctl::Session::connect(&info.agent_socket).await.unwrap();
    let mut replies = Vec::new();
    session
        .call(
            "felhom.agent.v1.Agent/RotateLocalApiCertificate",
            &ctl::RequestSource::Empty,
            |r| {
                replies.push(r.clone());
                Ok(())
            },
        )
        .await
        .unwrap();
    let new = replies[0]["leafSha256Hex"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    handshake(&info.local_api_endpoint, &new).await.unwrap();
    assert!(handshake(&info.local_api_endpoint, &old).await.is_err());
    let pins = ctl::shortcut::run(&info.agent_socket, ctl::shortcut::find("pins").unwrap())
        .await
        .unwrap();
    assert_eq!(pins.json["leafSha256Hex"], new);
    // The rotation is an audited operator action.
    let mut tail = Vec::new();
    session
        .call(
            "felhom.agent.v1.Agent/AuditTail",
            &ctl::RequestSource::Empty,
            |r| {
                tail.push(r.clone());
                Ok(())
            },
        )
        .await
        .unwrap();
    let entries = tail[0]["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "local_api.rotate_certificate"
                && e["detail"] == format!("new leaf sha256 {new}")),
        "{entries:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_lives_in_a_private_directory_under_the_state_dir() {
    use std::os::unix::fs::PermissionsExt;
    let h = Host::start().await;
    let dir = h.dh().info.state_dir.join("agent-state").join("local-api");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("localapi-key.pem")), 0o600);
    let pem = std::fs::read(dir.join("localapi-cert.pem")).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|c: CertificateDer<'static>| c)
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(der.as_ref())),
        h.dh().info.local_api_pin_sha256
    );
    h.stop().await;
}
