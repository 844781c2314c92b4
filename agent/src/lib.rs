//! felhom-agent: the host agent that owns all Proxmox interaction on a felhom host.
//!
//! It runs as a dedicated non-root user with a privilege-separated Proxmox VE API token and does
//! everything that token can do; the three things that need root (golden create, host mounts,
//! hardware reads) go to `felhom-helper` over its Unix socket. See the workspace's
//! `ARCHITECTURE.md` for the design and trust rules.
//!
//! # Layers
//!
//! The crate is four layers with one dependency direction, top to bottom; no module imports a
//! layer above its own, and no two modules import each other (the workspace test
//! `module_layers` checks both on every run).
//!
//! **[`app`]** — the process: command line (`felhom-agent run|selftest`), configuration
//! (`agent.toml` + `FELHOM_AGENT_*` + credentials), the fixed paths, and the daemon that builds
//! the layers below, binds the sockets, runs start-up recovery and tells systemd what it is
//! doing. The only place that knows every other layer. [`ctl`] (felhomctl) sits beside it: a
//! client of the agent's socket that uses only `app::paths` and formatting helpers.
//!
//! **[`frontends`]** — who calls in: the internal gRPC services (`frontends::grpc`: the
//! operators' `Agent` service split per domain, the guests' `LocalApi`, each on its own socket),
//! the embedded local-API gateway, and the scheduler. A handler authenticates the caller (socket
//! peer credentials or a guest's bearer token), turns the request into one typed capability call
//! and maps the result and the capability's error (exhaustively) to a gRPC status. No Proxmox
//! call, validation, queueing or audit happens here, so a hub job reaches the same code as an
//! RPC.
//!
//! **[`capabilities`]** — what the agent can do, one folder each: `guests` (provisioning,
//! snapshots, listing), `backup` (backups, verify, self-restore-tests), `storage` (what the
//! guests see), `access` (guest tokens), `records` (jobs, journal, audit), `selftest`. Each
//! validates its input into core types, queues guest mutations, audits what it changed and
//! talks to Proxmox through the infrastructure. Each has one error enum.
//!
//! **[`infra`]** — the parts capabilities build on: the Proxmox VE and PBS clients over one
//! shared HTTP core (`infra::proxmox`: token, call/decode, task waiter, UPID core), the helper
//! client behind a trait seam, the state database, the per-guest work queue, and the
//! journaled-operation engine (`infra::journaled`) that makes multi-step work resumable or
//! compensated after a crash.
//!
//! **[`core`]** — types every layer shares and nothing else: [`core::Vmid`], storage ids and
//! snapshot names, the storage class, and [`core::error_chain`].

pub mod app;
pub mod capabilities;
pub mod core;
pub mod ctl;
pub mod frontends;
pub mod infra;
