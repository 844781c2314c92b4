//! The response envelope every body is wrapped in: `{"ok": bool, "data": …|null, "error": "…"}`
//! (LOCAL-API.md, "Envelope"). Success carries `error: ""`, failure `data: null`. (The one
//! documented exception, the `POST /disks/format` refusal with `ok: false` *and* data, will need
//! a third constructor when that route gets its RPC.)

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use serde::Serialize;

/// The body type of every gateway response.
pub type Body = Full<Bytes>;

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    ok: bool,
    data: Option<&'a T>,
    error: &'a str,
}

/// A success: `ok: true` with `data`.
pub fn success<T: Serialize>(status: StatusCode, data: &T) -> Response<Body> {
    respond(
        status,
        &Envelope {
            ok: true,
            data: Some(data),
            error: "",
        },
    )
}

/// A failure: `ok: false`, `data: null`, and the caller-facing `error` text.
pub fn failure(status: StatusCode, error: &str) -> Response<Body> {
    respond(
        status,
        &Envelope::<()> {
            ok: false,
            data: None,
            error,
        },
    )
}

/// A pre-rendered JSON document outside the envelope (only `GET /openapi.json`).
pub fn raw_json(body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    set_json_headers(&mut response);
    response
}

fn respond<T: Serialize>(status: StatusCode, envelope: &Envelope<'_, T>) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(envelope) {
        Ok(bytes) => (status, bytes),
        // Our data types serialize infallibly (plain structs, string keys); should one ever
        // fail, the caller still gets an envelope.
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"ok":false,"data":null,"error":"internal error in the gateway"}"#.to_vec(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    set_json_headers(&mut response);
    response
}

fn set_json_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn success_has_ok_data_and_empty_error() {
        #[derive(Serialize)]
        struct D {
            vmid: u32,
        }
        let r = success(StatusCode::OK, &D { vmid: 101 });
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            text(r).await,
            r#"{"ok":true,"data":{"vmid":101},"error":""}"#
        );
    }

    #[tokio::test]
    async fn failure_has_null_data() {
        let r = failure(StatusCode::NOT_FOUND, "no such endpoint");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            text(r).await,
            r#"{"ok":false,"data":null,"error":"no such endpoint"}"#
        );
    }
}
