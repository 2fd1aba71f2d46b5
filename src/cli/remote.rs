//! The commands that talk to a running daemon over its control socket.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::client::connect;
use crate::api::v1;

/// What `start`, `stop` and `restart` ask for.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// StartInstance.
    Start,
    /// StopInstance.
    Stop,
    /// RestartInstance.
    Restart,
}

fn state_name(s: i32) -> &'static str {
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
    }
}

fn uptime(i: &v1::Instance, now_ms: i64) -> String {
    if i.started_at_unix_ms <= 0 {
        return "-".into();
    }
    let secs = ((now_ms - i.started_at_unix_ms).max(0) / 1000) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `n` tenths as `12.3` followed by `unit`, without float formatting.
fn tenths(n: u64, unit: char) -> String {
    format!("{}.{}{unit}", n / 10, n % 10)
}

fn mib(b: u64) -> String {
    tenths((b * 10 + (1 << 19)) >> 20, 'M')
}

/// The JSON form of an instance, for `status --json`.
pub fn instance_json(i: &v1::Instance) -> serde_json::Value {
    serde_json::json!({
        "name": i.name,
        "state": state_name(i.state),
        "pid": (i.pid != 0).then_some(i.pid),
        "started_at_unix_ms": (i.started_at_unix_ms != 0).then_some(i.started_at_unix_ms),
        "restarts": i.restarts,
        "port": i.port,
        "cpu_percent": i.cpu_percent,
        "rss_bytes": i.rss_bytes,
        "last_exit": i.last_exit.as_ref().map(|e| e.text.clone()),
        "last_error": (!i.last_error.is_empty()).then(|| i.last_error.clone()),
        "want_running": i.want_running,
        "next_start_in_ms": (i.next_start_in_ms != 0).then_some(i.next_start_in_ms),
        "profile_file": i.profile_file,
    })
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
            i.restarts.to_string(),
            i.port.to_string(),
            tenths(
                (f64::from(i.cpu_percent.max(0.0)) * 10.0).round() as u64,
                '%',
            ),
            mib(i.rss_bytes),
            i.last_exit.as_ref().map_or("-".into(), |e| e.text.clone()),
        ]);
    }
    let mut out = super::align(&rows, "");
    for i in instances.iter().filter(|i| !i.last_error.is_empty()) {
        out.push_str(&format!("{}: {}\n", i.name, i.last_error));
    }
    out
}

/// `status [NAME...] [--json]`.
pub async fn status(socket: &Path, names: Vec<String>, json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match client
        .list_instances(v1::ListInstancesRequest { names })
        .await
    {
        Ok(r) => {
            let list = r.into_inner().instances;
            if json {
                let v: Vec<_> = list.iter().map(instance_json).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                print!("{}", status_table(&list));
            }
            ExitCode::SUCCESS
        }
        Err(s) => fail(s.message()),
    }
}

