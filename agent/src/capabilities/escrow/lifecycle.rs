//! The escrow's life on a host, as files: create (wrap the live key `K` under a fresh recovery
//! code `R`), rotate (a new `R` for the same `K`), status, and recover (open a wrapped copy with
//! `R` and install `K` as the Proxmox storage's key file on a new box).
//!
//! Run by root: PVE keeps the live key in `/etc/pve/priv/storage/<storage>.enc` (root, 0600),
//! which the agent daemon never reads. Every file written here is written whole (temporary
//! file, fsync, rename) with mode 0600, so a crash leaves the old file or the new one. Nothing
//! is ever deleted: a replaced key file is kept beside the new one as `<name>.old`, as PVE's own
//! `encryption-key autogen` does.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::key_config::{KeyConfig, KeyConfigError, KeyFingerprint};
use super::pbs_key::{KeyError, PbsKey};
use super::recovery_code::{CodeError, RecoveryCode};
use crate::infra::whole_file;

/// Where one storage's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowPaths {
    /// PVE's live key file (`<pve_priv_dir>/storage/<storage>.enc`).
    pub live_key: PathBuf,
    /// The wrapped copy under `R` (`<escrow_dir>/<storage>.json`).
    pub blob: PathBuf,
}

/// Why an escrow step did nothing. The text names the file and what to do; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Shape {
        path: PathBuf,
        #[source]
        source: KeyConfigError,
    },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("no live key at {0}: the storage has no client encryption key to escrow")]
    NoLiveKey(PathBuf),
    #[error(
        "an escrow already exists at {0}; `escrow rotate` gives it a new recovery code, `escrow status` shows it"
    )]
    Exists(PathBuf),
    #[error("no escrow at {0}; make one with `escrow create`")]
    NoEscrow(PathBuf),
    #[error(
        "the escrow at {blob} holds key {escrowed}, but the storage's key is now {live}: backups made \
         before the change still need the escrowed key, so it is not replaced; move {blob} somewhere \
         safe, then run `escrow create`"
    )]
    KeyChanged {
        blob: PathBuf,
        escrowed: KeyFingerprint,
        live: KeyFingerprint,
    },
    #[error(
        "the escrow holds key {recovered}, but this host expects key {expected}: it is another \
         storage's or another host's escrow"
    )]
    NotExpected {
        recovered: KeyFingerprint,
        expected: KeyFingerprint,
    },
    #[error(
        "{path} already holds another key ({live}); the escrow holds {recovered}. Nothing was \
         changed; run again with --replace to keep the present key as {path}.old and install the \
         recovered one"
    )]
    LiveDiffers {
        path: PathBuf,
        /// The present key's fingerprint, or why it has none.
        live: String,
        recovered: KeyFingerprint,
    },
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error("the new escrow did not open with its own recovery code; nothing was written")]
    SelfCheck,
    #[error("the recovery code could not be shown ({0}); no escrow was written")]
    NotShown(std::io::Error),
    #[error(
        "the escrow at {0} records no key fingerprint, so it cannot be told which key it holds; \
         move it somewhere safe, then run `escrow create`"
    )]
    Unidentified(PathBuf),
}

/// A new escrow: the code to show once, and the wrapped copy that was written.
#[derive(Debug)]
pub struct Created {
    pub code: RecoveryCode,
    pub blob: KeyConfig,
}

/// What `status` found; fingerprints and dates only.
#[derive(Debug)]
pub struct Status {
    pub blob: Result<Option<KeyConfig>, EscrowError>,
    pub live: Result<Option<KeyFingerprint>, EscrowError>,
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The key file was written.
    New(KeyFingerprint),
    /// The key file already held this key; nothing changed.
    AlreadyThere(KeyFingerprint),
    /// Another key was moved to `<key file>.old` and this one written.
    Replaced {
        installed: KeyFingerprint,
        kept_as: PathBuf,
    },
}

