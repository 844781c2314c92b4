//! Capabilities: what the agent can do, each in its own folder, reached the same way from every
//! front end (an operator RPC, a guest's local-API call, the scheduler, later a hub job). A
//! capability validates its input, queues guest mutations, audits what it changed and calls
//! Proxmox; front ends only authenticate and translate.

pub mod access;
pub mod backup;
pub mod escrow;
pub mod guests;
pub mod records;
pub mod selftest;
pub mod storage;

/// Every capability of a running agent, built once by the daemon (or a test).
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub guests: guests::Guests,
    pub backup: backup::Backups,
    pub storage: storage::Storage,
    pub tokens: access::GuestTokens,
    pub records: records::Records,
    pub selftest: selftest::Selftest,
}
