//! Gateway configuration: where to listen, where the certificate lives, and the limits that keep
//! one misbehaving guest (or anything else on the LAN, see the channel findings) from starving
//! the others.
//!
//! A plain struct: the agent maps its own TOML into it, the standalone binary maps its flags.
//! Defaults follow LOCAL-API.md (port 8443) and the issue (64 KiB bodies, 10 s to send headers,
//! 60 s idle, 256 connections, 10 requests/s with a burst of 20 per token).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The local API's fixed port (LOCAL-API.md, "Transport and trust").
pub const DEFAULT_PORT: u16 = 8443;

/// Everything the gateway needs to run.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// One listener per address; port 0 picks a free port (tests).
    pub listen: Vec<SocketAddr>,
    /// Holds the persisted certificate and key (see [`crate::cert`]).
    pub state_dir: PathBuf,
    pub limits: Limits,
}

/// Resource limits; [`Limits::default`] gives the production values.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest request body accepted; larger is answered 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a complete HTTP/1 request head. Hyper also applies it while
    /// an HTTP/1 keep-alive connection waits for its next request, so it bounds h1 idleness too.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long since its last request (or since
    /// its handshake) is closed. Bytes without a request (HTTP/2 PINGs, stray data) do not count,
    /// so a client cannot hold a slot by chattering.
    pub idle_timeout: Duration,
    /// Oldest a connection may get: then it is asked to finish (HTTP/1: close after the
    /// in-flight response; HTTP/2: GOAWAY) and the client reconnects.
    pub max_connection_age: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Connections served at once; a connection beyond this is closed right after accept.
    pub max_connections: usize,
    /// Connections served at once from one source address (one guest), so one guest cannot
    /// take every slot of [`Limits::max_connections`].
    pub max_connections_per_source: usize,
    /// Sustained requests per second per source address, checked before the token is looked
    /// at, so a flood of made-up tokens is bounded per guest.
    pub source_rate_per_second: u32,
    /// Requests per source address allowed in a burst above its sustained rate.
    pub source_rate_burst: u32,
    /// Sustained requests per second per bearer token.
    pub rate_per_second: u32,
    /// Requests per token allowed in a burst above the sustained rate.
    pub rate_burst: u32,
    /// HTTP/2 streams a client may have open on one connection.
    pub h2_max_concurrent_streams: u32,
    /// Largest request header list (HTTP/1 head buffer and HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list_bytes: u32,
    /// Longest the gateway waits for one LocalApi call; the client gives up after 15 s anyway.
    pub upstream_timeout: Duration,
    /// On shutdown, in-flight requests get this long before connections are dropped.
    pub shutdown_grace: Duration,
}

/// A limit that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the gateway needs at least one listen address")]
    NoListenAddress,
    #[error("limit {0} must be greater than zero")]
    ZeroLimit(&'static str),
    #[error(
        "max_header_list_bytes must be at least 8192 (hyper's smallest HTTP/1 read buffer), got {0}"
    )]
    HeaderListTooSmall(u32),
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(3600),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_source: 32,
            source_rate_per_second: 20,
            source_rate_burst: 40,
            rate_per_second: 10,
            rate_burst: 20,
            h2_max_concurrent_streams: 32,
            max_header_list_bytes: 16 * 1024,
            upstream_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl GatewayConfig {
    /// A config with default limits.
    pub fn new(listen: Vec<SocketAddr>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            state_dir: state_dir.into(),
            limits: Limits::default(),
        }
    }

    /// Checks that every value can work; [`crate::Gateway::start`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::NoListenAddress);
        }
        self.limits.validate()
    }
}

impl Limits {
    /// Checks that no limit is zero (a zero would refuse everything, never what is meant).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, bool); 14] = [
            ("max_body_bytes", self.max_body_bytes == 0),
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            (
                "tls_handshake_timeout",
                self.tls_handshake_timeout.is_zero(),
            ),
            ("max_connections", self.max_connections == 0),
            (
                "max_connections_per_source",
                self.max_connections_per_source == 0,
            ),
            ("max_connection_age", self.max_connection_age.is_zero()),
            ("source_rate_per_second", self.source_rate_per_second == 0),
            ("source_rate_burst", self.source_rate_burst == 0),
            ("rate_per_second", self.rate_per_second == 0),
            ("rate_burst", self.rate_burst == 0),
            (
                "h2_max_concurrent_streams",
                self.h2_max_concurrent_streams == 0,
            ),
            ("upstream_timeout", self.upstream_timeout.is_zero()),
            ("shutdown_grace", self.shutdown_grace.is_zero()),
        ];
        if let Some((name, _)) = checks.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::ZeroLimit(name));
        }
        if self.max_header_list_bytes < 8192 {
            return Err(ConfigError::HeaderListTooSmall(self.max_header_list_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let l = Limits::default();
        assert_eq!(l.max_body_bytes, 65536);
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.max_connections, 256);
        assert_eq!(l.max_connections_per_source, 32);
        assert_eq!(l.max_connection_age, Duration::from_secs(3600));
        assert_eq!((l.source_rate_per_second, l.source_rate_burst), (20, 40));
        assert_eq!((l.rate_per_second, l.rate_burst), (10, 20));
        assert!(l.validate().is_ok());
    }

    #[test]
    fn zero_limit_is_refused_by_name() {
        let l = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert_eq!(
            l.validate().unwrap_err().to_string(),
            "limit max_connections must be greater than zero"
        );
    }

    #[test]
    fn empty_listen_list_is_refused() {
        let c = GatewayConfig::new(vec![], "/tmp");
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "the gateway needs at least one listen address"
        );
    }
}
