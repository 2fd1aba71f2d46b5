//! Who owns an instance's places on the host: its state dir and its gateway port.
//!
//! - **The lock.** A supervisor that runs an instance holds `STATE_DIR/.openclaw-supervisor.lock`
//!   (`flock`, exclusive) from before the spawn until the instance's whole tree is gone; the file
//!   names the holder (daemon pid, socket, instance). It is opened `O_NOFOLLOW | O_CLOEXEC`: a
//!   symlink planted there is refused, and no gateway inherits it (a gateway holding it would look
//!   like a live supervisor). A second daemon on the same profiles finds it held and leaves that
//!   instance `blocked`, signalling nothing; leftovers carrying an instance's marker are ended only
//!   by a daemon that can take the lock.
//! - **The listener.** A probe counts only if the socket that answered is the instance's: on each
//!   new probe connection the kernel is asked which listening socket owns the probed address
//!   (`sock_diag`, an exact lookup over netlink: three syscalls, no /proc), and its inode is compared
//!   with the listeners already found in the instance's tree. Only a listener not seen before costs a
//!   walk of the tree's `/proc/PID/fd` (off the runtime); only a listener that is not the tree's costs
//!   a walk of every process's, to name the holder. A kept connection is not checked again: it goes
//!   on talking to the socket the gateway accepted.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use super::tree;

/// The lock file's name, inside the instance's state dir.
pub const LOCK_FILE: &str = ".openclaw-supervisor.lock";

/// Who holds an instance's place: a process the instance does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid (0 when it cannot be known).
    pub pid: i32,
    /// Its command line.
    pub command: String,
    /// What it holds: "listens on port 35000", "uses state dir /srv/a", "holds the lock of state
    /// dir /srv/a (openclaw-supervisord pid 12, socket /run/x.sock)".
    pub what: String,
    /// The systemd unit it runs in, from `/proc/PID/cgroup`, if it runs in one (boxed: a holder
    /// travels in errors).
    pub unit: Option<Box<ServiceUnit>>,
    /// Whether it carries `OPENCLAW_SERVICE_MARKER=openclaw`: a gateway run by OpenClaw's own unit.
    pub openclaw_service: bool,
}

impl Holder {
    /// The holder `pid` (0: not visible), with its unit and service marker looked up. Blocking: reads
    /// `/proc/PID/cgroup` and `/proc/PID/environ` (and the user database for a user unit's owner).
    pub fn new(pid: i32, command: String, what: String) -> Holder {
        let (unit, openclaw_service) = if pid > 0 {
            let unit_of = |proc_: &str| {
                std::fs::read_to_string(format!("/proc/{proc_}/cgroup"))
                    .ok()
                    .and_then(|text| unit_from_cgroup(&text))
            };
            // The daemon's own unit is never named: stopping it would stop the supervisor (and a
            // process in it came from the same place as the daemon, e.g. a shell of its unit).
            let unit = unit_of(&pid.to_string())
                .filter(|u| Some(u) != unit_of("self").as_ref())
                .map(Box::new);
            let marked = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v == b"OPENCLAW_SERVICE_MARKER=openclaw")
            });
            (unit, marked)
        } else {
            (None, false)
        };
        Holder {
            pid,
            command,
            what,
            unit,
            openclaw_service,
        }
    }

    /// The unit as the API shows it: `openclaw-gateway-rescue.service`, with ` (user ann)` for a
    /// user's unit; empty without one.
    pub fn unit_text(&self) -> String {
        match &self.unit {
            None => String::new(),
            Some(u) => match &u.user {
                None => u.name.clone(),
                Some(user) => format!("{} (user {})", u.name, user.name),
            },
        }
    }

    /// The command that stops its unit; empty without one.
    pub fn stop_hint(&self) -> String {
        self.unit
            .as_ref()
            .map(|u| u.systemctl("stop", nix::unistd::geteuid().as_raw()))
            .unwrap_or_default()
    }
}

/// A systemd service a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    /// `openclaw-gateway-rescue.service`.
    pub name: String,
    /// For a unit of a user's manager (`user@UID.service/.../NAME.service`): the user.
    pub user: Option<UnitUser>,
}

