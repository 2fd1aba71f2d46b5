//! Crash adoption: the records of running children, and the adoption of the gateways a daemon that
//! died without stopping them left running (`--on-crash keep`).
//!
//! - **Records.** At each spawn the instance task has a record of its child written to
//!   `STATE_DIR/children/NAME.json` (the daemon's state dir, beside `desired-state.json`): the pid,
//!   its start time (`/proc/PID/stat` field 22), the profile's file, a digest of the fields that
//!   force a restart ([`super::digest`]), the cgroup, when it started, the daemon's pid. When the
//!   instance's tree is gone the record is removed. One thread (`child-records`) writes and removes
//!   them in the order asked (a temp file `O_EXCL|O_NOFOLLOW` 0600, fsync, rename), so the runtime
//!   never waits for the disk and a removal never overtakes the write before it.
//! - **Adoption.** At start, before leftovers are ended, each instance with a record is examined
//!   ([`examine`], off the runtime): a pidfd is opened first (it names that process, whatever
//!   happens to the pid), then the process must have the recorded start time, carry the instance's
//!   marker and state dir, sit in the instance's cgroup (cgroup mode), and the state dir's lock must
//!   be free. Then it is handed to its instance task as an [`Adopted`] child; otherwise the record is
//!   dropped (a stranger with a recycled pid is never signalled) and the instance starts as usual.
//!   [`Adopted`] is the one entry point: a re-exec or a file descriptor handover feeds it the same
//!   way, with the pipes they kept.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::ownership::{Lock, LockError, Owner};
use super::reaper::Exit;
use super::tree;
use crate::profile::Profile;

/// The records' directory, inside the daemon's state dir.
pub const DIR: &str = "children";

/// The format's version; a record of another is dropped.
const VERSION: u32 = 1;

/// What the daemon knows of one running child, on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The format's version.
    pub version: u32,
    /// The instance.
    pub name: String,
    /// The gateway's pid.
    pub pid: i32,
    /// Its start time, in clock ticks since boot (`/proc/PID/stat` field 22): with the pid, it names
    /// one process even if the pid is reused.
    pub start: u64,
    /// The profile's file, when it started.
    pub file: PathBuf,
    /// The digest of the profile fields that force a restart ([`super::digest`]).
    pub digest: BTreeMap<String, String>,
    /// Its cgroup, in cgroup mode.
    pub cgroup: Option<PathBuf>,
    /// When it started, in seconds since the epoch.
    pub started_at: u64,
    /// The daemon that started (or adopted) it.
    pub daemon_pid: u32,
    /// Whether it had passed its readiness probe (rewritten when it does): a next daemon takes a
    /// ready gateway as `running` at once, its liveness probed as usual, without a readiness
    /// cycle. Absent in records of older daemons: not ready.
    #[serde(default)]
    pub ready: bool,
    /// What it runs (runtime, OpenClaw and Node versions), as read at its spawn: status shows the
    /// same after an adoption. Absent in records of older daemons: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<crate::runtime::Versions>,
}

impl Record {
    /// The record of a child of `profile` with `pid` and `start`, started at `started_at`.
    pub fn new(
        profile: &Profile,
        pid: i32,
        start: u64,
        cgroup: Option<PathBuf>,
        started_at: SystemTime,
    ) -> Record {
        Record {
            version: VERSION,
            name: profile.name.to_string(),
            pid,
            start,
            file: profile.file.clone(),
            digest: super::digest(profile),
            cgroup,
            started_at: started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            daemon_pid: std::process::id(),
            ready: false,
            versions: None,
        }
    }
}

enum Op {
    Write(Box<Record>),
    Clear(String),
    Flush(oneshot::Sender<()>),
}

/// The writer of the records. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    tx: mpsc::Sender<Op>,
}

