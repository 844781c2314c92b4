//! The HTTP core shared by the Proxmox VE ([`super::pve`]) and Proxmox Backup Server
//! ([`super::pbs`]) clients.
//!
//! Both products speak the same API dialect — `https://<host>:<port>/api2/json`, a
//! `{"data": …}` envelope, API tokens in the `Authorization` header, work run as tasks named by
//! a UPID and polled until `stopped` — and differ in a handful of details. Those details are
//! the [`Product`] trait, implemented once by each client module; everything else is here once:
//!
//! - [`token`]: one token type, [`ApiToken<P>`]; the product decides the header scheme and the
//!   separator before the secret (`PVEAPIToken=user@realm!id=secret` vs
//!   `PBSAPIToken=user@realm!id:secret`) and words the parse errors.
//! - [`http`]: one request/decode path over reqwest ([`http::HttpCore`]); the product decides
//!   how a non-200 answer is read (PVE: the reason phrase; PBS: the body) by converting
//!   [`http::HttpError`] into its own error.
//! - [`task`]: one task waiter (poll schedule, deadline, cancellation, transient retries, the
//!   failed task's log tail), with the log's first line number as a parameter (PVE counts from
//!   0, PBS from 1).
//! - [`upid`]: the UPID field parsing both grammars share (prefix, field split, hex fields,
//!   length limit); PVE's 8-field and PBS's 9-field grammars sit on top in their own modules.
//! - [`tls`]: TLS trust (pinned leaf, CA file, loopback-only insecure).
//!
//! The simulators in `tests/` keep their own, independent wire code on purpose: a bug shared by
//! client and simulator would cancel itself out in tests.

pub mod http;
pub mod task;
pub mod tls;
pub mod token;
pub mod upid;

pub use task::{TaskOutcome, WaitOptions, classify_exitstatus};
pub use tls::{CertFingerprint, TlsError, TlsTrust};
pub use token::{ApiToken, TokenShape};

/// What differs between Proxmox VE and PBS for the shared core. Implemented by a marker type
/// in each client module (`pve::Pve`, `pbs::Pbs`).
pub trait Product: Send + Sync + 'static {
    /// Type name shown by a token's `Debug` (`ApiToken`, `PbsToken`).
    const TOKEN_TYPE: &'static str;
    /// `Authorization` header scheme (`PVEAPIToken`, `PBSAPIToken`).
    const TOKEN_SCHEME: &'static str;
    /// Between authid and secret, in the token text and the header (`=`, `:`).
    const SECRET_SEPARATOR: char;
    /// How errors name the token (`API token`, `PBS token`).
    const TOKEN_LABEL: &'static str;
    /// How log lines name the product's tasks (`task`, `PBS task`).
    const TASK_NOUN: &'static str;

    /// The product's token parse error, worded for its token shape.
    type TokenError: From<TokenShape>;
    /// The product's client error; converting an [`http::HttpError`] into it is where the
    /// product reads a failed answer its own way.
    type Error: From<http::HttpError> + std::fmt::Display;

    /// Failures worth asking again (network, timeouts, 5xx).
    fn is_transient(error: &Self::Error) -> bool;
}
