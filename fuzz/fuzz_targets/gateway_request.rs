//! The gateway's request parsing, in the order `service` runs it: method + request target →
//! route lookup → `Authorization` shape → body → typed action.
//!
//! Input (a tiny HTTP/1 request without header names): line 1 is `METHOD request-target`,
//! then one `Authorization` header value per line up to an empty line, then the body. A method
//! or target hyper would refuse never reaches the service, so such inputs end early; so do
//! header values `HeaderValue` refuses.
//!
//! Checked beyond "no panic": a found route matches method and path exactly; a 405's `Allow`
//! value is a valid header; a token is accepted exactly when an independent reading of
//! RFC 6750's `b64token` accepts it (one header, `Bearer` in any case, one space, 1–512
//! characters); GET bodies are never read; an accepted POST body is empty or a JSON object;
//! decoded actions respect the documented limits.
#![no_main]

use felhom_fuzz::split_line;
use felhom_localapi_gateway::action::{Action, MAX_DESCRIPTION_LEN};
use felhom_localapi_gateway::auth::{BearerToken, MAX_TOKEN_LEN};
use felhom_localapi_gateway::routes::{self, Handling, Lookup, Verb};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, mut rest) = split_line(data);
    let (method, target) = match head.iter().position(|b| *b == b' ') {
        Some(i) => (&head[..i], &head[i + 1..]),
        None => (head, &b""[..]),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    loop {
        let (line, after) = split_line(rest);
        rest = after;
        if line.is_empty() {
            break;
        }
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(AUTHORIZATION, v);
        }
    }
    let body = rest;

    let route = match routes::lookup(&method, uri.path()) {
        Lookup::NotFound => return,
        Lookup::WrongMethod(allow) => {
            assert!(!allow.is_empty());
            assert!(HeaderValue::from_str(&allow).is_ok(), "Allow: {allow}");
            assert!(!allow.split(", ").any(|m| m == method.as_str()));
            return;
        }
        Lookup::Found(route) => route,
    };
    assert_eq!(route.path, uri.path());
    assert_eq!(route.verb.as_str(), method.as_str());
    let rpc = match route.handling {
        Handling::OpenApiDocument => return,
        Handling::Call(rpc) => Some(rpc),
        Handling::NotAvailable => None,
    };

    let token = BearerToken::from_headers(&headers);
    assert_eq!(token.is_ok(), oracle_accepts(&headers), "{headers:?}");
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    let _ = token.fingerprint();

    let Some(rpc) = rpc else { return };
    let body: &[u8] = match route.verb {
        Verb::Get => &[],
        Verb::Post => body,
    };
    match rpc.action(body) {
        Ok(action) => {
            if route.verb == Verb::Post && !body.iter().all(u8::is_ascii_whitespace) {
                let value: serde_json::Value =
                    serde_json::from_slice(body).expect("an accepted body is JSON");
                assert!(value.is_object(), "an accepted body is an object");
            }
            match action {
                Action::Snapshot(req) => assert!(req.description.len() <= MAX_DESCRIPTION_LEN),
                Action::Rollback(req) => assert!(!req.snapshot.is_empty()),
                Action::GetStorage
                | Action::StartBackup
                | Action::GetBackupDue
                | Action::GetBackupStatus
                | Action::GetRestoreTestStatus => {}
            }
        }
        Err(e) => {
            assert_eq!(route.verb, Verb::Post, "a GET action never fails: {e}");
            let _ = e.to_string();
        }
    }
});

/// RFC 6750 read independently of `auth.rs`: exactly one header, `Bearer` (any case), one
/// space, then `1*b64char *"="` of at most 512 bytes.
fn oracle_accepts(headers: &HeaderMap) -> bool {
    let values: Vec<&HeaderValue> = headers.get_all(AUTHORIZATION).iter().collect();
    let [value] = values.as_slice() else {
        return false;
    };
    let bytes = value.as_bytes();
    if bytes.len() < 7 || !bytes[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let token = &bytes[7..];
    let padding = token.iter().rev().take_while(|b| **b == b'=').count();
    let chars = &token[..token.len() - padding];
    // A guest token's shape, spelled out independently of `felhom_proto::guest_token`.
    token.len() <= MAX_TOKEN_LEN
        && !chars.is_empty()
        && padding == 0
        && chars.len() == 47
        && chars.starts_with(b"fhg_")
        && chars[4..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(b))
}
