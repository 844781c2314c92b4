//! How the simulator turns handler results into PVE-shaped HTTP answers, and the request
//! parameter bag.
//!
//! Verified against Proxmox sources:
//! - pve-common `src/PVE/Exception.pm`: `raise_perm_exc($what)` → code 403, message
//!   `Permission check failed ($what)` (or just `Permission check failed` without `$what`);
//!   `raise_param_exc` → code 400, message `Parameter verification failed.` plus `errors`.
//! - pve-manager `PVE/HTTPServer.pm` `rest_handler`: an unknown handler is
//!   `501 Method '<METHOD> <rel_uri>' not implemented`; other `die`s are 500 with the text.
//! - The json formatter (`prepare_response_data` in the indexed, older `PVE/HTTPServer.pm`
//!   formatter code): the body is `{"data":…}` plus `errors` when set; the message travels
//!   only as the HTTP reason phrase. Third-party captures suggest newer releases may also add
//!   a `message` member to error bodies; the simulator does not, so clients must read the
//!   reason phrase. (Trailing newlines of Perl `die` texts are not part of the phrase.)

use std::collections::BTreeMap;

use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use serde_json::{Value, json};

/// An API failure: status, reason phrase, optional per-parameter errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
}

impl ApiError {
    /// 403 `Permission check failed (<path>, <priv>)`.
    pub fn perm(path: &str, privilege: &str) -> ApiError {
        ApiError::perm_text(&format!("{path}, {privilege}"))
    }

    /// 403 for an any-of check: `Permission check failed (<path>, <a>|<b>)`.
    pub fn perm_any(path: &str, privs: &[&str]) -> ApiError {
        ApiError::perm_text(&format!("{path}, {}", privs.join("|")))
    }

    /// 403 `Permission check failed (<what>)`.
    pub fn perm_text(what: &str) -> ApiError {
        ApiError::new(403, format!("Permission check failed ({what})"))
    }

    /// 403 `Permission check failed` (raise_perm_exc without argument).
    pub fn perm_plain() -> ApiError {
        ApiError::new(403, "Permission check failed".to_owned())
    }

    /// 500 with a `die` text.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message.into())
    }

    /// 400 `Parameter verification failed.` with one parameter error.
    pub fn param(name: &str, text: impl Into<String>) -> ApiError {
        ApiError::params(BTreeMap::from([(name.to_owned(), text.into())]))
    }

    /// 400 `Parameter verification failed.` with several parameter errors.
    pub fn params(errors: BTreeMap<String, String>) -> ApiError {
        ApiError {
            status: 400,
            message: "Parameter verification failed.".to_owned(),
            errors: Some(errors),
        }
    }

    /// 500 for a missing guest config.
    pub fn no_config(node: &str, vmid: u32) -> ApiError {
        ApiError::internal(format!(
            "Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"
        ))
    }

    /// A status with a reason phrase.
    pub fn new(status: u16, message: String) -> ApiError {
        ApiError {
            status,
            message,
            errors: None,
        }
    }
}

/// Builds the answer for a handler result.
pub fn respond(result: Result<Value, ApiError>) -> Response<Full<Bytes>> {
    respond_with_total(result.map(|v| (v, None)))
}

/// Like [`respond`], with PVE's `total` attribute for paged listings (task list and log).
pub fn respond_with_total(
    result: Result<(Value, Option<usize>), ApiError>,
) -> Response<Full<Bytes>> {
    match result {
        Ok((data, None)) => json_response(200, None, &json!({ "data": data })),
        Ok((data, Some(total))) => {
            json_response(200, None, &json!({ "data": data, "total": total }))
        }
        Err(e) => {
            let mut body = serde_json::Map::new();
            body.insert("data".to_owned(), Value::Null);
            if let Some(errors) = &e.errors {
                body.insert("errors".to_owned(), json!(errors));
            }
            json_response(e.status, Some(&e.message), &Value::Object(body))
        }
    }
}

/// A JSON response with an optional custom reason phrase.
pub fn json_response(status: u16, reason: Option<&str>, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp.headers_mut().insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static("pve-api-daemon/3.0"),
    );
    if let Some(reason) = reason {
        let clean: String = reason
            .trim_end()
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(clean.into_bytes()) {
            resp.extensions_mut().insert(phrase);
        }
    }
    resp
}

/// The merged request parameters (query string + form/JSON body), PVE style: every value a
/// string, booleans as `0`/`1`.
#[derive(Debug, Clone, Default)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Adds `application/x-www-form-urlencoded` pairs.
    pub fn add_form(&mut self, text: &str) {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            self.map.insert(form_decode(k), form_decode(v));
        }
    }

    /// Adds the members of a JSON object body.
    pub fn add_json(&mut self, value: &Value) -> Result<(), ApiError> {
        let Value::Object(obj) = value else {
            return Err(ApiError::new(
                400,
                "parameter parser failed: JSON body must be an object".to_owned(),
            ));
        };
        for (k, v) in obj {
            let s = match v {
                Value::Null => continue,
                Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other @ (Value::Null
                        | Value::Bool(_)
                        | Value::Number(_)
                        | Value::Array(_)
                        | Value::Object(_)) => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Value::Object(_) => v.to_string(),
            };
            self.map.insert(k.clone(), s);
        }
        Ok(())
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// All parameters.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    /// A required parameter (PVE's JSONSchema text when missing).
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::param(name, "property is missing and it is not optional"))
    }

    /// A boolean (`1`/`0`/`true`/`false`/`yes`/`no`/`on`/`off`), default false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ApiError::param(
                    name,
                    format!("type check ('boolean') failed - got '{v}'"),
                )),
            },
        }
    }

    /// An optional non-negative integer.
    pub fn int(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::param(name, format!("type check ('integer') failed - got '{v}'"))
            }),
        }
    }

    /// Refuses parameters outside `allowed` (and not matching `allowed_prefixes` + digits).
    pub fn only(&self, allowed: &[&str], indexed: &[&str]) -> Result<(), ApiError> {
        let bad: BTreeMap<String, String> = self
            .map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()) && !is_indexed(k, indexed))
            .map(|k| {
                (
                    k.clone(),
                    "property is not defined in schema and the schema does not allow additional properties"
                        .to_owned(),
                )
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ApiError::params(bad))
        }
    }
}

/// Validates a `pve-vmid` value as PVE's JSONSchema does (integer, 100..=999999999).
pub fn parse_vmid(raw: &str) -> Result<u32, ApiError> {
    let n: i64 = raw.parse().map_err(|_| {
        ApiError::param(
            "vmid",
            format!("type check ('integer') failed - got '{raw}'"),
        )
    })?;
    if n < 100 {
        return Err(ApiError::param(
            "vmid",
            "value must have a minimum value of 100",
        ));
    }
    if n > 999_999_999 {
        return Err(ApiError::param(
            "vmid",
            "value must have a maximum value of 999999999",
        ));
    }
    u32::try_from(n).map_err(|_| ApiError::param("vmid", "value out of range"))
}

/// True for `net0`, `mp12`, … given prefixes `net`, `mp`.
pub fn is_indexed(key: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        key.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn form_decode(s: &str) -> String {
    crate::percent::percent_decode(s, true)
}
