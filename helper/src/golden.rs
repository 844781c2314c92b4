//! Golden create: `pct create` of the golden base container.
//!
//! This is the one container create that must run as root: Proxmox lets only `root@pam` set
//! the `keyctl` feature (see PROXMOX-FACTS.md), and the agent provisions customer guests by
//! *restoring* the golden image with its own token. The argv is fixed and built only from
//! validated values. Confirmed in pve-container `src/PVE/CLI/pct.pm`: `create` maps to
//! `PVE::API2::LXC::create_vm` with `vmid` and `ostemplate` positional, every other API
//! parameter as `--<name> <value>`, and `$upid_exit` (pct waits for the worker task and exits
//! non-zero if it failed), so a zero exit means the container exists:
//!
//! ```text
//! pct create <vmid> <storage>:vztmpl/<file> --hostname <h> --storage <s>
//!     --rootfs <s>:<GiB> --memory <MiB> --cores <n> --unprivileged 1
//!     --features nesting=1,keyctl=1 [--net0 name=eth0,bridge=<vmbrN>,ip=dhcp]
//! ```
//!
//! `--rootfs <storage>:<number>` asks Proxmox to allocate a new volume of that many GiB.
//! No password or SSH key is passed, so no secret can ever appear in this argv.

use std::time::Duration;

use crate::exec::{self, ExecError, Invocation};
use crate::privilege::ProgramCaps;
use crate::validate::{Bridge, Hostname, StorageId, TemplateVolid, Vmid};

/// Golden create failure.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// pct could not be run (or timed out).
    #[error("Cannot run pct")]
    Exec(#[from] ExecError),
    /// pct exited unsuccessfully; its stderr goes to the audit log, not to the caller.
    #[error("pct create failed with {status}")]
    Failed {
        /// Exit status.
        status: std::process::ExitStatus,
        /// Last stderr line, for the audit log only.
        stderr_tail: String,
    },
    /// The host-namespace thread could not run pct.
    #[error("Cannot run pct in the host mount namespace")]
    HostNs(#[source] crate::hostns::HostNsError),
}

/// A validated golden-create request.
#[derive(Debug, Clone)]
pub struct GoldenSpec {
    /// Guest id in the golden range.
    pub vmid: Vmid,
    /// Template volume.
    pub template: TemplateVolid,
    /// Hostname.
    pub hostname: Hostname,
    /// Storage for the root filesystem.
    pub storage: StorageId,
    /// Root filesystem size, GiB.
    pub disk_gib: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Cores.
    pub cores: u32,
    /// Bridge for net0, if any.
    pub bridge: Option<Bridge>,
}

impl GoldenSpec {
    /// The fixed argv (without the program) for this spec.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![
            "create".to_owned(),
            self.vmid.get().to_string(),
            self.template.as_str().to_owned(),
            "--hostname".to_owned(),
            self.hostname.as_str().to_owned(),
            "--storage".to_owned(),
            self.storage.as_str().to_owned(),
            "--rootfs".to_owned(),
            format!("{}:{}", self.storage.as_str(), self.disk_gib),
            "--memory".to_owned(),
            self.memory_mib.to_string(),
            "--cores".to_owned(),
            self.cores.to_string(),
            "--unprivileged".to_owned(),
            "1".to_owned(),
            "--features".to_owned(),
            "nesting=1,keyctl=1".to_owned(),
        ];
        if let Some(bridge) = &self.bridge {
            argv.push("--net0".to_owned());
            argv.push(format!("name=eth0,bridge={},ip=dhcp", bridge.as_str()));
        }
        argv
    }
}

/// Where pct lives and how long a create may take.
#[derive(Debug, Clone)]
pub struct GoldenConfig {
    /// Absolute path of pct (or its stand-in).
    pub program: std::path::PathBuf,
    /// Timeout for one create (template extraction is slow on spinning disks).
    pub timeout: Duration,
    /// Output cap in bytes.
    pub output_cap: usize,
}

/// Runs `pct create` for `spec`.
pub async fn create(cfg: &GoldenConfig, spec: &GoldenSpec) -> Result<(), GoldenError> {
    let inv = Invocation {
        program: cfg.program.clone(),
        args: spec.argv().into_iter().map(Into::into).collect(),
        timeout: cfg.timeout,
        output_cap: cfg.output_cap,
        caps: ProgramCaps::Pct,
    };
    let out = exec::run(&inv).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GoldenError::Failed {
            status: out.status,
            stderr_tail: out.stderr_tail(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_the_documented_pct_create_line() {
        let spec = GoldenSpec {
            vmid: Vmid::parse(9000, &(9000..=9099)).expect("in range"),
            template: TemplateVolid::parse("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
                .expect("valid volid"),
            hostname: Hostname::parse("golden").expect("valid hostname"),
            storage: StorageId::parse("storage", "local-lvm").expect("valid storage"),
            disk_gib: 8,
            memory_mib: 1024,
            cores: 2,
            bridge: Some(Bridge::parse("vmbr0").expect("valid bridge")),
        };
        assert_eq!(
            spec.argv().join(" "),
            "create 9000 local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst \
             --hostname golden --storage local-lvm --rootfs local-lvm:8 --memory 1024 \
             --cores 2 --unprivileged 1 --features nesting=1,keyctl=1 \
             --net0 name=eth0,bridge=vmbr0,ip=dhcp"
        );
    }
}
