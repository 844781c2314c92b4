//! The agent's state database: one SQLite file, `state.db`, in the state directory.
//!
//! What it holds, one submodule each: the operation [`journal`] (multi-step operations with
//! their in-flight UPIDs and the resources each step created), per-guest bearer [`tokens`]
//! (stored only as SHA-256 hashes), the hash-chained [`audit`] log, [`idempotency`] keys and
//! the [`jobs`] history of the per-guest work queue, and the [`snapshots`] the agent took.
//!
//! How it is opened: the state directory must already exist (packaging creates it with the
//! agent's owner and mode; the agent never invents its own state location). The file is
//! created `0600` without following symlinks, and reset to `0600` if it had another mode. SQLite
//! creates its `-wal` and `-shm` files with the database file's mode. The connection runs in
//! WAL mode with `foreign_keys=ON`, `synchronous=FULL` (a journal entry that says "this
//! operation created guest 9001" must survive a power cut, or a restart could orphan it) and a
//! busy timeout. The schema is versioned with `PRAGMA user_version`: [`schema`] applies the
//! missing migrations in order, each in its own transaction, and refuses a database written by
//! a newer agent. `PRAGMA application_id` marks the file as ours, so pointing the agent at some
//! other SQLite database fails clearly instead of migrating it.
//!
//! How it is shared: one [`rusqlite::Connection`] behind a `std::sync::Mutex`, in an `Arc`
//! ([`StateDb`] is a cheap clone). Every typed API is synchronous and short (a few indexed
//! statements); async code calls them through [`StateDb::run`], which moves the closure onto
//! tokio's blocking pool so a slow disk never stalls the reactor. One connection serializes all
//! access, which is what SQLite does for writers anyway and keeps each check-then-write inside
//! one transaction free of races within the process. A dedicated DB thread with a channel would
//! serialize the same way but needs a message type per call; the mutex keeps the APIs plain
//! functions that unit tests call directly.
//!
//! Limits: one process owns the database (WAL and the busy timeout make an occasional reader,
//! such as a backup, harmless, but two agents on one state dir are not supported). Timestamps
//! come from a [`Clock`] so tests of expiry move a [`FakeClock`] instead of sleeping. Guest ids
//! are plain `u32` vmids checked against Proxmox's range (`pve-common` `pve_verify_vmid`:
//! `^[1-9][0-9]{2,8}$`, i.e. 100..=999999999).

pub mod audit;
pub mod backups;
pub mod clock;
pub mod idempotency;
pub mod jobs;
pub mod journal;
pub mod retention;
pub mod schema;
pub mod snapshots;
pub mod tokens;

use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use self::audit::{Audit, AuditEntry, AuditError, ChainSummary, NewAuditEntry};
pub use self::backups::{
    BackupJobRow, BackupRunRow, Backups, BackupsError, RestoreTestRow, VerifyRow,
};
pub use self::clock::{Clock, FakeClock, SystemClock, Timestamp};
pub use self::idempotency::{Claim, Idempotency, IdempotencyError};
pub use self::jobs::{JobId, JobPhase, JobRecord, Jobs, JobsError};
pub use self::journal::{
    CreatedResource, Journal, JournalError, NewOperation, Operation, OperationId, OperationState,
    Resource, Step, StepRef, StepState,
};
pub use self::retention::{Prune, Pruned, Retention, RetentionError};
pub use self::schema::SchemaError;
pub use self::snapshots::{GuestSnapshots, Snapshots, SnapshotsError};
pub use self::tokens::{
    MintedToken, TokenId, TokenIndex, TokenInfo, TokenOwner, Tokens, TokensError,
};

/// File name of the database inside the state directory.
pub const DB_FILE_NAME: &str = "state.db";

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Lowest and highest guest id Proxmox accepts (`pve_verify_vmid` in pve-common).
const VMID_MIN: u32 = 100;
const VMID_MAX: u32 = 999_999_999;

/// Failure to open or prepare the state database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("State directory {} does not exist or is not a directory", path.display())]
    NoStateDir { path: PathBuf },
    #[error("Could not create or open the database file {}", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Could not restrict the database file {} to mode 0600", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Could not open the SQLite database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("Could not configure the SQLite connection for {}", path.display())]
    Configure {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("SQLite refused WAL mode for {} (journal mode is {mode:?})", path.display())]
    NotWal { path: PathBuf, mode: String },
    #[error("Could not prepare the schema of {}", path.display())]
    Schema {
        path: PathBuf,
        #[source]
        source: SchemaError,
    },
}

/// A call through [`StateDb::run`] never ran to completion because its blocking task was
/// cancelled (the tokio runtime is shutting down). Each module's error converts from it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("State database call was cancelled because the runtime is shutting down")]
pub struct Interrupted;

/// A caller-supplied text field was empty, too long or held characters the field forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

/// Handle on the state database; clones share one connection.
#[derive(Clone)]
pub struct StateDb {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    path: PathBuf,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl StateDb {
    /// Opens (creating if needed) `state.db` in `state_dir` with the system clock.
    pub fn open(state_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with_clock(state_dir, Arc::new(SystemClock))
    }