/// The owner of a user unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitUser {
    /// Its uid.
    pub uid: u32,
    /// Its name (the uid as text when the user database has none).
    pub name: String,
}

impl ServiceUnit {
    /// `systemctl VERB NAME` as `me` (a uid) would run it: `--user` for one's own user unit,
    /// `--user -M USER@` for another user's.
    pub fn systemctl(&self, verb: &str, me: u32) -> String {
        match &self.user {
            None => format!("systemctl {verb} {}", self.name),
            Some(u) if u.uid == me && me != 0 => format!("systemctl --user {verb} {}", self.name),
            Some(u) => format!("systemctl --user -M {}@ {verb} {}", u.name, self.name),
        }
    }
}

/// The service unit of a `/proc/PID/cgroup`: the unified (`0::`) line, else systemd's named
/// hierarchy (`name=systemd`, cgroup v1 and hybrid), else the first line with a service. The last
/// `.service` of the path names the unit; under `user@UID.service` it is that user's. A process in
/// a scope (a login session) or in no service has none.
pub fn unit_from_cgroup(text: &str) -> Option<ServiceUnit> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?, f.next()?))
        })
        .collect();
    let pick = |want: &dyn Fn(&str) -> bool| {
        paths
            .iter()
            .filter(|(c, _)| want(c))
            .find_map(|(_, path)| unit_in_path(path))
    };
    pick(&|c| c.is_empty())
        .or_else(|| pick(&|c| c == "name=systemd"))
        .or_else(|| pick(&|_| true))
}

fn unit_in_path(path: &str) -> Option<ServiceUnit> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let last = parts.iter().rposition(|p| p.ends_with(".service"))?;
    let name = parts[last].to_string();
    let user = parts[..last].iter().find_map(|p| {
        let uid: u32 = p
            .strip_prefix("user@")?
            .strip_suffix(".service")?
            .parse()
            .ok()?;
        Some(UnitUser {
            uid,
            name: match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                Ok(Some(u)) => u.name,
                _ => uid.to_string(),
            },
        })
    });
    Some(ServiceUnit { name, user })
}

/// This daemon, as a lock file names it.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The daemon's pid.
    pub pid: u32,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Owner {
    /// This process, serving on `socket`.
    pub fn me(socket: &Path) -> Owner {
        Owner {
            pid: std::process::id(),
            socket: socket.to_path_buf(),
        }
    }
}

/// The held lock of one state dir; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another supervisor holds it: who, and the message for the operator.
    Held(Holder, String),
    /// The file could not be opened or locked (a symlink there, a disk error).
    Io(String),
}

impl Lock {
    /// Takes the lock of `state_dir` for `instance` without waiting, and writes the holder's
    /// record into it. Blocking: opens a file in the state dir.
    pub fn take(state_dir: &Path, instance: &str, me: &Owner) -> Result<Lock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| LockError::Io(open_error(&path, e)))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut file) => {
                let record = format!(
                    "pid={}\nsocket={}\ninstance={instance}\n",
                    me.pid,
                    me.socket.display()
                );
                let written = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| file.write_all(record.as_bytes()));
                if let Err(e) = written {
                    // The lock is what counts; the record only names the holder to others.
                    tracing::warn!(instance, "cannot write {}: {e}", path.display());
                }
                Ok(Lock { _file: file })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = (&mut file).take(4096).read_to_string(&mut text);
                Err(held(state_dir, &text))
            }
            Err((_, e)) => Err(LockError::Io(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

impl Lock {
    /// The lock as a descriptor that keeps it (the same open file), for a re-exec: close-on-exec,
    /// until the exec clears that.
    pub fn into_fd(self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let fd = self._file.as_fd().try_clone_to_owned()?;
        // The lock belongs to the open file, which `fd` keeps open: dropping the `Flock` would
        // unlock it for both, so it is forgotten (its own descriptor closes at the exec).
        std::mem::forget(self);
        Ok(fd)
    }

    /// The lock a re-exec handed over, held by `fd` (checked: a regular file, still locked by it).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Lock, String> {
        let file = File::from(fd);
        match file.metadata() {
            Ok(m) if m.is_file() => {}
            _ => return Err("the handed-over lock is not a regular file".into()),
        }
        // Taking a lock this open file holds already is a no-op that succeeds.
        Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map(|f| Lock { _file: f })
            .map_err(|(_, e)| format!("the handed-over lock is not held: {e}"))
    }
}

fn open_error(path: &Path, e: std::io::Error) -> String {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        format!(
            "cannot open {}: it is a symlink, which is refused",
            path.display()
        )
    } else {
        format!("cannot open {}: {e}", path.display())
    }
}

