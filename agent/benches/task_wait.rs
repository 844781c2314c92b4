//! How quickly the agent notices a finished Proxmox task, and how many status reads it costs
//! (issue #21): the real PVE and PBS clients, default [`WaitOptions`], against the simulators
//! (`felhom-pvesim`, `felhom-pbssim`) with fixed task lengths of 0.3, 1, 7 and 60 s.
//!
//! `cargo bench -p felhom-agent --bench task_wait` (about 70 s: everything runs concurrently,
//! the 60 s tasks set the pace). Per product and task length, several tasks are waited for at
//! once, each wait starting a different delay after its task (spread evenly over up to 500 ms,
//! the steady poll period) so the task ends at a different phase of the poll grid — one fixed
//! phase would report a single, possibly lucky, latency. For each task:
//! - notice latency = when `wait_task` returned − when the simulator stopped the task
//!   (`ended_at`, recorded by the simulator to the instant);
//! - status reads per second = the simulator's count of `GET …/tasks/{upid}/status` answers
//!   for that task ÷ how long the wait lasted.
//!
//! Printed as a table (mean and max latency, mean and max reads/s); no assertion — the
//! numbers are the result.

#![allow(clippy::unwrap_used)] // A benchmark: a panic is the failure report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use felhom_agent::infra::pbs::{BackupType, PbsClient, PbsClientConfig, PbsToken, VerifyRequest};
use felhom_agent::infra::pve::{
    ApiToken, CertFingerprint, PveClient, PveClientConfig, TlsTrust, Vmid, WaitOptions,
};
use felhom_simhost::pbs::{PbsSim, PbsSimHandle, PbsSimOptions};
use felhom_simhost::pve::fixture::GuestStatus;
use felhom_simhost::pve::{PveSim, PveSimOptions};
use tokio_util::sync::CancellationToken;

/// Task lengths and how many tasks of each are waited for (fewer for the minute-long ones).
const CASES: [(Duration, usize); 4] = [
    (Duration::from_millis(300), 8),
    (Duration::from_secs(1), 8),
    (Duration::from_secs(7), 8),
    (Duration::from_secs(60), 4),
];
/// The PBS fixture's datastore and a snapshot in it (tests/fixtures/pbs-default.json).
const STORE: &str = "felhom-store";
const CT101_NEW: i64 = 1_781_058_600;

/// One waited-for task.
struct Sample {
    latency: Duration,
    reads_per_sec: f64,
}

/// When the `i`-th of `n` waits starts after its task: evenly over the first half of the task,
/// at most 500 ms, so every wait still starts while its task runs.
fn start_delay(length: Duration, i: usize, n: usize) -> Duration {
    let span = (length / 2).min(Duration::from_millis(500));
    span * u32::try_from(i).unwrap() / u32::try_from(n).unwrap()
}

fn pin(fingerprint: &str) -> TlsTrust {
    TlsTrust::Pinned(CertFingerprint::parse(fingerprint).unwrap())
}

