//! felhom-agent: the host agent that owns all Proxmox interaction on a felhom host.
//!
//! It runs as a dedicated non-root user with a privilege-separated Proxmox VE API token and does
//! everything that token can do; the three things that need root (golden create, host mounts,
//! hardware reads) go to `felhom-helper` over its Unix socket. See the workspace's
//! `ARCHITECTURE.md` for the design and trust rules.

pub mod backup;
pub mod cli;
pub mod config;
pub mod context;
pub mod ctl;
pub mod daemon;

pub mod grpc;
pub mod guest_storage;
pub mod helper_client;
pub mod local_api_gateway;
pub mod paths;
pub mod pbs;
pub mod provision;
pub mod pve;
pub mod queue;
pub mod restore_test;
pub mod selftest;
pub mod state;