/// How the new code reaches the customer; called before the escrow is written, so a code that
/// could not be shown never guards an escrow.
pub type Show<'a> = &'a mut dyn FnMut(&Created) -> std::io::Result<()>;

/// Wraps the live key under a fresh recovery code, shows it (`show`) and writes the escrow.
/// Refuses when one exists (rotating is a separate, deliberate step).
pub fn create(
    paths: &EscrowPaths,
    hint: &str,
    now: i64,
    show: Show<'_>,
) -> Result<Created, EscrowError> {
    if paths.blob.exists() {
        return Err(EscrowError::Exists(paths.blob.clone()));
    }
    let live = read_live_key(&paths.live_key)?;
    wrap_and_write(paths, &live, hint, now, show)
}

/// A new recovery code for the same key: the escrow is re-wrapped and replaced. This is not
/// key rotation; backups stay under the same key.
pub fn rotate(
    paths: &EscrowPaths,
    hint: &str,
    now: i64,
    show: Show<'_>,
) -> Result<Created, EscrowError> {
    let old = match read_config(&paths.blob)? {
        Some(c) => c,
        None => return Err(EscrowError::NoEscrow(paths.blob.clone())),
    };
    let live = read_live_key(&paths.live_key)?;
    let live_fp = live.fingerprint();
    match old.fingerprint {
        Some(escrowed) if escrowed != live_fp => {
            return Err(EscrowError::KeyChanged {
                blob: paths.blob.clone(),
                escrowed,
                live: live_fp,
            });
        }
        Some(_) => {}
        // Without a fingerprint nothing says which key the old escrow holds; it may be the
        // only way to an older key, so it is not replaced.
        None => return Err(EscrowError::Unidentified(paths.blob.clone())),
    }
    wrap_and_write(paths, &live, hint, now, show)
}

/// Fingerprints and dates of the escrow and the live key.
pub fn status(paths: &EscrowPaths) -> Status {
    let live = match read_config(&paths.live_key) {
        Ok(Some(cfg)) => PbsKey::from_plain(&cfg)
            .map(|k| Some(k.fingerprint()))
            .map_err(|source| EscrowError::Key {
                path: paths.live_key.clone(),
                source,
            }),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    Status {
        blob: read_config(&paths.blob),
        live,
    }
}

/// Opens the escrow at `blob` with `code` and installs the key at `live_key` (0600). With
/// `expected`, the key must be that one.
pub fn recover(
    blob: &Path,
    code: &RecoveryCode,
    live_key: &Path,
    expected: Option<KeyFingerprint>,
    replace: bool,
    now: i64,
) -> Result<Installed, EscrowError> {
    let cfg = read_config(blob)?.ok_or_else(|| EscrowError::NoEscrow(blob.to_owned()))?;
    let key = PbsKey::unwrap(&cfg, code.passphrase()).map_err(|source| EscrowError::Key {
        path: blob.to_owned(),
        source,
    })?;
    let recovered = key.fingerprint();
    if let Some(expected) = expected
        && expected != recovered
    {
        return Err(EscrowError::NotExpected {
            recovered,
            expected,
        });
    }
    let mut kept_as = None;
    if let Some(present) = read_config(live_key)? {
        let same = PbsKey::from_plain(&present).is_ok_and(|k| k.bytes() == key.bytes());
        if same {
            return Ok(Installed::AlreadyThere(recovered));
        }
        if !replace {
            return Err(EscrowError::LiveDiffers {
                path: live_key.to_owned(),
                live: PbsKey::from_plain(&present).map_or_else(
                    |_| "an unusable key".to_owned(),
                    |k| k.fingerprint().to_string(),
                ),
                recovered,
            });
        }
        kept_as = Some(free_name(live_key)?);
    }
    if let Some(dir) = live_key.parent() {
        private_dir(dir)?;
    }
    // The new key is on disk before the present one moves aside, and `.old` files are never
    // overwritten (one may be the only copy of an older key).
    let tmp = write_temp(live_key, &key_file_text(&key.to_plain(now)))?;
    if let Some(old) = &kept_as
        && let Err(source) = std::fs::rename(live_key, old)
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(EscrowError::Write {
            path: old.clone(),
            source,
        });
    }
    commit(&tmp, live_key)?;
    Ok(match kept_as {
        None => Installed::New(recovered),
        Some(kept_as) => Installed::Replaced {
            installed: recovered,
            kept_as,
        },
    })
}

