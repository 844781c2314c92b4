//! Nothing about a token reaches the log: requests are logged with method, route, status and
//! duration only, at every level down to TRACE (including the dependencies' own logging).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("no writer panics while holding the log buffer")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_reach_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    let unknown = "unknown-token-that-must-not-be-logged";
    send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    send(h.client().get(h.url("/storage")).bearer_auth(unknown)).await;
    send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_B)
            .json(&serde_json::json!({"name": BUSY_SNAPSHOT})),
    )
    .await;
    send(h.client().get(h.url("/backup/due")).bearer_auth(TOKEN_A)).await;
    h.shutdown().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("local API request"),
        "nothing was logged:\n{log}"
    );
    assert!(
        log.contains("method=GET route=\"/storage\" status=200"),
        "{log}"
    );
    for secret in [TOKEN_A, TOKEN_B, unknown] {
        assert!(!log.contains(secret), "a token appears in the log");
    }
}
