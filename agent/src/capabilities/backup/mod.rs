//! Backups of guests: policies and schedules, due-ness, the vzdump runs on the guest's queue,
//! PBS verify, and the history that answers "when was this guest last backed up, how, where".
//!
//! - [`settings`]: the `[backup]` configuration (tiers, policies, scratch range).
//! - [`schedule`]: calendar events (`daily 02:30`, `sun 04:00`) evaluated in local time.
//! - [`due`]: whether a guest's backup is due and the human reason.
//! - [`service`]: starting backups (controller, operator, scheduler), their status, listing
//!   what exists on each tier, and PBS verify.
//! - [`restore_test`]: self-restore-tests into scratch guests, always destroyed again.
//!
//! The scheduler that acts on these by itself is a front end (`frontends::scheduler`).
//!
//! Limits: one node. A backup interrupted by an agent restart is recorded as failed even if
//! Proxmox finished it; the archive still counts for due-ness, which is read from the storage.

pub mod due;
pub mod restore_test;
pub mod schedule;
pub mod service;
pub mod settings;

pub use schedule::{Schedule, ScheduleError};
pub use service::{BackupError, BackupService, Trigger};
pub(crate) use settings::RawBackup;
pub use settings::{BackupSettings, Policy, Retention, Tier, TierKind};
