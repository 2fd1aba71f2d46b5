//! The control socket's file: created owner-only (0600), or owner and one group (0660) when a group
//! is configured; a stale file from a dead daemon replaced, a live daemon's never.

use std::io;
use std::os::unix::fs::PermissionsExt;
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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(if gid.is_some() { 0o750 } else { 0o700 })
                .create(dir)?;
            if gid.is_some() {
                nix::unistd::chown(dir, None, gid).map_err(io::Error::from)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
            }
        }
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another openclaw-supervisord is serving on {}; stop it first, or give this one another --socket",
                    path.display()
                ),
            ))
        }
        Err(_) if path.exists() => std::fs::remove_file(path)?,
        Err(_) => {}
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
