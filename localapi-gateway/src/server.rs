//! Listeners, TLS, and the life of a connection.
//!
//! One accept loop per configured address. The accept loop never waits for anything but
//! `accept`: a connection beyond [`crate::Limits::max_connections`], or beyond
//! [`crate::Limits::max_connections_per_source`] from one source address, is closed at once (its
//! peer sees the handshake fail), and the TLS handshake, with its own timeout, runs in the
//! connection's task. TLS is rustls with the ring provider, TLS 1.3 preferred and 1.2 the minimum; ALPN
//! offers `h2` and `http/1.1`, and the negotiated protocol picks hyper's HTTP/2 or HTTP/1
//! server directly (no preface sniffing, so a silent client cannot stall outside a timeout).
//!
//! Timeouts: TLS handshake; HTTP/1 request head (which hyper also applies while a keep-alive
//! connection waits for its next request); request body (in [`crate::service`]); an idle
//! watchdog closing any connection with no request in flight for
//! [`crate::Limits::idle_timeout`] since its last request — bytes alone (HTTP/2 PINGs) do not
//! keep it open; and [`crate::Limits::max_connection_age`], after which a connection is asked
//! to finish gracefully.
//!
//! Limits: requests hyper rejects before they reach the service (an unparsable request line,
//! a request head over [`crate::Limits::max_header_list_bytes`]) get hyper's own bodiless
//! 400/431 rather than the envelope, and a head that times out is closed without a response;
//! no well-behaved client sends such requests. Caller-provokable warnings (connection cap,
//! accept errors, agent failures) are logged at most once a minute.
//!
//! Shutdown: [`Gateway::shutdown`] stops the accept loops, asks every connection to finish
//! gracefully (HTTP/1: close after the in-flight response; HTTP/2: GOAWAY), and drops whatever
//! is still running after [`crate::Limits::shutdown_grace`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cert::{self, CertError, Pins};
use crate::config::{ConfigError, GatewayConfig};
use crate::ratelimit::RateLimiter;
use crate::service::{self, Shared};
use crate::throttle::LogThrottle;
use crate::upstream::LocalApiClient;