/// Key-file text as PVE stores it: pretty JSON and a newline.
pub fn key_file_text(cfg: &KeyConfig) -> String {
    let mut text = cfg.to_pretty_json();
    text.push('\n');
    text
}

fn wrap_and_write(
    paths: &EscrowPaths,
    live: &PbsKey,
    hint: &str,
    now: i64,
    show: Show<'_>,
) -> Result<Created, EscrowError> {
    let code = RecoveryCode::generate()?;
    let key_err = |source| EscrowError::Key {
        path: paths.live_key.clone(),
        source,
    };
    let blob = live
        .wrap(code.passphrase(), Some(hint.to_owned()), now)
        .map_err(key_err)?;
    // Prove the customer's code opens what is written before the code is shown.
    match PbsKey::unwrap(&blob, code.passphrase()) {
        Ok(k) if k.bytes() == live.bytes() => {}
        _ => return Err(EscrowError::SelfCheck),
    }
    if let Some(dir) = paths.blob.parent() {
        private_dir(dir)?;
    }
    let tmp = write_temp(&paths.blob, &key_file_text(&blob))?;
    let created = Created { code, blob };
    if let Err(e) = show(&created) {
        let _ = std::fs::remove_file(&tmp);
        return Err(EscrowError::NotShown(e));
    }
    commit(&tmp, &paths.blob)?;
    Ok(created)
}

/// Creates `dir` (0700) when it is missing; an existing directory is left as it is. On
/// pmxcfs (`/etc/pve`) modes are fixed by the filesystem and `chmod` answers EPERM, which is
/// fine: `priv` there is root-only already.
fn private_dir(dir: &Path) -> Result<(), EscrowError> {
    if dir.is_dir() {
        return Ok(());
    }
    let err = |source| EscrowError::Write {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Err(e) if e.raw_os_error() == Some(libc_eperm()) => Ok(()),
        other => other.map_err(err),
    }
}

fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}

/// `<path>.old`, or `<path>.old.N` for the first N not taken.
fn free_name(path: &Path) -> Result<PathBuf, EscrowError> {
    let first = with_suffix(path, ".old");
    if !first.exists() {
        return Ok(first);
    }
    (1..1000)
        .map(|n| with_suffix(path, &format!(".old.{n}")))
        .find(|p| !p.exists())
        .ok_or_else(|| EscrowError::Write {
            path: first,
            source: std::io::Error::other("a thousand older key files already; clean up first"),
        })
}

fn read_live_key(path: &Path) -> Result<PbsKey, EscrowError> {
    let cfg = read_config(path)?.ok_or_else(|| EscrowError::NoLiveKey(path.to_owned()))?;
    PbsKey::from_plain(&cfg).map_err(|source| EscrowError::Key {
        path: path.to_owned(),
        source,
    })
}

/// A key file's contents, `None` when there is no file.
fn read_config(path: &Path) -> Result<Option<KeyConfig>, EscrowError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EscrowError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    KeyConfig::parse(&text)
        .map(Some)
        .map_err(|source| EscrowError::Shape {
            path: path.to_owned(),
            source,
        })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `text` to a 0600 temporary file beside `path` and returns its name.
