//! GET /storage over TLS keep-alive: the gateway calling the fake LocalApi service in process
//! (as the agent's embedded gateway does) and over a real Unix socket (as a standalone gateway
//! does), next to a bare hyper + rustls server returning the same bytes, in one run.
//!
//! 32 concurrent clients (one keep-alive connection each, TLS 1.3, HTTP/1.1) share a budget of
//! 20,000 requests or 10 s, whichever ends first; handshakes happen in an unmeasured warm-up
//! request. Client and servers share this process and machine, so absolute numbers include the
//! client's own cost; the ratio is the point. The gateway runs with its per-token rate limit
//! raised out of the way (every client uses the same token), everything else at defaults.
//!
//! Run: `cargo bench -p felhom-localapi-gateway --bench storage`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Harness, TOKEN_A, leaf_pinned_client, start_bare};
use felhom_localapi_gateway::{Limits, cert};

const CLIENTS: usize = 32;
const REQUESTS: usize = 20_000;
const TIME_BUDGET: Duration = Duration::from_secs(10);

struct Row {
    name: &'static str,
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime can be built in a bench");
    runtime.block_on(async {
        let limits = Limits {
            rate_per_second: 1_000_000,
            rate_burst: 1_000_000,
            source_rate_per_second: 1_000_000,
            source_rate_burst: 1_000_000,
            max_connections_per_source: 1_000,
            ..Limits::default()
        };
        let embedded = Harness::in_process_with_limits(limits.clone()).await;
        let in_process = load(
            "gateway, LocalApi in process",
            embedded.addr,
            &embedded.gateway.pins().leaf_sha256_hex,
        )
        .await;
        embedded.shutdown().await;
        let harness = Harness::with_limits(limits).await;
        let pin = harness.gateway.pins().leaf_sha256_hex;
        let reference = leaf_pinned_client(&pin)
            .get(harness.url("/storage"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .expect("the gateway answers")
            .bytes()
            .await
            .expect("the gateway sends a body");
        let gateway = load("gateway, LocalApi socket", harness.addr, &pin).await;

        let bare_dir = tempfile::tempdir().expect("a temp dir can be created");
        let bare_pin = cert::load_or_create(bare_dir.path())
            .expect("a certificate can be created")
            .pins()
            .leaf_sha256_hex
            .clone();
        let bare_addr = start_bare(bare_dir.path(), reference.clone()).await;
        let bare = load("bare hyper + rustls", bare_addr, &bare_pin).await;

        println!();
        println!(
            "GET /storage, TLS 1.3 keep-alive, {CLIENTS} clients, up to {REQUESTS} requests or {} s; response {} bytes",
            TIME_BUDGET.as_secs(),
            reference.len()
        );
        println!(
            "| {:<29} | {:>8} | {:>7} | {:>10} | {:>9} | {:>9} | {:>6} |",
            "server", "requests", "secs", "req/s", "p50 ms", "p99 ms", "errors"
        );
        println!("|{:-<31}|{:->10}|{:->9}|{:->12}|{:->11}|{:->11}|{:->8}|", "", "", "", "", "", "", "");
        for row in [&in_process, &gateway, &bare] {
            println!(
                "| {:<29} | {:>8} | {:>7.2} | {:>10.0} | {:>9.3} | {:>9.3} | {:>6} |",
                row.name,
                row.requests,
                row.elapsed.as_secs_f64(),
                rps(row),
                ms(row.p50),
                ms(row.p99),
                row.errors
            );
        }
        for row in [&in_process, &gateway] {
            println!(
                "{} / bare: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
                row.name,
                rps(row) / rps(&bare),
                ms(row.p50) / ms(bare.p50),
                ms(row.p99) / ms(bare.p99)
            );
        }
        harness.shutdown().await;
    });
}

fn rps(row: &Row) -> f64 {
    row.requests as f64 / row.elapsed.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn load(name: &'static str, addr: SocketAddr, pin: &str) -> Row {
    let url = format!("https://{addr}/storage");
    let budget = Arc::new(AtomicUsize::new(REQUESTS));
    let errors = Arc::new(AtomicUsize::new(0));
    // Warm-up: one request per client opens its connection and does the handshake.
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = leaf_pinned_client(pin);
        let warm = client.get(&url).bearer_auth(TOKEN_A).send().await;
        assert!(
            warm.is_ok_and(|r| r.status() == 200),
            "{name}: warm-up failed"
        );
        clients.push(client);
    }
    let started = Instant::now();
    let deadline = started + TIME_BUDGET;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (url, budget, errors) = (url.clone(), budget.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline
                    && budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                {
                    let t = Instant::now();
                    let ok = match client.get(&url).bearer_auth(TOKEN_A).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(t.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(REQUESTS);
    for w in workers {
        all.extend(w.await.expect("a bench worker does not panic"));
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Row {
        name,
        requests: all.len(),
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}
