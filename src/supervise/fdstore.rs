//! The service manager's file descriptor store: the gateways' pipes outlive the daemon.
//!
//! Under systemd (`NOTIFY_SOCKET` set) each child's stdout and stderr read ends are sent to the
//! service manager at its spawn (`FDSTORE=1`, `FDNAME=NAME.out` / `NAME.err`), and removed from
//! the store (`FDSTOREREMOVE=1`) when the instance's tree is gone. While the store holds a read
//! end, a gateway whose daemon died never writes to a pipe without a reader (the real gateway
//! dies of that): its lines wait in the pipe (`spawn` raises its capacity) until the next daemon,
//! which systemd hands the stored fds (`LISTEN_FDS`, `LISTEN_FDNAMES`), reads them on.
//!
//! At start, [`take_handed`] takes those fds (only FIFOs opened for reading; anything else is
//! closed with a warning) and pairs them by instance. `adopt_all` gives an adopted gateway its
//! pair (`Adopted::pipes`); the pairs left (the gateway died while no daemon ran, or its record
//! did not match) are drained by the supervisor into the instance's log before the instance
//! starts ([`drain`]: what is in the pipe, read without waiting, then closed), and removed from
//! the store. Fds under a name that is no instance's are closed and removed.
//!
//! The datagrams go from a thread of their own (`fd-store`), in order: a send to a full socket
//! blocks that thread (at most [`SEND_TIMEOUT`] a datagram), never the runtime. Outside systemd
//! every call does nothing, and there is no store: a crash loses what the gateways write after it.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::Duration;

/// The longest one datagram to the service manager may wait for room in its socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The first fd the service manager hands over (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Which pipe of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// Its stdout (`NAME.out`).
    Out,
    /// Its stderr (`NAME.err`).
    Err,
}

/// The name a child's pipe is stored under: `NAME.out` or `NAME.err`. None if it would not be a
/// valid FDNAME (printable ASCII without `:`, at most 255 characters); instance names always are.
pub fn fd_name(instance: &str, pipe: Pipe) -> Option<String> {
    let name = format!(
        "{instance}.{}",
        match pipe {
            Pipe::Out => "out",
            Pipe::Err => "err",
        }
    );
    let valid = name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    valid.then_some(name)
}

/// The instance and pipe a stored name stands for.
fn parse_name(name: &str) -> Option<(&str, Pipe)> {
    let (instance, ext) = name.rsplit_once('.')?;
    let pipe = match ext {
        "out" => Pipe::Out,
        "err" => Pipe::Err,
        _ => return None,
    };
    (!instance.is_empty()).then_some((instance, pipe))
}

enum Op {
    /// Replace the instance's stored pipes with these.
    Store(String, OwnedFd, OwnedFd),
    /// Forget what is stored under these names.
    Remove(Vec<String>),
}

/// The daemon's side of the store. Cheap to clone; does nothing outside systemd.
#[derive(Clone, Default)]
pub struct FdStore {
    tx: Option<mpsc::Sender<Op>>,
}

impl std::fmt::Debug for FdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdStore")
            .field("enabled", &self.tx.is_some())
            .finish()
    }
}

impl FdStore {
    /// A store that sends nothing (not under systemd, or in tests).
    pub fn off() -> FdStore {
        FdStore::default()
    }

    /// The store of the service manager named by `NOTIFY_SOCKET`, if set; its thread started.
    pub fn from_env() -> FdStore {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return FdStore::off();
        };
        let (tx, rx) = mpsc::channel::<Op>();
        let started = std::thread::Builder::new()
            .name("fd-store".into())
            .spawn(move || {
                let socket = match connect(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(
                            "cannot reach the service manager's fd store ({e}): the gateways' output is lost if the daemon crashes"
                        );
                        return;
                    }
                };
                for op in rx {
                    run(&socket, op);
                }
            });
        match started {
            Ok(_) => FdStore { tx: Some(tx) },
            Err(e) => {
                tracing::warn!("cannot start the fd-store thread: {e}");
                FdStore::off()
            }
        }
    }

    /// Whether the pipes go to a service manager.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Stores a new child's pipes (copies of them) under `NAME.out` and `NAME.err`, replacing
    /// whatever the instance had stored.
    pub fn store(&self, instance: &str, stdout: BorrowedFd<'_>, stderr: BorrowedFd<'_>) {
        let Some(tx) = &self.tx else { return };
        match (stdout.try_clone_to_owned(), stderr.try_clone_to_owned()) {
            (Ok(out), Ok(err)) => {
                let _ = tx.send(Op::Store(instance.to_string(), out, err));
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(instance, "cannot copy its pipes for the fd store: {e}")
            }
        }
    }

    /// Removes the instance's pipes from the store: its tree is gone.
    pub fn remove(&self, instance: &str) {
        let names = [Pipe::Out, Pipe::Err]
            .into_iter()
            .filter_map(|p| fd_name(instance, p))
            .collect();
        self.remove_names(names);
    }

    /// Removes whatever is stored under these exact names.
    fn remove_names(&self, names: Vec<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Op::Remove(names));
        }
    }
}

