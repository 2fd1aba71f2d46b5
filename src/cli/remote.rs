//! The commands that talk to a running daemon over its control socket. Each returns a `Result`;
//! [`finish`] reports its error and chooses the exit status, for all of them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::client::Client;
pub use crate::api::client::Target;
use crate::api::v1;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon cannot be reached; the text names the socket and how to start the daemon.
    #[error("{0}")]
    Connect(String),
    /// The socket sits in a directory another user owns or can write: whatever answers there may
    /// be anyone's, so nothing is sent to it.
    #[error("{0}")]
    UnsafeSocket(String),
    /// The daemon refused a call (the status's message says why).
    #[error("{}", .0.message())]
    Call(#[from] tonic::Status),
    /// A reload's profiles failed their check (the report was printed): nothing changed.
    #[error("reload refused: nothing changed; fix the profiles above, then reload again")]
    ReloadRefused,
    /// A reload could not apply its change to an instance.
    #[error("{name}: {error}")]
    Change {
        /// The instance.
        name: String,
        /// What went wrong.
        error: String,
    },
    /// The terminal could not be set up or drawn on (`top`).
    #[error("terminal: {0}")]
    Terminal(String),
    /// An upgrade was rolled back or could not be done (its steps were printed).
    #[error("{0}")]
    Upgrade(String),
    /// Some of several steps failed; each was reported as it came.
    #[error("{failed} of {total} failed")]
    SomeFailed {
        /// How many failed.
        failed: usize,
        /// Out of how many.
        total: usize,
    },
}

/// Prints `e` as the `error: ` line a failed step ends with.
fn report(e: &Error) {
    eprintln!("error: {e}");
}

/// The exit status of a command that ended with `r`, after reporting its error: 0, or
/// [`super::EXIT_CHECK_FAILED`] for a refused reload, or 1.
pub fn finish(r: Result<(), Error>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // Each failure was reported as it came.
        Err(Error::SomeFailed { .. }) => ExitCode::FAILURE,
        Err(e @ Error::ReloadRefused) => {
            report(&e);
            ExitCode::from(super::EXIT_CHECK_FAILED)
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

pub(crate) async fn connect(target: &Target) -> Result<Client, Error> {
    match target {
        Target::Socket(socket) => {
            // The daemon refuses such a dir; a client refuses it too: the socket there may be
            // anyone's, and a start, a stop or a reload sent to an impostor would be lied about.
            if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
                if std::fs::symlink_metadata(dir).is_ok() {
                    if let Err(e) = crate::fsx::check_dir(dir, "socket directory") {
                        return Err(Error::UnsafeSocket(format!(
                            "refusing the socket {}: {e}; it may not be openclaw-supervisord's",
                            socket.display()
                        )));
                    }
                }
            }
            crate::api::client::connect_to(target)
                .await
                .map_err(Error::Connect)
        }
        Target::Tcp {
            endpoint,
            token_file,
        } => {
            let mut client = crate::api::client::connect_to(target)
                .await
                .map_err(Error::Connect)?;
            // One cheap call first: a wrong token is then said once, naming its file, whatever
            // the command (a start of three instances would otherwise fail three times).
            match client.get_version(v1::GetVersionRequest {}).await {
                Ok(_) => Ok(client),
                Err(s) if s.code() == tonic::Code::Unauthenticated => Err(Error::Connect(format!(
                    "openclaw-supervisord at {endpoint} refused the token of {}: {}\nuse the file the daemon's --token-file names (--token-file / OPENCLAW_SUPERVISOR_TOKEN_FILE)",
                    token_file.display(),
                    s.message()
                ))),
                Err(s) => Err(Error::Connect(format!(
                    "cannot reach openclaw-supervisord at {endpoint}: {}",
                    s.message()
                ))),
            }
        }
    }
}

/// Which lifecycle call `start`, `stop` and `restart` make.
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle {
    /// StartInstance.
    Start,
    /// StopInstance.
    Stop,
    /// RestartInstance.
    Restart,
}

pub(crate) fn state_name(s: i32) -> &'static str {
    match v1::InstanceState::try_from(s).unwrap_or(v1::InstanceState::Unspecified) {
        v1::InstanceState::Unspecified => "unknown",
        v1::InstanceState::Stopped => "stopped",
        v1::InstanceState::Starting => "starting",
        v1::InstanceState::Running => "running",
        v1::InstanceState::Unhealthy => "unhealthy",
        v1::InstanceState::Backoff => "backoff",
        v1::InstanceState::Stopping => "stopping",
        v1::InstanceState::Exited => "exited",
        v1::InstanceState::Fatal => "fatal",
        v1::InstanceState::Blocked => "blocked",
    }
}

