//! Where the guests' HTTPS API may listen: loopback, or an address of one of the configured
//! bridges (`[local_api] bridges`, default `vmbr0`, the bridge the guests are on) — never a
//! wildcard or the host's LAN address by accident, where every device of the household (or the
//! internet, through a forwarded port) could reach it. `allow_any_address = true` lifts the
//! rule for setups this cannot describe. Checked at start against the host's interfaces as
//! they are then; an address that moves later is the operator's to fix.

use std::net::{IpAddr, SocketAddr};

/// The configured rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenPolicy {
    /// Bridges whose addresses the gateway may listen on.
    pub bridges: Vec<String>,
    /// Listen anywhere (the operator's explicit choice).
    pub allow_any_address: bool,
}

impl Default for ListenPolicy {
    fn default() -> Self {
        Self {
            bridges: vec![DEFAULT_BRIDGE.to_owned()],
            allow_any_address: false,
        }
    }
}

/// Proxmox VE's default bridge.
pub const DEFAULT_BRIDGE: &str = "vmbr0";

/// A listen address the policy refuses; the text names it and what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    #[error(
        "[local_api] listen {0} is every address of the host (the LAN's too); name a bridge address, or set allow_any_address = true"
    )]
    Wildcard(SocketAddr),
    #[error(
        "[local_api] listen {addr} is not loopback nor an address of a configured bridge ({found}); set [local_api] bridges, or allow_any_address = true"
    )]
    NotOnBridge { addr: SocketAddr, found: String },
    #[error("cannot list the host's network interfaces: {0}")]
    Interfaces(String),
}

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub interface: String,
    pub ip: IpAddr,
}

/// Checks every address of `listen` against `policy` and the host's `interfaces`.
pub fn check(
    listen: &[SocketAddr],
    policy: &ListenPolicy,
    interfaces: &[InterfaceAddr],
) -> Result<(), ListenError> {
    if policy.allow_any_address {
        return Ok(());
    }
    let on_bridges: Vec<&InterfaceAddr> = interfaces
        .iter()
        .filter(|a| policy.bridges.contains(&a.interface))
        .collect();
    for addr in listen {
        let ip = addr.ip();
        if ip.is_loopback() {
            continue;
        }
        if ip.is_unspecified() {
            return Err(ListenError::Wildcard(*addr));
        }
        if !on_bridges.iter().any(|a| a.ip == ip) {
            let found = policy
                .bridges
                .iter()
                .map(|b| {
                    let ips: Vec<String> = on_bridges
                        .iter()
                        .filter(|a| a.interface == *b)
                        .map(|a| a.ip.to_string())
                        .collect();
                    if ips.is_empty() {
                        format!("{b}: no address")
                    } else {
                        format!("{b}: {}", ips.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ListenError::NotOnBridge { addr: *addr, found });
        }
    }
    Ok(())
}

/// The host's interface addresses (getifaddrs), in the caller's network namespace.
pub fn host_interfaces() -> Result<Vec<InterfaceAddr>, ListenError> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| ListenError::Interfaces(e.desc().to_owned()))?;
    Ok(addrs
        .filter_map(|a| {
            let storage = a.address?;
            let ip = if let Some(v4) = storage.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(storage.as_sockaddr_in6()?.ip())
            };
            Some(InterfaceAddr {
                interface: a.interface_name,
                ip,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<InterfaceAddr> {
        let a = |interface: &str, ip: &str| InterfaceAddr {
            interface: interface.into(),
            ip: ip.parse().unwrap(),
        };
        vec![
            a("lo", "127.0.0.1"),
            a("eno1", "192.168.1.20"),
            a("vmbr0", "10.0.0.1"),
            a("vmbr0", "fd00::1"),
        ]
    }

    fn listen(addrs: &[&str]) -> Vec<SocketAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_bridge_address_and_loopback_are_allowed() {
        let ok = check(
            &listen(&[
                "10.0.0.1:8443",
                "[fd00::1]:8443",
                "127.0.0.1:8443",
                "[::1]:8443",
            ]),
            &ListenPolicy::default(),
            &host(),
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn the_lan_address_is_refused_naming_the_bridges_addresses() {
        let err = check(
            &listen(&["192.168.1.20:8443"]),
            &ListenPolicy::default(),
            &host(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "[local_api] listen 192.168.1.20:8443 is not loopback nor an address of a configured bridge (vmbr0: 10.0.0.1, fd00::1); set [local_api] bridges, or allow_any_address = true"
        );
    }

    #[test]
    fn a_wildcard_is_refused() {
        let err = check(
            &listen(&["0.0.0.0:8443"]),
            &ListenPolicy::default(),
            &host(),
        )
        .unwrap_err();
        assert_eq!(err, ListenError::Wildcard("0.0.0.0:8443".parse().unwrap()));
    }

    #[test]
    fn a_bridge_without_address_is_named() {
        let policy = ListenPolicy {
            bridges: vec!["vmbr1".into()],
            allow_any_address: false,
        };
        let err = check(&listen(&["10.0.0.1:8443"]), &policy, &host()).unwrap_err();
        assert!(err.to_string().contains("(vmbr1: no address)"), "{err}");
    }

    #[test]
    fn allow_any_address_lifts_the_rule() {
        let policy = ListenPolicy {
            bridges: vec![],
            allow_any_address: true,
        };
        assert_eq!(check(&listen(&["0.0.0.0:8443"]), &policy, &host()), Ok(()));
    }
}
