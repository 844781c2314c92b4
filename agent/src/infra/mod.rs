//! Infrastructure: the clients and stores every capability builds on. Nothing here knows what
//! a backup policy or a provisioning request is.
//!
//! - [`pve`], [`pbs`]: typed Proxmox VE and Proxmox Backup Server API clients, over
//! - [`proxmox`]: the HTTP core they share (token, call/decode, task waiter, UPID core, TLS).
//! - [`helper`]: the client of the root helper (`felhom-helper`) behind a trait seam.
//! - [`state`]: the SQLite state database (journal, audit chain, tokens, job and backup history).
//! - [`queue`]: the per-guest work queue (one mutation at a time per guest).
//! - [`journaled`]: the journaled-operation engine (resumable or compensated multi-step work).
//! - [`secret_file`]: reading a token or key only from a file no one but the agent can read.
//! - [`whole_file`]: writing a file whole (temporary file, fsync, rename).

pub mod helper;
pub mod journaled;
pub mod pbs;
pub mod proxmox;
pub mod pve;
pub mod queue;
pub mod secret_file;
pub mod state;
pub mod whole_file;