fn write_temp(path: &Path, text: &str) -> Result<PathBuf, EscrowError> {
    whole_file::write_temp(path, text, 0o600).map_err(|source| EscrowError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Puts the temporary file in place of `path`.
fn commit(tmp: &Path, path: &Path) -> Result<(), EscrowError> {
    whole_file::commit(tmp, path).map_err(|source| EscrowError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn setup() -> (tempfile::TempDir, EscrowPaths, PbsKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = PbsKey::from_bytes([42; 32], 1_700_000_000);
        let paths = EscrowPaths {
            live_key: dir.path().join("priv/storage/offsite.enc"),
            blob: dir.path().join("escrow/offsite.json"),
        };
        std::fs::create_dir_all(paths.live_key.parent().unwrap()).unwrap();
        std::fs::write(&paths.live_key, key_file_text(&key.to_plain(1_700_000_000))).unwrap();
        (dir, paths, key)
    }

    fn typed(code: &RecoveryCode) -> RecoveryCode {
        RecoveryCode::parse(&code.words().collect::<Vec<_>>().join(" ")).unwrap()
    }

    #[test]
    fn create_then_recover_on_a_new_box_gives_back_the_key_byte_for_byte() {
        let (dir, paths, key) = setup();
        let created = create(&paths, "hint", 1_700_000_500, &mut |_| Ok(())).unwrap();
        assert_eq!(
            std::fs::metadata(&paths.blob).unwrap().mode() & 0o777,
            0o600
        );
        let new_box = dir.path().join("newbox/priv/storage/offsite.enc");
        let done = recover(
            &paths.blob,
            &typed(&created.code),
            &new_box,
            Some(key.fingerprint()),
            false,
            1_700_001_000,
        )
        .unwrap();
        assert_eq!(done, Installed::New(key.fingerprint()));
        let installed = KeyConfig::parse(&std::fs::read_to_string(&new_box).unwrap()).unwrap();
        assert_eq!(PbsKey::from_plain(&installed).unwrap().bytes(), key.bytes());
        assert_eq!(installed.created, key.created());
        assert_eq!(std::fs::metadata(&new_box).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn create_refuses_when_an_escrow_exists() {
        let (_dir, paths, _) = setup();
        create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let before = std::fs::read(&paths.blob).unwrap();
        let e = create(&paths, "hint", 0, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, EscrowError::Exists(_)), "{e}");
        assert_eq!(std::fs::read(&paths.blob).unwrap(), before);
    }

    #[test]
    fn rotate_gives_a_new_code_and_the_old_one_no_longer_opens_it() {
        let (dir, paths, key) = setup();
        let first = create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let second = rotate(&paths, "hint", 10, &mut |_| Ok(())).unwrap();
        assert_ne!(first.code.passphrase(), second.code.passphrase());
        assert_eq!(second.blob.fingerprint, Some(key.fingerprint()));
        let target = dir.path().join("other.enc");
        let e = recover(&paths.blob, &first.code, &target, None, false, 0).unwrap_err();
        assert!(e.to_string().contains("wrong recovery code"), "{e}");
        assert!(!target.exists());
        recover(&paths.blob, &second.code, &target, None, false, 0).unwrap();
    }

    #[test]
    fn rotate_refuses_when_the_live_key_changed_since_the_escrow() {
        let (_dir, paths, _) = setup();
        create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let before = std::fs::read(&paths.blob).unwrap();
        let other = PbsKey::from_bytes([7; 32], 0);
        std::fs::write(&paths.live_key, key_file_text(&other.to_plain(0))).unwrap();
        let e = rotate(&paths, "hint", 0, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, EscrowError::KeyChanged { .. }), "{e}");
        assert_eq!(std::fs::read(&paths.blob).unwrap(), before);
    }

    #[test]
    fn recover_keeps_another_present_key_unless_told_to_replace_it() {
        let (dir, paths, key) = setup();
        let created = create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let target = dir.path().join("t.enc");
        let other = PbsKey::from_bytes([7; 32], 0);
        std::fs::write(&target, key_file_text(&other.to_plain(0))).unwrap();
        let e = recover(&paths.blob, &created.code, &target, None, false, 0).unwrap_err();
        assert!(matches!(e, EscrowError::LiveDiffers { .. }), "{e}");
        let done = recover(&paths.blob, &created.code, &target, None, true, 0).unwrap();
        let kept = dir.path().join("t.enc.old");
        assert_eq!(
            done,
            Installed::Replaced {
                installed: key.fingerprint(),
                kept_as: kept.clone()
            }
        );
        let old = KeyConfig::parse(&std::fs::read_to_string(kept).unwrap()).unwrap();
        assert_eq!(PbsKey::from_plain(&old).unwrap().bytes(), other.bytes());
        // A second replace keeps that `.old` too: it may be the only copy of an older key.
        let third = PbsKey::from_bytes([8; 32], 0);
        std::fs::write(&target, key_file_text(&third.to_plain(0))).unwrap();
        let done = recover(&paths.blob, &created.code, &target, None, true, 0).unwrap();
        let kept2 = dir.path().join("t.enc.old.1");
        assert!(matches!(done, Installed::Replaced { ref kept_as, .. } if *kept_as == kept2));
        let old = KeyConfig::parse(&std::fs::read_to_string(dir.path().join("t.enc.old")).unwrap())
            .unwrap();
        assert_eq!(PbsKey::from_plain(&old).unwrap().bytes(), other.bytes());
    }

    #[test]
    fn a_code_that_cannot_be_shown_leaves_no_escrow() {
        let (_dir, paths, _) = setup();
        let e = create(&paths, "hint", 0, &mut |_| {
            Err(std::io::Error::other("stdout closed"))
        })
        .unwrap_err();
        assert!(matches!(e, EscrowError::NotShown(_)), "{e}");
        assert!(!paths.blob.exists());
        assert_eq!(
            std::fs::read_dir(paths.blob.parent().unwrap())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn rotate_keeps_an_escrow_that_names_no_key() {
        let (_dir, paths, _) = setup();
        create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let mut blob = KeyConfig::parse(&std::fs::read_to_string(&paths.blob).unwrap()).unwrap();
        blob.fingerprint = None;
        std::fs::write(&paths.blob, key_file_text(&blob)).unwrap();
        let e = rotate(&paths, "hint", 0, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, EscrowError::Unidentified(_)), "{e}");
    }

    #[test]
    fn recover_twice_changes_nothing_the_second_time() {
        let (_dir, paths, key) = setup();
        let created = create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let before = std::fs::read(&paths.live_key).unwrap();
        let done = recover(&paths.blob, &created.code, &paths.live_key, None, false, 5).unwrap();
        assert_eq!(done, Installed::AlreadyThere(key.fingerprint()));
        assert_eq!(std::fs::read(&paths.live_key).unwrap(), before);
    }

    #[test]
    fn recover_refuses_an_escrow_of_another_key() {
        let (dir, paths, _) = setup();
        let created = create(&paths, "hint", 0, &mut |_| Ok(())).unwrap();
        let target = dir.path().join("t.enc");
        let e = recover(
            &paths.blob,
            &created.code,
            &target,
            Some(KeyFingerprint::from_bytes([3; 32])),
            false,
            0,
        )
        .unwrap_err();
        assert!(matches!(e, EscrowError::NotExpected { .. }), "{e}");
        assert!(!target.exists());
    }

    #[test]
    fn status_shows_fingerprints_and_dates() {
        let (_dir, paths, key) = setup();
        let s = status(&paths);
        assert!(s.blob.unwrap().is_none());
        assert_eq!(s.live.unwrap(), Some(key.fingerprint()));
        create(&paths, "hint", 77, &mut |_| Ok(())).unwrap();
        let blob = status(&paths).blob.unwrap().unwrap();
        assert_eq!(blob.fingerprint, Some(key.fingerprint()));
        assert_eq!(blob.modified, 77);
    }
}
