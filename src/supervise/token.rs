//! The gateway token of `gateway_token: generate`: 32 random bytes (hex) made once in
//! `STATE_DIR/.openclaw-supervisor.token` (mode 0600: written to a new `O_EXCL|O_NOFOLLOW` file,
//! then linked into place, which never replaces what is there) and read again on every
//! start, so each gateway keeps its own token across restarts of itself and of the daemon, and no
//! two gateways share one. A file at that name that is a symlink, not a regular file, not ours, or
//! readable by others is refused: the instance does not start, and the error names the file.
//!
//! Blocking (a few syscalls on the state dir): called from the start's preflight and the API's
//! GetToken/GetEnvironment on blocking threads.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The token file's name in the state dir.
pub const FILE_NAME: &str = ".openclaw-supervisor.token";

/// The token file of the instance whose state dir is `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The token kept in `state_dir`, made first if there is none (a missing state dir is an error:
/// the start's preflight makes it first). The error names the file and says what to do.
pub fn ensure(state_dir: &Path) -> Result<String, String> {
    let file = path(state_dir);
    match read_io(&file) {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    if !state_dir.is_dir() {
        return Err(format!(
            "no gateway token yet: it is made in the state dir {} at the instance's first start",
            state_dir.display()
        ));
    }
    let token = generate().map_err(|e| format!("cannot make a gateway token: {e}"))?;
    place(state_dir, token)
}

/// Keeps `token` as the instance's gateway token unless one is kept already (`openclawctl import`:
/// the token OpenClaw's own unit gave the gateway, so that its clients keep working). Returns
/// whether `token` was written; an existing file is left as it is, with the same checks as
/// [`ensure`].
pub fn keep(state_dir: &Path, token: &str) -> Result<bool, String> {
    if read_io(&path(state_dir))?.is_some() {
        return Ok(false);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(['\n', '\r']) {
        return Err("the token to keep is empty or not one line".to_string());
    }
    let placed = place(state_dir, token.to_string())?;
    Ok(placed == token)
}

/// Writes `token` as the token file of `state_dir` unless one is there; returns the token the
/// file holds after.
fn place(state_dir: &Path, token: String) -> Result<String, String> {
    let file = path(state_dir);
    // Written whole under a name of its own, then linked into place: link(2) never replaces, so a
    // reader (a start and a GetToken at once) sees no file or the whole token, never a part.
    let tmp = state_dir.join(format!(
        "{FILE_NAME}.new-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "cannot write the gateway token {}: {e}",
            file.display()
        ));
    }
    let linked = std::fs::hard_link(&tmp, &file);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(token),
        // Made meanwhile (or a link planted): read what is there, with its checks.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_io(&file)?.ok_or_else(|| format!("{} vanished while read", file.display()))
        }
        Err(e) => Err(format!(
            "cannot create the gateway token {}: {e}",
            file.display()
        )),
    }
}

/// The token in `file`, `None` if there is no file. Refuses a symlink, anything but a regular
/// file, a file another user owns, or one others may read or write.
fn read_io(file: &Path) -> Result<Option<String>, String> {
    let refuse = |why: String| {
        format!(
            "refusing the gateway token {}: {why}; remove it and the daemon makes a new one at the next start",
            file.display()
        )
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(file);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(refuse("it is a symbolic link".into()))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(refuse(format!("it is {}", crate::fsx::kind_of(&meta))));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse(format!(
            "it belongs to {}, not to the daemon's user",
            crate::fsx::user_name(meta.uid())
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode is {:o}: others may read it (chmod 600 it, or remove it)",
            meta.mode() & 0o777
        )));
    }
    let mut text = String::new();
    f.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(refuse("it is empty".into()));
    }
    Ok(Some(token))
}

/// 32 random bytes from the kernel, as 64 hex digits.
fn generate() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let t = ensure(dir.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ensure(dir.path()).unwrap(), t);
        let mode = std::fs::metadata(path(dir.path())).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(ensure(other.path()).unwrap(), t);
    }

    #[test]
    fn racing_makers_agree_on_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let tokens: Vec<String> = std::thread::scope(|s| {
            let makers: Vec<_> = (0..8).map(|_| s.spawn(|| ensure(dir.path()))).collect();
            makers
                .into_iter()
                .map(|m| m.join().unwrap().unwrap())
                .collect()
        });
        assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
        // Only the token file is left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn none_before_the_state_dir_exists() {
        let dir = tempfile::tempdir().unwrap();
        let e = ensure(&dir.path().join("never-started")).unwrap_err();
        assert!(e.contains("first start"), "{e}");
    }

    #[test]
    fn a_link_a_dir_or_a_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "secret\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, path(dir.path())).unwrap();
        let e = ensure(dir.path()).unwrap_err();
        assert!(e.contains("symbolic link") && e.contains(FILE_NAME), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(path(dir.path())).unwrap();
        assert!(ensure(dir.path()).unwrap_err().contains("a directory"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "abc\n").unwrap();
        std::fs::set_permissions(path(dir.path()), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ensure(dir.path()).unwrap_err().contains("mode is 644"));
    }
}
