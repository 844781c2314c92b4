//! Who asked for something: recorded as the actor of every audited change.

use super::Vmid;

/// The caller of a capability, as its front end authenticated it (never as a request says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A member of the operator group on the agent socket; `uid` from the socket's peer
    /// credentials (`None` when the transport gave none).
    Operator { uid: Option<u32> },
    /// A guest's controller, identified by its local-API token.
    Guest(Vmid),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Operator { uid: Some(uid) } => write!(f, "operator:uid={uid}"),
            Actor::Operator { uid: None } => f.write_str("operator:uid=unknown"),
            Actor::Guest(vmid) => write!(f, "guest:{vmid}"),
        }
    }
}
