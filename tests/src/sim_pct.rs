//! Stand-in for `pct` on the simulated host: `pct create` against the Proxmox VE simulator.
//!
//! Usage: `felhom-sim-pct --sim-state <state.json> create <vmid> <ostemplate> [--<opt> <value>]…`
//!
//! The real `pct create` (pve-container `src/PVE/CLI/pct.pm`) calls
//! `PVE::API2::LXC::create_vm` as `root@pam` with `vmid` and `ostemplate` positional and every
//! other API parameter as `--<name> <value>`, waits for the worker task and exits 0 only if it
//! ended `OK` (`$upid_exit`). This stand-in does the same against the simulator: it posts the
//! parameters to the simulator's root-CLI endpoint `POST /_sim/cli/pct-create` (the public API
//! would refuse `keyctl` for any token, exactly like Proxmox), then polls
//! `GET /api2/json/nodes/{node}/tasks/{upid}/status`, prints the task log and exits 0 on `OK`,
//! 255 otherwise (what pct's `exit(-1)` becomes).
//!
//! The simulator's URL, CA, node and the `root@pam!sim` token come from the state JSON that
//! `felhom-pvesim --state-json` writes (mode 0600); the token never appears in argv. The
//! helper runs programs with a fixed argv and an empty environment, so the simulated host
//! points the helper's `--pct` at a two-line wrapper script that adds `--sim-state <file>`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use crate::percent::percent_encode;

/// The fixture token that stands for root on the node.
const ROOT_TOKEN: &str = "root@pam!sim";
/// pct's exit status when the API call or the task fails (`exit(-1)`).
const FAILED: u8 = 255;

/// A connection to the simulator as root@pam (shared with the `pveum` stand-in).
pub(crate) struct Sim {
    pub(crate) url: String,
    pub(crate) node: String,
    pub(crate) token: String,
    pub(crate) client: reqwest::Client,
}

/// The stand-in `pct` with `args` (without the program name).
pub fn pct_main(args: &[String]) -> ExitCode {
    block_on_cli("felhom-sim-pct", "felhom-sim-pct: ", run(args))
}

/// Runs a stand-in's `main` on a current-thread runtime: its exit status, or 255 with the
/// error (after `error_prefix`) on stderr, as the PVE CLIs end.
pub(crate) fn block_on_cli(
    program: &str,
    error_prefix: &str,
    main: impl std::future::Future<Output = anyhow::Result<u8>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(main) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{error_prefix}{e:#}");
            ExitCode::from(FAILED)
        }
    }
}

async fn run(args: &[String]) -> anyhow::Result<u8> {
    let [flag, state_path, command, rest @ ..] = args else {
        bail!(
            "usage: felhom-sim-pct --sim-state <state.json> create <vmid> <ostemplate> [--<opt> <value>]..."
        );
    };
    if flag != "--sim-state" {
        bail!("the first argument must be --sim-state <state.json>, got {flag}");
    }
    if command != "create" {
        bail!("only 'pct create' is simulated, got '{command}'");
    }
    let form = create_form(rest)?;
    let sim = connect(state_path)?;

    let resp = sim
        .client
        .post(format!("{}/_sim/cli/pct-create", sim.url))
        .header("Authorization", format!("PVEAPIToken={}", sim.token))
        .form(&form)
        .send()
        .await
        .context("Cannot reach the simulator")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        // Like the PVE CLI: status line, then per-parameter errors.
        eprintln!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        if let Some(errors) = body.get("errors").and_then(Value::as_object) {
            for (param, text) in errors {
                eprintln!("{param}: {}", text.as_str().unwrap_or_default());
            }
        }
        return Ok(FAILED);
    }
    let upid = body
        .get("data")
        .and_then(Value::as_str)
        .context("the simulator answered without a UPID")?
        .to_owned();
    let exitstatus = wait_task(&sim, &upid).await?;
    for line in task_log(&sim, &upid).await? {
        println!("{line}");
    }
    if exitstatus == "OK" {
        Ok(0)
    } else {
        eprintln!("TASK ERROR: {exitstatus}");
        Ok(FAILED)
    }
}

/// `<vmid> <ostemplate> [--name value]...` → form parameters of `POST /nodes/{node}/lxc`.
fn create_form(rest: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let [vmid, ostemplate, options @ ..] = rest else {
        bail!("400 not enough arguments\npct create <vmid> <ostemplate> [OPTIONS]");
    };
    let mut form = vec![
        ("vmid".to_owned(), vmid.clone()),
        ("ostemplate".to_owned(), ostemplate.clone()),
    ];
    let mut it = options.iter();
    while let Some(opt) = it.next() {
        let Some(name) = opt.strip_prefix("--").or_else(|| opt.strip_prefix('-')) else {
            bail!("400 too many arguments: unexpected '{opt}'");
        };
        let Some(value) = it.next() else {
            bail!("400 missing value for option '{name}'");
        };
        form.push((name.to_owned(), value.clone()));
    }
    Ok(form)
}

pub(crate) fn connect(state_path: &str) -> anyhow::Result<Sim> {
    let text = std::fs::read_to_string(state_path)
        .with_context(|| format!("Cannot read simulator state {state_path}"))?;
    let state: Value = serde_json::from_str(&text).context("Simulator state is not JSON")?;
    let field = |name: &str| {
        state
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("Simulator state has no {name}"))
    };
    let url = field("url")?;
    let node = field("node")?;
    let ca_path = field("ca_pem_path")?;
    let token = state
        .get("tokens")
        .and_then(|t| t.get(ROOT_TOKEN))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("Simulator state has no {ROOT_TOKEN} token"))?;
    let ca_pem = std::fs::read(&ca_path).with_context(|| format!("Cannot read {ca_path}"))?;
    let ca =
        CertificateDer::from_pem_slice(&ca_pem).context("Simulator CA is not a PEM certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .context("Simulator CA is not a valid trust anchor")?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup failed")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .context("Cannot build the HTTP client")?;
    Ok(Sim {
        url,
        node,
        token,
        client,
    })
}

async fn get(sim: &Sim, path: &str) -> anyhow::Result<Value> {
    let resp = sim
        .client
        .get(format!("{}/api2/json{path}", sim.url))
        .header("Authorization", format!("PVEAPIToken={}", sim.token))
        .send()
        .await
        .with_context(|| format!("GET {path} failed"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {path}: {status}");
    }
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("GET {path}: not JSON"))?;
    Ok(body.get("data").cloned().unwrap_or(Value::Null))
}

/// Polls the task until it stops (pct itself waits as long as it takes; the helper's own
/// timeout bounds this) and returns its exit status.
async fn wait_task(sim: &Sim, upid: &str) -> anyhow::Result<String> {
    let path = format!("/nodes/{}/tasks/{}/status", sim.node, percent_encode(upid));
    loop {
        let status = get(sim, &path).await?;
        if status.get("status").and_then(Value::as_str) == Some("stopped") {
            return Ok(status
                .get("exitstatus")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn task_log(sim: &Sim, upid: &str) -> anyhow::Result<Vec<String>> {
    let path = format!(
        "/nodes/{}/tasks/{}/log?limit=1000",
        sim.node,
        percent_encode(upid)
    );
    let lines = get(sim, &path).await?;
    Ok(lines
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.get("t").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
