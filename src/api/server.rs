//! The gRPC service on the control socket: a thin layer that turns requests into commands for the
//! instance tasks (`supervise::instance`) and their statuses into messages. It owns no state.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status as GrpcStatus};

use super::v1;
use crate::profile::{self, Severity};
use crate::supervise::{self, Command, CommandError, Exit, State, Supervisor};

/// What the service needs.
pub struct Api {
    /// The running instances.
    pub supervisor: Arc<Supervisor>,
    /// The daemon's config directory (for Check).
    pub config_dir: PathBuf,
    /// When the daemon started (its first program, across re-execs).
    pub started: Instant,
    /// Fired when the daemon shuts down or re-executes: open streams (log follows, event watches)
    /// end, so their connections can close. Replaced if a re-exec fails.
    pub closing: std::sync::Mutex<tokio_util::sync::CancellationToken>,
    /// The re-execs of this process so far.
    pub execs: u32,
    /// The program a re-exec runs.
    pub binary: PathBuf,
    /// Asks the daemon's loop for a re-exec; it answers once the new binary passed its check.
    pub reexec: mpsc::Sender<ReexecAsk>,
}

/// A re-exec asked over the API: the answer once the new binary's check passed (about to exec),
/// or why it will not be done.
pub type ReexecAsk = oneshot::Sender<Result<v1::ReexecResponse, String>>;

impl Api {
    /// The token of the current streams' end.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends the open streams now, and gives later ones a token of their own (a failed re-exec).
    pub fn close_streams(&self, again: bool) {
        let mut c = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        c.cancel();
        if again {
            *c = tokio_util::sync::CancellationToken::new();
        }
    }
}

/// Why a call about an instance failed; each has its gRPC code (`From<ApiError> for Status`).
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// INVALID_ARGUMENT; `why` is the name check's own sentence, which names the name.
    #[error("{why}")]
    BadName { name: String, why: String },
    /// NOT_FOUND; `known` says which names there are (see [`known_names`]).
    #[error("no instance named {name:?} in {dir}{known}")]
    NotFound {
        name: String,
        dir: String,
        known: String,
    },
    /// UNAVAILABLE: the instance's task ended while the command waited (a reload replaced it, or
    /// the daemon is shutting down); the same call may work a moment later.
    #[error("{name} was replaced by a reload or the supervisor is shutting down; try again")]
    Gone { name: String },
    /// FAILED_PRECONDITION: what the call needs of the instance is missing (a `gateway_token`, a
    /// token file the daemon can trust).
    #[error("{name}: {why}")]
    Precondition { name: String, why: String },
    /// The instance task's answer: code by [`CommandError`]'s kind.
    #[error("{name}: {error}")]
    Command { name: String, error: CommandError },
}

impl From<ApiError> for GrpcStatus {
    fn from(e: ApiError) -> GrpcStatus {
        use tonic::Code;
        let code = match &e {
            ApiError::BadName { .. } => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::Gone { .. } => Code::Unavailable,
            ApiError::Precondition { .. } => Code::FailedPrecondition,
            ApiError::Command { error, .. } => match error {
                CommandError::ShuttingDown | CommandError::Replaced | CommandError::Reexec => {
                    Code::Unavailable
                }
                CommandError::StoppedBeforeReady | CommandError::RestartedBeforeReady => {
                    Code::Aborted
                }
                CommandError::Failed(_) => Code::FailedPrecondition,
            },
        };
        GrpcStatus::new(code, e.to_string())
    }
}

impl Api {
    fn handle(&self, name: &str) -> Result<supervise::Handle, ApiError> {
        if let Err(e) = name.parse::<profile::InstanceName>() {
            return Err(ApiError::BadName {
                name: name.to_string(),
                why: e.to_string(),
            });
        }
        self.supervisor
            .get(name)
            .ok_or_else(|| self.not_found(name))
    }

    /// NOT_FOUND for `name`, pointing at where the profiles are read and at the names there are.
    fn not_found(&self, name: &str) -> ApiError {
        let names: Vec<String> = self.supervisor.instances().keys().cloned().collect();
        ApiError::NotFound {
            name: name.to_string(),
            dir: self.config_dir.display().to_string(),
            known: known_names(name, &names),
        }
    }