/// The refusal for a lock held by the supervisor whose record is `text`.
fn held(state_dir: &Path, text: &str) -> LockError {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let pid: i32 = field("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
    let socket = field("socket").unwrap_or_else(|| "unknown".into());
    let dir = state_dir.display();
    let by = if pid > 0 {
        format!("openclaw-supervisord pid {pid} (socket {socket})")
    } else {
        "another supervisor (its record is empty)".to_string()
    };
    let holder = Holder::new(
        pid,
        if pid > 0 {
            tree::cmdline(pid)
        } else {
            String::new()
        },
        format!("holds the lock of state dir {dir} ({by})"),
    );
    LockError::Held(holder, format!("state dir {dir} is held by {by}"))
}

/// The operator's message for a process found on an instance's place: who holds what, and, when it
/// runs in a systemd unit, which one and how to stop it for good.
pub fn message(h: &Holder) -> String {
    let mut m = who_holds(h);
    let me = nix::unistd::geteuid().as_raw();
    match (&h.unit, h.openclaw_service) {
        (Some(u), marked) => {
            let whose = match &u.user {
                Some(user) => format!("{}'s user unit", user.name),
                None => "systemd unit".to_string(),
            };
            let kind = if marked {
                "it is a gateway run by OpenClaw's own service, "
            } else {
                "it runs in "
            };
            m.push_str(&format!(
                "; {kind}{whose} {}: stop it with `{}` and keep it from starting again with `{}`",
                u.name,
                u.systemctl("stop", me),
                u.systemctl("disable", me)
            ));
        }
        (None, true) => m.push_str(
            "; it is a gateway run by OpenClaw's own service (OPENCLAW_SERVICE_MARKER=openclaw): stop and disable that service (`openclaw gateway uninstall`)",
        ),
        (None, false) => {}
    }
    m
}

fn who_holds(h: &Holder) -> String {
    match h
        .what
        .strip_prefix("listens on port ")
        .filter(|port| !port.contains(' '))
    {
        Some(port) if h.pid == 0 => format!(
            "port {port} is held by a process this daemon cannot see (another user's?), not by this instance"
        ),
        Some(port) => format!(
            "port {port} is held by pid {} ({}), not by this instance",
            h.pid, h.command
        ),
        None => format!(
            "pid {} ({}) {}, and is not this instance's",
            h.pid, h.command, h.what
        ),
    }
}

/// What a start found before spawning.
pub enum Preflight {
    /// Nothing holds the instance's places: the lock is held, the child can start; `leftovers`
    /// carry the instance's marker, left by a supervisor that is gone (the lock was free): end them
    /// first.
    Ready {
        /// What to spawn.
        request: super::spawn::SpawnRequest,
        /// The state dir's lock.
        lock: Lock,
        /// Marked processes of an earlier supervisor.
        leftovers: Vec<tree::Proc>,
    },
    /// Another supervisor, or a process that is not the instance's, holds a place: who, and the
    /// operator's message.
    Blocked(Holder, String),
    /// The start cannot work: why.
    Failed(String),
}

/// Before a spawn: the dirs, the lock (kept if `lock` is given), the processes on the instance's
/// state dir and ports (`scanned` if the daemon's start-up scan found them, else a scan of the
/// host), the program (on `runtime`'s PATH, if it has one). Blocking: touches the disk and /proc.
///
/// A restart while the lock is still held (`lock` given: the instance's last child ran under it
/// until now) scans the host only if something listens on one of the instance's ports: the lock
/// keeps other supervisors out, and a gateway started by hand meanwhile takes the port. This keeps
/// a restart after a crash from reading every process's environment (about 20 ms on a busy host).
pub fn preflight(
    profile: &crate::profile::Profile,
    lock: Option<Lock>,
    me: &Owner,
    scanned: Option<Vec<tree::Holder>>,
    diag: &Diag,
    runtime: Option<&crate::runtime::Runtime>,
) -> Preflight {
    let restart = lock.is_some();
    if let Err(e) = super::spawn::prepare_dirs(profile) {
        return Preflight::Failed(e);
    }
    let state_dir = &profile.state_dir.value;
    let lock = match lock {
        Some(l) => l,
        None => match Lock::take(state_dir, profile.name.as_str(), me) {
            Ok(l) => l,
            Err(LockError::Held(h, why)) => return Preflight::Blocked(h, why),
            Err(LockError::Io(why)) => return Preflight::Failed(why),
        },
    };
    let places = known(profile);
    let found = match scanned {
        Some(found) => found,
        None if restart && !places.iter().any(|k| port_taken(diag, k.port)) => Vec::new(),
        None => tree::host_scan(&places),
    };
    let mut leftovers = Vec::new();
    for h in found {
        if h.ours {
            leftovers.push(h.proc_);
            continue;
        }
        let holder = Holder::new(h.proc_.pid, h.cmdline, h.why);
        let why = message(&holder);
        return Preflight::Blocked(holder, why);
    }
    let token = match profile.gateway_token {
        Some(_) => match super::token::ensure(state_dir) {
            Ok(t) => Some(t),
            Err(e) => return Preflight::Failed(e),
        },
        None => None,
    };
    match super::spawn::request(profile, token.as_deref(), runtime) {
        Ok(request) => Preflight::Ready {
            request,
            lock,
            leftovers,
        },
        Err(e) => Preflight::Failed(e),
    }
}

/// Where a loopback connection to `port` goes: IPv4, then IPv6.
pub fn loopback(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ]
}