/// An unbound datagram socket connected to `path` (`@name`: an abstract socket).
fn connect(path: &std::ffi::OsStr) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        socket.connect_addr(&addr)?;
    } else {
        socket.connect(path)?;
    }
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok(socket)
}

fn run(socket: &UnixDatagram, op: Op) {
    let result = match &op {
        Op::Store(instance, out, err) => [(Pipe::Out, out), (Pipe::Err, err)]
            .into_iter()
            .filter_map(|(pipe, fd)| Some((fd_name(instance, pipe)?, fd)))
            .try_for_each(|(name, fd)| {
                // A stale copy would be handed back beside the new one: removed first.
                send(socket, &format!("FDSTOREREMOVE=1\nFDNAME={name}\n"), None)?;
                send(
                    socket,
                    &format!("FDSTORE=1\nFDNAME={name}\n"),
                    Some(fd.as_fd()),
                )
            }),
        Op::Remove(names) => names
            .iter()
            .try_for_each(|name| send(socket, &format!("FDSTOREREMOVE=1\nFDNAME={name}\n"), None)),
    };
    if let Err(e) = result {
        tracing::warn!("cannot update the service manager's fd store: {e}");
    }
}

/// One datagram, with `fd` attached (SCM_RIGHTS) if given.
fn send(socket: &UnixDatagram, text: &str, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let iov = [io::IoSlice::new(text.as_bytes())];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    let n = sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    if n != text.len() {
        return Err(io::Error::other("incomplete datagram"));
    }
    Ok(())
}

/// The fds the service manager handed back at start ([`take_handed`]), to pair by instance.
#[derive(Debug, Default)]
pub struct Handed {
    /// The FIFOs open for reading, with their names.
    fds: Vec<(String, OwnedFd)>,
    /// The names of the fds refused (closed already).
    refused: Vec<String>,
}

/// Takes the fds the service manager handed over (`LISTEN_PID` must be ours) and unsets
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (a child or a re-exec must not take them).
/// Every fd is close-on-exec; one that is not a FIFO open for reading is closed with a warning
/// (a hostile host could hand anything). Called first thing, while the daemon has one thread
/// (the variables are unset).
pub fn take_handed() -> Handed {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let mut handed = Handed::default();
    if pid.as_deref().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return handed;
    }
    let Some(count) = count.and_then(|n| n.parse::<RawFd>().ok()) else {
        return handed;
    };
    let names: Vec<&str> = names
        .as_deref()
        .map(|n| n.split(':').collect())
        .unwrap_or_default();
    for i in 0..count.clamp(0, 65_536) {
        let raw = LISTEN_FDS_START + i;
        let name = names
            .get(i as usize)
            .copied()
            .unwrap_or_default()
            .to_string();
        // SAFETY: a borrow for one fcntl; an fd that is not open is never taken.
        if nix::fcntl::fcntl(unsafe { BorrowedFd::borrow_raw(raw) }, nix::fcntl::F_GETFD).is_err() {
            tracing::warn!("the service manager's fd {raw} ({name:?}) is not open; ignored");
            continue;
        }
        // SAFETY: the service manager handed us fds 3.. (LISTEN_PID is ours) and nothing in the
        // daemon has used them: from here on this OwnedFd alone closes it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = nix::fcntl::fcntl(&fd, nix::fcntl::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        match readable_fifo(&fd) {
            Ok(()) => handed.fds.push((name, fd)),
            Err(why) => {
                tracing::warn!(
                    "refusing the fd the service manager stored as {name:?}: {why}; closed"
                );
                handed.refused.push(name);
            }
        }
    }
    handed
}

impl Handed {
    /// How many fds were handed over and kept.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Each instance's stdout and stderr read ends, for those of `instances` the store held pipes
    /// of. Closed, with a warning, and removed from the store: what was refused, an fd under a
    /// name that is no pipe of one of `instances`, a second fd under one name. An instance with
    /// one of its two pipes gets, for the other, an empty pipe (its writer closed).
    pub fn pair(self, instances: &[&str], store: &FdStore) -> BTreeMap<String, (OwnedFd, OwnedFd)> {
        let mut refused = self.refused;
        let mut halves: BTreeMap<String, (Option<OwnedFd>, Option<OwnedFd>)> = BTreeMap::new();
        for (name, fd) in self.fds {
            let Some((instance, pipe)) = parse_name(&name).filter(|(i, _)| instances.contains(i))
            else {
                tracing::warn!("the fd store holds {name:?}, no pipe of a known instance; closed");
                refused.push(name);
                continue;
            };
            let slot = halves.entry(instance.to_string()).or_default();
            let half = match pipe {
                Pipe::Out => &mut slot.0,
                Pipe::Err => &mut slot.1,
            };
            if half.is_some() {
                tracing::warn!("the fd store holds {name:?} twice; the second is closed");
                continue;
            }
            *half = Some(fd);
        }
        let mut pairs = BTreeMap::new();
        for (instance, halves) in halves {
            let pair = match halves {
                (Some(out), Some(err)) => (out, err),
                (one, other) => {
                    tracing::warn!(%instance, "the fd store holds only one of its pipes");
                    // The other stream reads as empty: a pipe whose writer is closed at once.
                    let Ok((empty, _)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
                        store.remove(&instance);
                        continue;
                    };
                    match (one, other) {
                        (Some(out), None) => (out, empty),
                        (None, Some(err)) => (empty, err),
                        _ => continue,
                    }
                }
            };
            pairs.insert(instance, pair);
        }
        // By their exact names (one that is no FDNAME cannot have been stored).
        store.remove_names(
            refused
                .into_iter()
                .filter(|n| {
                    !n.is_empty() && n.len() <= 255 && n.bytes().all(|b| b.is_ascii_graphic())
                })
                .collect(),
        );
        pairs
    }
}

