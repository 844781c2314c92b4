//! Shared setup for the PBS end-to-end tests: a simulator on loopback and the agent's PBS client
//! pinned to its certificate.

#![allow(dead_code)] // Each test file uses a different subset.

use std::time::Duration;

use felhom_agent::infra::pbs::{
    CertFingerprint, PbsClient, PbsClientConfig, PbsToken, TlsTrust, WaitOptions,
};
use felhom_simhost::pbs::{PbsSim, PbsSimHandle, PbsSimOptions};

pub const STORE: &str = "felhom-store";
pub const AGENT: &str = "felhom@pbs!agent";
/// Fixture snapshot times (see tests/fixtures/pbs-default.json).
pub const CT101_OLD: i64 = 1_780_972_200;
pub const CT101_NEW: i64 = 1_781_058_600;
pub const CT102_OLD: i64 = 1_780_972_260;
pub const CT102_PLAIN: i64 = 1_781_058_660;

pub async fn start() -> PbsSimHandle {
    PbsSim::start(PbsSimOptions {
        task_duration: Duration::from_millis(100),
        ..PbsSimOptions::default()
    })
    .await
    .expect("simulator starts")
}

pub fn client_with(sim: &PbsSimHandle, token: &str, trust: TlsTrust) -> PbsClient {
    PbsClient::new(PbsClientConfig {
        endpoint: sim.url().parse().expect("simulator URL parses"),
        token: PbsToken::parse(token).expect("token parses"),
        trust,
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
    })
    .expect("client builds")
}

pub fn pin(sim: &PbsSimHandle) -> TlsTrust {
    TlsTrust::Pinned(CertFingerprint::parse(sim.fingerprint()).expect("fingerprint parses"))
}

/// The agent's client with the fixture token, pinned to the simulator's certificate.
pub fn client(sim: &PbsSimHandle, authid: &str) -> PbsClient {
    let token = sim.token(authid).expect("token exists");
    client_with(sim, &token, pin(sim))
}

/// Generous limits for a loaded 2-core machine; quick polling.
pub fn wait_opts() -> WaitOptions {
    WaitOptions {
        deadline: Duration::from_secs(120),
        request_timeout: Duration::from_secs(30),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(250),
        watched_period: Duration::from_millis(250),
        log_tail_lines: 50,
    }
}
