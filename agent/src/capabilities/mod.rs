//! Capabilities: what the agent can do, each in its own folder, reached the same way from every
//! front end (an operator RPC, a guest's local-API call, the scheduler, later a hub job).

pub mod backup;
pub mod guests;
pub mod selftest;
pub mod storage;
