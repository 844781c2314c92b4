//! felhom-simhost: simulators of the host's surroundings (Proxmox VE, …) and the end-to-end
//! tests that run the felhom processes against them.

pub mod pve;