    async fn instance(&self, name: &str) -> Result<v1::Instance, ApiError> {
        self.handle(name)?;
        let reports = self.supervisor.reports(&[name.to_string()]).await;
        reports
            .into_iter()
            .next()
            .map(|r| self.to_instance(&r))
            // A reload removed it in between.
            .ok_or_else(|| self.not_found(name))
    }

    /// The instance of `r`, with its upgrade's soak from the desired state.
    fn to_instance(&self, r: &supervise::InstanceReport) -> v1::Instance {
        let mut i = to_instance(r);
        i.soak_until_unix_ms = self
            .supervisor
            .soak_until(&i.name)
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        i
    }

    async fn command(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<supervise::Reply>) -> Command,
    ) -> Result<Response<v1::Instance>, ApiError> {
        let handle = self.handle(name)?;
        let (tx, rx) = oneshot::channel();
        // A task that ends while the command waits was stopped by a reload or by the shutdown.
        let gone = || ApiError::Gone {
            name: name.to_string(),
        };
        handle.tx.send(make(tx)).await.map_err(|_| gone())?;
        match rx.await {
            Ok(Ok(_)) => Ok(Response::new(self.instance(name).await?)),
            Ok(Err(error)) => Err(ApiError::Command {
                name: name.to_string(),
                error,
            }),
            Err(_) => Err(gone()),
        }
    }
}

/// The end of a NOT_FOUND sentence: the likely typo, or the names there are (at most 10).
fn known_names(name: &str, names: &[String]) -> String {
    const SHOWN: usize = 10;
    // A typo changes at most half of a name: "b" is not a typo of "a".
    let close = profile::load::did_you_mean(name, names)
        .filter(|c| 2 * strsim::damerau_levenshtein(name, c) <= c.chars().count());
    if let Some(close) = close {
        return format!("; did you mean {close:?}?");
    }
    match names.len() {
        0 => "; it defines no instance".into(),
        n if n <= SHOWN => format!("; the instances are {}", names.join(", ")),
        n => format!(
            "; the instances are {} and {} more (`openclawctl status` lists them)",
            names[..SHOWN].join(", "),
            n - SHOWN
        ),
    }
}

/// Where an operator's call came from, for the reason of what it does: "socket", or "TCP" and the
/// client's address.
fn caller<T>(req: &Request<T>) -> String {
    match req.remote_addr() {
        Some(addr) => format!("TCP {addr}"),
        None => "socket".into(),
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
        State::Blocked => v1::InstanceState::Blocked,
    }
}

fn to_instance(r: &supervise::InstanceReport) -> v1::Instance {
    let s = &r.status;
    v1::Instance {
        name: s.name.clone(),
        state: state(s.state) as i32,
        pid: s.pid.map_or(0, |p| p as u32),
        started_at_unix_ms: s.started_at.filter(|_| s.pid.is_some()).map_or(0, unix_ms),
        restarts: s.restarts,
        operator_restarts: s.operator_restarts,
        last_exit: s.last_exit.map(|e| {
            let mut e = exit_status(e);
            if s.last_exit_adopted && e.how.is_none() {
                // Not the daemon's child: its parent got the code.
                e.text = "exit code unknown (adopted)".into();
            }
            e
        }),
        last_error: s.last_error.clone().unwrap_or_default(),
        port: u32::from(s.port),
        cpu_percent: r.cpu_percent,
        rss_bytes: r.rss_bytes,
        want_running: s.want_running,
        next_start_in_ms: s.next_start_in.map_or(0, |d| d.as_millis() as u64),
        profile_file: r.file.to_string(),
        sample_age_ms: r.sample_age.as_millis() as u64,
        holder: s.holder.as_ref().map(|h| v1::Holder {
            pid: u32::try_from(h.pid).unwrap_or(0),
            command: h.command.clone(),
            what: h.what.clone(),
            unit: h.unit_text(),
            stop_hint: h.stop_hint(),
        }),
        runtime: s.versions.runtime.clone().unwrap_or_default(),
        openclaw_version: s.versions.openclaw.clone().unwrap_or_default(),
        node_version: s.versions.node.clone().unwrap_or_default(),
        profile_runtime: r.profile_runtime.clone().unwrap_or_default(),
        chosen_runtime: r.chosen_runtime.clone().unwrap_or_default(),
        // Set from the desired state by `Api::to_instance`.
        soak_until_unix_ms: 0,
    }
}

