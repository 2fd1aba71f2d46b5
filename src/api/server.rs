//! The gRPC service on the control socket: a thin layer that turns requests into commands for the
//! instance tasks (`supervise::instance`) and their statuses into messages. It owns no state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::oneshot;
use tonic::{Request, Response, Status as GrpcStatus};

use super::v1;
use crate::profile::{self, Severity};
use crate::supervise::{self, Command, Exit, State, Supervisor};

/// What the service needs.
pub struct Api {
    /// The running instances.
    pub supervisor: Arc<Supervisor>,
    /// The daemon's config directory (for Check).
    pub config_dir: PathBuf,
    /// When the daemon started.
    pub started: Instant,
}

impl Api {
    fn handle(&self, name: &str) -> Result<&supervise::Handle, GrpcStatus> {
        self.supervisor.get(name).ok_or_else(|| {
            GrpcStatus::not_found(format!(
                "no instance named {name:?}; `openclawctl status` lists them (profiles are read from {})",
                self.config_dir.display()
            ))
        })
    }

    fn instance(&self, name: &str) -> Result<v1::Instance, GrpcStatus> {
        self.handle(name)?;
        let reports = self.supervisor.reports(&[name.to_string()]);
        reports
            .into_iter()
            .next()
            .map(|r| to_instance(&r, &self.supervisor))
            .ok_or_else(|| GrpcStatus::not_found(name.to_string()))
    }

    async fn command(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<supervise::Reply>) -> Command,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        let handle = self.handle(name)?;
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(make(tx))
            .await
            .map_err(|_| GrpcStatus::unavailable("the supervisor is shutting down"))?;
        match rx.await {
            Ok(Ok(_)) => Ok(Response::new(self.instance(name)?)),
            Ok(Err(why)) => Err(GrpcStatus::failed_precondition(format!("{name}: {why}"))),
            Err(_) => Err(GrpcStatus::unavailable("the supervisor is shutting down")),
        }
    }
}

fn state(s: State) -> v1::InstanceState {
    match s {
        State::Stopped => v1::InstanceState::Stopped,
        State::Starting => v1::InstanceState::Starting,
        State::Running => v1::InstanceState::Running,
        State::Unhealthy => v1::InstanceState::Unhealthy,
        State::Backoff => v1::InstanceState::Backoff,
        State::Stopping => v1::InstanceState::Stopping,
        State::Exited => v1::InstanceState::Exited,
        State::Fatal => v1::InstanceState::Fatal,
    }
}

fn to_instance(r: &supervise::Report, sup: &Supervisor) -> v1::Instance {
    let s = &r.status;
    v1::Instance {
        name: s.name.clone(),
        state: state(s.state) as i32,
        pid: s.pid.map_or(0, |p| p as u32),
        started_at_unix_ms: s
            .started_at
            .filter(|_| s.pid.is_some())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64),
        restarts: s.restarts,
        last_exit: s.last_exit.map(|e| v1::ExitStatus {
            how: Some(match e {
                Exit::Code(c) => v1::exit_status::How::Code(c),
                Exit::Signal(sig) => v1::exit_status::How::Signal(sig),
            }),
            text: e.to_string(),
        }),
        last_error: s.last_error.clone().unwrap_or_default(),
        port: u32::from(s.port),
        cpu_percent: r.cpu_percent,
        rss_bytes: r.rss_bytes,
        want_running: s.want_running,
        next_start_in_ms: s.next_start_in.map_or(0, |d| d.as_millis() as u64),
        profile_file: sup
            .get(&s.name)
            .map(|h| h.profile.file.display().to_string())
            .unwrap_or_default(),
    }
}

/// Renders a check for the API.
pub fn check_response(plan: &profile::Plan) -> v1::CheckResponse {
    let loc = |l: &profile::Location| v1::Location {
        file: l.file.display().to_string(),
        line: l.line as u32,
        column: l.column as u32,
    };
    v1::CheckResponse {
        ok: plan.report.ok(),
        diagnostics: plan
            .report
            .diagnostics
            .iter()
            .map(|d| v1::Diagnostic {
                severity: match d.severity {
                    Severity::Error => v1::Severity::Error,
                    Severity::Warning => v1::Severity::Warning,
                } as i32,
                instance: d.instance.clone().unwrap_or_default(),
                location: Some(loc(&d.at)),
                field: d.field.clone().unwrap_or_default(),
                message: d.message.clone(),
                other_instance: d.other.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
                other_location: d.other.as_ref().map(|o| loc(&o.1)),
                hint: d.hint.clone().unwrap_or_default(),
                text: d.to_string(),
            })
            .collect(),
        report: format!("{}{}", plan.report, plan.report.summary(&plan.dir)),
        profiles: plan.report.profiles as u32,
    }
}

#[tonic::async_trait]
impl v1::supervisor_service_server::SupervisorService for Api {
    async fn check(
        &self,
        _: Request<v1::CheckRequest>,
    ) -> Result<Response<v1::CheckResponse>, GrpcStatus> {
        let dir = self.config_dir.clone();
        let plan = tokio::task::spawn_blocking(move || profile::load(&dir))
            .await
            .map_err(|e| GrpcStatus::internal(e.to_string()))?;
        Ok(Response::new(check_response(&plan)))
    }

    async fn get_version(
        &self,
        _: Request<v1::GetVersionRequest>,
    ) -> Result<Response<v1::GetVersionResponse>, GrpcStatus> {
        Ok(Response::new(v1::GetVersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api: "openclaw.supervisor.v1".to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            pid: std::process::id(),
        }))
    }

    async fn list_instances(
        &self,
        req: Request<v1::ListInstancesRequest>,
    ) -> Result<Response<v1::ListInstancesResponse>, GrpcStatus> {
        let names = req.into_inner().names;
        for n in &names {
            self.handle(n)?;
        }
        let instances = self
            .supervisor
            .reports(&names)
            .iter()
            .map(|r| to_instance(r, &self.supervisor))
            .collect();
        Ok(Response::new(v1::ListInstancesResponse { instances }))
    }

    async fn get_instance(
        &self,
        req: Request<v1::GetInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        Ok(Response::new(self.instance(&req.into_inner().name)?))
    }

    async fn start_instance(
        &self,
        req: Request<v1::StartInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        self.command(&req.into_inner().name, Command::Start).await
    }

    async fn stop_instance(
        &self,
        req: Request<v1::StopInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        let r = req.into_inner();
        let timeout = (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms));
        self.command(&r.name, |tx| Command::Stop(timeout, tx)).await
    }

    async fn restart_instance(
        &self,
        req: Request<v1::RestartInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        self.command(&req.into_inner().name, Command::Restart).await
    }
}