/// Whether a TCP socket listens on `port` where a loopback connection would reach it.
fn port_taken(diag: &Diag, port: u16) -> bool {
    loopback(port)
        .into_iter()
        .any(|a| diag.listener_blocking(a).is_some())
}

/// The instance's places as the host scan looks for them: its state dir, its gateway port and the
/// ports its probes go to on this host.
pub fn known(profile: &crate::profile::Profile) -> Vec<tree::Known> {
    let h = &profile.health;
    let mut ports = vec![profile.port.value];
    for url in [&h.readiness_url, &h.liveness_url] {
        let Ok(u) = url::Url::parse(url) else {
            continue;
        };
        let local = match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if let Some(p) = u
            .port_or_known_default()
            .filter(|p| local && !ports.contains(p))
        {
            ports.push(p);
        }
    }
    ports
        .into_iter()
        .map(|port| tree::Known {
            name: profile.name.to_string(),
            state_dir: state_dir_text(profile),
            port,
        })
        .collect()
}

fn state_dir_text(profile: &crate::profile::Profile) -> String {
    profile.state_dir.value.display().to_string()
}

/// A netlink `sock_diag` socket, for exact lookups of listening TCP sockets. One per daemon; a
/// lookup is a `sendto` and a `recv` that the kernel has answered before `sendto` returns. It is
/// used only once [`Diag::check`] (off the runtime: loading the kernel's `tcp_diag` may run
/// modprobe) found it names a listener of our own as /proc does: a kernel without `tcp_diag` answers
/// `ENOENT`, as for no listener at all.
pub struct Diag {
    fd: Mutex<Option<OwnedFd>>,
    seq: std::sync::atomic::AtomicU32,
    works: std::sync::OnceLock<bool>,
}