async fn pve_case(length: Duration, n: usize) -> Vec<Sample> {
    let sim = PveSim::start(PveSimOptions {
        task_duration: length,
        ..PveSimOptions::default()
    })
    .await
    .unwrap();
    // One guest per concurrent snapshot: a snapshot locks its guest.
    let config = sim
        .state()
        .with(|w| w.guests.get(&101).unwrap().config.clone());
    for i in 0..n {
        let vmid = 500 + u32::try_from(i).unwrap();
        sim.state()
            .add_guest(vmid, GuestStatus::Running, config.clone())
            .unwrap();
    }
    let pve = PveClient::new(PveClientConfig {
        endpoint: sim.url().parse().unwrap(),
        node: sim.node(),
        token: ApiToken::parse(&sim.token("felhom-agent@pve!agent").unwrap()).unwrap(),
        trust: pin(sim.fingerprint()),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let waits = (0..n).map(|i| {
        let (pve, sim) = (&pve, &sim);
        async move {
            let vmid = Vmid::new(500 + u32::try_from(i).unwrap()).unwrap();
            let upid = pve.snapshot(vmid, "bench", None).await.unwrap();
            tokio::time::sleep(start_delay(length, i, n)).await;
            let started = Instant::now();
            pve.wait_task(&upid, &WaitOptions::default(), &CancellationToken::new())
                .await
                .unwrap();
            let noticed = Instant::now();
            let timing = sim
                .state()
                .with(|w| w.task_timing.get(upid.as_str()).copied())
                .unwrap();
            sample(
                timing.ended_at.unwrap(),
                started,
                noticed,
                timing.status_reads,
            )
        }
    });
    let samples = futures_join_all(waits).await;
    sim.shutdown().await;
    samples
}

async fn pbs_case(length: Duration, n: usize) -> Vec<Sample> {
    let sim: PbsSimHandle = PbsSim::start(PbsSimOptions {
        task_duration: length,
        ..PbsSimOptions::default()
    })
    .await
    .unwrap();
    let pbs = PbsClient::new(PbsClientConfig {
        endpoint: sim.url().parse().unwrap(),
        token: PbsToken::parse(&sim.token("felhom@pbs!agent").unwrap()).unwrap(),
        trust: pin(sim.fingerprint()),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let req = VerifyRequest {
        backup_type: Some(BackupType::Ct),
        backup_id: Some("101".into()),
        backup_time: Some(CT101_NEW),
        ignore_verified: Some(false),
        ..VerifyRequest::default()
    };
    let waits = (0..n).map(|i| {
        let (pbs, sim, req) = (&pbs, &sim, &req);
        async move {
            let upid = pbs.verify(STORE, req).await.unwrap();
            tokio::time::sleep(start_delay(length, i, n)).await;
            let started = Instant::now();
            pbs.wait_task(&upid, &WaitOptions::default(), &CancellationToken::new())
                .await
                .unwrap();
            let noticed = Instant::now();
            let task = sim
                .state()
                .lock()
                .tasks
                .get(upid.as_str())
                .cloned()
                .unwrap();
            sample(task.ended_at.unwrap(), started, noticed, task.status_reads)
        }
    });
    let samples = futures_join_all(waits).await;
    sim.shutdown().await;
    samples
}

fn sample(ended: Instant, started: Instant, noticed: Instant, reads: u32) -> Sample {
    Sample {
        latency: noticed.saturating_duration_since(ended),
        reads_per_sec: f64::from(reads) / (noticed - started).as_secs_f64(),
    }
}

/// Runs the futures concurrently on this task and collects their outputs in order. (They
/// borrow the client and the simulator, so they cannot be spawned; polling a handful of them
/// on every wake-up is cheap.)
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, fut) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

fn row(product: &str, length: Duration, samples: &[Sample]) -> String {
    let n = samples.len() as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean_lat = samples.iter().map(|s| ms(s.latency)).sum::<f64>() / n;
    let max_lat = samples.iter().map(|s| ms(s.latency)).fold(0.0, f64::max);
    let mean_rate = samples.iter().map(|s| s.reads_per_sec).sum::<f64>() / n;
    let max_rate = samples.iter().map(|s| s.reads_per_sec).fold(0.0, f64::max);
    format!(
        "| {product:<7} | {:>6.1} s | {:>5} | {mean_lat:>10.0} | {max_lat:>9.0} | {mean_rate:>11.2} | {max_rate:>10.2} |",
        length.as_secs_f64(),
        samples.len(),
    )
}

#[tokio::main]
async fn main() {
    let opts = WaitOptions::default();
    println!(
        "task wait: default WaitOptions (fast period {:?} for the first 2 s, then {:?})",
        opts.initial_backoff, opts.max_backoff
    );
    let t0 = Instant::now();
    let mut runs = Vec::new();
    for (length, n) in CASES {
        runs.push((
            "PVE",
            length,
            tokio::spawn(async move { pve_case(length, n).await }),
        ));
        runs.push((
            "PBS",
            length,
            tokio::spawn(async move { pbs_case(length, n).await }),
        ));
    }
    let mut results: BTreeMap<(&str, Duration), Vec<Sample>> = BTreeMap::new();
    for (product, length, run) in runs {
        results.insert((product, length), run.await.unwrap());
    }
    println!(
        "| product | task len | tasks | mean notice ms | max notice ms | mean reads/s | max reads/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for product in ["PVE", "PBS"] {
        for (length, _) in CASES {
            println!("{}", row(product, length, &results[&(product, length)]));
        }
    }
    println!("(ran {:.0} s)", t0.elapsed().as_secs_f64());
}
