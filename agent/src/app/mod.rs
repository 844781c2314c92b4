//! The application: command line, configuration, paths and the daemon that wires the layers
//! together.

pub mod cli;
pub mod config;
pub mod context;
pub mod daemon;
pub mod enroll_cmd;
pub mod escrow_cmd;
pub mod listen_policy;
pub mod paths;
