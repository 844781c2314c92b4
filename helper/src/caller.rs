//! The caller's identity as the kernel reports it (SO_PEERCRED), shared by the peer check
//! ([`crate::peer`], which establishes it) and the audit trail ([`crate::audit`], which
//! records it). A leaf module: it imports nothing from the crate.

/// Who is calling, per the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid (absent if the kernel did not report one).
    pub pid: Option<i32>,
}
