//! Paths, users and sockets of a felhom host, in one place.

/// Default agent configuration file.
pub const CONFIG_FILE: &str = "/etc/felhom/agent.toml";
/// Agent state directory (SQLite database, gateway key); 0700, owned by the agent user.
pub const STATE_DIR: &str = "/var/lib/felhom-agent";
/// Agent gRPC socket of the operator surface (`Agent` service); 0660, group `felhom-ops`.
pub const AGENT_SOCKET: &str = "/run/felhom/agent.sock";
/// Agent gRPC socket of the guests' `LocalApi`, which only the local-API gateway calls; 0600,
/// the agent user (0660 with `agent.local_api_socket_group` for a standalone gateway).
pub const LOCAL_API_SOCKET: &str = "/run/felhom/localapi.sock";
/// Group a standalone `felhom-localapi-gateway` runs in, when the operator configures one.
pub const GATEWAY_GROUP: &str = "felhom-gateway";
/// Root helper's gRPC socket; 0660, group of the agent user.
pub const HELPER_SOCKET: &str = "/run/felhom-helper/helper.sock";
/// The agent's system user.
pub const AGENT_USER: &str = "felhom-agent";
/// Group of operators allowed on the agent socket.
pub const OPS_GROUP: &str = "felhom-ops";
/// Proxmox VE's private directory; PBS storage keys are `storage/<storage>.enc` in it (root).
pub const PVE_PRIV_DIR: &str = "/etc/pve/priv";
/// Escrow files (the PBS key wrapped under the customer's recovery code); root, 0700.
pub const ESCROW_DIR: &str = "/var/lib/felhom-escrow";
