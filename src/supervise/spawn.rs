//! Starting children. Every fork happens on one dedicated thread that lives as long as the daemon:
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so forking from a short-lived tokio
//! blocking thread would kill gateways at random. Each child gets its own process group, a SIGKILL
//! death signal under `--on-crash kill` (so a SIGKILLed daemon leaves no gateway behind; under
//! `keep` none, and the next daemon adopts them: `super::adopt`), /dev/null for stdin and pipes
//! for stdout and stderr. What a child is started with (program, arguments, environment, working
//! directory) is built here from its profile ([`request`]), so it can be tested without a fork.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::reaper::Reaper;
use super::tree;
use crate::profile::Profile;
use crate::runtime::Runtime;

/// Caches a gateway, or a tool it runs, keeps under HOME unless told otherwise, which instances
/// sharing a HOME would share: each instance gets them inside its own state dir (variable, dir
/// under the state dir), unless its profile's `env` names the variable (npm's in either case, as
/// npm reads them).
const OWN_CACHES: [(&str, &str); 2] = [
    // The gateway's sqlite snapshot staging and a browser's cache; else ~/.cache.
    ("XDG_CACHE_HOME", "cache"),
    // npm's cache and its debug logs (the gateway runs npm: `npm root` was seen soon after it
    // was ready); else ~/.npm.
    ("npm_config_cache", "cache/npm"),
];

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
    /// The `cgroup.procs` of the instance's cgroup, open for writing: the child joins it before
    /// exec, so that nothing it runs starts outside it.
    pub cgroup: Option<Arc<OwnedFd>>,
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
    /// Its start time (`/proc/PID/stat` field 22), read before the reaper could reap it: what its
    /// record names it by (`super::adopt`). None if it ended at once.
    pub start: Option<u64>,
}

/// What becomes of the gateways when the daemon dies without stopping them (SIGKILL, a panic, the
/// OOM killer, the watchdog); a stop (SIGTERM, Ctrl-C) stops them in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnCrash {
    /// They die with it (`PR_SET_PDEATHSIG` SIGKILL).
    Kill,
    /// They run on, and the next daemon adopts them.
    Keep,
}

impl OnCrash {
    /// The default: `keep` under systemd (`NOTIFY_SOCKET` set: a service manager starts the daemon
    /// again, which adopts them), `kill` elsewhere (nothing may start a daemon again, and a gateway
    /// nobody supervises, with nobody reading its output, would run on unseen).
    pub fn default_for(notify_socket: bool) -> OnCrash {
        if notify_socket {
            OnCrash::Keep
        } else {
            OnCrash::Kill
        }
    }

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnCrash::Kill => "kill",
            OnCrash::Keep => "keep",
        }
    }
}

/// The capacity asked for each child pipe (the kernel's default is 64 KiB): what a gateway writes
/// while no daemon reads (between a crash and the next daemon, its pipes kept by the service
/// manager's fd store) waits there. Non-root gets at most `/proc/sys/fs/pipe-max-size` (1 MiB by
/// default) and, past `pipe-user-pages-soft` for the user's pipes together, the default.
pub const PIPE_BYTES: usize = 1 << 20;

/// What the spawning thread does.
pub enum Job {
    /// Starts a child (the reaper's lock held around the fork, the death signal as said).
    Spawn(
        SpawnRequest,
        Reaper,
        OnCrash,
        oneshot::Sender<io::Result<Spawned>>,
    ),
    /// Replaces the program (a re-exec); answers only if that failed.
    Exec(ExecRequest, oneshot::Sender<io::Error>),
}

/// A program to replace the daemon's with, in place.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The program.
    pub path: std::ffi::CString,
    /// Its arguments, the first being its name.
    pub argv: Vec<std::ffi::CString>,
    /// Its whole environment, `NAME=value`.
    pub env: Vec<std::ffi::CString>,
}

