//! Shared helpers for the simulator tests: start a sim, build a reqwest client that trusts the
//! sim's CA (real HTTPS), call the API, wait for tasks.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use felhom_agent::infra::helper::CreateGoldenRequest;
use felhom_simhost::pbs::PbsSimOptions;
use felhom_simhost::pve::pbs_link::{LinkedOptions, LinkedSims};
use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

pub const AGENT: &str = "felhom-agent@pve!agent";
pub const TOKENONLY: &str = "tokenonly@pve!agent";
pub const ROOT: &str = "root@pam!sim";
pub const AUDITOR: &str = "auditor@pve!ro";
pub const GOLDEN: &str = "local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst";

/// Starts a sim with short tasks.
pub async fn start() -> PveSimHandle {
    start_with(PveSimOptions {
        task_duration: Duration::from_millis(150),
        ..PveSimOptions::default()
    })
    .await
}

pub async fn start_with(opts: PveSimOptions) -> PveSimHandle {
    PveSim::start(opts).await.expect("simulator starts")
}

/// A client trusting the sim's CA.
pub fn client(sim: &PveSimHandle) -> reqwest::Client {
    client_with_timeout(sim, Duration::from_secs(60))
}

pub fn client_with_timeout(sim: &PveSimHandle, timeout: Duration) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(sim.ca_pem().as_bytes()).expect("CA PEM parses");
    roots.add(ca).expect("CA is a valid trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .build()
        .expect("client builds")
}

/// What a test sees of one answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

pub async fn call(
    sim: &PveSimHandle,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    form: &[(&str, &str)],
) -> Answer {
    let url = format!("{}/api2/json{path}", sim.url());
    let mut req = client(sim).request(method.clone(), &url);
    if let Some(authid) = token {
        let full = sim.token(authid).expect("fixture token exists");
        req = req.header("Authorization", format!("PVEAPIToken={full}"));
    }
    if !form.is_empty() {
        req = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            req.query(form)
        } else {
            req.form(form)
        };
    }
    let resp = req.send().await.expect("request is answered");
    answer(resp).await
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let reason = reason_of(&resp);
    let text = resp.text().await.expect("body reads");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        reason,
        body,
    }
}

/// The HTTP reason phrase (hyper exposes non-canonical ones as an extension).
pub fn reason_of(resp: &reqwest::Response) -> String {
    match resp.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
        None => resp
            .status()
            .canonical_reason()
            .unwrap_or_default()
            .to_owned(),
    }
}

pub async fn get(sim: &PveSimHandle, token: &str, path: &str) -> Answer {
    call(sim, Some(token), reqwest::Method::GET, path, &[]).await
}

pub async fn post(sim: &PveSimHandle, token: &str, path: &str, form: &[(&str, &str)]) -> Answer {
    call(sim, Some(token), reqwest::Method::POST, path, form).await
}

pub async fn put(sim: &PveSimHandle, token: &str, path: &str, form: &[(&str, &str)]) -> Answer {
    call(sim, Some(token), reqwest::Method::PUT, path, form).await
}

/// Polls a task until it stops; returns its final status object.
pub async fn wait_task(sim: &PveSimHandle, token: &str, upid: &str) -> Value {
    let path = format!("/nodes/pve1/tasks/{}/status", urlencode(upid));
    for _ in 0..600 {
        let a = get(sim, token, &path).await;
        assert_eq!(a.status, 200, "task status answered: {}", a.reason);
        if a.data()["status"] == "stopped" {
            return a.data().clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {upid} did not stop within 30 s");
}

/// The task log lines.
pub async fn task_log(sim: &PveSimHandle, token: &str, upid: &str) -> Vec<String> {
    let path = format!("/nodes/pve1/tasks/{}/log?limit=1000", urlencode(upid));
    let a = get(sim, token, &path).await;
    a.data()
        .as_array()
        .expect("log is a list")
        .iter()
        .map(|l| l["t"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Percent-encodes a path segment (everything but RFC 3986's unreserved characters).
pub fn urlencode(s: &str) -> String {
    felhom_simhost::percent::percent_encode(s)
}

/// Starts a PVE simulator whose `felhom-pbs` storage is backed by a running PBS simulator
/// (with a storage encryption key when `encrypted`), both with short tasks.
pub async fn start_linked(encrypted: bool) -> LinkedSims {
    let defaults = LinkedOptions::default();
    LinkedSims::start(LinkedOptions {
        pve: PveSimOptions {
            task_duration: Duration::from_millis(150),
            ..PveSimOptions::default()
        },
        pbs: PbsSimOptions {
            task_duration: Duration::from_millis(100),
            ..defaults.pbs.clone()
        },
        encrypted,
        ..defaults
    })
    .await
    .expect("linked simulators start")
}

/// A valid golden-container request for `vmid` (Debian 12 template, bridged to `vmbr0`).
pub fn golden_spec(vmid: u32) -> CreateGoldenRequest {
    CreateGoldenRequest {
        vmid,
        template_volid: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        hostname: "golden".into(),
        storage: "local-lvm".into(),
        disk_gib: 8,
        memory_mib: 1024,
        cores: 2,
        bridge: Some("vmbr0".into()),
    }
}
