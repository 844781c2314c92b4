//! Signing off the audit log (the retention prune removes old rows behind the newest
//! sign-off only).

use super::{Records, RecordsError};
use crate::core::Actor;
use crate::infra::state::audit::Checkpoint;

impl Records {
    /// `actor` signs off the chain ending in `head_hash` (what they verified).
    pub async fn audit_checkpoint(
        &self,
        actor: Actor,
        head_hash: String,
    ) -> Result<Checkpoint, RecordsError> {
        let actor = actor.to_string();
        self.db
            .run(move |db| db.audit().checkpoint(&actor, &head_hash))
            .await
            .map_err(RecordsError::Audit)
    }
}
