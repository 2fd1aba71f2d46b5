//! Files and directories opened as the daemon means them, on a host it does not fully trust: no
//! symlink followed where the daemon writes, nothing but a regular file read as one, and no
//! directory used that another user could write to or that another user owns (sshd's StrictModes).
//!
//! Every function here is a few syscalls on the path it is given (and its ancestors for
//! [`check_dir`]); callers that may meet a hung disk call them off the runtime.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The largest profile the daemon reads (1 MiB): a profile is a few hundred bytes.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Opens `path` for appending, creating it with `mode`, without following a symlink at its last
/// component (`O_NOFOLLOW`; `O_NONBLOCK` so that a FIFO planted there does not hang the open).
/// Anything but a regular file there is refused, with an error that names the path and says why.
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        // std adds O_CLOEXEC itself.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refused(path, e))?;
    regular(path, &file)?;
    Ok(file)
}

/// Creates `path` for writing with `mode`: `O_EXCL|O_NOFOLLOW`, so that it is always a new file of
/// the daemon's. Whatever was at that name before (a file, a planted symlink) is unlinked first:
/// an unlink removes the link itself, never its target.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot remove {} before writing it: {e}", path.display()),
            ))
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refused(path, e))
}

/// Opens `path` for reading without following a symlink at its last component; anything but a
/// regular file is refused.
pub fn open_read_nofollow(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refused(path, e))?;
    regular(path, &file)?;
    Ok(file)
}

/// Reads a regular file (a symlink to one is fine) of at most `max` bytes as text: looked at
/// before it is opened and again after, opened `O_NONBLOCK`, so that a FIFO or a device is an
/// error, never a hang, and a huge file is never read whole.
pub fn read_regular(path: &Path, max: u64) -> io::Result<String> {
    use std::io::Read;
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(invalid(format!(
                "it is {}, not a regular file",
                kind_of(meta)
            )));
        }
        if meta.len() > max {
            return Err(invalid(format!(
                "it is {} bytes, more than the {max} read",
                meta.len()
            )));
        }
        Ok(())
    };
    check(&std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    check(&file.metadata()?)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(invalid(format!("it is more than the {max} bytes read")));
    }
    Ok(text)
}

/// `ELOOP` from an `O_NOFOLLOW` open means a symlink sits at the path: say so in words.
fn refused(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; refused: the daemon never follows a link where it writes or keeps its state (remove the link)",
                path.display()
            ),
        )
    } else {
        e
    }
}

fn regular(path: &Path, file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file; refused",
                path.display(),
                kind_of(&meta)
            ),
        ))
    }
}

/// What a file is, in words: "a FIFO", "a directory", ...
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// Creates `path` and its missing parents with `mode` (less the umask), as the daemon's dirs are
/// made: 0750 for logs, 0700 for its state and its socket.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create the directory {}: {e}", path.display()),
            )
        })
}

/// Whether a file owned by `uid` may be trusted by this process: root's and its own are.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// `uid 65534 (nobody)`.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// sshd's StrictModes for a directory the daemon writes into (`what`: "log directory", ...):
/// it must be owned by the daemon's user or root and writable by no one else; each of its
/// ancestors must be owned by them too and writable by no one else unless sticky (`/tmp` is fine
/// as a parent, never as the directory itself). Otherwise another user could swap what the
/// daemon writes, or plant links where it writes. The error names the directory and what to do.
pub fn check_dir(path: &Path, what: &str) -> Result<(), String> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot use the {what} {}: {e}", path.display()))?;
    let mut first = true;
    for dir in real.ancestors() {
        let meta = std::fs::metadata(dir)
            .map_err(|e| format!("cannot use the {what} {}: {e}", dir.display()))?;
        let shown = if first {
            format!("the {what} {}", path.display())
        } else {
            format!(
                "{}, a parent of the {what} {}",
                dir.display(),
                path.display()
            )
        };
        if first && !meta.is_dir() {
            return Err(format!("{shown} is {}, not a directory", kind_of(&meta)));
        }
        if !trusted_owner(meta.uid()) {
            return Err(format!(
                "{shown} is owned by {}, not by this process's user ({}) or root: that user could replace what is kept there; chown it or choose another directory",
                user_name(meta.uid()),
                user_name(nix::unistd::geteuid().as_raw())
            ));
        }
        let mode = meta.mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && (first || !sticky) {
            return Err(format!(
                "{shown} has mode {:04o}: {} can write there and could swap what is kept there; `chmod go-w` it or choose another directory",
                mode & 0o7777,
                if mode & 0o002 != 0 { "every user" } else { "its group" }
            ));
        }
        first = false;
    }
    Ok(())
}

/// Creates the directory (as [`create_dir`]) if missing, then checks it (as [`check_dir`]).
pub fn prepare_dir(path: &Path, mode: u32, what: &str) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_err() {
        create_dir(path, mode).map_err(|e| format!("cannot create the {what}: {e}"))?;
    }
    check_dir(path, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_append_open_refuses_a_symlink_and_leaves_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "kept\n").unwrap();
        let link = dir.path().join("main.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_append(&link, 0o640).unwrap_err().to_string();
        assert!(e.contains("main.log is a symbolic link; refused"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");

        let fresh = dir.path().join("rescue.log");
        open_append(&fresh, 0o640).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
    }

    #[test]
    fn a_new_file_replaces_a_planted_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "kept\n").unwrap();
        let tmp = dir.path().join(".x.tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        use std::io::Write;
        create_new(&tmp, 0o600).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
        assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&tmp).unwrap().is_symlink());
    }

    #[test]
    fn a_dir_others_can_write_is_refused_a_sticky_parent_is_not() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        prepare_dir(&dir, 0o750, "log directory").unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "{mode:o}");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&dir, "log directory").unwrap_err();
        assert!(
            e.contains("the log directory") && e.contains("mode 0777"),
            "{e}"
        );
        // Sticky is no excuse for the directory itself...
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_dir(&dir, "log directory").is_err());
        // ... but a sticky world-writable parent (like /tmp) is fine.
        let inner = dir.join("inner");
        prepare_dir(&inner, 0o700, "state directory").unwrap();
        // A parent writable by others without the sticky bit is not.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&inner, "state directory").unwrap_err();
        assert!(e.contains("a parent of the state directory"), "{e}");
    }
}
