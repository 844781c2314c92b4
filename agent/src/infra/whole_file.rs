//! Writing a file whole: a temporary file beside it (created with its final mode, so it is
//! never readable by anyone else, and never through a planted symlink: `O_EXCL`), fsynced, then
//! renamed over the target and the directory fsynced. A crash leaves the old file or the new
//! one, never half of either.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Writes `text` to a temporary file beside `path` with `mode` (fsynced) and returns its name;
/// [`commit`] puts it in place. Nothing is left behind on failure.
pub fn write_temp(path: &Path, text: &str, mode: u32) -> std::io::Result<PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(name);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed `mode`; the file gets exactly it.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames the temporary file from [`write_temp`] over `path` and fsyncs the directory.
pub fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    let result = (|| {
        std::fs::rename(tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// [`write_temp`] then [`commit`].
pub fn write(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let tmp = write_temp(path, text, mode)?;
    commit(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_written_file_has_its_text_and_mode_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "old").unwrap();
        write(&path, "new", 0o640).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
