//! Re-exec: the daemon replaces its program with the binary installed at its path, in place (the
//! same pid), keeping every gateway running with its pipes, the listeners, and what it knows.
//!
//! - **Check.** The new binary is first run as `openclaw-supervisord --config-dir DIR
//!   handover-check` ([`check_mode`]): it prints one JSON line ([`CheckReport`]: its version, the
//!   API it serves, the handover formats it reads, and its check of the profiles). The old daemon
//!   execs it only if the API is the same, it reads [`FORMAT`], and the profiles pass
//!   ([`verify`]); otherwise nothing has changed and the caller hears why.
//! - **What crosses.** The instance tasks detach (`Supervisor::detach_all`): each child keeps
//!   running, its pipes are taken back from the log readers (with the bytes of a line begun), and
//!   its history is kept. [`encode`] writes it all as a `handover.v1.Handover` protobuf
//!   (`proto/openclaw/supervisor/handover/v1/handover.proto`) into a memfd; the fds it names (the
//!   memfd, the control socket, the TCP listener, each child's stdout and stderr, each state dir
//!   lock) lose their close-on-exec flag just before the exec ([`exec`]), which runs on the
//!   spawning thread (see `spawn::Job::Exec`). `OPENCLAW_SUPERVISOR_HANDOVER` names the memfd.
//! - **Arrival.** The new program reads it at its start ([`inherited`]), checks every fd by type
//!   (a socket for the listeners, a FIFO for a pipe, a regular file for a lock; anything else is
//!   dropped), sets close-on-exec on them again, and serves on the same sockets; [`take_over`]
//!   turns each instance into an `Adopted` child and a `Resume` for its task. A child that ended
//!   during the exec is reaped by the new program, with its code.
//! - **Failure.** If the exec itself fails, the same [`take_over`] gives the instances back to new
//!   tasks in the old program (`Supervisor::reattach`).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::profile::Profile;
use crate::supervise::adopt::{self, Adopted, How};
use crate::supervise::logs::{LogLine, Stream};
use crate::supervise::ownership::Lock;
use crate::supervise::{tree, Detached, DetachedChild, Exit, Resume, State};

/// The generated messages of `handover.proto`.
pub mod pb {
    tonic::include_proto!("openclaw.supervisor.handover.v1");
}

/// The variable that names the handover's memfd in the new program.
pub const ENV: &str = "OPENCLAW_SUPERVISOR_HANDOVER";

/// The handover layout this daemon writes and reads.
pub const FORMAT: u32 = 1;

/// The API this daemon serves; a re-exec keeps it.
pub const API: &str = "openclaw.supervisor.v1";

/// What `handover-check` prints: whether this binary can take over from a running daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The binary's version.
    pub version: String,
    /// The API it serves.
    pub api: String,
    /// The handover formats it reads.
    pub formats: Vec<u32>,
    /// Whether the profiles pass its check.
    pub profiles_ok: bool,
    /// The check's report when they do not (else its summary).
    pub report: String,
}

/// `openclaw-supervisord handover-check`: prints this binary's [`CheckReport`] for `dir` as one
/// JSON line; exit 0 if it could take over, 1 otherwise.
pub fn check_mode(dir: &Path) -> ExitCode {
    let plan = crate::profile::load(dir);
    let ok = plan.report.ok();
    let report = CheckReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: API.to_string(),
        formats: vec![FORMAT],
        profiles_ok: ok,
        report: if ok {
            plan.report.summary(dir)
        } else {
            format!("{}{}", plan.report, plan.report.summary(dir))
        },
    };
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("openclaw-supervisord: {e}");
            return ExitCode::FAILURE;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether the new binary's check output (`out`, and how it exited) lets it take over: its report,
/// or why not.
pub fn verify(binary: &Path, exit: Exit, out: &[u8]) -> Result<CheckReport, String> {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().rev().find(|l| l.starts_with('{'));
    let report: CheckReport = match line.map(serde_json::from_str) {
        Some(Ok(r)) => r,
        _ => {
            return Err(format!(
                "{} has no handover check ({exit}): it is not an openclaw-supervisord that can take over from this one{}",
                binary.display(),
                if text.trim().is_empty() { String::new() } else { format!("; it said: {}", text.trim()) }
            ))
        }
    };
    if report.api != API {
        return Err(format!(
            "{} serves {}, this daemon {API}: a re-exec keeps clients on one API; stop and start the service instead",
            binary.display(),
            report.api
        ));
    }
    if !report.formats.contains(&FORMAT) {
        return Err(format!(
            "{} (version {}) reads handover formats {:?}, this daemon writes {FORMAT}",
            binary.display(),
            report.version,
            report.formats
        ));
    }
    if !report.profiles_ok {
        return Err(format!(
            "the profiles fail the check of {} (version {}); the re-exec would read them:\n{}",
            binary.display(),
            report.version,
            report.report
        ));
    }
    Ok(report)
}