/// Where jobs for the spawning thread go. Cheap to clone.
#[derive(Clone)]
pub struct Jobs(mpsc::Sender<Job>);

/// The spawning thread's end: [`JobQueue::run`] on the thread that is to fork every child.
pub struct JobQueue(mpsc::Receiver<Job>);

/// A queue of jobs and its sender.
pub fn jobs() -> (Jobs, JobQueue) {
    let (tx, rx) = mpsc::channel();
    (Jobs(tx), JobQueue(rx))
}

impl JobQueue {
    /// Runs jobs on this thread until `done` says so (looked at every 100 ms) or every sender is
    /// gone. The daemon runs it on its main thread: the only thread that lives as long as the
    /// process and survives an exec (an exec ends every other thread), so that no child's death
    /// signal (`--on-crash kill`, which fires when the thread that forked it ends) is ever sent
    /// by a re-exec, the first or the tenth.
    pub fn run(self, done: impl Fn() -> bool) {
        loop {
            let job = match self.0.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) if !done() => continue,
                Err(_) => return,
            };
            match job {
                Job::Spawn(req, reaper, on_crash, reply) => {
                    let _ = reply.send(spawn_now(&req, &reaper, on_crash));
                }
                Job::Exec(req, reply) => {
                    let e = nix::unistd::execve(&req.path, &req.argv, &req.env)
                        .map_or_else(|e| io::Error::from_raw_os_error(e as i32), |n| match n {});
                    let _ = reply.send(e);
                }
            }
        }
    }
}

/// The handle of the spawning thread. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Job>,
    reaper: Reaper,
    on_crash: OnCrash,
}

impl Spawner {
    /// Starts a spawning thread of its own. It ends when the last `Spawner` is dropped: children
    /// are never orphaned by it while the supervisor lives. (The daemon forks from its main
    /// thread instead: [`Spawner::on`].)
    pub fn start(reaper: Reaper, on_crash: OnCrash) -> io::Result<Spawner> {
        let (tx, queue) = jobs();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || queue.run(|| false))?;
        Ok(Spawner::on(tx, reaper, on_crash))
    }

    /// A spawner whose jobs go to `jobs`, run by a thread of the caller's.
    pub fn on(jobs: Jobs, reaper: Reaper, on_crash: OnCrash) -> Spawner {
        Spawner {
            tx: jobs.0,
            reaper,
            on_crash,
        }
    }

    /// Starts a child from the spawning thread.
    pub async fn spawn(&self, req: SpawnRequest) -> io::Result<Spawned> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Spawn(req, self.reaper.clone(), self.on_crash, tx))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }

    /// Replaces the daemon's program from the spawning thread (see `Job::Exec`): returns only if
    /// the exec failed, with why.
    pub async fn exec(&self, req: ExecRequest) -> io::Error {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Exec(req, tx)).is_err() {
            return io::Error::other("the spawner thread is gone");
        }
        rx.await
            .unwrap_or_else(|_| io::Error::other("the spawner thread is gone"))
    }
}

/// The daemon's own service-manager variables (and its re-exec's handover), never passed to a
/// child.
const SERVICE_MANAGER_VARS: [&str; 8] = [
    crate::handover::ENV,
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
];

