//! Resource limits over real sockets: per-token rate limit, slow-header clients, many idle
//! connections, the connection cap, and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use felhom_localapi_gateway::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_spares_other_tokens() {
    let h = Harness::with_limits(Limits {
        rate_per_second: 1,
        rate_burst: 5,
        ..Limits::default()
    })
    .await;
    // 20 requests at 1/s after a burst of 5: some are refused unless the machine takes >15 s.
    let mut limited = None;
    for _ in 0..20 {
        let r = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("no request was rate limited");
    assert_eq!(
        r.body,
        error_envelope("rate limit exceeded for this token; retry later")
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let calls_before = h.fake().calls().len();
    // The refused request did not reach the agent...
    assert!(calls_before <= 19);
    // ...and another guest is unaffected.
    let other = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_B)).await;
    assert_eq!(other.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn slow_header_client_is_cut_off_while_another_is_served() {
    let h = Harness::with_limits(Limits {
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let pin = h.gateway.pins().leaf_sha256_hex;
    let mut slow = raw_tls(h.addr, &pin).await.unwrap();
    slow.write_all(b"GET /storage HTTP/1.1\r\nHost: gateway\r\nAuthor")
        .await
        .unwrap();
    slow.flush().await.unwrap();

    // Served while the slow client holds its connection.
    let r = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);

    // The slow connection is closed by the server (EOF or reset), not left hanging.
    let mut buf = [0u8; 1024];
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an error response, then the close
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "slow-header connection was not cut off");
    assert!(
        h.fake().calls().len() == 1,
        "the half request never reached the agent"
    );
    h.shutdown().await;
}

/// Raises the soft open-files limit to at least `want` (bounded by the hard limit).
fn ensure_open_files(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit only reads it.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "hard open-files limit is below {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_idle_tls_connections_do_not_stop_a_new_client() {
    // Both ends of every connection live in this process.
    ensure_open_files(2 * 1000 + 200);
    let h = Harness::with_limits(Limits {
        max_connections: 1100,
        max_connections_per_source: 1100,
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        tls_handshake_timeout: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let pin = h.gateway.pins().leaf_sha256_hex;
    let mut idle = Vec::with_capacity(1000);
    while idle.len() < 1000 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let pin = pin.clone();
                let addr = h.addr;
                tokio::spawn(async move { raw_tls(addr, &pin).await.unwrap() })
            })
            .collect();
        for t in batch {
            idle.push(t.await.unwrap());
        }
    }
    let r = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.gateway.refused_connections(), 0);
    drop(idle);
    h.shutdown().await;
}