/// The daemon's program: `--binary`, else the file it was started from (`/proc/self/exe`,
/// resolved at its start: an `install` of a new binary at that path is what a re-exec runs).
pub fn program(binary: Option<PathBuf>) -> PathBuf {
    binary
        .or_else(|| std::fs::read_link("/proc/self/exe").ok())
        .map(|p| {
            // A binary replaced since the start reads "PATH (deleted)": the path is what counts.
            let s = p.as_os_str().as_bytes();
            match s.strip_suffix(b" (deleted)") {
                Some(path) => PathBuf::from(OsStr::from_bytes(path)),
                None => p,
            }
        })
        .unwrap_or_else(|| PathBuf::from("openclaw-supervisord"))
}

/// What a daemon keeps of itself across a re-exec, besides its instances.
#[derive(Debug, Clone, Copy)]
pub struct Carry<'a> {
    /// The control socket's listener.
    pub socket: BorrowedFd<'a>,
    /// The TCP listener, if any.
    pub tcp: Option<BorrowedFd<'a>>,
    /// The execs made so far, this one included.
    pub execs: u32,
    /// When the process first started.
    pub started: SystemTime,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn exit_pb(e: Exit) -> pb::Exit {
    pb::Exit {
        how: Some(match e {
            Exit::Code(c) => pb::exit::How::Code(c),
            Exit::Signal(s) => pb::exit::How::Signal(s),
            Exit::Unknown => pb::exit::How::Unknown(true),
        }),
    }
}

/// An exit as the handover spells it.
pub fn exit_of(e: &pb::Exit) -> Exit {
    match e.how {
        Some(pb::exit::How::Code(c)) => Exit::Code(c),
        Some(pb::exit::How::Signal(s)) => Exit::Signal(s),
        _ => Exit::Unknown,
    }
}

/// The handover of `detached` (each instance's task as it ended) and of the daemon (`carry`):
/// the message, and every fd it names (their numbers stay valid in the new program once their
/// close-on-exec flag is cleared). `exit_of_pid`: a detached child's exit, if it was reaped
/// before reaping paused.
pub fn encode(
    carry: Carry<'_>,
    detached: &[(Arc<Profile>, Detached)],
    lock_fds: &[Option<OwnedFd>],
    exit_of_pid: impl Fn(i32) -> Option<Exit>,
) -> (pb::Handover, Vec<RawFd>) {
    let mut fds = vec![carry.socket.as_raw_fd()];
    fds.extend(carry.tcp.map(|t| t.as_raw_fd()));
    let mut instances = Vec::new();
    for ((profile, d), lock) in detached.iter().zip(lock_fds) {
        let r = &d.resume;
        let mut pipe = |p: &Option<(OwnedFd, Vec<u8>)>| match p {
            Some((fd, pending)) => {
                fds.push(fd.as_raw_fd());
                (fd.as_raw_fd(), pending.clone())
            }
            None => (0, Vec::new()),
        };
        let child = d.child.as_ref().map(|c| {
            let (stdout_fd, stdout_pending) = pipe(&c.stdout);
            let (stderr_fd, stderr_pending) = pipe(&c.stderr);
            pb::Child {
                pid: c.pid,
                start: c.start,
                ours: c.ours,
                ready: c.ready,
                stdout_fd,
                stderr_fd,
                stdout_pending,
                stderr_pending,
                digest: c.digest.clone().into_iter().collect(),
                exit: exit_of_pid(c.pid).map(exit_pb),
                changed: c.changed.clone().unwrap_or_default(),
                changed_known: c.changed.is_some(),
            }
        });
        let lock_fd = lock.as_ref().map_or(0, |l| {
            fds.push(l.as_raw_fd());
            l.as_raw_fd()
        });
        instances.push(pb::Instance {
            name: profile.name.to_string(),
            child,
            state: r.state.map_or("", State::as_str).to_string(),
            reason: r.reason.clone(),
            restarts: r.restarts,
            operator_restarts: r.operator_restarts,
            last_exit: r.last_exit.map(exit_pb),
            last_exit_adopted: r.last_exit_adopted,
            last_error: r.last_error.clone().unwrap_or_default(),
            want_running: r.want_running,
            next_start_in_ms: r
                .next_start_in
                .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            starts_ago_ms: r
                .starts_ago
                .iter()
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .collect(),
            failures: r.failures,
            started_once: r.started_once,
            lock_fd,
            tail: r
                .tail
                .iter()
                .map(|l| pb::Line {
                    unix_ns: l
                        .time
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
                    stream: match l.stream {
                        Stream::Stdout => 0,
                        Stream::Stderr => 1,
                        Stream::Supervisor => 2,
                    },
                    text: l.text.clone(),
                })
                .collect(),
            started_at_unix_ms: d.child.as_ref().map_or(0, |c| unix_ms(c.started_at)),
            history: r
                .history
                .iter()
                .map(|e| pb::HistoryEntry {
                    time_unix_ms: unix_ms(e.time),
                    kind: e.kind.clone(),
                    text: e.text.clone(),
                })
                .collect(),
            runtime: r.versions.runtime.clone().unwrap_or_default(),
            openclaw_version: r.versions.openclaw.clone().unwrap_or_default(),
            node_version: r.versions.node.clone().unwrap_or_default(),
        });
    }
    let message = pb::Handover {
        format: FORMAT,
        from_version: env!("CARGO_PKG_VERSION").to_string(),
        execs: carry.execs,
        started_unix_ms: unix_ms(carry.started),
        socket_fd: carry.socket.as_raw_fd(),
        tcp_fd: carry.tcp.map_or(0, |t| t.as_raw_fd()),
        instances,
    };
    (message, fds)
}

fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: the caller owns `fd` (it is open for the call's length).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    let flags = if on {
        flags | FdFlag::FD_CLOEXEC
    } else {
        flags - FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Replaces the program with `binary` (same arguments), handing it `message` and `fds` (see the
/// module's doc). Returns only if that failed, with every fd as it was (close-on-exec again).
pub async fn exec(
    spawner: &crate::supervise::spawn::Spawner,
    binary: &Path,
    message: &pb::Handover,
    fds: &[RawFd],
) -> std::io::Error {
    let memfd = match memfd(message) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let req = match exec_request(binary, memfd.as_raw_fd()) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let all: Vec<RawFd> = fds.iter().copied().chain([memfd.as_raw_fd()]).collect();
    for fd in &all {
        if let Err(e) = set_cloexec(*fd, false) {
            restore(&all);
            return e;
        }
    }
    let e = spawner.exec(req).await;
    restore(&all);
    e
}

fn restore(fds: &[RawFd]) {
    for fd in fds {
        let _ = set_cloexec(*fd, true);
    }
}

/// The message in a sealed-size memfd (close-on-exec until [`exec`] clears it).
fn memfd(message: &pb::Handover) -> std::io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"openclaw-supervisor-handover",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&prost::Message::encode_to_vec(message))?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// The exec of `binary` with this process's arguments and environment, the handover's variable
/// set to `memfd`.
fn exec_request(
    binary: &Path,
    memfd: RawFd,
) -> std::io::Result<crate::supervise::spawn::ExecRequest> {
    let c = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
    let mut argv = Vec::new();
    for a in std::env::args_os() {
        argv.push(c(a.as_bytes())?);
    }
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == ENV {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(c(&kv)?);
    }
    env.push(c(format!("{ENV}={memfd}").as_bytes())?);
    Ok(crate::supervise::spawn::ExecRequest {
        path: c(binary.as_os_str().as_bytes())?,
        argv,
        env,
    })
}

/// What the program before this one handed over.
#[derive(Debug)]
pub struct Inherited {
    /// The control socket's listener, if it was handed over and is one.
    pub socket: Option<OwnedFd>,
    /// The TCP listener, likewise.
    pub tcp: Option<OwnedFd>,
    /// The execs this process made so far.
    pub execs: u32,
    /// When the process first started.
    pub started: SystemTime,
    /// The version that handed over.
    pub from_version: String,
    /// Each instance as its task ended, by name.
    pub instances: Vec<(String, Detached)>,
    /// Children reaped before the exec: their exits.
    pub exits: Vec<(i32, Exit)>,
}

/// The handover, if this program was started by a re-exec (`OPENCLAW_SUPERVISOR_HANDOVER` set):
/// read, and every fd it names checked and made close-on-exec. `Err`: it does not read (the
/// daemon then starts as after a crash: the records adopt the gateways).
pub fn inherited() -> Option<Result<Inherited, String>> {
    let var = std::env::var(ENV).ok()?;
    Some(read_inherited(&var))
}

fn read_inherited(var: &str) -> Result<Inherited, String> {
    let fd: RawFd = var
        .parse()
        .map_err(|_| format!("{ENV}={var} is not a file descriptor"))?;
    let memfd = take_fd(fd, Kind::Memfd).ok_or_else(|| format!("{ENV}={var} is not a memfd"))?;
    let mut bytes = Vec::new();
    std::fs::File::from(memfd)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the handover: {e}"))?;
    let m: pb::Handover = prost::Message::decode(bytes.as_slice())
        .map_err(|e| format!("the handover does not read: {e}"))?;
    if m.format != FORMAT {
        return Err(format!(
            "the handover is of format {}, this daemon reads {FORMAT}",
            m.format
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut take = |fd: RawFd, kind: Kind| -> Option<OwnedFd> {
        // 0-2 are stdio, never handed over; a number named twice is taken once.
        if fd <= 2 || !seen.insert(fd) {
            return None;
        }
        take_fd(fd, kind)
    };
    let socket = take(m.socket_fd, Kind::Socket);
    let tcp = take(m.tcp_fd, Kind::Socket);
    let mut exits = Vec::new();
    let mut instances = Vec::new();
    for i in m.instances {
        let lock = take(i.lock_fd, Kind::File).and_then(|fd| Lock::from_fd(fd).ok());
        let child = i.child.map(|c| {
            if let Some(e) = &c.exit {
                exits.push((c.pid, exit_of(e)));
            }
            let stdout = take(c.stdout_fd, Kind::Fifo).map(|fd| (fd, c.stdout_pending));
            let stderr = take(c.stderr_fd, Kind::Fifo).map(|fd| (fd, c.stderr_pending));
            DetachedChild {
                pid: c.pid,
                start: c.start,
                ours: c.ours,
                ready: c.ready,
                started_at: from_unix_ms(i.started_at_unix_ms),
                stdout,
                stderr,
                digest: c.digest.into_iter().collect(),
                changed: c.changed_known.then_some(c.changed),
            }
        });
        let resume = Resume {
            state: State::parse(&i.state),
            reason: i.reason,
            restarts: i.restarts,
            operator_restarts: i.operator_restarts,
            last_exit: i.last_exit.as_ref().map(exit_of),
            last_exit_adopted: i.last_exit_adopted,
            last_error: Some(i.last_error).filter(|e| !e.is_empty()),
            want_running: i.want_running,
            next_start_in: u64::try_from(i.next_start_in_ms)
                .ok()
                .map(Duration::from_millis),
            starts_ago: i
                .starts_ago_ms
                .iter()
                .map(|ms| Duration::from_millis(u64::try_from(*ms).unwrap_or(0)))
                .collect(),
            failures: i.failures,
            started_once: i.started_once,
            tail: i
                .tail
                .into_iter()
                .map(|l| LogLine {
                    time: SystemTime::UNIX_EPOCH
                        + Duration::from_nanos(u64::try_from(l.unix_ns).unwrap_or(0)),
                    stream: match l.stream {
                        0 => Stream::Stdout,
                        1 => Stream::Stderr,
                        _ => Stream::Supervisor,
                    },
                    text: l.text,
                })
                .collect(),
            history: i
                .history
                .into_iter()
                .map(|e| crate::supervise::history::Entry {
                    time: from_unix_ms(e.time_unix_ms),
                    kind: e.kind,
                    text: e.text,
                })
                .collect(),
            versions: crate::runtime::Versions {
                runtime: Some(i.runtime).filter(|v| !v.is_empty()),
                openclaw: Some(i.openclaw_version).filter(|v| !v.is_empty()),
                node: Some(i.node_version).filter(|v| !v.is_empty()),
            },
        };
        instances.push((
            i.name,
            Detached {
                resume,
                child,
                lock,
            },
        ));
    }
    Ok(Inherited {
        socket,
        tcp,
        execs: m.execs,
        started: from_unix_ms(m.started_unix_ms),
        from_version: m.from_version,
        instances,
        exits,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memfd,
    Socket,
    Fifo,
    File,
}

/// Takes `fd` if it is open and of `kind`, close-on-exec from now on; else leaves it alone.
fn take_fd(fd: RawFd, kind: Kind) -> Option<OwnedFd> {
    use nix::sys::stat::{fstat, SFlag};
    if fd <= 2 {
        return None;
    }
    // SAFETY: only looked at; owned below once it is known to be what the handover says.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = fstat(borrowed).ok()?;
    let mode = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let ok = match kind {
        Kind::Socket => mode == SFlag::S_IFSOCK,
        Kind::Fifo => mode == SFlag::S_IFIFO,
        Kind::File => mode == SFlag::S_IFREG,
        Kind::Memfd => {
            mode == SFlag::S_IFREG
                && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|l| l.as_os_str().as_bytes().starts_with(b"/memfd:"))
        }
    };
    if !ok {
        tracing::warn!(
            fd,
            "the handover names fd {fd} as a {kind:?}, which it is not: left alone"
        );
        return None;
    }
    set_cloexec(fd, true).ok()?;
    // SAFETY: open (fstat answered), of the right kind, and named once in the handover: ours now.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the instances of a handover become for the tasks that take them over, given the profiles
/// as they read now: the children to adopt and the histories, by name; and the children whose
/// instance has no profile any more (the caller stops them).
pub fn take_over(
    instances: Vec<(String, Detached)>,
    profiles: &[Profile],
) -> (
    BTreeMap<String, Adopted>,
    BTreeMap<String, Resume>,
    Vec<DetachedChild>,
) {
    let mut adopted = BTreeMap::new();
    let mut resumes = BTreeMap::new();
    let mut orphans = Vec::new();
    for (name, d) in instances {
        let Some(profile) = profiles.iter().find(|p| p.name.as_str() == name) else {
            orphans.extend(d.child);
            continue;
        };
        let mut resume = d.resume;
        if let Some(c) = d.child {
            // The same process still (a zombie counts: our reaper has its exit).
            let same = tree::read_stat(c.pid).is_some_and(|p| c.start == 0 || p.start == c.start);
            if same {
                // Only a gateway that is not our child is watched through a pidfd; our own
                // children's exits come from the reaper.
                let pidfd = (!c.ours).then(|| adopt::pidfd_open(c.pid).ok()).flatten();
                let (stdout, stderr) = (c.stdout, c.stderr);
                let pending = (
                    stdout.as_ref().map(|(_, b)| b.clone()).unwrap_or_default(),
                    stderr.as_ref().map(|(_, b)| b.clone()).unwrap_or_default(),
                );
                let pipes = match (stdout, stderr) {
                    (Some((o, _)), Some((e, _))) => Some((o, e)),
                    _ => None,
                };
                adopted.insert(
                    name.clone(),
                    Adopted {
                        pid: c.pid,
                        start: c.start,
                        pidfd,
                        lock: d.lock,
                        started_at: c.started_at,
                        // The program before compared the profiles as a reload does; a digest
                        // (its own text of each value) is the fallback, as after a crash.
                        changed: match &c.changed {
                            Some(fields) => fields
                                .iter()
                                .map(|f| crate::supervise::field_named(profile, f))
                                .collect(),
                            None => crate::supervise::changed_since(&c.digest, profile),
                        },
                        pipes,
                        pending,
                        how: How::Handover {
                            ours: c.ours,
                            ready: c.ready,
                        },
                        versions: resume.versions.clone(),
                    },
                );
            } else {
                // Gone, and reaped before the exec (or its pid names another process now, which
                // is never signalled): started again by policy, as after an exit.
                tracing::warn!(instance = %name, pid = c.pid, "its gateway ended during the re-exec; starting it again");
                resume.state = Some(State::Backoff);
                resume.reason = format!("pid {} ended during a re-exec of the supervisor", c.pid);
                resume.next_start_in = resume.want_running.then_some(Duration::ZERO);
            }
        }
        resumes.insert(name, resume);
    }
    (adopted, resumes, orphans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_taken_only_with_the_same_api_a_format_it_reads_and_good_profiles() {
        let bin = Path::new("/usr/local/bin/openclaw-supervisord");
        let good = CheckReport {
            version: "9.9.9".into(),
            api: API.into(),
            formats: vec![FORMAT, FORMAT + 1],
            profiles_ok: true,
            report: "2 profiles".into(),
        };
        let line = |r: &CheckReport| serde_json::to_vec(r).unwrap();
        assert_eq!(verify(bin, Exit::Code(0), &line(&good)), Ok(good.clone()));
        let other_api = CheckReport {
            api: "openclaw.supervisor.v2".into(),
            ..good.clone()
        };
        assert!(verify(bin, Exit::Code(0), &line(&other_api))
            .unwrap_err()
            .contains("openclaw.supervisor.v2"));
        let old = CheckReport {
            formats: vec![FORMAT + 1],
            ..good.clone()
        };
        assert!(verify(bin, Exit::Code(0), &line(&old))
            .unwrap_err()
            .contains("handover formats"));
        let bad = CheckReport {
            profiles_ok: false,
            report: "main.yaml:3: port: ...".into(),
            ..good
        };
        assert!(verify(bin, Exit::Code(1), &line(&bad))
            .unwrap_err()
            .contains("main.yaml:3"));
        let err = verify(bin, Exit::Code(2), b"error: unrecognized subcommand").unwrap_err();
        assert!(
            err.contains("no handover check") && err.contains("unrecognized"),
            "{err}"
        );
    }

    #[test]
    fn a_replaced_binary_is_named_by_its_path() {
        assert_eq!(
            program(Some(PathBuf::from("/opt/x/openclaw-supervisord"))),
            PathBuf::from("/opt/x/openclaw-supervisord")
        );
        assert!(!program(None).to_string_lossy().ends_with(" (deleted)"));
    }

    #[test]
    fn a_handover_reads_back_with_its_fds_checked() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(
            tempfile::tempdir().unwrap().path().join("s.sock"),
        )
        .unwrap();
        let message = pb::Handover {
            format: FORMAT,
            from_version: "0.0.1".into(),
            execs: 3,
            started_unix_ms: 1_000,
            socket_fd: listener.as_raw_fd(),
            tcp_fd: 0,
            instances: vec![pb::Instance {
                name: "main".into(),
                child: Some(pb::Child {
                    pid: 1,
                    start: 0,
                    ours: true,
                    ready: true,
                    stdout_fd: r.as_raw_fd(),
                    // Not a FIFO: refused, and left open.
                    stderr_fd: listener.as_raw_fd(),
                    stdout_pending: b"half a li".to_vec(),
                    stderr_pending: Vec::new(),
                    digest: Default::default(),
                    exit: Some(exit_pb(Exit::Code(3))),
                    changed: vec!["port".into()],
                    changed_known: true,
                }),
                state: "running".into(),
                restarts: 2,
                next_start_in_ms: -1,
                tail: vec![pb::Line {
                    unix_ns: 5,
                    stream: 1,
                    text: "hello".into(),
                }],
                history: vec![pb::HistoryEntry {
                    time_unix_ms: 7,
                    kind: "state".into(),
                    text: "starting -> running: ready".into(),
                }],
                ..Default::default()
            }],
        };
        let memfd = memfd(&message).unwrap();
        let got = read_inherited(&memfd.as_raw_fd().to_string()).unwrap();
        // The fds now belong to `got`: forget ours so that nothing is closed twice.
        std::mem::forget(r);
        std::mem::forget(listener);
        std::mem::forget(memfd);
        drop(w);
        assert_eq!(got.execs, 3);
        assert!(got.socket.is_some() && got.tcp.is_none());
        assert_eq!(got.exits, vec![(1, Exit::Code(3))]);
        let (name, d) = &got.instances[0];
        assert_eq!(name, "main");
        assert_eq!(d.resume.state, Some(State::Running));
        assert_eq!(d.resume.restarts, 2);
        assert_eq!(d.resume.next_start_in, None);
        assert_eq!(d.resume.tail[0].text, "hello");
        assert_eq!(d.resume.tail[0].stream, Stream::Stderr);
        assert_eq!(
            d.resume.history,
            vec![crate::supervise::history::Entry {
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(7),
                kind: "state".into(),
                text: "starting -> running: ready".into(),
            }]
        );
        let c = d.child.as_ref().unwrap();
        assert_eq!(c.stdout.as_ref().unwrap().1, b"half a li");
        assert_eq!(c.changed, Some(vec!["port".to_string()]));
        assert!(c.stderr.is_none());
        assert!(read_inherited("not-a-number").is_err());
    }
}
