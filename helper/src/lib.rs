//! felhom-helper: the only felhom code that runs as root.
//!
//! A tonic gRPC server on a Unix socket (default `/run/felhom-helper/helper.sock`, group-owned by
//! the agent's group, mode 0660) serving a closed set of typed operations
//! (`felhom.helper.v1.Helper`, see `proto/felhom/helper/v1/helper.proto`):
//!
//! - **golden create** ([`golden`]): `pct create` of the golden base container;
//! - **host mounts** ([`mounts`]): mount by filesystem UUID under a fixed prefix, unmount,
//!   list;
//! - **hardware reads** ([`smart`], [`sensors`]): `smartctl --json`, `sensors -j`, parsed
//!   into typed messages.
//!
//! Design, in the order a request meets it:
//! 1. [`peer`]: the connection's SO_PEERCRED uid must be the agent's or root, else
//!    PERMISSION_DENIED and an audit line naming uid and pid — before any handler runs.
//! 2. [`validate`]: every field becomes a validated newtype or the request is rejected with
//!    INVALID_ARGUMENT naming the field. Nothing is sanitized.
//! 3. [`exec`]: programs run from one configured absolute path per operation, fixed argv,
//!    no shell, scrubbed environment, process-group kill at a timeout, capped output.
//! 4. [`audit`]: caller uid/pid, operation, validated arguments, outcome and duration.
//!
//! Namespaces ([`hostns`]): the unit sandboxes the helper in a private mount namespace;
//! mounts, mount-table reads and `pct` run on one thread that joined the host's namespace.
//!
//! Process hygiene and privilege ([`privilege`]): refuse to run unless root (except with the
//! loud `--unprivileged-dev` switch of the simulated host), close inherited fds and reset the
//! environment before any thread exists, and drop every capability the operations do not
//! need once the socket is bound.
//!
//! Limits: the helper holds no secrets and makes no network calls. It trusts its own
//! configuration (command line of its systemd unit) and the programs it is pointed at.

pub mod audit;
pub mod caller;
pub mod cli;
pub mod config;
pub mod exec;
pub mod golden;
pub mod hostns;
pub mod mounts;
pub mod notify;
pub mod peer;
pub mod privilege;
pub mod sensors;
pub mod server;
pub mod smart;
pub mod validate;