impl Default for Diag {
    fn default() -> Self {
        Diag {
            fd: Mutex::new(None),
            seq: std::sync::atomic::AtomicU32::new(1),
            works: std::sync::OnceLock::new(),
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const TCP_LISTEN: u8 = 10;

impl Diag {
    /// The inode of the TCP socket listening on `addr` (its address and port), `None` if none
    /// does. For the runtime: never waits; an error when the lookup cannot be used now (not
    /// checked yet, not working here, busy): then [`Diag::listener_blocking`], off the runtime.
    pub fn listener(&self, addr: SocketAddr) -> std::io::Result<Option<u64>> {
        if self.works.get() != Some(&true) {
            return Err(std::io::Error::other("sock_diag is not in use"));
        }
        self.lookup(addr, false)
    }

    /// Whether the kernel's lookups can be trusted here: it finds a listener of our own, with the
    /// inode /proc/net/tcp gives. Checked once. Blocking.
    pub fn check(&self) -> bool {
        *self.works.get_or_init(|| {
            let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
                return false;
            };
            let Ok(addr) = l.local_addr() else {
                return false;
            };
            let works = matches!(self.lookup(addr, true), Ok(Some(i)) if Some(i) == listener_from_proc(addr));
            if !works {
                tracing::warn!(
                    "the kernel's sock_diag does not name TCP listeners here: probes check who listens through /proc/net/tcp"
                );
            }
            works
        })
    }

    /// [`Diag::listener`] for a blocking thread: by `sock_diag` where it works, else from
    /// /proc/net/tcp{,6}.
    pub fn listener_blocking(&self, addr: SocketAddr) -> Option<u64> {
        if self.check() {
            if let Ok(found) = self.lookup(addr, true) {
                return found;
            }
        }
        listener_from_proc(addr)
    }

    fn lookup(&self, addr: SocketAddr, wait: bool) -> std::io::Result<Option<u64>> {
        let mut guard = if wait {
            self.fd.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.fd.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(std::io::Error::other("sock_diag is busy"))
                }
            }
        };
        if guard.is_none() {
            *guard = Some(nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Netlink,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                nix::sys::socket::SockProtocol::NetlinkSockDiag,
            )?);
        }
        let Some(fd) = guard.as_ref() else {
            return Err(std::io::Error::other("no netlink socket"));
        };
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = request(addr, seq);
        let kernel = nix::sys::socket::NetlinkAddr::new(0, 0);
        let r = nix::sys::socket::sendto(
            fd.as_raw_fd(),
            &req,
            &kernel,
            nix::sys::socket::MsgFlags::empty(),
        );
        if let Err(e) = r {
            *guard = None;
            return Err(e.into());
        }
        let mut buf = [0u8; 512];
        loop {
            let n = match nix::sys::socket::recv(
                fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => n,
                Err(e) => {
                    *guard = None;
                    return Err(e.into());
                }
            };
            match answer(&buf[..n], seq) {
                Answer::Stale => continue,
                Answer::Inode(i) => return Ok(Some(i)),
                Answer::None => return Ok(None),
                Answer::Error(e) => return Err(e),
            }
        }
    }
}

/// An exact-lookup request (`inet_diag_req_v2`, no `NLM_F_DUMP`) for the TCP socket bound to
/// `addr`: the kernel looks it up as an incoming connection to `addr` would be, so it finds the
/// listener that would take the probe's connection.
fn request(addr: SocketAddr, seq: u32) -> Vec<u8> {
    let (family, ip): (u8, [u8; 16]) = match addr {
        SocketAddr::V4(a) => {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&a.ip().octets());
            (nix::libc::AF_INET as u8, ip)
        }
        SocketAddr::V6(a) => (nix::libc::AF_INET6 as u8, a.ip().octets()),
    };
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(nix::libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states.
    m.extend_from_slice(&[family, nix::libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // inet_diag_sockid: sport, dport (network order), src, dst, if, cookie (none).
    m.extend_from_slice(&addr.port().to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&ip);
    m.extend_from_slice(&[0u8; 16]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m
}

enum Answer {
    /// The answer to an earlier request.
    Stale,
    Inode(u64),
    None,
    Error(std::io::Error),
}

/// Reads the kernel's answer to request `seq`: an `inet_diag_msg` (its inode at byte 68 of the
/// payload) or an error (`ENOENT`: no such socket).
fn answer(buf: &[u8], seq: u32) -> Answer {
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let (Some(_len), Some(kind), Some(got)) = (
        u32_at(0),
        buf.get(4..6)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes),
        u32_at(8),
    ) else {
        return Answer::Error(std::io::Error::other("short netlink answer"));
    };
    if got != seq {
        return Answer::Stale;
    }
    if kind == NLMSG_ERROR {
        let code = u32_at(16).map_or(0, |c| c as i32);
        return if code == -nix::libc::ENOENT {
            Answer::None
        } else {
            Answer::Error(std::io::Error::from_raw_os_error(-code))
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Answer::Error(std::io::Error::other(format!(
            "unexpected netlink answer type {kind}"
        )));
    }
    match (buf.get(16 + 1), u32_at(16 + 68)) {
        (Some(&TCP_LISTEN), Some(inode)) => Answer::Inode(u64::from(inode)),
        (Some(_), Some(_)) => Answer::None,
        _ => Answer::Error(std::io::Error::other("short sock_diag answer")),
    }
}

/// The inode of a socket listening on `addr`'s port, from /proc/net/tcp{,6}: the fallback where
/// the kernel has no `tcp_diag`. Blocking (reads every TCP socket of the host).
pub fn listener_from_proc(addr: SocketAddr) -> Option<u64> {
    let ports = std::collections::HashMap::from([(addr.port(), ())]);
    tree::listening_inodes(&ports)
        .into_keys()
        .find_map(|s| s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
}

/// Which of `pids` has the socket `inode` open. Blocking.
pub fn owner_among(pids: impl IntoIterator<Item = i32>, inode: u64) -> Option<i32> {
    let link = format!("socket:[{inode}]");
    pids.into_iter().find(|&pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(|e| e.ok()).any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str())
            })
        })
    })
}