/// `start|stop|restart NAME... | --all`: one call each, in order (all instances, sorted by name,
/// for `--all`); prints each outcome; exits 1 if any failed.
pub async fn act(
    socket: &Path,
    action: Action,
    names: Vec<String>,
    all: bool,
    timeout: Option<Duration>,
) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let names = if all {
        match client
            .list_instances(v1::ListInstancesRequest { names: Vec::new() })
            .await
        {
            Ok(r) => r
                .into_inner()
                .instances
                .into_iter()
                .map(|i| i.name)
                .collect(),
            Err(s) => return fail(s.message()),
        }
    } else {
        names
    };
    let mut failed = false;
    for name in names {
        let r = match action {
            Action::Start => {
                client
                    .start_instance(v1::StartInstanceRequest { name: name.clone() })
                    .await
            }
            Action::Stop => {
                client
                    .stop_instance(v1::StopInstanceRequest {
                        name: name.clone(),
                        timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
                    })
                    .await
            }
            Action::Restart => {
                client
                    .restart_instance(v1::RestartInstanceRequest { name: name.clone() })
                    .await
            }
        };
        match r {
            Ok(i) => {
                let i = i.into_inner();
                let pid = if i.pid == 0 {
                    String::new()
                } else {
                    format!(" (pid {})", i.pid)
                };
                println!("{}: {}{pid}", i.name, state_name(i.state));
            }
            Err(s) => {
                failed = true;
                eprintln!("error: {}", s.message());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn time_of(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `logs NAME [-n N] [-f]`: the last lines the daemon keeps, then (with `-f`) new ones until
/// interrupted.
pub async fn logs(socket: &Path, name: String, lines: u32, follow: bool) -> ExitCode {
    use std::io::Write;
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut stream = match client
        .tail_logs(v1::TailLogsRequest {
            name,
            lines,
            follow,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return fail(s.message()),
    };
    let mut out = std::io::stdout().lock();
    loop {
        match stream.message().await {
            Ok(Some(l)) => {
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
                    return ExitCode::SUCCESS;
                }
            }
            Ok(None) => return ExitCode::SUCCESS,
            Err(s) => return fail(s.message()),
        }
    }
}

/// `watch [NAME...] [--json]`: every state change, one line each, until interrupted.
pub async fn watch(socket: &Path, names: Vec<String>, json: bool) -> ExitCode {
    use std::io::Write;
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut stream = match client.watch_events(v1::WatchEventsRequest { names }).await {
        Ok(r) => r.into_inner(),
        Err(s) => return fail(s.message()),
    };
    let mut out = std::io::stdout().lock();
    loop {
        let e = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => return ExitCode::SUCCESS,
            Err(s) => return fail(s.message()),
        };
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
            let why = if i.last_error.is_empty() || i.state != v1::InstanceState::Fatal as i32 {
                String::new()
            } else {
                format!(": {}", i.last_error)
            };
            format!("{} {} {change}{pid}{why}", time_of(e.time_unix_ms), i.name)
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

/// `reload [--dry-run]`: what changes; the check's report and exit 1 when the profiles fail it
/// (then nothing changed).
pub async fn reload(socket: &Path, dry_run: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let r = match client.reload(v1::ReloadRequest { dry_run }).await {
        Ok(r) => r.into_inner(),
        Err(s) => return fail(s.message()),
    };
    let check = r.check.unwrap_or_default();
    if !check.ok {
        eprintln!("{}", check.report.trim_end());
        eprintln!(
            "error: reload refused: nothing changed; fix the profiles above, then reload again"
        );
        return ExitCode::from(super::EXIT_CHECK_FAILED);
    }
    for d in check.diagnostics.iter() {
        eprintln!("{}", d.text);
    }
    let mut failed = false;
    let mut rows = vec![["NAME", "ACTION", "FIELDS"].map(String::from)];
    for c in &r.changes {
        let action = match v1::ReloadAction::try_from(c.action).unwrap_or_default() {
            v1::ReloadAction::Add => "add",
            v1::ReloadAction::Remove => "remove",
            v1::ReloadAction::Change => "change",
            v1::ReloadAction::Keep => "keep",
            v1::ReloadAction::Unspecified => "?",
        };
        failed |= !c.error.is_empty();
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
    for c in r.changes.iter().filter(|c| !c.error.is_empty()) {
        eprintln!("error: {}: {}", c.name, c.error);
    }
    if dry_run {
        println!("dry run: nothing changed");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `version`: this client's version, and the daemon's.
pub async fn version(socket: &Path) -> ExitCode {
    println!("openclawctl {}", env!("CARGO_PKG_VERSION"));
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match client.get_version(v1::GetVersionRequest {}).await {
        Ok(r) => {
            let v = r.into_inner();
            println!(
                "openclaw-supervisord {} (api {}, pid {}, up {})",
                v.version,
                v.api,
                v.pid,
                humantime::format_duration(Duration::from_secs(v.uptime_seconds))
            );
            ExitCode::SUCCESS
        }
        Err(s) => fail(s.message()),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}