pub(crate) fn uptime(i: &v1::Instance, now_ms: i64) -> String {
    if i.started_at_unix_ms <= 0 {
        return "-".into();
    }
    let secs = ((now_ms - i.started_at_unix_ms).max(0) / 1000) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `n` tenths as `12.3` followed by `unit`, without float formatting.
pub(crate) fn tenths(n: u64, unit: char) -> String {
    format!("{}.{}{unit}", n / 10, n % 10)
}

pub(crate) fn mib(b: u64) -> String {
    tenths((b * 10 + (1 << 19)) >> 20, 'M')
}

/// A percentage as its figure means it: one decimal (`104.99999` is `105.0`), so that JSON shows
/// `105.0` and not the f32's `104.99999237060547`.
fn one_decimal(x: f32) -> f64 {
    let x = f64::from(x);
    if x.is_finite() {
        (x * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// The RESTARTS cell: the policy's restarts, then an operator's, when there were any.
pub(crate) fn restarts_cell(i: &v1::Instance) -> String {
    if i.operator_restarts == 0 {
        i.restarts.to_string()
    } else {
        format!("{} (+{} by operator)", i.restarts, i.operator_restarts)
    }
}

/// The JSON form of an instance, for `status --json`.
pub fn instance_json(i: &v1::Instance) -> serde_json::Value {
    serde_json::json!({
        "name": i.name,
        "state": state_name(i.state),
        "pid": (i.pid != 0).then_some(i.pid),
        "started_at_unix_ms": (i.started_at_unix_ms != 0).then_some(i.started_at_unix_ms),
        "restarts": i.restarts,
        "operator_restarts": i.operator_restarts,
        "port": i.port,
        "cpu_percent": one_decimal(i.cpu_percent),
        "rss_bytes": i.rss_bytes,
        "last_exit": i.last_exit.as_ref().map(|e| e.text.clone()),
        "last_error": (!i.last_error.is_empty()).then(|| i.last_error.clone()),
        "want_running": i.want_running,
        "next_start_in_ms": (i.next_start_in_ms != 0).then_some(i.next_start_in_ms),
        "profile_file": i.profile_file,
        "soak_until_unix_ms": (i.soak_until_unix_ms != 0).then_some(i.soak_until_unix_ms),
        "holder": i.holder.as_ref().map(|h| serde_json::json!({
            "pid": h.pid,
            "command": h.command,
            "what": h.what,
            "unit": (!h.unit.is_empty()).then(|| h.unit.clone()),
            "stop_hint": (!h.stop_hint.is_empty()).then(|| h.stop_hint.clone()),
        })),
        "runtime": some(&i.runtime),
        "openclaw_version": some(&i.openclaw_version),
        "node_version": some(&i.node_version),
        "profile_runtime": some(&i.profile_runtime),
        "chosen_runtime": some(&i.chosen_runtime),
    })
}

/// A text field of the API as JSON: null when empty.
fn some(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Whether an upgrade chose another runtime for `i` than its profile names.
fn chosen_differs(i: &v1::Instance) -> bool {
    !i.chosen_runtime.is_empty() && i.chosen_runtime != i.profile_runtime
}

/// The OPENCLAW cell: the version as run (`-` when not known), `*` when an upgrade chose another
/// runtime than the profile's.
pub(crate) fn openclaw_cell(i: &v1::Instance) -> String {
    let v = some(&i.openclaw_version).unwrap_or("-");
    if chosen_differs(i) {
        format!("{v}*")
    } else {
        v.to_string()
    }
}

/// The note under the table for an instance whose upgrade's runtime is not its profile's yet.
fn upgrade_note(i: &v1::Instance) -> Option<String> {
    if !chosen_differs(i) {
        return None;
    }
    let to = crate::runtime::Spec::parse(&i.chosen_runtime)
        .map_or_else(|_| i.chosen_runtime.clone(), |s| s.openclaw);
    let says = match some(&i.profile_runtime) {
        Some(p) => format!("says {p}"),
        None => "names none (PATH)".into(),
    };
    Some(format!(
        "{name} runs {chosen} (upgrade); its profile {says}: `openclawctl upgrade {name} --to {to} --write` writes it\n",
        name = i.name,
        chosen = i.chosen_runtime,
    ))
}

/// The table of `status`.
pub fn status_table(instances: &[v1::Instance]) -> String {
    let mut rows = vec![[
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "PORT",
        "OPENCLAW",
        "CPU",
        "RSS",
        "LAST EXIT",
    ]
    .map(String::from)];
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    rows.reserve(instances.len());
    for i in instances {
        rows.push([
            i.name.clone(),
            state_name(i.state).into(),
            if i.pid == 0 {
                "-".into()
            } else {
                i.pid.to_string()
            },
            uptime(i, now_ms),
            restarts_cell(i),
            i.port.to_string(),
            openclaw_cell(i),
            tenths(
                (f64::from(i.cpu_percent.max(0.0)) * 10.0).round() as u64,
                '%',
            ),
            mib(i.rss_bytes),
            i.last_exit.as_ref().map_or("-".into(), |e| e.text.clone()),
        ]);
    }
    let mut out = super::align(&rows, "");
    for note in instances.iter().filter_map(upgrade_note) {
        out.push_str(&note);
    }
    for i in instances.iter().filter(|i| !i.last_error.is_empty()) {
        out.push_str(&format!("{}: {}\n", i.name, i.last_error));
    }
    for i in instances.iter().filter(|i| i.soak_until_unix_ms != 0) {
        let left = (i.soak_until_unix_ms - now_ms).max(0) / 1000;
        out.push_str(&format!(
            "{}: upgrade soaking, {left}s left (rolled back if it fails)\n",
            i.name
        ));
    }
    for i in instances {
        // The holder's command line, unless the error line already gave it.
        if let Some(h) = i
            .holder
            .as_ref()
            .filter(|h| !i.last_error.contains(&h.command))
        {
            out.push_str(&format!(
                "{}: blocked by pid {} ({}), which {}\n",
                i.name, h.pid, h.command, h.what
            ));
        }
        // Its unit and the command that stops it, unless the error line already gave them.
        if let Some(h) = i
            .holder
            .as_ref()
            .filter(|h| !h.stop_hint.is_empty() && !i.last_error.contains(&h.stop_hint))
        {
            out.push_str(&format!(
                "{}: the holder runs in systemd unit {}: stop it with `{}`\n",
                i.name, h.unit, h.stop_hint
            ));
        }
    }
    out
}

/// How long a call the daemon answers with UNAVAILABLE (a re-exec under way, its shutdown) is
/// tried again.
const RETRY_FOR: Duration = Duration::from_secs(5);

/// `call` on a new connection to `target`, tried again every 50 ms while the daemon answers
/// UNAVAILABLE, for up to [`RETRY_FOR`]: a re-exec of the daemon costs a client a short wait, not
/// an error. (UNAVAILABLE means the call was not carried out, except when a start or restart was
/// cut short: the daemon still completes it, and the next try finds it done or under way.)
async fn retrying<T, F, Fut>(target: &Target, mut call: F) -> Result<T, Error>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let until = std::time::Instant::now() + RETRY_FOR;
    loop {
        let r = match connect(target).await {
            Ok(client) => call(client).await.map_err(Error::Call),
            Err(e) => Err(e),
        };
        match r {
            Ok(r) => return Ok(r.into_inner()),
            Err(Error::Call(s))
                if crate::api::client::unavailable(&s) && std::time::Instant::now() < until =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `status [NAME...] [--json]`.
pub async fn status(target: &Target, names: Vec<String>, json: bool) -> Result<(), Error> {
    let list = retrying(target, |mut c| {
        let names = names.clone();
        async move { c.list_instances(v1::ListInstancesRequest { names }).await }
    })
    .await?
    .instances;
    if json {
        let v: Vec<_> = list.iter().map(instance_json).collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        print!("{}", status_table(&list));
    }
    Ok(())
}

/// `start|stop|restart NAME... | --all`: one call each, in order (all instances, sorted by name,
/// for `--all`); prints each outcome; exits 1 if any failed.
pub async fn act(
    target: &Target,
    call: Lifecycle,
    names: Vec<String>,
    all: bool,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let mut client = connect(target).await?;
    let names: Vec<String> = if all {
        all_names(&mut client).await?
    } else {
        names
    };
    drop(client);
    let mut failed = 0;
    for name in &names {
        let r = retrying(target, |mut client| {
            let name = name.clone();
            async move {
                match call {
                    Lifecycle::Start => {
                        client
                            .start_instance(v1::StartInstanceRequest { name })
                            .await
                    }
                    Lifecycle::Stop => {
                        client
                            .stop_instance(v1::StopInstanceRequest {
                                name,
                                timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
                            })
                            .await
                    }
                    Lifecycle::Restart => {
                        client
                            .restart_instance(v1::RestartInstanceRequest { name })
                            .await
                    }
                }
            }
        })
        .await;
        match r {
            Ok(i) => {
                let pid = if i.pid == 0 {
                    String::new()
                } else {
                    format!(" (pid {})", i.pid)
                };
                println!("{}: {}{pid}", i.name, state_name(i.state));
            }
            Err(e) => {
                failed += 1;
                report(&e);
            }
        }
    }
    if failed > 0 {
        return Err(Error::SomeFailed {
            failed,
            total: names.len(),
        });
    }
    Ok(())
}

fn time_of(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `logs NAME [-n N] [-f]`: the last lines the daemon keeps, then (with `-f`) new ones until
/// interrupted.
pub async fn logs(target: &Target, name: String, lines: u32, follow: bool) -> Result<(), Error> {
    use std::io::Write;
    let mut stream = connect(target)
        .await?
        .tail_logs(v1::TailLogsRequest {
            name,
            lines,
            follow,
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(l) = stream.message().await? {
        let written = if l.skipped > 0 {
            writeln!(
                out,
                "... {} lines skipped: this reader fell behind",
                l.skipped
            )
        } else {
            writeln!(out, "{}", l.rendered)
        };
        // A closed pipe (`| head`) ends the command quietly.
        if written.and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

/// `explain NAME [--json]`: the instance's recent history, oldest first (`TIME  kind  text`), then
/// what will happen next; with `--json`, one object.
pub async fn explain(target: &Target, name: String, json: bool) -> Result<(), Error> {
    let e = connect(target)
        .await?
        .explain(v1::ExplainRequest { name })
        .await?
        .into_inner();
    print!("{}", explain_text(&e, json));
    Ok(())
}

/// What `explain` prints for `e`.
pub fn explain_text(e: &v1::ExplainResponse, json: bool) -> String {
    if json {
        let entries: Vec<serde_json::Value> = e
            .entries
            .iter()
            .map(|h| {
                serde_json::json!({
                    "time": time_of(h.time_unix_ms),
                    "time_unix_ms": h.time_unix_ms,
                    "kind": h.kind,
                    "text": h.text,
                })
            })
            .collect();
        let v = serde_json::json!({ "name": e.name, "entries": entries, "next": e.next });
        return format!("{v}\n");
    }
    let width = e.entries.iter().map(|h| h.kind.len()).max().unwrap_or(0);
    let mut out = String::new();
    for h in &e.entries {
        out.push_str(&format!(
            "{}  {:width$}  {}\n",
            time_of(h.time_unix_ms),
            h.kind,
            h.text
        ));
    }
    out.push_str(&format!("next: {}\n", e.next));
    out
}

/// `watch [NAME...] [--json]`: every state change, one line each, until interrupted.
pub async fn watch(target: &Target, names: Vec<String>, json: bool) -> Result<(), Error> {
    use std::io::Write;
    let mut stream = connect(target)
        .await?
        .watch_events(v1::WatchEventsRequest { names })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(e) = stream.message().await? {
        let Some(i) = e.instance.as_ref() else {
            continue;
        };
        let line = if json {
            let mut v = instance_json(i);
            v["time_unix_ms"] = e.time_unix_ms.into();
            v["previous_state"] = (e.previous_state != 0)
                .then(|| state_name(e.previous_state))
                .into();
            v["removed"] = e.removed.into();
            v["reason"] = (!e.reason.is_empty()).then(|| e.reason.clone()).into();
            v.to_string()
        } else {
            let change = if e.removed {
                "removed".to_string()
            } else if e.previous_state == 0 {
                state_name(i.state).to_string()
            } else {
                format!(
                    "{} -> {}",
                    state_name(e.previous_state),
                    state_name(i.state)
                )
            };
            let pid = if i.pid == 0 {
                String::new()
            } else {
                format!(" (pid {})", i.pid)
            };
            let shows_why = [
                v1::InstanceState::Fatal as i32,
                v1::InstanceState::Blocked as i32,
            ];
            // A daemon from before `reason` sends none: then the error of a fatal or blocked one.
            let why = if !e.reason.is_empty() {
                format!(": {}", e.reason)
            } else if i.last_error.is_empty() || !shows_why.contains(&i.state) {
                String::new()
            } else {
                format!(": {}", i.last_error)
            };
            format!("{} {} {change}{pid}{why}", time_of(e.time_unix_ms), i.name)
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

/// `reload [--dry-run]`: what changes; the check's report and exit 1 when the profiles fail it
/// (then nothing changed).
pub async fn reload(target: &Target, dry_run: bool) -> Result<(), Error> {
    let r = retrying(target, |mut c| async move {
        c.reload(v1::ReloadRequest { dry_run }).await
    })
    .await?;
    let check = r.check.unwrap_or_default();
    if !check.ok {
        eprintln!("{}", check.report.trim_end());
        return Err(Error::ReloadRefused);
    }
    for d in check.diagnostics.iter() {
        eprintln!("{}", d.text);
    }
    let mut rows = vec![["NAME", "ACTION", "FIELDS"].map(String::from)];
    for c in &r.changes {
        let action = match v1::ReloadAction::try_from(c.action).unwrap_or_default() {
            v1::ReloadAction::Add => "add",
            v1::ReloadAction::Remove => "remove",
            v1::ReloadAction::Change => "change",
            v1::ReloadAction::Keep => "keep",
            v1::ReloadAction::Unspecified => "?",
        };
        rows.push([
            c.name.clone(),
            action.to_string(),
            if c.changed_fields.is_empty() {
                "-".into()
            } else {
                c.changed_fields.join(",")
            },
        ]);
    }
    print!("{}", super::align(&rows, ""));
    let mut failed = 0;
    for c in r.changes.iter().filter(|c| !c.error.is_empty()) {
        failed += 1;
        report(&Error::Change {
            name: c.name.clone(),
            error: c.error.clone(),
        });
    }
    if dry_run {
        println!("dry run: nothing changed");
    }
    if failed > 0 {
        return Err(Error::SomeFailed {
            failed,
            total: r.changes.len(),
        });
    }
    Ok(())
}

/// `version`: this client's version, and the daemon's.
pub async fn version(target: &Target) -> Result<(), Error> {
    println!("openclawctl {}", env!("CARGO_PKG_VERSION"));
    let v = retrying(target, |mut c| async move {
        c.get_version(v1::GetVersionRequest {}).await
    })
    .await?;
    println!(
        "openclaw-supervisord {} (api {}, pid {}, up {}, execs {})",
        v.version,
        v.api,
        v.pid,
        humantime::format_duration(Duration::from_secs(v.uptime_seconds)),
        v.execs
    );
    if !v.binary.is_empty() {
        println!("binary: {}", v.binary);
    }
    if !v.containment.is_empty() {
        println!("containment: {}", v.containment);
    }
    if !v.config_dir.is_empty() {
        println!("config dir: {}", v.config_dir);
    }
    Ok(())
}

/// `reexec`: the daemon replaces its program with the binary at its path, keeping every gateway;
/// waits until the new program answers, and says what changed.
pub async fn reexec(target: &Target) -> Result<(), Error> {
    let before = retrying(target, |mut c| async move {
        c.get_version(v1::GetVersionRequest {}).await
    })
    .await?;
    let asked = connect(target).await?.reexec(v1::ReexecRequest {}).await;
    let r = match asked {
        Ok(r) => Some(r.into_inner()),
        // The exec may close the connection before the answer is read: the version tells.
        Err(s) if crate::api::client::unavailable(&s) => None,
        Err(s) => return Err(Error::Call(s)),
    };
    let began = std::time::Instant::now();
    let after = loop {
        let v = retrying(target, |mut c| async move {
            c.get_version(v1::GetVersionRequest {}).await
        })
        .await?;
        if v.execs > before.execs || v.pid != before.pid {
            break v;
        }
        if began.elapsed() > RETRY_FOR * 6 {
            return Err(Error::Connect(format!(
                "the daemon (pid {}) said it would re-execute, but still runs its old program after {}; see its log",
                before.pid,
                humantime::format_duration(began.elapsed())
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if after.pid != before.pid {
        return Err(Error::Connect(format!(
            "the daemon's pid changed ({} -> {}): it was restarted, not re-executed",
            before.pid, after.pid
        )));
    }
    println!(
        "re-executed openclaw-supervisord (pid {}): {} -> {} ({}), {} instances kept",
        after.pid,
        before.version,
        after.version,
        if after.binary.is_empty() {
            "?"
        } else {
            &after.binary
        },
        r.map_or_else(|| "all".to_string(), |r| r.instances.to_string())
    );
    Ok(())
}

/// The running daemon's config dir (absolute), if a daemon answers at `target` and tells it; for
/// `check` and `ports` given no `--config-dir`. Quiet: any failure is `None`.
pub async fn daemon_config_dir(target: &Target) -> Option<PathBuf> {
    let mut client = connect(target).await.ok()?;
    let v = client
        .get_version(v1::GetVersionRequest {})
        .await
        .ok()?
        .into_inner();
    (!v.config_dir.is_empty()).then(|| PathBuf::from(v.config_dir))
}

/// The instance names the daemon at `target` knows, for shell completion.
pub async fn instance_names(target: &Target) -> Result<Vec<String>, Error> {
    all_names(&mut connect(target).await?).await
}

/// Every instance name the daemon knows, in its order.
async fn all_names(client: &mut Client) -> Result<Vec<String>, Error> {
    Ok(client
        .list_instances(v1::ListInstancesRequest { names: Vec::new() })
        .await?
        .into_inner()
        .instances
        .into_iter()
        .map(|i| i.name)
        .collect())
}

/// `token NAME`: the gateway token the daemon made for the instance, one line on stdout.
pub async fn token(target: &Target, name: String) -> Result<(), Error> {
    let t = retrying(target, |mut c| {
        let name = name.clone();
        async move { c.get_token(v1::GetTokenRequest { name }).await }
    })
    .await?;
    println!("{}", t.token);
    Ok(())
}

/// The environment and working directory the daemon gives the instance's gateway (without the
/// supervisor's instance marker: see `spawn::without_marker`).
pub async fn environment(
    target: &Target,
    name: String,
) -> Result<(Vec<(String, String)>, PathBuf), Error> {
    let r = retrying(target, |mut c| {
        let name = name.clone();
        async move { c.get_environment(v1::GetEnvironmentRequest { name }).await }
    })
    .await?;
    Ok((
        r.vars.into_iter().map(|v| (v.name, v.value)).collect(),
        PathBuf::from(r.cwd),
    ))
}

/// `env NAME`: the instance's environment as `export K='v'` lines for `eval "$(openclawctl env
/// NAME)"`; a later line wins, as in the gateway's.
pub async fn env(target: &Target, name: String) -> Result<(), Error> {
    let (vars, _) = environment(target, name).await?;
    print!("{}", exports(&vars));
    Ok(())
}

/// `export K='v'` lines, each value quoted for any POSIX shell (a `'` inside as `'\''`).
pub fn exports(vars: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        out.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
    }
    out
}

/// `upgrade NAME [--to VERSION] [--soak 60s] [--write]`: prints the steps as they come, then the
/// outcome; an error (exit 1) if it was rolled back or could not be done.
pub async fn upgrade(
    target: &Target,
    name: String,
    to: Option<String>,
    soak: Duration,
    write: bool,
) -> Result<(), Error> {
    let mut stream = connect(target)
        .await?
        .upgrade(v1::UpgradeRequest {
            name: name.clone(),
            to: to.unwrap_or_default(),
            soak_ms: u64::try_from(soak.as_millis()).unwrap_or(u64::MAX),
            write,
        })
        .await?
        .into_inner();
    // The last step often says what the outcome says: printed once.
    let mut last = String::new();
    while let Some(p) = stream.message().await? {
        let Some(o) = p.outcome else {
            println!("{}", p.line);
            last = p.line;
            continue;
        };
        let result =
            v1::UpgradeResult::try_from(o.result).unwrap_or(v1::UpgradeResult::Unspecified);
        return match result {
            v1::UpgradeResult::Kept
            | v1::UpgradeResult::Written
            | v1::UpgradeResult::NothingToDo => {
                if o.reason != last {
                    println!("{}", o.reason);
                }
                Ok(())
            }
            v1::UpgradeResult::RolledBack => {
                if !o.log_lines.is_empty() {
                    println!("{name}'s last log lines:");
                    for l in &o.log_lines {
                        println!("  {l}");
                    }
                }
                Err(Error::Upgrade(format!("rolled back: {}", o.reason)))
            }
            _ => Err(Error::Upgrade(o.reason)),
        };
    }
    Err(Error::Upgrade(format!(
        "the daemon ended the upgrade's stream without an outcome; `openclawctl explain {name}` shows where it is"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_has_one_decimal_in_json() {
        let i = v1::Instance {
            cpu_percent: 104.999_99,
            ..Default::default()
        };
        let json = instance_json(&i).to_string();
        assert!(json.contains("\"cpu_percent\":105.0"), "{json}");
        assert_eq!(one_decimal(0.049_999), 0.0);
        assert_eq!(one_decimal(12.345).to_string(), "12.3");
        assert_eq!(one_decimal(f32::NAN), 0.0);
    }

    #[test]
    fn restarts_show_the_operators_apart() {
        let mut i = v1::Instance {
            restarts: 2,
            ..Default::default()
        };
        assert_eq!(restarts_cell(&i), "2");
        i.operator_restarts = 3;
        assert_eq!(restarts_cell(&i), "2 (+3 by operator)");
        let json = instance_json(&i);
        assert_eq!(
            (json["restarts"].clone(), json["operator_restarts"].clone()),
            (2.into(), 3.into())
        );
    }

    #[test]
    fn an_upgrade_not_written_back_is_starred_with_a_note() {
        let mut i = v1::Instance {
            name: "main".into(),
            openclaw_version: "2026.9.7".into(),
            profile_runtime: "openclaw@2026.9.6".into(),
            ..Default::default()
        };
        assert_eq!(openclaw_cell(&i), "2026.9.7");
        assert_eq!(upgrade_note(&i), None);
        i.chosen_runtime = "openclaw@2026.9.7".into();
        assert_eq!(openclaw_cell(&i), "2026.9.7*");
        assert_eq!(
            upgrade_note(&i).unwrap(),
            "main runs openclaw@2026.9.7 (upgrade); its profile says openclaw@2026.9.6: `openclawctl upgrade main --to 2026.9.7 --write` writes it\n"
        );
        let table = status_table(std::slice::from_ref(&i));
        assert!(table.contains("2026.9.7*"), "{table}");
        assert!(table.contains("(upgrade)"), "{table}");
        // Written back: the same runtime, no star.
        i.profile_runtime = i.chosen_runtime.clone();
        assert_eq!(openclaw_cell(&i), "2026.9.7");
        let json = instance_json(&i);
        assert_eq!(json["chosen_runtime"], "openclaw@2026.9.7");
        assert_eq!(json["runtime"], serde_json::Value::Null);
        i.openclaw_version.clear();
        assert_eq!(openclaw_cell(&i), "-");
    }

    #[test]
    fn exports_survive_any_value() {
        let vars = vec![
            ("A".to_string(), "it's $HOME `x` \"y\"\nz".to_string()),
            ("B".to_string(), String::new()),
        ];
        let script = format!("{}printf '%s|%s' \"$A\" \"$B\"", exports(&vars));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's $HOME `x` \"y\"\nz|"
        );
    }
}
