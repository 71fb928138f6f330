//! The data directory holds the database (password hashes, TOTP secrets),
//! the signing keys and ticket attachments: only the account the platform
//! runs as may read it. Modes are set explicitly, not left to the umask, and
//! set again on every start so an install made before this rule is fixed.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) if missing, and makes it owner-only (0700).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    restrict(dir, 0o700)
}

/// Makes an existing file owner-only (0600); a missing file is left alone.
pub fn restrict_file(path: &Path) -> io::Result<()> {
    match restrict(path, 0o600) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes `contents` to a new file that only the owner can read (0600).
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // `mode` applies only to a file this call created.
    restrict(path, 0o600)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn directories_and_files_are_owner_only_also_when_they_existed() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_dir(&dir).expect("create_dir");
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("vmcloud.db");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        restrict_file(&file).expect("restrict");
        assert_eq!(mode(&file), 0o600);
        restrict_file(&dir.join("missing")).expect("a missing file is fine");

        let written = dir.join("attachment");
        std::fs::write(&written, b"old").expect("write");
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_new(&written, b"secret").expect("write_new");
        assert_eq!(mode(&written), 0o600);
        assert_eq!(std::fs::read(&written).expect("read"), b"secret");
    }
}
