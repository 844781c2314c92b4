//! Reading a secret (API token, key) from a file only when no one but the agent can read it.
//!
//! An operator's `token_file` or key file must be a regular file owned by the agent's own uid
//! with no group or other permission bits at all (0600 or 0400): a token another local user
//! could read is a token they hold. A systemd credential (`$CREDENTIALS_DIRECTORY`, private to
//! the unit and immutable) may instead be root's: on tmpfs systemd grants the unit's user read
//! access by an ACL, whose mask shows in the group bits; so there only "other" bits are refused.
//! The check is on the opened file (`fstat`), so the file read is the file checked.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Where a secret comes from; decides which permission bits are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A file an operator configured.
    File,
    /// A systemd credential.
    Credential,
}

/// Why a secret file is not read; the text names the file and what to change.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error(
        "secret file {path} is readable or writable by {who} (mode {mode:04o}); make it 0600 or 0400"
    )]
    Exposed {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("secret file {path} is owned by uid {owner}, not by the agent's uid {agent}")]
    Owner {
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
}

/// Reads the secret at `path` after checking its type, owner and mode.
pub fn read(path: &Path, origin: Origin) -> Result<String, SecretFileError> {
    let read_err = |source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check(path, &meta, origin, nix::unistd::geteuid().as_raw())?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    Ok(text)
}

fn check(
    path: &Path,
    meta: &std::fs::Metadata,
    origin: Origin,
    agent: u32,
) -> Result<(), SecretFileError> {
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile(path.to_owned()));
    }
    let mode = meta.mode() & 0o7777;
    let (refused, who) = match origin {
        Origin::File => (0o077, "group or others"),
        Origin::Credential => (0o007, "others"),
    };
    if mode & refused != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_owned(),
            who,
            mode,
        });
    }
    let owner_ok = match origin {
        Origin::File => meta.uid() == agent,
        Origin::Credential => meta.uid() == agent || meta.uid() == 0,
    };
    if !owner_ok {
        return Err(SecretFileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            agent,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn secret(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "user@pve!t:secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_private_file_is_read() {
        let (_d, path) = secret(0o600);
        assert_eq!(read(&path, Origin::File).unwrap(), "user@pve!t:secret");
    }

    #[test]
    fn a_group_readable_file_is_refused_naming_file_and_mode() {
        let (_d, path) = secret(0o640);
        assert_eq!(
            read(&path, Origin::File).unwrap_err().to_string(),
            format!(
                "secret file {} is readable or writable by group or others (mode 0640); make it 0600 or 0400",
                path.display()
            )
        );
    }

    #[test]
    fn a_world_readable_credential_is_refused() {
        let (_d, path) = secret(0o444);
        assert!(matches!(
            read(&path, Origin::Credential),
            Err(SecretFileError::Exposed { mode: 0o444, .. })
        ));
    }

    #[test]
    fn a_credential_with_an_acl_mask_in_the_group_bits_is_read() {
        let (_d, path) = secret(0o440);
        assert!(read(&path, Origin::Credential).is_ok());
    }

    #[test]
    fn a_file_of_another_user_is_refused_naming_both_uids() {
        let (_d, path) = secret(0o600);
        let meta = std::fs::metadata(&path).unwrap();
        let other = meta.uid() + 1;
        assert_eq!(
            check(&path, &meta, Origin::File, other)
                .unwrap_err()
                .to_string(),
            format!(
                "secret file {} is owned by uid {}, not by the agent's uid {other}",
                path.display(),
                meta.uid()
            )
        );
    }

    #[test]
    fn a_directory_is_not_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(dir.path(), Origin::File),
            Err(SecretFileError::NotAFile(_))
        ));
    }
}