/// The process of the host that holds socket `inode` (a walk of every process's fds). Blocking.
pub fn holder_of(inode: u64, port: u16) -> Holder {
    let me = std::process::id() as i32;
    let pids = tree::snapshot()
        .into_iter()
        .map(|p| p.pid)
        .filter(|&p| p != me);
    match owner_among(pids, inode) {
        Some(pid) => Holder::new(pid, tree::cmdline(pid), format!("listens on port {port}")),
        None => Holder::new(0, String::new(), format!("listens on port {port}")),
    }
}

/// The listeners found to be an instance's, for the child running now, and the last one found not
/// to be (with its holder), so that a probe polling a stranger does not walk /proc each time.
#[derive(Debug, Default)]
pub struct Verified {
    inodes: HashSet<u64>,
    foreign: Option<(u64, Holder)>,
}

impl Verified {
    /// Whether `inode` was found in the tree already.
    pub fn contains(&self, inode: u64) -> bool {
        self.inodes.contains(&inode)
    }

    /// Remembers `inode` as the tree's (a gateway has a few listeners; more means churn).
    pub fn insert(&mut self, inode: u64) {
        if self.inodes.len() >= 16 {
            self.inodes.clear();
        }
        self.inodes.insert(inode);
    }

    /// The holder of `inode`, if it was found not to be the tree's.
    pub fn foreign(&self, inode: u64) -> Option<&Holder> {
        self.foreign
            .as_ref()
            .filter(|(i, _)| *i == inode)
            .map(|(_, h)| h)
    }

    /// Remembers that `holder`, not the tree, holds `inode`.
    pub fn set_foreign(&mut self, inode: u64, holder: Holder) {
        self.foreign = Some((inode, holder));
    }

