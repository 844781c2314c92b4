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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Harness, TOKEN_A, leaf_pinned_client};
use felhom_localapi_gateway::{Limits, cert};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// A minimal HTTPS server: rustls (same provider, versions and key type as the gateway) and
/// hyper HTTP/1 keep-alive, answering every request with `body`.
async fn start_bare(state_dir: &std::path::Path, body: Bytes) -> SocketAddr {
    let cert = CertificateDer::from_pem_file(state_dir.join(cert::CERT_FILE))
        .expect("the certificate was just written");
    let key = PrivateKeyDer::from_pem_file(state_dir.join(cert::KEY_FILE))
        .expect("the key was just written");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .expect("ring supports TLS 1.2 and 1.3")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("the key matches the certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback can be bound");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(body));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}