/// Whether `fd` is a FIFO (a pipe) open for reading: what the daemon stored, and all it reads.
fn readable_fifo(fd: &OwnedFd) -> Result<(), String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("cannot fstat it: {e}"))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFIFO {
        return Err("not a pipe".into());
    }
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::F_GETFL).map_err(|e| e.to_string())?;
    if flags & nix::libc::O_ACCMODE != nix::libc::O_RDONLY {
        return Err("a pipe not open for reading only".into());
    }
    Ok(())
}

/// What is in the pipe now, read without waiting (until it is empty or its writers are gone),
/// as lines (a last line without its newline counts). At most `limit` bytes are read. The fd is
/// closed when it returns. Blocking only as a read of a non-blocking pipe is.
pub fn drain(fd: OwnedFd, limit: usize) -> Vec<String> {
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while bytes.len() < limit {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            // EAGAIN: empty, its writer alive; anything else: nothing more to read.
            Err(_) => break,
        }
    }
    lines(&bytes)
}

/// `bytes` as lines, without their line ends.
fn lines(bytes: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = bytes
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect();
    if bytes.ends_with(b"\n") || bytes.is_empty() {
        out.pop();
    }
    out
}

/// Raises the capacity of a child's pipe to `bytes` (where the kernel allows: non-root up to
/// `/proc/sys/fs/pipe-max-size`), so that what a gateway writes while no daemon reads waits in
/// the pipe. The capacity it has after, if it could be read.
pub fn raise_capacity(fd: BorrowedFd<'_>, bytes: usize) -> Option<usize> {
    use nix::fcntl::{fcntl, FcntlArg};
    let want = i32::try_from(bytes).unwrap_or(i32::MAX);
    if let Err(e) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(want)) {
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        match max.filter(|m| *m < want) {
            Some(m) => {
                if let Err(e) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(m)) {
                    tracing::debug!("cannot raise a child's pipe to {m} bytes: {e}");
                }
            }
            None => tracing::debug!("cannot raise a child's pipe to {bytes} bytes: {e}"),
        }
    }
    fcntl(fd, FcntlArg::F_GETPIPE_SZ)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_instance_dot_stream_and_parse_back() {
        assert_eq!(fd_name("main", Pipe::Out).as_deref(), Some("main.out"));
        assert_eq!(fd_name("a-b_c", Pipe::Err).as_deref(), Some("a-b_c.err"));
        assert_eq!(parse_name("main.out"), Some(("main", Pipe::Out)));
        assert_eq!(parse_name("my.bot.err"), Some(("my.bot", Pipe::Err)));
        assert_eq!(parse_name("main.log"), None);
        assert_eq!(parse_name(".out"), None);
        assert_eq!(fd_name("a:b", Pipe::Out), None);
        assert_eq!(fd_name("a b", Pipe::Out), None);
        assert_eq!(fd_name(&"x".repeat(252), Pipe::Out), None);
    }

    #[test]
    fn a_drain_returns_what_was_written_and_does_not_wait() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"tick 1\ntick 2\r\npartial").unwrap();
        // The writer is still open: the drain stops at EAGAIN instead of waiting.
        assert_eq!(drain(r, 1 << 20), ["tick 1", "tick 2", "partial"]);
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert!(drain(r, 1 << 20).is_empty());
    }

    #[test]
    fn a_pipe_is_a_readable_fifo_and_a_file_is_not() {
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(readable_fifo(&r).is_ok());
        assert!(readable_fifo(&w).is_err());
        let f: OwnedFd = tempfile::tempfile().unwrap().into();
        assert_eq!(readable_fifo(&f), Err("not a pipe".into()));
    }

    #[test]
    fn a_pipe_grows_as_far_as_allowed() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let got = raise_capacity(r.as_fd(), 1 << 20).unwrap();
        assert!(got >= 4096, "{got}");
    }
}
