//! The service manager's side of the fd store, as the tests and the benchmarks play it: a datagram
//! received on the notify socket with the fds it carries (SCM_RIGHTS), FDSTORE=1 and
//! FDSTOREREMOVE=1 applied by FDNAME, and a daemon started as systemd starts one, the stored fds at
//! 3.. with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID. Shared by `tests/it/fdstore.rs` and
//! `benches/adopt.rs` (each includes this file).
#![allow(dead_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// One datagram from `socket` (`flags`: MSG_DONTWAIT or none): its text and the fds it carried;
/// `None` when there is none (or the socket fails).
pub fn receive(
    socket: &UnixDatagram,
    flags: nix::sys::socket::MsgFlags,
) -> Option<(String, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(r) = c {
            // SAFETY: the kernel just gave us these fds.
            fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let n = msg.bytes;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

/// Applies one datagram to the store: FDSTOREREMOVE=1 drops the fds of its FDNAME, FDSTORE=1
/// keeps the fds it carried under it (systemd's default name is "stored").
pub fn apply(store: &mut Vec<(String, OwnedFd)>, text: &str, fds: Vec<OwnedFd>) {
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("FDNAME="))
        .unwrap_or("stored")
        .to_string();
    if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
        store.retain(|(n, _)| *n != name);
    }
    if text.lines().any(|l| l == "FDSTORE=1") {
        store.extend(fds.into_iter().map(|fd| (name.clone(), fd)));
    }
}

/// A command that runs `daemon` as systemd would with `store` handed to it: `sh` sets LISTEN_PID
/// to its own pid and execs the daemon (so LISTEN_PID is the daemon's), the fds sit at 3.. in the
/// store's order, LISTEN_FDS and LISTEN_FDNAMES say how many and their names. Add the daemon's
/// arguments with `arg`/`args`.
pub fn command(daemon: &Path, store: &[(String, OwnedFd)]) -> Command {
    let names: Vec<&str> = store.iter().map(|(n, _)| n.as_str()).collect();
    let raw: Vec<RawFd> = store.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(daemon)
        .env_remove("LISTEN_PID");
    if !raw.is_empty() {
        cmd.env("LISTEN_FDS", raw.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
    }
    // SAFETY: only fcntl, dup2 and close between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (a source may sit where a target goes), then into place.
            let mut high = Vec::with_capacity(0);
            for &fd in &raw {
                let h = nix::libc::fcntl(fd, nix::libc::F_DUPFD, 4096);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, &h) in high.iter().enumerate() {
                if nix::libc::dup2(h, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::libc::close(h);
            }
            Ok(())
        });
    }
    cmd
}
