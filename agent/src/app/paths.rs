//! Paths, users and sockets of a felhom host, in one place.

/// Default agent configuration file.
pub const CONFIG_FILE: &str = "/etc/felhom/agent.toml";
/// Agent state directory (SQLite database, gateway key); 0700, owned by the agent user.
pub const STATE_DIR: &str = "/var/lib/felhom-agent";
/// Agent gRPC socket (operator surface and LocalApi); 0660, group `felhom-ops`.
pub const AGENT_SOCKET: &str = "/run/felhom/agent.sock";
/// Root helper's gRPC socket; 0660, group of the agent user.
pub const HELPER_SOCKET: &str = "/run/felhom/helper.sock";
/// The agent's system user.
pub const AGENT_USER: &str = "felhom-agent";
/// Group of operators allowed on the agent socket.
pub const OPS_GROUP: &str = "felhom-ops";
