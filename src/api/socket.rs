//! The control socket's file: created owner-only (0600), or owner and one group (0660) when a group
//! is configured; a stale socket from a dead daemon replaced, a live daemon's never, and anything
//! else at the path (a file, a link) refused, never deleted. The socket's directory must be the
//! daemon's user's (or root's) and writable by no one else (`fsx::check_dir`).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// Binds the Unix socket at `path` with mode 0600, or 0660 and group `group` when given (a directory
/// it creates for the socket is then 0750 and of that group too). Fails, saying so, if another
/// daemon answers there.
pub fn bind(path: &Path, group: Option<&str>) -> io::Result<tokio::net::UnixListener> {
    let gid = match group {
        None => None,
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .map_err(io::Error::from)?
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no group named {g:?} (--socket-group)"),
                    )
                })?
                .gid,
        ),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if std::fs::symlink_metadata(dir).is_err() {
        crate::fsx::create_dir(dir, if gid.is_some() { 0o750 } else { 0o700 })?;
        if gid.is_some() {
            nix::unistd::chown(dir, None, gid).map_err(io::Error::from)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
    }
    // Like sshd's StrictModes: another user who can write the socket's dir could swap the socket
    // under the clients.
    crate::fsx::check_dir(dir, "socket directory").map_err(|e| {
        io::Error::new(io::ErrorKind::PermissionDenied, format!("refusing it: {e}"))
    })?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(meta) if !meta.file_type().is_socket() => {
            // Not ours to delete: someone's file, or a link planted where the socket goes.
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is {}, not a socket; refusing to delete it: move it away or give another --socket",
                    path.display(),
                    crate::fsx::kind_of(&meta)
                ),
            ));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another openclaw-supervisord is serving on {}; stop it first, or give this one another --socket",
                        path.display()
                    ),
                ))
            }
            // A socket no one listens on: a dead daemon's, replaced.
            Err(_) => std::fs::remove_file(path)?,
        },
    }
    // Create the socket owner-only from the start: no moment where others may connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    if gid.is_some() {
        nix::unistd::chown(path, None, gid).map_err(io::Error::from)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}
