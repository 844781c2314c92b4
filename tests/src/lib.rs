//! felhom-simhost: simulators of the host's surroundings (Proxmox VE, Proxmox Backup Server, …)
//! and the end-to-end tests that run the felhom processes against them.

pub mod devhost;
pub mod devhost_helper;
pub mod https;
pub mod packaging;
pub mod pbs;
pub mod percent;
pub mod pinned;
pub mod pve;
pub mod sim_bin;
pub mod sim_pct;
pub mod sim_pveum;
pub mod standins;
pub mod tls;
pub mod utc;
