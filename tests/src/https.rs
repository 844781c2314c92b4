//! The HTTPS accept loop shared by the simulators: TLS (rustls) in front of an HTTP/1.1 hyper
//! service, one task per connection, stopped by a oneshot. HTTP/1 only, because Proxmox's
//! servers speak it for the API and PVE's error text lives in the HTTP/1 reason phrase.

use std::future::Future;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves `handler` on every TLS connection accepted from `listener` until `stop` fires (or its
/// sender is dropped), then ends all open connections. A handler error makes hyper close that
/// connection without an answer (used for fault injection).
pub async fn serve<H, Fut, E>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: H,
    mut stop: oneshot::Receiver<()>,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(&handler);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}