/// Interval of caller-provokable warnings (connection cap, accept errors).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    local_addrs: Vec<SocketAddr>,
    state_dir: std::path::PathBuf,
    live: Arc<LiveCert>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    refused: Arc<AtomicU64>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid gateway configuration")]
    Config(#[from] ConfigError),
    #[error("cannot load the gateway certificate")]
    Cert(#[from] CertError),
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Why a live certificate rotation failed (the old certificate stays in use).
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("cannot create the new certificate")]
    Cert(#[from] CertError),
    #[error("the new certificate is unusable for TLS")]
    Tls(#[source] rustls::Error),
}

impl Gateway {
    /// Loads (or creates) the certificate, binds every listen address and starts serving,
    /// calling the agent through `client` (see [`crate::connect_unix`]).
    pub async fn start(config: GatewayConfig, client: LocalApiClient) -> Result<Self, StartError> {
        config.validate()?;
        let identity = cert::load_or_create(&config.state_dir)?;
        let live = Arc::new(LiveCert {
            current: RwLock::new((
                identity.certified_key().map_err(StartError::Tls)?,
                identity.pins().clone(),
            )),
        });
        let tls = tls_config(live.clone()).map_err(StartError::Tls)?;

        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(listener);
        }
        let local_addrs = listeners
            .iter()
            .zip(&config.listen)
            .map(|(l, addr)| {
                l.local_addr().map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let limits = config.limits.clone();
        let ctx = Arc::new(ConnCtx {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            shared: Arc::new(Shared {
                client,
                limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
                source_limiter: RateLimiter::new(
                    limits.source_rate_per_second,
                    limits.source_rate_burst,
                ),
                limits: limits.clone(),
                upstream_error_log: LogThrottle::new(LOG_EVERY),
            }),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_source: Arc::new(SourceSlots {
                max: limits.max_connections_per_source,
                open: Mutex::new(HashMap::new()),
            }),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            refused: Arc::new(AtomicU64::new(0)),
            refusal_log: LogThrottle::new(LOG_EVERY),
            accept_error_log: LogThrottle::new(LOG_EVERY),
        });
        for (listener, addr) in listeners.into_iter().zip(&local_addrs) {
            tracing::info!(%addr, "local API listening");
            ctx.tasks.spawn(accept_loop(listener, ctx.clone()));
        }
        Ok(Self {
            local_addrs,
            state_dir: config.state_dir,
            live,
            shutdown: ctx.shutdown.clone(),
            tasks: ctx.tasks.clone(),
            grace: limits.shutdown_grace,
            refused: ctx.refused.clone(),
        })
    }

    /// The bound addresses, in the order of [`GatewayConfig::listen`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The pins of the certificate being served.
    pub fn pins(&self) -> Pins {
        self.live.get().1
    }

    /// Connections closed because the connection cap was reached, since start.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Operator action: generates and persists a new certificate and serves it to new
    /// connections from now on. Returns the new pins (every guest needs them).
    pub fn rotate_certificate(&self) -> Result<Pins, RotateError> {
        let identity = cert::rotate(&self.state_dir)?;
        let key = identity.certified_key().map_err(RotateError::Tls)?;
        let pins = identity.pins().clone();
        *self
            .live
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = (key, pins.clone());
        tracing::info!(leaf_sha256 = %pins.leaf_sha256_hex, "local API certificate rotated");
        Ok(pins)
    }

    /// Stops accepting, lets in-flight requests finish (bounded by the shutdown grace), and
    /// returns when every connection is gone.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        // Connections finish gracefully within `grace` on their own; the extra second covers
        // tasks that were between accept and their first select.
        let _ = tokio::time::timeout(self.grace + Duration::from_secs(1), self.tasks.wait()).await;
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] still stops: listeners close and
    /// connections wind down gracefully in the background.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The certificate the TLS server presents, swappable for rotation.
#[derive(Debug)]
struct LiveCert {
    current: RwLock<(Arc<CertifiedKey>, Pins)>,
}

impl LiveCert {
    fn get(&self) -> (Arc<CertifiedKey>, Pins) {
        // Only whole values are ever written; a poisoned lock still holds a consistent pair.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().0)
    }
}

fn tls_config(live: Arc<LiveCert>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Listing 1.3 first makes it preferred; 1.2 stays for older clients (LOCAL-API.md).
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(live);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What every connection task shares.
struct ConnCtx {
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    per_source: Arc<SourceSlots>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    refused: Arc<AtomicU64>,
    refusal_log: LogThrottle,
    accept_error_log: LogThrottle,
}

async fn accept_loop(listener: TcpListener, ctx: Arc<ConnCtx>) {
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually EMFILE/ENFILE: back off briefly instead of spinning on the error.
                if ctx.accept_error_log.allow() {
                    tracing::warn!(error = %e, "local API accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            let refused_total = ctx.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if ctx.refusal_log.allow() {
                tracing::warn!(
                    refused_total,
                    "local API connection cap reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let source = peer.ip().to_canonical();
        let Some(source_slot) = SourceSlots::take(&ctx.per_source, source) else {
            let refused_total = ctx.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if ctx.refusal_log.allow() {
                tracing::warn!(
                    refused_total,
                    %source,
                    "local API per-source connection cap reached; closing its new connections"
                );
            }
            drop(stream);
            continue;
        };
        ctx.tasks.spawn(serve_connection(
            ctx.clone(),
            stream,
            source,
            (permit, source_slot),
        ));
    }
}

/// Runs a hyper connection until it ends, or until shutdown or idleness asks it to finish;
/// then gives it the shutdown grace to do so. (A macro because hyper's HTTP/1 and HTTP/2
/// connections share `graceful_shutdown` but no trait.)
macro_rules! drive {
    ($conn:expr, $ctx:expr, $activity:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let idle = idle_watch($activity.clone(), $ctx.shared.limits.idle_timeout);
        tokio::pin!(idle);
        let aged = tokio::time::sleep_until(
            tokio::time::Instant::from_std($activity.origin)
                + $ctx.shared.limits.max_connection_age,
        );
        tokio::pin!(aged);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "local API connection ended with an error");
                }
                return;
            }
            () = $ctx.shutdown.cancelled() => {}
            () = &mut idle => {}
            () = &mut aged => tracing::debug!("local API connection reached its maximum age"),
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout($ctx.shared.limits.shutdown_grace, conn).await;
    }};
}

async fn serve_connection(
    ctx: Arc<ConnCtx>,
    stream: TcpStream,
    source: IpAddr,
    _slots: (OwnedSemaphorePermit, SourceSlot),
) {
    let _ = stream.set_nodelay(true);
    let limits = &ctx.shared.limits;
    let tls = tokio::select! {
        () = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(limits.tls_handshake_timeout, ctx.acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => tls,
            // A failed or slow handshake is the client's problem (or a port scan); not logged
            // above debug so it cannot flood the log.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
    };
    // Idleness and age count from here: the handshake has its own timeout.
    let activity = Arc::new(Activity::new());
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let shared = ctx.shared.clone();
    let svc_activity = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let in_flight = InFlight::begin(svc_activity.clone());
        async move {
            let response = service::handle(shared, source, req).await;
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(tls);
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(limits.max_header_list_bytes)
            .serve_connection(io, svc);
        drive!(conn, ctx, activity);
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .max_buf_size(limits.max_header_list_bytes as usize)
            .serve_connection(io, svc);
        drive!(conn, ctx, activity);
    }
}

/// Open connections per source address; a [`SourceSlot`] gives its place back when dropped.
struct SourceSlots {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceSlots {
    fn take(slots: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        // The map holds only counters; a panic elsewhere cannot leave it inconsistent.
        let mut open = slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(source).or_insert(0);
        if *count >= slots.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            slots: slots.clone(),
            source,
        })
    }
}

/// One open connection of a source address.
struct SourceSlot {
    slots: Arc<SourceSlots>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// When a connection's last request began or ended, and how many are in flight on it.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Counts a request as in flight until dropped (also when its future is dropped early).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.touch();
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the connection has had no request in flight for `idle` since its last one.
async fn idle_watch(activity: Arc<Activity>, idle: Duration) {
    loop {
        let quiet = activity.quiet_for();
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        if !busy && quiet >= idle {
            return;
        }
        let wait = if busy { idle } else { idle - quiet };
        tokio::time::sleep(wait).await;
    }
}