/// An exit for the API: `how` is left out when the cause is not known.
fn exit_status(e: Exit) -> v1::ExitStatus {
    v1::ExitStatus {
        how: match e {
            Exit::Code(c) => Some(v1::exit_status::How::Code(c)),
            Exit::Signal(sig) => Some(v1::exit_status::How::Signal(sig)),
            Exit::Unknown => None,
        },
        text: e.to_string(),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn log_line(l: &supervise::logs::LogLine) -> v1::LogLine {
    use supervise::logs::Stream;
    v1::LogLine {
        time_unix_ms: unix_ms(l.time),
        stream: match l.stream {
            Stream::Stdout => v1::LogStream::Stdout,
            Stream::Stderr => v1::LogStream::Stderr,
            Stream::Supervisor => v1::LogStream::Supervisor,
        } as i32,
        text: l.text.clone(),
        rendered: l.render(),
        skipped: 0,
    }
}

fn event(e: &supervise::Event) -> v1::Event {
    let report = supervise::InstanceReport {
        status: e.status.clone(),
        cpu_percent: 0.0,
        cpu_seconds: 0.0,
        rss_bytes: 0,
        sample_age: Duration::ZERO,
        file: e.file.clone(),
        // An event carries the status alone.
        profile_runtime: None,
        chosen_runtime: None,
    };
    v1::Event {
        time_unix_ms: unix_ms(e.time),
        instance: Some(to_instance(&report)),
        previous_state: e.previous.map_or(v1::InstanceState::Unspecified, state) as i32,
        removed: e.removed,
        reason: e.reason().to_string(),
    }
}

fn action(a: supervise::ReloadAction) -> v1::ReloadAction {
    match a {
        supervise::ReloadAction::Add => v1::ReloadAction::Add,
        supervise::ReloadAction::Remove => v1::ReloadAction::Remove,
        supervise::ReloadAction::Change => v1::ReloadAction::Change,
        supervise::ReloadAction::Keep => v1::ReloadAction::Keep,
    }
}

/// A server stream of the service.
type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, GrpcStatus>> + Send>>;

/// Sends what `feed` produces to a new stream until the client goes away or `feed` ends.
fn stream_of<T, F>(feed: F) -> Stream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, GrpcStatus>>) -> Feed + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(feed(tx));
    Box::pin(ReceiverStream::new(rx))
}