    /// Forgets them all: another child.
    pub fn clear(&mut self) {
        self.inodes.clear();
        self.foreign = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            pid: std::process::id(),
            socket: "/run/test.sock".into(),
        }
    }

    #[test]
    fn a_second_taker_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::take(dir.path(), "main", &owner()).unwrap();
        match Lock::take(dir.path(), "main", &owner()) {
            Err(LockError::Held(h, why)) => {
                assert_eq!(h.pid, std::process::id() as i32);
                assert_eq!(
                    why,
                    format!(
                        "state dir {} is held by openclaw-supervisord pid {} (socket /run/test.sock)",
                        dir.path().display(),
                        std::process::id()
                    )
                );
            }
            other => panic!("not refused: {other:?}"),
        }
        drop(first);
        assert!(Lock::take(dir.path(), "main", &owner()).is_ok());
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        match Lock::take(dir.path(), "main", &owner()) {
            Err(LockError::Io(why)) => assert!(why.contains("symlink"), "{why}"),
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn the_lock_file_is_owner_only_and_not_inherited() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock::take(dir.path(), "main", &owner()).unwrap();
        let meta = std::fs::metadata(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let flags = nix::fcntl::fcntl(&*lock._file, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn the_kernel_names_the_listener_of_a_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let diag = Diag::default();
        assert!(diag.listener(addr).is_err(), "used before it was checked");
        assert!(diag.check(), "sock_diag does not name listeners here");
        let inode = diag.listener(addr).unwrap().expect("a listener");
        assert_eq!(Some(inode), listener_from_proc(addr));
        assert_eq!(
            owner_among([std::process::id() as i32], inode),
            Some(std::process::id() as i32)
        );
        drop(l);
        assert_eq!(diag.listener(addr).unwrap(), None);
    }

    #[test]
    fn the_kernel_names_an_ipv6_listener() {
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let addr = l.local_addr().unwrap();
        let diag = Diag::default();
        assert!(diag.check());
        let inode = diag.listener(addr).unwrap().expect("a listener");
        assert_eq!(Some(inode), listener_from_proc(addr));
    }

    #[test]
    fn the_start_up_scan_looks_at_the_probe_ports_on_this_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.yaml"),
            "port: 18789\nstate_dir: /srv/main\ncommand: [/bin/true]\nhealth: { readiness_url: 'http://127.0.0.1:18700/readyz', liveness_url: 'http://10.0.0.1:18701/healthz' }\n",
        )
        .unwrap();
        let plan = crate::profile::load_with_env(dir.path(), &|_| None);
        assert!(plan.report.ok(), "{}", plan.report);
        let ports: Vec<u16> = known(&plan.profiles[0]).iter().map(|k| k.port).collect();
        assert_eq!(ports, [18789, 18700]);
    }

    /// A netlink message of `kind` for request `seq` with `payload`.
    fn message_of(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn kernel_answers_are_read_without_trusting_their_length() {
        for short in [&b""[..], b"\x01\x02", &[0u8; 11]] {
            assert!(matches!(answer(short, 1), Answer::Error(_)));
        }
        // An answer to another request is skipped.
        assert!(matches!(
            answer(&message_of(NLMSG_ERROR, 7, &[0; 4]), 8),
            Answer::Stale
        ));
        // No such socket.
        let enoent = (-nix::libc::ENOENT).to_ne_bytes();
        assert!(matches!(
            answer(&message_of(NLMSG_ERROR, 3, &enoent), 3),
            Answer::None
        ));
        let eperm = (-nix::libc::EPERM).to_ne_bytes();
        assert!(matches!(
            answer(&message_of(NLMSG_ERROR, 3, &eperm), 3),
            Answer::Error(_)
        ));
        // A listening socket: its inode; a socket in another state: none; a cut-off one: an error.
        let mut msg = vec![0u8; 72];
        msg[1] = TCP_LISTEN;
        msg[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        assert!(matches!(
            answer(&message_of(SOCK_DIAG_BY_FAMILY, 5, &msg), 5),
            Answer::Inode(4242)
        ));
        msg[1] = 1;
        assert!(matches!(
            answer(&message_of(SOCK_DIAG_BY_FAMILY, 5, &msg), 5),
            Answer::None
        ));
        assert!(matches!(
            answer(&message_of(SOCK_DIAG_BY_FAMILY, 5, &msg[..40]), 5),
            Answer::Error(_)
        ));
    }

    #[test]
    fn a_listener_on_any_address_answers_for_loopback() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let diag = Diag::default();
        let inode = diag.listener_blocking(SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(inode.is_some());
    }

    fn boxed(u: Option<ServiceUnit>) -> Option<Box<ServiceUnit>> {
        u.map(Box::new)
    }

    fn unit(name: &str, user: Option<(u32, &str)>) -> Option<ServiceUnit> {
        Some(ServiceUnit {
            name: name.to_string(),
            user: user.map(|(uid, n)| UnitUser {
                uid,
                name: n.to_string(),
            }),
        })
    }

    #[test]
    fn cgroup_v2_names_system_and_user_units() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/openclaw-gateway.service\n"),
            unit("openclaw-gateway.service", None)
        );
        // A user's unit, under that user's manager (uid 0 is root on every host; an unknown uid
        // stands as itself).
        assert_eq!(
            unit_from_cgroup(
                "0::/user.slice/user-0.slice/user@0.service/app.slice/openclaw-gateway-rescue.service\n"
            ),
            unit("openclaw-gateway-rescue.service", Some((0, "root")))
        );
        assert_eq!(
            unit_from_cgroup(
                "0::/user.slice/user-4242424.slice/user@4242424.service/openclaw-gateway.service\n"
            ),
            unit("openclaw-gateway.service", Some((4242424, "4242424")))
        );
        // A template instance, and a process a unit's service started in a sub-cgroup of its own.
        assert_eq!(
            unit_from_cgroup(
                "0::/system.slice/system-openclaw.slice/openclaw@bot.service/helper\n"
            ),
            unit("openclaw@bot.service", None)
        );
    }

    #[test]
    fn cgroup_v1_and_hybrid_read_the_systemd_hierarchy() {
        // Hybrid: the unified line first.
        let hybrid = "12:pids:/system.slice/openclaw-gateway-a.service\n\
                      4:memory:/system.slice/openclaw-gateway-a.service\n\
                      1:name=systemd:/system.slice/openclaw-gateway-a.service\n\
                      0::/system.slice/openclaw-gateway-a.service\n";
        assert_eq!(
            unit_from_cgroup(hybrid),
            unit("openclaw-gateway-a.service", None)
        );
        // Pure v1 (no unified line), where a controller's path stops at the user's manager.
        let v1 = "5:pids:/user.slice/user-0.slice/user@0.service\n\
                  3:cpu,cpuacct:/user.slice\n\
                  1:name=systemd:/user.slice/user-0.slice/user@0.service/openclaw-gateway-b.service\n";
        assert_eq!(
            unit_from_cgroup(v1),
            unit("openclaw-gateway-b.service", Some((0, "root")))
        );
        // Hybrid with an empty unified path: the named hierarchy decides.
        let empty_unified = "1:name=systemd:/system.slice/x.service\n0::/\n";
        assert_eq!(unit_from_cgroup(empty_unified), unit("x.service", None));
    }

    #[test]
    fn no_unit_for_sessions_containers_or_garbage() {
        for text in [
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "0::/\n",
            "9:name=systemd:/\n8:pids:/\n0::/\n",
            "4:memory:/process_api/2db371dbea589f4546680ce5cc0f31f4\n0::/\n",
            "",
            "garbage",
        ] {
            assert_eq!(unit_from_cgroup(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_message_names_the_unit_and_how_to_stop_it() {
        let h = Holder {
            pid: 42,
            command: "node openclaw gateway".into(),
            what: "listens on port 19001".into(),
            unit: boxed(unit(
                "openclaw-gateway-rescue.service",
                Some((4242424, "ann")),
            )),
            openclaw_service: true,
        };
        let m = message(&h);
        assert!(
            m.starts_with("port 19001 is held by pid 42 (node openclaw gateway), not by this instance; it is a gateway run by OpenClaw's own service, ann's user unit openclaw-gateway-rescue.service: stop it with `systemctl --user -M ann@ stop openclaw-gateway-rescue.service` and keep it from starting again with `systemctl --user -M ann@ disable openclaw-gateway-rescue.service`"),
            "{m}"
        );
        assert_eq!(h.unit_text(), "openclaw-gateway-rescue.service (user ann)");
        let sys = Holder {
            unit: boxed(unit("openclaw-gateway.service", None)),
            openclaw_service: false,
            ..h.clone()
        };
        assert!(
            message(&sys).ends_with("; it runs in systemd unit openclaw-gateway.service: stop it with `systemctl stop openclaw-gateway.service` and keep it from starting again with `systemctl disable openclaw-gateway.service`"),
            "{}",
            message(&sys)
        );
        assert_eq!(sys.stop_hint(), "systemctl stop openclaw-gateway.service");
        let bare = Holder {
            unit: None,
            openclaw_service: false,
            ..h
        };
        assert_eq!(
            message(&bare),
            "port 19001 is held by pid 42 (node openclaw gateway), not by this instance"
        );
        assert_eq!(bare.stop_hint(), "");
    }
}
