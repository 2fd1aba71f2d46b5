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

fn uptime(i: &v1::Instance) -> String {
    if i.started_at_unix_ms <= 0 {
        return "-".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let secs = ((now - i.started_at_unix_ms).max(0) / 1000) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn mib(b: u64) -> String {
    format!("{:.1}M", b as f64 / (1024.0 * 1024.0))
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
    for i in instances {
        rows.push([
            i.name.clone(),
            state_name(i.state).into(),
            if i.pid == 0 {
                "-".into()
            } else {
                i.pid.to_string()
            },
            uptime(i),
            i.restarts.to_string(),
            i.port.to_string(),
            format!("{:.1}%", i.cpu_percent),
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

/// `start|stop|restart NAME...`: one call each, in order; prints each outcome; exits 1 if any failed.
pub async fn act(
    socket: &Path,
    action: Action,
    names: Vec<String>,
    timeout: Option<Duration>,
) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
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

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}