/// The task that feeds a stream.
type Feed = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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
        let (dir, store) = (
            self.config_dir.clone(),
            self.supervisor.runtime_store().clone(),
        );
        let mut plan = tokio::task::spawn_blocking(move || {
            let mut plan = profile::load(&dir);
            plan.check_runtimes(&store);
            plan
        })
        .await
        .map_err(|e| GrpcStatus::internal(e.to_string()))?;
        // What this daemon can apply: `limits` need its cgroups.
        let limits = self.supervisor.containment().limit_errors(&plan.profiles);
        if !limits.is_empty() {
            plan.report.diagnostics.extend(limits);
            plan.report.sort();
        }
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
            containment: self.supervisor.containment().describe(),
            config_dir: crate::profile::paths::absolute(&self.config_dir)
                .display()
                .to_string(),
            execs: self.execs,
            binary: self.binary.display().to_string(),
        }))
    }

    async fn reexec(
        &self,
        _: Request<v1::ReexecRequest>,
    ) -> Result<Response<v1::ReexecResponse>, GrpcStatus> {
        let (tx, rx) = oneshot::channel();
        self.reexec
            .send(tx)
            .await
            .map_err(|_| GrpcStatus::unavailable("the supervisor is shutting down"))?;
        match rx.await {
            Ok(Ok(r)) => Ok(Response::new(r)),
            Ok(Err(why)) => Err(GrpcStatus::failed_precondition(format!(
                "not re-executed, nothing changed: {why}"
            ))),
            Err(_) => Err(GrpcStatus::unavailable(
                "the supervisor is shutting down or re-executing",
            )),
        }
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
            .await
            .iter()
            .map(|r| self.to_instance(r))
            .collect();
        Ok(Response::new(v1::ListInstancesResponse { instances }))
    }

    async fn get_instance(
        &self,
        req: Request<v1::GetInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        Ok(Response::new(self.instance(&req.into_inner().name).await?))
    }

    async fn start_instance(
        &self,
        req: Request<v1::StartInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        let by = caller(&req);
        Ok(self
            .command(&req.into_inner().name, |tx| Command::Start(by, tx))
            .await?)
    }

    async fn stop_instance(
        &self,
        req: Request<v1::StopInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        let by = caller(&req);
        let r = req.into_inner();
        let timeout = (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms));
        Ok(self
            .command(&r.name, |tx| Command::Stop(timeout, by, tx))
            .await?)
    }

    async fn restart_instance(
        &self,
        req: Request<v1::RestartInstanceRequest>,
    ) -> Result<Response<v1::Instance>, GrpcStatus> {
        let by = caller(&req);
        Ok(self
            .command(&req.into_inner().name, |tx| Command::Restart(by, None, tx))
            .await?)
    }

    async fn reload(
        &self,
        req: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadResponse>, GrpcStatus> {
        let dry_run = req.into_inner().dry_run;
        let outcome = self.supervisor.reload(&self.config_dir, dry_run).await;
        Ok(Response::new(v1::ReloadResponse {
            check: Some(check_response(&outcome.plan)),
            applied: outcome.applied,
            changes: outcome
                .changes
                .iter()
                .map(|c| v1::ReloadChange {
                    name: c.name.clone(),
                    action: action(c.action) as i32,
                    changed_fields: c.fields.iter().map(|f| f.to_string()).collect(),
                    error: c.error.clone().unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn get_environment(
        &self,
        req: Request<v1::GetEnvironmentRequest>,
    ) -> Result<Response<v1::GetEnvironmentResponse>, GrpcStatus> {
        let name = req.into_inner().name;
        let p = self.handle(&name)?.profile;
        let sup = self.supervisor.clone();
        let n = name.clone();
        // The token file and the runtime store are on disk: off the runtime.
        let built = tokio::task::spawn_blocking(move || {
            let token = match p.gateway_token {
                Some(_) => Some(supervise::token::ensure(&p.state_dir.value)?),
                None => None,
            };
            let runtime = sup.runtime_of(&n)?;
            let env = supervise::spawn::environment(&p, token.as_deref(), runtime.as_ref());
            Ok::<_, String>((
                supervise::spawn::without_marker(env),
                supervise::spawn::working_dir(&p),
            ))
        })
        .await
        .map_err(|e| GrpcStatus::internal(e.to_string()))?;
        let (env, cwd) = built.map_err(|why| ApiError::Precondition {
            name: name.clone(),
            why,
        })?;
        Ok(Response::new(v1::GetEnvironmentResponse {
            vars: env
                .into_iter()
                .map(|(name, value)| v1::EnvVar { name, value })
                .collect(),
            cwd: cwd.display().to_string(),
        }))
    }

    async fn explain(
        &self,
        req: Request<v1::ExplainRequest>,
    ) -> Result<Response<v1::ExplainResponse>, GrpcStatus> {
        let name = req.into_inner().name;
        let e = self.handle(&name)?.explain();
        Ok(Response::new(v1::ExplainResponse {
            name: e.name,
            entries: e
                .entries
                .into_iter()
                .map(|e| v1::HistoryEntry {
                    time_unix_ms: e
                        .time
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    kind: e.kind,
                    text: e.text,
                })
                .collect(),
            next: match self.supervisor.soak_until(&name) {
                Some(until) => {
                    let now = unix_ms(SystemTime::now());
                    let left = (i64::try_from(until).unwrap_or(i64::MAX) - now).max(0) / 1000;
                    format!(
                        "{}; its upgrade soaks {left} s more, then is kept or rolled back",
                        e.next
                    )
                }
                None => e.next,
            },
        }))
    }

    async fn get_token(
        &self,
        req: Request<v1::GetTokenRequest>,
    ) -> Result<Response<v1::GetTokenResponse>, GrpcStatus> {
        let name = req.into_inner().name;
        let profile = self.handle(&name)?.profile;
        if profile.gateway_token.is_none() {
            return Err(ApiError::Precondition {
                name,
                why: format!(
                    "its profile {} has no `gateway_token: generate`, so the daemon keeps no token for it",
                    profile.file.display()
                ),
            }
            .into());
        }
        let dir = profile.state_dir.value.clone();
        let token = tokio::task::spawn_blocking(move || supervise::token::ensure(&dir))
            .await
            .map_err(|e| GrpcStatus::internal(e.to_string()))?
            .map_err(|why| ApiError::Precondition {
                name: name.clone(),
                why,
            })?;
        Ok(Response::new(v1::GetTokenResponse {
            token,
            file: supervise::token::path(&profile.state_dir.value)
                .display()
                .to_string(),
        }))
    }

    type UpgradeStream = Stream<v1::UpgradeProgress>;

    async fn upgrade(
        &self,
        req: Request<v1::UpgradeRequest>,
    ) -> Result<Response<Self::UpgradeStream>, GrpcStatus> {
        use supervise::upgrade::{Ask, Step, Verdict};
        let by = caller(&req);
        let r = req.into_inner();
        self.handle(&r.name)?;
        let to = match r.to.trim() {
            "" if r.write => None,
            "" => {
                return Err(GrpcStatus::invalid_argument(
                    "name the runtime to upgrade to (`to`), or ask to `write` the current choice",
                ))
            }
            text => Some(crate::runtime::Spec::parse(text).map_err(GrpcStatus::invalid_argument)?),
        };
        let ask = Ask {
            name: r.name.clone(),
            to,
            soak: match r.soak_ms {
                0 => supervise::upgrade::DEFAULT_SOAK,
                ms if ms > MAX_SOAK_MS => {
                    return Err(GrpcStatus::invalid_argument(format!(
                        "a soak of {} is longer than a day; give at most 24h",
                        humantime::format_duration(Duration::from_millis(ms))
                    )))
                }
                ms => Duration::from_millis(ms),
            },
            write: r.write,
            by,
        };
        let mut steps = self
            .supervisor
            .upgrade(ask)
            .map_err(GrpcStatus::failed_precondition)?;
        Ok(Response::new(stream_of(move |tx| {
            Box::pin(async move {
                while let Some(step) = steps.recv().await {
                    let msg = match step {
                        Step::Line(line) => v1::UpgradeProgress {
                            line,
                            outcome: None,
                        },
                        Step::Done(o) => v1::UpgradeProgress {
                            line: String::new(),
                            outcome: Some(v1::UpgradeOutcome {
                                result: match o.verdict {
                                    Verdict::Kept => v1::UpgradeResult::Kept,
                                    Verdict::RolledBack => v1::UpgradeResult::RolledBack,
                                    Verdict::Written => v1::UpgradeResult::Written,
                                    Verdict::Nothing => v1::UpgradeResult::NothingToDo,
                                    Verdict::Failed => v1::UpgradeResult::Failed,
                                    Verdict::Stopped => v1::UpgradeResult::Stopped,
                                } as i32,
                                reason: o.reason,
                                log_lines: o.log_lines,
                            }),
                        },
                    };
                    // The client went away: the upgrade goes on without it.
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            })
        })))
    }

    type TailLogsStream = Stream<v1::LogLine>;

    async fn tail_logs(
        &self,
        req: Request<v1::TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, GrpcStatus> {
        let r = req.into_inner();
        let handle = self.handle(&r.name)?;
        let (tail, mut feed) = handle.log.tail_and_follow(r.lines as usize);
        let follow = r.follow;
        let closing = self.closing();
        Ok(Response::new(stream_of(move |tx| {
            Box::pin(async move {
                for l in &tail {
                    if tx.send(Ok(log_line(l))).await.is_err() {
                        return;
                    }
                }
                if !follow {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        _ = tx.closed() => return,
                        _ = closing.cancelled() => return,
                        n = feed.recv() => n,
                    };
                    let msg = match next {
                        Ok(l) => log_line(&l),
                        Err(broadcast::error::RecvError::Lagged(n)) => v1::LogLine {
                            skipped: n,
                            ..Default::default()
                        },
                        // The instance was removed by a reload: its log ends.
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            })
        })))
    }

    type WatchEventsStream = Stream<v1::Event>;

    async fn watch_events(
        &self,
        req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, GrpcStatus> {
        let names = req.into_inner().names;
        for n in &names {
            self.handle(n)?;
        }
        // Subscribe before reading the states: a change in between is sent twice, never lost.
        let mut events = self.supervisor.events();
        let sup = self.supervisor.clone();
        let closing = self.closing();
        let wanted = move |e: &supervise::Event| names.is_empty() || names.contains(&e.status.name);
        let snapshot = move |sup: &Supervisor| -> Vec<supervise::Event> {
            sup.instances().values().map(|h| h.current(false)).collect()
        };
        Ok(Response::new(stream_of(move |tx| {
            Box::pin(async move {
                let mut pending = snapshot(&sup);
                loop {
                    for e in pending.drain(..).filter(|e| wanted(e)) {
                        if tx.send(Ok(event(&e))).await.is_err() {
                            return;
                        }
                    }
                    let next = tokio::select! {
                        _ = tx.closed() => return,
                        _ = closing.cancelled() => return,
                        n = events.recv() => n,
                    };
                    match next {
                        Ok(e) => pending.push(e),
                        // Fell behind: what it missed is summed up by the states now.
                        Err(broadcast::error::RecvError::Lagged(_)) => pending = snapshot(&sup),
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
        })))
    }

    type InstallRuntimeStream = Stream<v1::InstallRuntimeProgress>;

    async fn install_runtime(
        &self,
        req: Request<v1::InstallRuntimeRequest>,
    ) -> Result<Response<Self::InstallRuntimeStream>, GrpcStatus> {
        let spec = super::runtimes::spec(&req.into_inner().runtime)?;
        let sup = self.supervisor.clone();
        Ok(Response::new(stream_of(move |tx| {
            Box::pin(super::runtimes::install(sup, spec, tx))
        })))
    }

    async fn list_runtimes(
        &self,
        _req: Request<v1::ListRuntimesRequest>,
    ) -> Result<Response<v1::ListRuntimesResponse>, GrpcStatus> {
        super::runtimes::list(self.supervisor.clone())
            .await
            .map(Response::new)
    }

    async fn remove_runtime(
        &self,
        req: Request<v1::RemoveRuntimeRequest>,
    ) -> Result<Response<v1::RemoveRuntimeResponse>, GrpcStatus> {
        let spec = super::runtimes::spec(&req.into_inner().runtime)?;
        super::runtimes::remove(&self.supervisor, &spec)
            .await
            .map(Response::new)
    }
}

/// The longest soak an upgrade takes (a day, in ms).
const MAX_SOAK_MS: u64 = 24 * 3600 * 1000;

/// Refuses every call with UNAVAILABLE while `flag` is set (a re-exec under way): the same call
/// works against the next program a moment later.
pub fn refuse_while(
    flag: Arc<std::sync::atomic::AtomicBool>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, GrpcStatus> + Clone {
    move |req: Request<()>| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(GrpcStatus::unavailable(
                "the supervisor is re-executing; try again in a moment",
            ));
        }
        Ok(req)
    }
}

/// For the TCP listener: every call must carry `authorization: Bearer <token>`, the token being the
/// first line of `file`, read again on every call (so it can be rotated without a restart).
pub fn require_token(
    file: PathBuf,
) -> impl FnMut(Request<()>) -> Result<Request<()>, GrpcStatus> + Clone {
    move |req: Request<()>| {
        let expected = match read_token(&file) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %file.display(), "cannot read the API token: {e}");
                return Err(GrpcStatus::unauthenticated(
                    "the daemon cannot read its token file; see its log",
                ));
            }
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if expected.is_empty() || !same(given.trim().as_bytes(), expected.as_bytes()) {
            return Err(GrpcStatus::unauthenticated(
                "a missing or wrong token: send `authorization: Bearer <token>`",
            ));
        }
        Ok(req)
    }
}

/// The token kept in `file`: its first line, trimmed (empty if there is none). What the daemon
/// checks at start and what every TCP call is compared with.
pub fn read_token(file: &std::path::Path) -> std::io::Result<String> {
    // A regular file of at most 64 KiB, opened non-blocking: a FIFO there is an error, not a hang.
    let text = crate::fsx::read_regular(file, 64 << 10)?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_gets_its_likely_typo_or_the_names_there_are() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let not_found = |name: &str, known: &[&str]| {
            ApiError::NotFound {
                name: name.into(),
                dir: "/etc/sd".into(),
                known: known_names(name, &names(known)),
            }
            .to_string()
        };
        assert_eq!(
            not_found("mian", &["main", "rescue"]),
            "no instance named \"mian\" in /etc/sd; did you mean \"main\"?"
        );
        assert_eq!(
            not_found("b", &["a"]),
            "no instance named \"b\" in /etc/sd; the instances are a"
        );
        assert_eq!(
            not_found("ghost", &[]),
            "no instance named \"ghost\" in /etc/sd; it defines no instance"
        );
        let many: Vec<String> = (0..12).map(|i| format!("bot{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            not_found("zzzzzzzz", &many),
            "no instance named \"zzzzzzzz\" in /etc/sd; the instances are bot00, bot01, bot02, bot03, bot04, bot05, bot06, bot07, bot08, bot09 and 2 more (`openclawctl status` lists them)"
        );
    }

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            (
                ApiError::BadName {
                    name: "a/b".into(),
                    why: "bad".into(),
                },
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::NotFound {
                    name: "ghost".into(),
                    dir: "supervisor.d".into(),
                    known: String::new(),
                },
                tonic::Code::NotFound,
            ),
            (
                ApiError::Gone {
                    name: "main".into(),
                },
                tonic::Code::Unavailable,
            ),
        ];
        let command = |error| ApiError::Command {
            name: "main".into(),
            error,
        };
        let commands = [
            (CommandError::ShuttingDown, tonic::Code::Unavailable),
            (CommandError::Replaced, tonic::Code::Unavailable),
            (CommandError::StoppedBeforeReady, tonic::Code::Aborted),
            (CommandError::RestartedBeforeReady, tonic::Code::Aborted),
            (CommandError::Reexec, tonic::Code::Unavailable),
            (
                CommandError::Failed("not ready within 1m".into()),
                tonic::Code::FailedPrecondition,
            ),
        ];
        for (e, code) in cases
            .into_iter()
            .chain(commands.into_iter().map(|(e, c)| (command(e), c)))
        {
            let text = e.to_string();
            let status = GrpcStatus::from(e);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }

    #[test]
    fn a_command_error_is_named_after_its_instance() {
        let e = ApiError::Command {
            name: "main".into(),
            error: CommandError::StoppedBeforeReady,
        };
        assert_eq!(
            GrpcStatus::from(e).message(),
            "main: stopped by an operator before it was ready"
        );
    }

    #[test]
    fn an_unknown_exit_has_no_code_nor_signal() {
        let e = exit_status(Exit::Unknown);
        assert_eq!(e.how, None);
        assert_eq!(e.text, "unknown exit");
        assert_eq!(
            exit_status(Exit::Signal(9)).how,
            Some(v1::exit_status::How::Signal(9))
        );
        assert_eq!(
            exit_status(Exit::Code(3)).how,
            Some(v1::exit_status::How::Code(3))
        );
    }
}