#[tokio::test]
async fn connection_beyond_the_cap_is_closed_and_the_slot_is_reused() {
    let h = Harness::with_limits(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let pin = h.gateway.pins().leaf_sha256_hex;
    let first = raw_tls(h.addr, &pin).await.unwrap();
    let _second = raw_tls(h.addr, &pin).await.unwrap();
    assert!(
        raw_tls(h.addr, &pin).await.is_err(),
        "third connection was served"
    );
    assert_eq!(h.gateway.refused_connections(), 1);

    drop(first);
    // Once the server notices the close, the slot serves a new client.
    let client = h.client();
    let mut served = false;
    for _ in 0..600 {
        if let Ok(r) = client
            .get(h.url("/storage"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the freed slot was never reused");
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_in_flight_request_and_stops_accepting() {
    let h = Harness::start().await;
    let client = h.client();
    let url = h.url("/snapshot");
    let in_flight = tokio::spawn(async move {
        send(
            client
                .post(url)
                .bearer_auth(TOKEN_A)
                .json(&serde_json::json!({"name": SLOW_SNAPSHOT})),
        )
        .await
    });
    let fake = h.fake().clone();
    eventually("the slow call to reach the agent", || {
        !fake.calls().is_empty()
    })
    .await;

    let Harness {
        gateway,
        addr,
        agent,
        dir: _dir,
    } = h;
    let stopping = tokio::spawn(gateway.shutdown());
    // New connections are refused once the listener is gone.
    let mut refused = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the gateway kept accepting after shutdown");

    fake.release_slow();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["snapshot"], SLOW_SNAPSHOT);
    stopping.await.unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn quiet_http2_connection_is_closed_after_the_idle_timeout() {
    let h = Harness::with_limits(Limits {
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(pinned_tls_config(
        Pin::LeafHex(h.gateway.pins().leaf_sha256_hex),
        &[b"h2"],
    )));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut tls = connector
        .connect("localapi.felhom.invalid".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Say nothing; the server must hang up on its own.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // SETTINGS / GOAWAY frames before the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle HTTP/2 connection was never closed");
    h.shutdown().await;
}

#[tokio::test]
async fn body_that_stops_arriving_is_408() {
    let h = Harness::with_limits(Limits {
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let mut tls = raw_tls(h.addr, &h.gateway.pins().leaf_sha256_hex)
        .await
        .unwrap();
    let head = format!(
        "POST /snapshot HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{{\"name\""
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), tls.read_to_end(&mut response))
        .await
        .expect("the gateway never answered the stalled body")
        .ok();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        text.ends_with(
            r#"{"ok":false,"data":null,"error":"the request body did not arrive in time"}"#
        ),
        "{text}"
    );
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

/// Reads until the server closes the connection or `within` passes; `true` when it closed.
/// While waiting, `poke` is written every 200 ms (bytes that are not a request).
async fn closed_by_server<S>(stream: &mut S, poke: &[u8], within: Duration) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        if !poke.is_empty() && stream.write_all(poke).await.is_err() {
            return true;
        }
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        // EOF or a reset is the close; data or a quiet 200 ms is not.
        if let Ok(Ok(0) | Err(_)) = read {
            return true;
        }
    }
}

/// The HTTP/2 client preface with an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// An HTTP/2 PING frame (8-byte payload, stream 0).
const H2_PING: &[u8] = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingping";

#[tokio::test]
async fn http2_pings_do_not_keep_an_idle_connection_open() {
    let h = Harness::with_limits(Limits {
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let pin = h.gateway.pins().leaf_sha256_hex;
    let mut tls = raw_tls_with(h.addr, &pin, None, b"h2").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(H2_PREFACE).await.unwrap();

    assert!(
        closed_by_server(&mut tls, H2_PING, Duration::from_secs(20)).await,
        "a connection sending only PINGs was kept open"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_busy_connection_is_closed_at_its_maximum_age() {
    let h = Harness::with_limits(Limits {
        max_connection_age: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let pin = h.gateway.pins().leaf_sha256_hex;
    let mut tls = raw_tls(h.addr, &pin).await.unwrap();
    let request = format!(
        "GET /storage HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {TOKEN_A}\r\n\r\n"
    );

    assert!(
        closed_by_server(&mut tls, request.as_bytes(), Duration::from_secs(20)).await,
        "a connection making requests was kept past its maximum age"
    );
    assert!(
        h.fake().calls().len() >= 2,
        "requests were served meanwhile"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn one_source_address_cannot_take_every_connection() {
    let h = Harness::with_limits(Limits {
        max_connections: 10,
        max_connections_per_source: 2,
        ..Limits::default()
    })
    .await;
    let pin = h.gateway.pins().leaf_sha256_hex;
    let flooder: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    let _first = raw_tls_with(h.addr, &pin, Some(flooder), b"http/1.1")
        .await
        .unwrap();
    let _second = raw_tls_with(h.addr, &pin, Some(flooder), b"http/1.1")
        .await
        .unwrap();
    assert!(
        raw_tls_with(h.addr, &pin, Some(flooder), b"http/1.1")
            .await
            .is_err(),
        "a third connection from one address was served"
    );
    assert_eq!(h.gateway.refused_connections(), 1);

    // Another guest's address is still served.
    let r = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn made_up_tokens_from_one_address_are_limited_before_the_agent() {
    let h = Harness::with_limits(Limits {
        source_rate_per_second: 1,
        source_rate_burst: 5,
        ..Limits::default()
    })
    .await;
    let flooder = h.client_from("127.0.0.7".parse().unwrap());
    let mut limited = None;
    for n in 0..20 {
        let token = format!("fhg_{n:0>43}");
        let r = send(flooder.get(h.url("/storage")).bearer_auth(token)).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 401);
    }
    let r = limited.expect("no made-up token was rate limited");
    assert_eq!(
        r.body,
        error_envelope("rate limit exceeded for this address; retry later")
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        h.fake().calls().len() <= 19,
        "the refused request reached the agent"
    );

    // A guest at another address is unaffected.
    let other = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(other.status, 200);
    h.shutdown().await;
}