fn spawn_now(req: &SpawnRequest, reaper: &Reaper, on_crash: OnCrash) -> io::Result<Spawned> {
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
    // The fd stays open (the request holds it) until the spawn returns.
    let cgroup = req.cgroup.as_ref().map(|fd| fd.as_raw_fd());
    let die_with_us = on_crash == OnCrash::Kill;
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup {
                // "0" is the writer itself: the child, before it runs anything of its own.
                // SAFETY: `fd` is open for the whole spawn (see above).
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                // No allocation here (the error is the errno alone): malloc is not safe after fork.
                nix::unistd::write(fd, b"0").map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            }
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
            if !die_with_us {
                return Ok(());
            }
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
    let (mut child, start) = {
        let _guard = reaper.spawn_lock();
        let child = cmd.spawn()?;
        // Under the lock the reaper cannot reap it: the pid is still this child's.
        let start = tree::read_stat(child.id() as i32).map(|p| p.start);
        (child, start)
    };
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    // The reaper waits for it: dropping a std Child neither waits nor kills.
    drop(child);
    for (fd, what) in [(&stdout, "stdout"), (&stderr, "stderr")] {
        if let Some(fd) = fd {
            let got = super::fdstore::raise_capacity(std::os::fd::AsFd::as_fd(fd), PIPE_BYTES);
            tracing::debug!(pid, "{what} pipe capacity: {got:?} bytes");
        }
    }
    match (stdout, stderr) {
        (Some(stdout), Some(stderr)) => Ok(Spawned {
            pid,
            stdout,
            stderr,
            start,
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

/// What the child of `p` is started with: its command resolved on its PATH ([`child_path`]: on
/// `runtime`'s, when it has one) from its working directory, and [`environment`]. The error says why it cannot
/// start (an empty command, a program not found). `token`: the gateway token of `gateway_token`
/// (`super::token`), read by the caller.
pub fn request(
    p: &Profile,
    token: Option<&str>,
    runtime: Option<&Runtime>,
) -> Result<SpawnRequest, String> {
    let cwd = p.working_dir.clone();
    let here = working_dir(p);
    let path = child_path(p, runtime).map(OsString::from);
    let (program, args) = p.command.split_first().ok_or("the command is empty")?;
    let program = resolve_program(program, path, &here).map_err(|e| {
        match env_sh(p, &here).filter(|_| program == "openclaw" && runtime.is_none()) {
            Some(env) => format!(
                "{e}; {env} puts the gateway scripts/install-openclaw installed on PATH: `source {env}` in the shell that starts openclaw-supervisord, then start it again (or set PATH in the profile's env)",
                env = env.display()
            ),
            None => e,
        }
    })?;
    Ok(SpawnRequest {
        program,
        args: args.to_vec(),
        env: environment(p, token, runtime),
        cwd,
        cgroup: None,
    })
}

/// The `env.sh` that scripts/install-openclaw writes (`PREFIX/env.sh`, `.gateway/env.sh` by
/// default), if there is one: in `$OPENCLAW_GATEWAY_PREFIX`, in the `.gateway/` of `here` (the
/// child's working dir, by default the daemon's: the project, under the quick start), or in the
/// project of the profile's config dir (the directory holding `supervisor.d/`). A few stats, on
/// the thread of the start's preflight.
fn env_sh(p: &Profile, here: &Path) -> Option<PathBuf> {
    let prefix = std::env::var_os("OPENCLAW_GATEWAY_PREFIX").map(PathBuf::from);
    let project = p
        .file
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(".gateway"));
    [prefix, Some(here.join(".gateway")), project]
        .into_iter()
        .flatten()
        .map(|d| d.join("env.sh"))
        .find(|f| f.is_file())
        .map(|f| std::path::absolute(&f).unwrap_or(f))
}

/// Where the child of `p` runs: its profile's `working_dir`, else the daemon's.
pub fn working_dir(p: &Profile) -> PathBuf {
    p.working_dir
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The PATH of the child of `p`: the profile's, else the daemon's; on a runtime, its `bin/` (its
/// `node` and `openclaw`) first.
pub fn child_path(p: &Profile, runtime: Option<&Runtime>) -> Option<String> {
    let base = p
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var_os("PATH").map(|v| v.to_string_lossy().into_owned()));
    let Some(r) = runtime else {
        return base;
    };
    let bin = r.bin_dir().display().to_string();
    Some(match base.filter(|b| !b.is_empty()) {
        Some(b) => format!("{bin}:{b}"),
        None => bin,
    })
}

/// The variables the child of `p` gets on top of the daemon's environment, in the order they are
/// set (a later one wins): the profile's `env` with PATH as [`child_path`] says (the daemon's,
/// named, unless the profile names one; on `runtime`, its `bin/` first), then the OPENCLAW_* variables the gateway reads
/// its places from (so the profile cannot contradict the checked ones), its own gateway token
/// (`gateway_token`), the per-instance caches (`OWN_CACHES`), and the instance marker the stop's
/// process walk looks for (always last: `openclawctl env` leaves it out, see
/// [`without_marker`]).
pub fn environment(
    p: &Profile,
    token: Option<&str>,
    runtime: Option<&Runtime>,
) -> Vec<(String, String)> {
    let path = child_path(p, runtime);
    let mut env: Vec<(String, String)> = p
        .env
        .iter()
        .map(|(k, v)| match (k.as_str(), &path) {
            ("PATH", Some(path)) => (k.clone(), path.clone()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    // The child inherits the daemon's PATH anyway; named here so that `openclawctl env`/`exec`
    // find the programs the gateway finds.
    if !p.env.contains_key("PATH") {
        if let Some(path) = path {
            env.push(("PATH".into(), path));
        }
    }
    env.push((
        "OPENCLAW_CONFIG_PATH".into(),
        p.config_path.value.display().to_string(),
    ));
    env.push((
        "OPENCLAW_STATE_DIR".into(),
        p.state_dir.value.display().to_string(),
    ));
    env.push((
        "OPENCLAW_WORKSPACE_DIR".into(),
        p.workspace.value.display().to_string(),
    ));
    env.push(("OPENCLAW_GATEWAY_PORT".into(), p.port.value.to_string()));
    env.push((
        "OPENCLAW_PROFILE".into(),
        p.openclaw_profile
            .clone()
            .unwrap_or_else(|| "default".into()),
    ));
    if let Some(t) = token {
        env.push((crate::profile::resolve::TOKEN_VAR.into(), t.to_string()));
    }
    for (var, dir) in OWN_CACHES {
        let named = p
            .env
            .keys()
            .any(|k| k == var || (var.starts_with("npm_config_") && k.eq_ignore_ascii_case(var)));
        if !named {
            env.push((
                var.to_string(),
                p.state_dir.value.join(dir).display().to_string(),
            ));
        }
    }
    env.push((tree::MARKER_VAR.into(), p.name.to_string()));
    env
}

/// `env` without the instance marker: what a process run by an operator "as" the instance gets
/// (`openclawctl env`/`exec`). With the marker it would be taken for the instance's own: counted
/// in its tree, ended at its stop, and (left running) ended as a leftover at the next start.
/// Without it, such a process that uses the state dir while the instance starts is a stranger
/// that holds it (the start is refused, naming it) rather than something silently killed.
pub fn without_marker(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != tree::MARKER_VAR);
    env
}

/// Creates the state dir and the workspace of `p` (owner only) if they are missing: the gateway
/// expects both.
pub fn prepare_dirs(p: &Profile) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    for dir in [&p.state_dir.value, &p.workspace.value] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The profile `main` checked from `yaml` (which gets a port and a state dir under /srv).
    fn profile(yaml: &str) -> Profile {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.yaml"),
            format!("port: 18789\nstate_dir: /srv/bots/main\n{yaml}"),
        )
        .unwrap();
        let plan = crate::profile::load_with_env(dir.path(), &|v| {
            (v == "HOME").then(|| "/home/op".to_string())
        });
        assert!(plan.report.ok(), "{}", plan.report);
        plan.profiles.into_iter().next().unwrap()
    }

    fn environment_of(p: &Profile) -> Vec<(String, String)> {
        environment(p, None, None)
    }

    fn get<'a>(env: &'a [(String, String)], var: &str) -> Vec<&'a str> {
        env.iter()
            .filter(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn a_child_learns_its_places_port_profile_and_marker() {
        let p = profile("command: [/bin/true]\n");
        let env = environment(&p, None, None);
        let one = |var| get(&env, var);
        assert_eq!(one("OPENCLAW_STATE_DIR"), ["/srv/bots/main"]);
        assert_eq!(
            one("OPENCLAW_CONFIG_PATH"),
            ["/srv/bots/main/openclaw.json"]
        );
        assert_eq!(
            one("OPENCLAW_WORKSPACE_DIR"),
            [p.workspace.value.to_str().unwrap()]
        );
        assert_eq!(one("OPENCLAW_GATEWAY_PORT"), ["18789"]);
        // OpenClaw's profile defaults to the instance's name.
        assert_eq!(one("OPENCLAW_PROFILE"), ["main"]);
        assert_eq!(one(tree::MARKER_VAR), ["main"]);
    }

    #[test]
    fn a_token_is_given_and_the_marker_can_be_left_out() {
        let p = profile("command: [/bin/true]\ngateway_token: generate\n");
        let env = environment(&p, Some("abc"), None);
        assert_eq!(get(&env, "OPENCLAW_GATEWAY_TOKEN"), ["abc"]);
        assert_eq!(env.last().map(|(k, _)| k.as_str()), Some(tree::MARKER_VAR));
        let env = without_marker(env);
        assert!(get(&env, tree::MARKER_VAR).is_empty());
        assert_eq!(get(&env, "OPENCLAW_STATE_DIR"), ["/srv/bots/main"]);
    }

    #[test]
    fn a_named_openclaw_profile_is_passed_on() {
        let p = profile("openclaw_profile: work\ncommand: [/bin/true]\n");
        assert_eq!(
            get(&environment(&p, None, None), "OPENCLAW_PROFILE"),
            ["work"]
        );
        // OpenClaw's unnamed profile is passed as its name.
        let p = profile("openclaw_profile: default\ncommand: [/bin/true]\n");
        assert_eq!(
            get(&environment(&p, None, None), "OPENCLAW_PROFILE"),
            ["default"]
        );
    }

    #[test]
    fn caches_default_to_the_state_dir() {
        let env = environment_of(&profile("command: [/bin/true]\n"));
        assert_eq!(get(&env, "XDG_CACHE_HOME"), ["/srv/bots/main/cache"]);
        assert_eq!(get(&env, "npm_config_cache"), ["/srv/bots/main/cache/npm"]);
    }

    #[test]
    fn a_profile_naming_a_cache_keeps_its_own_and_gets_no_default() {
        for var in ["npm_config_cache", "NPM_CONFIG_CACHE", "Npm_Config_Cache"] {
            let env = environment_of(&profile(&format!(
                "command: [/bin/true]\nenv:\n  {var}: /var/cache/npm\n"
            )));
            let npm: Vec<_> = env
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("npm_config_cache"))
                .collect();
            assert_eq!(
                npm,
                [&(var.to_string(), "/var/cache/npm".to_string())],
                "{var}"
            );
            // The other cache still gets its default.
            assert_eq!(
                get(&env, "XDG_CACHE_HOME"),
                ["/srv/bots/main/cache"],
                "{var}"
            );
        }
        let env = environment_of(&profile(
            "command: [/bin/true]\nenv:\n  XDG_CACHE_HOME: /var/cache/bot\n",
        ));
        assert_eq!(get(&env, "XDG_CACHE_HOME"), ["/var/cache/bot"]);
        assert_eq!(get(&env, "npm_config_cache"), ["/srv/bots/main/cache/npm"]);
    }

    #[test]
    fn only_the_exact_xdg_name_counts_as_the_profiles_own() {
        // Nothing reads a lower-case xdg_cache_home: the child still needs its own XDG_CACHE_HOME.
        let env = environment_of(&profile(
            "command: [/bin/true]\nenv:\n  xdg_cache_home: /var/cache/bot\n",
        ));
        assert_eq!(get(&env, "XDG_CACHE_HOME"), ["/srv/bots/main/cache"]);
        assert_eq!(get(&env, "xdg_cache_home"), ["/var/cache/bot"]);
    }

    #[test]
    fn the_profiles_env_comes_first_so_the_checked_places_win() {
        let env = environment_of(&profile("command: [/bin/true]\nenv:\n  LANG: C.UTF-8\n"));
        assert_eq!(env[0], ("LANG".to_string(), "C.UTF-8".to_string()));
        assert_eq!(env.last().map(|(k, _)| k.as_str()), Some(tree::MARKER_VAR));
    }

    #[test]
    fn the_program_is_found_on_the_profiles_path() {
        let bin = tempfile::tempdir().unwrap();
        let gw = bin.path().join("openclaw");
        std::fs::write(&gw, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&gw, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let p = profile(&format!(
            "command: [openclaw, gateway, run]\nenv:\n  PATH: {}\n",
            bin.path().display()
        ));
        let req = request(&p, None, None).unwrap();
        assert_eq!(req.program, gw);
        assert_eq!(req.args, ["gateway", "run"]);
        assert_eq!(get(&req.env, "PATH"), [bin.path().to_str().unwrap()]);
    }

    #[test]
    fn a_runtime_puts_its_bin_first_and_its_openclaw_runs() {
        let store = tempfile::tempdir().unwrap();
        let r = Runtime {
            openclaw: "2026.9.6".into(),
            node: "24.21.0".into(),
            dir: store.path().join("openclaw-2026.9.6+node-24.21.0"),
        };
        std::fs::create_dir_all(r.bin_dir()).unwrap();
        let gw = r.bin_dir().join("openclaw");
        std::fs::write(&gw, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&gw, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let p = profile("command: [openclaw, gateway, run]\nenv:\n  PATH: /usr/bin:/bin\n");
        let req = request(&p, None, Some(&r)).unwrap();
        assert_eq!(req.program, gw);
        let path = format!("{}:/usr/bin:/bin", r.bin_dir().display());
        assert_eq!(get(&req.env, "PATH"), [path.as_str()]);
        assert_eq!(
            get(&environment(&p, None, Some(&r)), "PATH"),
            [path.as_str()]
        );
        // Without the runtime, the profile's PATH as it is.
        assert_eq!(get(&environment(&p, None, None), "PATH"), ["/usr/bin:/bin"]);
    }

    #[test]
    fn a_program_not_on_path_is_refused_with_the_path_searched() {
        let p = profile("command: [no-such-gateway]\nenv:\n  PATH: /nonexistent/bin\n");
        let err = request(&p, None, None).unwrap_err();
        assert_eq!(err, "`no-such-gateway` not found on PATH: /nonexistent/bin");
    }

    #[test]
    fn openclaw_not_on_path_points_at_the_installed_env_sh() {
        let project = tempfile::tempdir().unwrap();
        let text = |p: &Profile| request(p, None, None).unwrap_err();
        let yaml = format!(
            "command: [openclaw, gateway, run]\nworking_dir: {}\nenv:\n  PATH: /nonexistent/bin\n",
            project.path().display()
        );
        // Without the file, the error is the plain one.
        assert_eq!(
            text(&profile(&yaml)),
            "`openclaw` not found on PATH: /nonexistent/bin"
        );
        let env = project.path().join(".gateway/env.sh");
        std::fs::create_dir_all(env.parent().unwrap()).unwrap();
        std::fs::write(&env, "export PATH=/x:\"$PATH\"\n").unwrap();
        let err = text(&profile(&yaml));
        assert!(
            err.starts_with(&format!(
                "`openclaw` not found on PATH: /nonexistent/bin; {} puts the gateway",
                env.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("`source {}`", env.display())),
            "{err}"
        );
        // Another program is not the gateway the script installs.
        let other = yaml.replace("[openclaw,", "[other-gateway,");
        assert!(!text(&profile(&other)).contains("env.sh"));
    }
}