impl Records {
    /// Starts the `child-records` thread, writing into `STATE_DIR/children`.
    pub fn start(state_dir: &Path) -> std::io::Result<Records> {
        let dir = state_dir.join(DIR);
        let (tx, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("child-records".into())
            .spawn(move || {
                for op in rx {
                    match op {
                        Op::Write(r) => {
                            if let Err(e) = write(&dir, &r) {
                                tracing::warn!(instance = %r.name, "cannot record its child (a crash of the daemon would leave it unadopted): {e}");
                            }
                        }
                        Op::Clear(name) => {
                            let path = dir.join(format!("{name}.json"));
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => tracing::warn!(instance = %name, "cannot remove {}: {e}", path.display()),
                            }
                        }
                        Op::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Records { tx })
    }

    /// Records a child (replacing the instance's record).
    pub fn write(&self, record: Record) {
        let _ = self.tx.send(Op::Write(Box::new(record)));
    }

    /// Forgets the instance's child: its tree is gone.
    pub fn clear(&self, name: &str) {
        let _ = self.tx.send(Op::Clear(name.to_string()));
    }

    /// Waits, at most `bound`, until everything asked so far is on disk.
    pub async fn flush(&self, bound: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(bound, rx).await;
        }
    }
}

fn write(dir: &Path, r: &Record) -> std::io::Result<()> {
    crate::fsx::create_dir(dir, super::desired::DIR_MODE)?;
    let mut text = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = dir.join(format!(".{}.json.tmp", r.name));
    {
        // A new file of ours: whatever sits at the temp name is unlinked, never followed.
        let mut f = crate::fsx::create_new(&tmp, 0o600)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(format!("{}.json", r.name)))
}

/// The record of `name` in `STATE_DIR/children`, if there is one that reads. Blocking.
fn read(dir: &Path, name: &str) -> Result<Option<Record>, String> {
    let path = dir.join(format!("{name}.json"));
    let text = match crate::fsx::open_read_nofollow(&path) {
        Ok(mut f) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let r: Record = serde_json::from_str(&text)
        .map_err(|e| format!("{} does not read as a record: {e}", path.display()))?;
    if r.version != VERSION || r.name != name {
        return Err(format!(
            "{} is a record of another version or instance",
            path.display()
        ));
    }
    Ok(Some(r))
}

/// A gateway the instance task takes over instead of starting one: found alive after a crash of the
/// daemon ([`examine`]), or handed over by a re-exec or the service manager's fd store, which give
/// its pipes too.
#[derive(Debug)]
pub struct Adopted {
    /// Its pid (its process group, as for a spawned child).
    pub pid: i32,
    /// Its start time (`/proc/PID/stat` field 22).
    pub start: u64,
    /// A pidfd of it: readable once it has ended. Needed for a gateway that is not our child;
    /// our own children's exits come from the reaper.
    pub pidfd: Option<OwnedFd>,
    /// The state dir's lock, taken for it (or handed over).
    pub lock: Option<Lock>,
    /// When it started.
    pub started_at: SystemTime,
    /// The fields of the profile that force a restart and changed since it started.
    pub changed: Vec<&'static str>,
    /// Its stdout and stderr read ends, when a handover kept them; none after a crash.
    pub pipes: Option<(OwnedFd, OwnedFd)>,
    /// Bytes read from stdout and stderr before the handover that are not a whole line yet.
    pub pending: (Vec<u8>, Vec<u8>),
    /// How it came to this daemon.
    pub how: How,
    /// What it runs, as its record (or the handover) says.
    pub versions: crate::runtime::Versions,
}

/// How a gateway came to be taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Found running after a crash of the daemon that started it: not our child.
    Crash {
        /// Its record says it had passed its readiness probe.
        ready: bool,
    },
    /// Handed over by a re-exec of this same process.
    Handover {
        /// The process's own child (its exit code comes from the reaper).
        ours: bool,
        /// It had passed its readiness probe.
        ready: bool,
    },
}

/// What the examination of one instance's record found.
#[derive(Debug)]
pub enum Found {
    /// No record.
    Nothing,
    /// Its gateway, to adopt.
    Adopt(Adopted),
    /// The record is dropped: why (the gateway is gone, or the pid names another process now).
    Dropped(String),
}

/// Examines the record of `profile`'s instance in `state_dir` (the daemon's) and takes its gateway
/// if it is exactly the one recorded: alive with the recorded start time, carrying the instance's
/// marker and state dir, in `cgroup` (cgroup mode), with the instance's lock free. A record that
/// does not match is removed; nothing is signalled. Blocking: reads /proc and the disk.
pub fn examine(state_dir: &Path, profile: &Profile, cgroup: Option<&Path>, me: &Owner) -> Found {
    let dir = state_dir.join(DIR);
    let name = profile.name.as_str();
    let drop_record = |why: String| {
        let _ = std::fs::remove_file(dir.join(format!("{name}.json")));
        Found::Dropped(why)
    };
    let r = match read(&dir, name) {
        Ok(Some(r)) => r,
        Ok(None) => return Found::Nothing,
        Err(why) => return drop_record(why),
    };
    // First the pidfd: from here on it names this process, even if it ends and its pid is reused.
    let pidfd = match pidfd_open(r.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {
            return drop_record(format!("its gateway (pid {}) is gone", r.pid))
        }
        Err(e) => return drop_record(format!("cannot watch pid {}: {e}", r.pid)),
    };
    match tree::read_stat(r.pid) {
        None => return drop_record(format!("its gateway (pid {}) is gone", r.pid)),
        Some(p) if p.start != r.start => {
            return drop_record(format!(
                "pid {} is another process now (started at another time); left alone",
                r.pid
            ))
        }
        Some(_) => {}
    }
    let state = profile.state_dir.value.display().to_string();
    if !tree::has_marker(r.pid, name, &state) {
        return drop_record(format!(
            "pid {} does not carry the marker of {name} with state dir {state}; left alone",
            r.pid
        ));
    }
    if let Some(dir) = cgroup {
        if !super::cgroup::members(dir).contains(&r.pid) {
            return drop_record(format!(
                "pid {} is not in cgroup {}; left alone",
                r.pid,
                dir.display()
            ));
        }
    }
    let lock = match Lock::take(&profile.state_dir.value, name, me) {
        Ok(l) => l,
        Err(LockError::Held(_, why) | LockError::Io(why)) => {
            return drop_record(format!("pid {} is not adopted: {why}", r.pid))
        }
    };
    Found::Adopt(Adopted {
        pid: r.pid,
        start: r.start,
        pidfd: Some(pidfd),
        lock: Some(lock),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(r.started_at),
        changed: super::changed_since(&r.digest, profile),
        pipes: None,
        pending: Default::default(),
        how: How::Crash { ready: r.ready },
        versions: r.versions.unwrap_or_default(),
    })
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call; the fd it returns is ours alone.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just gave us this fd (O_CLOEXEC by default for pidfds).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The exit of an adopted gateway: `Exit::Unknown` (it is not our child: its exit code goes to its
/// parent) once its pidfd is readable. On the runtime (epoll on the pidfd).
pub fn watch_exit(pid: i32, pidfd: OwnedFd) -> oneshot::Receiver<Exit> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        // SAFETY: an OwnedFd is a valid open fd, owned by the AsyncFd for its whole life.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        match registered {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(e) => {
                let e = e.to_string();
                // Never taken for ended while it runs: look once a second instead.
                tracing::warn!(pid, "cannot poll the pidfd ({e}): looking once a second");
                while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let _ = tx.send(Exit::Unknown);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record {
            version: VERSION,
            name: "main".into(),
            pid: 42,
            start: 7,
            file: "/etc/x/main.yaml".into(),
            digest: BTreeMap::from([("port".to_string(), "00".to_string())]),
            cgroup: None,
            started_at: 1,
            daemon_pid: 2,
            ready: true,
            versions: Some(crate::runtime::Versions {
                runtime: Some("openclaw@2026.9.6+node@24.21.0".into()),
                openclaw: Some("2026.9.6".into()),
                node: Some("24.21.0".into()),
            }),
        };
        write(&dir.path().join(DIR), &r).unwrap();
        assert_eq!(read(&dir.path().join(DIR), "main").unwrap(), Some(r));
        assert_eq!(read(&dir.path().join(DIR), "rescue").unwrap(), None);
        std::fs::copy(
            dir.path().join(DIR).join("main.json"),
            dir.path().join(DIR).join("rescue.json"),
        )
        .unwrap();
        assert!(read(&dir.path().join(DIR), "rescue").is_err());
        // A record of a daemon that knew no versions reads, without them.
        let older = "{\"version\":1,\"name\":\"old\",\"pid\":42,\"start\":7,\"file\":\"/x.yaml\",\"digest\":{},\"cgroup\":null,\"started_at\":1,\"daemon_pid\":2,\"ready\":true}";
        std::fs::write(dir.path().join(DIR).join("old.json"), older).unwrap();
        let old = read(&dir.path().join(DIR), "old").unwrap().unwrap();
        assert_eq!(old.versions, None);
    }

    #[test]
    fn a_pidfd_names_a_live_process_and_not_a_dead_one() {
        assert!(pidfd_open(std::process::id() as i32).is_ok());
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        assert!(pidfd_open(pid).is_err());
    }
}
