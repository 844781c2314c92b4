//! Snapshots the agent took on a guest's behalf: what the per-guest snapshot cap counts and
//! the minimum interval is measured from. Snapshots made in the Proxmox UI or by `pct` are not
//! here and never count against a guest.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Interrupted, InvalidField, StateDb, Timestamp, check_text, check_vmid};

/// Proxmox snapshot names are at most 40 characters; a little slack for old rows.
const MAX_NAME: usize = 64;

/// Why a snapshot record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotsError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
}

/// A guest's agent-made snapshots, as far as the agent knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSnapshots {
    /// Names of agent-made snapshots that still exist.
    pub live: Vec<String>,
    /// When the agent last took one (also if it was deleted since).
    pub last_taken_at: Option<Timestamp>,
}

/// Typed access to the agent-made snapshot records; get one from [`StateDb::snapshots`].
#[derive(Debug, Clone, Copy)]
pub struct Snapshots<'db> {
    db: &'db StateDb,
}

impl<'db> Snapshots<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Records that the agent took `name` on `vmid` now.
    pub fn record(&self, vmid: u32, name: &str) -> Result<(), SnapshotsError> {
        check_vmid(vmid)?;
        check_text("snapshot name", name, MAX_NAME)?;
        let now = self.db.now();
        self.db.with_conn(|conn| {
            conn.execute(
                "INSERT INTO agent_snapshots (vmid, name, taken_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (vmid, name) DO UPDATE SET taken_at = excluded.taken_at",
                params![vmid, name, now],
            )
        })?;
        Ok(())
    }

    /// `vmid`'s agent-made snapshots among `existing` (the names Proxmox lists now). Records of
    /// snapshots gone from Proxmox are dropped, except the newest, which keeps the interval.
    pub fn reconcile(
        &self,
        vmid: u32,
        existing: &[String],
    ) -> Result<GuestSnapshots, SnapshotsError> {
        check_vmid(vmid)?;
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let last: Option<Timestamp> = tx
                .query_row(
                    "SELECT MAX(taken_at) FROM agent_snapshots WHERE vmid = ?1",
                    [vmid],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            let names: Vec<(String, Timestamp)> = {
                let mut stmt = tx.prepare(
                    "SELECT name, taken_at FROM agent_snapshots WHERE vmid = ?1 ORDER BY name",
                )?;
                let rows = stmt.query_map([vmid], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let (live, gone): (Vec<_>, Vec<_>) =
                names.into_iter().partition(|(n, _)| existing.contains(n));
            for (name, at) in gone {
                if Some(at) != last {
                    tx.execute(
                        "DELETE FROM agent_snapshots WHERE vmid = ?1 AND name = ?2",
                        params![vmid, name],
                    )?;
                }
            }
            tx.commit()?;
            Ok(GuestSnapshots {
                live: live.into_iter().map(|(n, _)| n).collect(),
                last_taken_at: last,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::infra::state::{Clock, FakeClock};

    fn db() -> (tempfile::TempDir, StateDb, Arc<FakeClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::new(Timestamp::from_unix_millis(
            1_800_000_000_000,
        )));
        let db = StateDb::open_with_clock(dir.path(), clock.clone()).unwrap();
        (dir, db, clock)
    }

    #[test]
    fn only_snapshots_that_still_exist_are_live() {
        let (_dir, db, clock) = db();
        db.snapshots().record(101, "a").unwrap();
        clock.advance(Duration::from_secs(60));
        db.snapshots().record(101, "b").unwrap();
        db.snapshots().record(102, "c").unwrap();
        let got = db
            .snapshots()
            .reconcile(101, &["b".to_owned(), "manual".to_owned()])
            .unwrap();
        assert_eq!(got.live, vec!["b".to_owned()]);
        assert_eq!(got.last_taken_at, Some(clock.now()));
    }

    #[test]
    fn the_newest_record_outlives_its_snapshot_so_the_interval_holds() {
        let (_dir, db, clock) = db();
        db.snapshots().record(101, "a").unwrap();
        let taken = clock.now();
        clock.advance(Duration::from_secs(5));
        let got = db.snapshots().reconcile(101, &[]).unwrap();
        assert!(got.live.is_empty());
        assert_eq!(got.last_taken_at, Some(taken));
        assert_eq!(
            db.snapshots().reconcile(101, &[]).unwrap().last_taken_at,
            Some(taken)
        );
    }

    #[test]
    fn a_guest_without_records_has_none() {
        let (_dir, db, _clock) = db();
        let got = db.snapshots().reconcile(101, &["x".to_owned()]).unwrap();
        assert_eq!(
            got,
            GuestSnapshots {
                live: vec![],
                last_taken_at: None
            }
        );
    }
}