    /// Opens (creating if needed) `state.db` in `state_dir`, taking timestamps from `clock`.
    pub fn open_with_clock(state_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        if !state_dir.is_dir() {
            return Err(OpenError::NoStateDir {
                path: state_dir.to_path_buf(),
            });
        }
        let path = state_dir.join(DB_FILE_NAME);
        create_private_file(&path)?;
        let configure_err = |source| OpenError::Configure {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|source| OpenError::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(configure_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(configure_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotWal { path, mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(configure_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(configure_err)?;
        schema::migrate(&mut conn).map_err(|source| OpenError::Schema {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                clock,
                path,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The clock every timestamp in this database comes from.
    pub fn clock(&self) -> &dyn Clock {
        self.shared.clock.as_ref()
    }

    /// The schema version the database is at (after migrations, always [`schema::LATEST`]).
    pub fn schema_version(&self) -> Result<u32, rusqlite::Error> {
        self.with_conn(|conn| schema::user_version(conn))
    }

    /// The operation journal.
    pub fn journal(&self) -> Journal<'_> {
        Journal::new(self)
    }

    /// Per-guest bearer tokens.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens::new(self)
    }

    /// The hash-chained audit log.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    /// Idempotency keys.
    pub fn idempotency(&self) -> Idempotency<'_> {
        Idempotency::new(self)
    }

    /// Job history of the per-guest work queue.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs::new(self)
    }

    /// Pruning of finished history ([`retention`]).
    pub fn retention(&self) -> Prune<'_> {
        Prune::new(self)
    }

    /// Backup, restore-test and verify history.
    pub fn backups(&self) -> Backups<'_> {
        Backups::new(self)
    }

    /// Snapshots the agent took for guests (the snapshot cap counts these).
    pub fn snapshots(&self) -> Snapshots<'_> {
        Snapshots::new(self)
    }

    /// Runs `f` on tokio's blocking pool with a clone of this handle, for use from async code:
    /// `db.run(move |db| db.jobs().get(&id)).await`. A panic inside `f` is resumed in the
    /// caller (it is a bug, not a state); a cancelled blocking task becomes [`Interrupted`].
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&StateDb) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Interrupted> + Send + 'static,
    {
        let db = self.clone();
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(result) => result,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_cancelled) => Err(E::from(Interrupted)),
            },
        }
    }

    /// Runs `f` with exclusive use of the connection.
    ///
    /// A poisoned mutex is recovered: the panicking holder's open `Transaction` (if any) was
    /// rolled back when it was dropped during unwinding, so the connection is in a clean state.
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let mut conn = self
            .shared
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }
}

/// Creates the database file `0600` if missing (never through a symlink) and tightens an
/// existing file to `0600`.
fn create_private_file(path: &Path) -> Result<(), OpenError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|source| OpenError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;
    let mode = file
        .metadata()
        .map_err(|source| OpenError::Permissions {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o777 != 0o600 {
        tracing::warn!(path = %path.display(), mode = format_args!("{:o}", mode & 0o777),
            "state database had loose permissions; restricting to 0600");
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|source| OpenError::Permissions {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// Checks that `vmid` is in Proxmox's guest id range.
pub(crate) fn check_vmid(vmid: u32) -> Result<(), InvalidField> {
    if (VMID_MIN..=VMID_MAX).contains(&vmid) {
        Ok(())
    } else {
        Err(InvalidField {
            field: "vmid",
            reason: format!("{vmid} is outside Proxmox's range {VMID_MIN}..={VMID_MAX}"),
        })
    }
}

/// Checks a caller-supplied label: non-empty, at most `max` bytes, no control characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField {
            field,
            reason: "must not be empty".into(),
        });
    }
    if value.len() > max {
        return Err(InvalidField {
            field,
            reason: format!("is {} bytes long; at most {max} are allowed", value.len()),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField {
            field,
            reason: "must not contain control characters".into(),
        });
    }
    Ok(())
}

/// Shortens free text (error messages) to at most `max` bytes on a character boundary, so an
/// overly long error from a failing task is kept rather than failing the write.
pub(crate) fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_range_matches_proxmox() {
        assert!(check_vmid(100).is_ok());
        assert!(check_vmid(999_999_999).is_ok());
        assert_eq!(
            check_vmid(99).unwrap_err().to_string(),
            "Invalid vmid: 99 is outside Proxmox's range 100..=999999999"
        );
        assert!(check_vmid(1_000_000_000).is_err());
    }

    #[test]
    fn text_check_names_the_field() {
        assert_eq!(
            check_text("kind", "", 8).unwrap_err().to_string(),
            "Invalid kind: must not be empty"
        );
        assert_eq!(
            check_text("kind", "abcdefghi", 8).unwrap_err().to_string(),
            "Invalid kind: is 9 bytes long; at most 8 are allowed"
        );
        assert!(check_text("kind", "a\nb", 8).is_err());
        assert!(check_text("kind", "restore", 8).is_ok());
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_text("short", 10), "short");
        let long = "é".repeat(10);
        let cut = truncate_text(&long, 8);
        assert!(cut.len() <= 8, "{cut}");
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn open_refuses_missing_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = StateDb::open(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "State directory {} does not exist or is not a directory",
                missing.display()
            )
        );
    }

    #[test]
    fn database_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mode = std::fs::metadata(db.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn wal_and_shm_files_are_private_too() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        db.tokens().mint(9001).unwrap();
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            seen.push(entry.file_name().to_string_lossy().into_owned());
            assert_eq!(mode & 0o077, 0, "{:?} is mode {mode:o}", entry.file_name());
        }
        seen.sort();
        assert_eq!(seen, ["state.db", "state.db-shm", "state.db-wal"]);
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        StateDb::open(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn symlinked_database_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.db");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(DB_FILE_NAME)).unwrap();
        let err = StateDb::open(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::CreateFile { .. }), "{err:?}");
    }

    #[test]
    fn connection_runs_in_wal_mode_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        db.with_conn(|conn| {
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let fk: bool = conn
                .pragma_query_value(None, "foreign_keys", |r| r.get(0))
                .unwrap();
            assert!(fk);
        });
    }

    #[tokio::test]
    async fn run_executes_off_the_reactor_and_returns_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let version = db
            .run(|db| db.schema_version().map_err(|_| Interrupted))
            .await
            .unwrap();
        assert_eq!(version, schema::LATEST);
    }
}
