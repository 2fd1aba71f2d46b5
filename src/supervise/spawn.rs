//! Starting children. Every fork happens on one dedicated thread that lives as long as the daemon:
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so forking from a short-lived tokio
//! blocking thread would kill gateways at random. Each child gets its own process group, a SIGKILL
//! death signal (so a SIGKILLed daemon leaves no gateway behind), /dev/null for stdin and pipes for
//! stdout and stderr.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::reaper::Reaper;

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The program, resolved to a path.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to (or replacing those of) the daemon's environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// The read end of its stdout.
    pub stdout: OwnedFd,
    /// The read end of its stderr.
    pub stderr: OwnedFd,
}

type Job = (SpawnRequest, oneshot::Sender<io::Result<Spawned>>);

/// The handle of the spawning thread. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawning thread. It ends when the last `Spawner` is dropped, which in the daemon is
    /// at exit: children are never orphaned by it.
    pub fn start(reaper: Reaper) -> io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (req, reply) in rx {
                    let _ = reply.send(spawn_now(&req, &reaper));
                }
            })?;
        Ok(Spawner { tx })
    }

    /// Starts a child from the spawning thread.
    pub async fn spawn(&self, req: SpawnRequest) -> io::Result<Spawned> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
}

/// The daemon's own service-manager variables, never passed to a child.
const SERVICE_MANAGER_VARS: [&str; 7] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
];

fn spawn_now(req: &SpawnRequest, reaper: &Reaper) -> io::Result<Spawned> {
    let parent = std::process::id() as i32;
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args);
    // What systemd tells the daemon about itself is not the child's: a gateway must not notify
    // the daemon's service manager, nor take the journal for its stdout (a pipe to us).
    for var in SERVICE_MANAGER_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &req.cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The daemon may have died between fork and prctl: then nobody would kill us later.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(io::Error::other(
                    "the supervisor died while starting this child",
                ));
            }
            Ok(())
        });
    }
    let mut child = {
        let _guard = reaper.spawn_lock();
        cmd.spawn()?
    };
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    // The reaper waits for it: dropping a std Child neither waits nor kills.
    drop(child);
    match (stdout, stderr) {
        (Some(stdout), Some(stderr)) => Ok(Spawned {
            pid,
            stdout,
            stderr,
        }),
        _ => Err(io::Error::other("the child's pipes are missing")),
    }
}

/// Finds `program` the way exec would: a name with a `/` as a path (relative to `cwd`), otherwise
/// the first executable file of that name on `path`. The error says what was searched.
pub fn resolve_program(
    program: &str,
    path: Option<OsString>,
    cwd: &Path,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = cwd.join(program);
        return if executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err(format!("`{program}` is not an executable file"))
        } else {
            Err(format!("`{program}` not found"))
        };
    }
    let path = path.unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = cwd.join(dir).join(program);
        if executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "`{program}` not found on PATH: {}",
        path.to_string_lossy()
    ))
}
