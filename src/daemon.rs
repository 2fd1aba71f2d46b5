//! The daemon's life: check the profiles, take the control socket, become a child subreaper, start
//! the instances (as the operators' persisted starts and stops say), serve the API (on the socket,
//! and on TCP with a token if configured), tell systemd it is ready, reload on SIGHUP, and on
//! SIGTERM/SIGINT stop everything in parallel and exit 0. On `Reexec` (or SIGUSR2) it replaces its
//! program in place, handing everything over (`crate::handover`); started by such an exec, it takes
//! what was handed over instead of binding and starting afresh.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::api::{self, server::ReexecAsk, v1::supervisor_service_server::SupervisorServiceServer};
use crate::handover::{self, Inherited};
use crate::profile;
use crate::supervise::cgroup::Containment;
use crate::supervise::spawn::OnCrash;
use crate::supervise::{desired::DesiredState, logs::LogConfig, ReloadAction, Supervisor};
use crate::systemd::Notifier;

/// Where the daemon reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The profiles directory.
    pub config_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Instance logs.
    pub log_dir: PathBuf,
    /// The daemon's own state.
    pub state_dir: PathBuf,
    /// The runtime store (`crate::runtime`).
    pub runtimes: PathBuf,
    /// Rotate an instance log past this size.
    pub log_max_bytes: u64,
    /// Rotated instance logs kept.
    pub log_keep: usize,
    /// The group allowed on the control socket (mode 0660); `None` keeps it owner-only (0600).
    pub socket_group: Option<String>,
    /// Also serve the API on this TCP address (every call needs the token).
    pub tcp: Option<SocketAddr>,
    /// Allow `tcp` to be other than a loopback address.
    pub tcp_allow_remote: bool,
    /// Serve Prometheus metrics on this TCP address (`GET /metrics`), loopback unless allowed.
    pub metrics: Option<SocketAddr>,
    /// Allow `metrics` to be other than a loopback address.
    pub metrics_allow_remote: bool,
    /// The file whose first line is the TCP listener's bearer token.
    pub token_file: Option<PathBuf>,
    /// Contain instances by their process trees even where cgroups could be had (`--no-cgroups`).
    pub no_cgroups: bool,
    /// What becomes of the gateways if the daemon dies without stopping them (`--on-crash`).
    pub on_crash: OnCrash,
    /// The program a re-exec runs (`--binary`, else the daemon's own path).
    pub binary: PathBuf,
}

/// How long API connections get to close at shutdown.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the daemon until SIGTERM or SIGINT: prepare (or refuse to start), serve, shut down.
/// `jobs`: the queue of the thread that forks every child and runs the re-exec (the main thread;
/// see `spawn::JobQueue::run`).
pub async fn run(opts: Options, jobs: crate::supervise::spawn::Jobs) -> ExitCode {
    let systemd = Notifier::from_env();
    let inherited = match handover::inherited() {
        None => None,
        Some(Ok(i)) => {
            tracing::info!(
                "re-executed (exec {} of this process, from version {}): taking over {} instances",
                i.execs,
                i.from_version,
                i.instances.len()
            );
            Some(i)
        }
        Some(Err(e)) => {
            tracing::error!("re-executed, but the handover does not read ({e}): starting as after a crash (the records adopt the gateways, without their output)");
            None
        }
    };
    let prepared = match prepare(&opts, &systemd, inherited, jobs).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut serving = match serve(&opts, &systemd, prepared).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    loop {
        match serving.until_stopped(&opts.config_dir, &systemd).await {
            Next::Stop => break,
            // Returns only if the program was not replaced.
            Next::Reexec(ask) => reexec(&opts, &systemd, &mut serving, ask).await,
        }
    }
    shut_down(&opts, &systemd, serving).await
}

/// SIGTERM and SIGINT end the daemon, SIGHUP reloads it, SIGUSR2 re-executes it. Caught from
/// before the first instance starts, so none of them kills the daemon with its gateways half
/// started.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

/// What the signal loop ends with.
enum Next {
    /// Stop every instance and exit.
    Stop,
    /// Replace the program; the API's caller, if it came from the API.
    Reexec(Option<ReexecAsk>),
}

/// The listeners as the next program gets them: descriptors of the same sockets, kept by the
/// daemon for its whole life (the servers own their own).
struct Kept {
    socket: OwnedFd,
    tcp: Option<OwnedFd>,
    /// The execs so far.
    execs: u32,
    /// When the process first started.
    started: SystemTime,
}

/// What `prepare` hands to `serve`: the listeners taken, the signals caught, the instances started.
struct Prepared {
    socket: tokio::net::UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    signals: Signals,
    supervisor: Arc<Supervisor>,
    desired: DesiredState,
    kept: Kept,
}

/// The running daemon, for the signal loop and the shutdown.
struct Serving {
    signals: Signals,
    supervisor: Arc<Supervisor>,
    api: Arc<api::server::Api>,
    health: tonic_health::server::HealthReporter,
    /// The API servers (socket, then TCP), ended by `server_stop`.
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    server_stop: CancellationToken,
    notifier_stop: CancellationToken,
    watchdog_stop: CancellationToken,
    /// Re-execs asked over the API.
    reexecs: tokio::sync::mpsc::Receiver<ReexecAsk>,
    /// Set while a re-exec is under way: every call gets UNAVAILABLE.
    refusing: Arc<AtomicBool>,
    kept: Kept,
    routes: Routes,
}

/// Everything before serving, in an order that matters: the check (refuse to start unless the
/// profiles pass it), the log and state dirs (made, or refused if another user could write them),
/// the listeners (the control socket before anything starts: a second daemon
/// stops there), the process settings, the signals, then the instances. On failure, systemd and
/// stderr have heard why, and the exit code is returned.
async fn prepare(
    opts: &Options,
    systemd: &Notifier,
    inherited: Option<Inherited>,
    jobs: crate::supervise::spawn::Jobs,
) -> Result<Prepared, ExitCode> {
    // First, before any other thread reads the environment (the main thread only waits for
    // jobs; their variables are unset): the gateways' pipes the service manager kept across a
    // crash (`supervise::fdstore`).
    let handed = crate::supervise::fdstore::take_handed();
    let fdstore = crate::supervise::fdstore::FdStore::from_env();
    // Before the check: a profile's `limits` need what the mode offers.
    let containment = {
        let (off, socket) = (opts.no_cgroups, opts.socket.clone());
        tokio::task::spawn_blocking(move || Containment::detect(off, &socket))
            .await
            .unwrap_or_else(|e| Containment::Tree {
                why: format!("the detection failed: {e}"),
            })
    };
    let plan = check_or_refuse(opts, systemd, &containment).inspect_err(|_| {
        // A daemon that refuses to start leaves no cgroup of its own behind.
        if let Some(c) = containment.cgroups() {
            c.close();
        }
    })?;
    // Like sshd's StrictModes: a dir another user can write to, or owns, is refused before
    // anything starts (the socket's dir when it is bound, below).
    for (dir, mode, what) in [
        (
            &opts.log_dir,
            crate::supervise::logs::DIR_MODE,
            "log directory",
        ),
        (
            &opts.state_dir,
            crate::supervise::desired::DIR_MODE,
            "state directory",
        ),
    ] {
        if let Err(e) = crate::fsx::prepare_dir(dir, mode, what) {
            systemd.fail(&format!("refusing to start: {e}"));
            if let Some(c) = containment.cgroups() {
                c.close();
            }
            return Err(ExitCode::FAILURE);
        }
    }
    let (mut inherited, socket_kept, tcp_kept) = match inherited {
        Some(mut i) => {
            let (s, t) = (i.socket.take(), i.tcp.take());
            (Some(i), s, t)
        }
        None => (None, None, None),
    };
    let tcp = match tcp_kept.and_then(|fd| same_tcp(fd, opts.tcp)) {
        Some(t) => Some(t),
        None => tcp_listener(opts).await.map_err(|e| {
            systemd.fail(&e);
            ExitCode::FAILURE
        })?,
    };
    let socket = match socket_kept.and_then(|fd| same_socket(fd, &opts.socket)) {
        Some(s) => s,
        None => api::socket::bind(&opts.socket, opts.socket_group.as_deref()).map_err(|e| {
            systemd.fail(&format!("cannot serve on {}: {e}", opts.socket.display()));
            ExitCode::FAILURE
        })?,
    };
    let kept = Kept {
        socket: socket.as_fd().try_clone_to_owned().map_err(|e| {
            systemd.fail(&format!("cannot keep the control socket: {e}"));
            ExitCode::FAILURE
        })?,
        tcp: tcp
            .as_ref()
            .and_then(|t| t.as_fd().try_clone_to_owned().ok()),
        execs: inherited.as_ref().map_or(0, |i| i.execs),
        started: inherited
            .as_ref()
            .map_or_else(SystemTime::now, |i| i.started),
    };
    // A stop mark an earlier daemon left (killed while stopping, with no ExecStopPost to clear
    // it) is not this daemon's: a crash of this one must leave its gateways to be adopted.
    crate::systemd::unmark_stopping(&opts.state_dir);
    // Each instance holds a few descriptors (two pipes, probe connections, its log): allow as many
    // as the hard limit permits.
    raise_fd_limit();
    // Orphaned descendants of the gateways (a setsid'd spawn broker) come back to us to be reaped.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(
            "cannot become a child subreaper ({e}): orphans of the gateways will go to init"
        );
    }
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(term), Ok(int), Ok(hup), Ok(usr2)) => Signals {
            term,
            int,
            hup,
            usr2,
        },
        _ => {
            systemd.fail("cannot install signal handlers");
            return Err(ExitCode::FAILURE);
        }
    };
    let log_cfg = LogConfig {
        dir: opts.log_dir.clone(),
        max_bytes: opts.log_max_bytes,
        keep: opts.log_keep,
        tail_lines: 1000,
    };
    let (desired, warnings) = DesiredState::load(&opts.state_dir);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let me = crate::supervise::ownership::Owner::me(&opts.socket);
    let records = match crate::supervise::adopt::Records::start(&opts.state_dir) {
        Ok(r) => r,
        Err(e) => {
            systemd.fail(&format!("cannot start: {e}"));
            let _ = std::fs::remove_file(&opts.socket);
            return Err(ExitCode::FAILURE);
        }
    };
    // Before leftovers are ended: the gateways handed over by a re-exec, or those a crashed daemon
    // left that are exactly the ones it recorded (with the pipes the service manager kept), are
    // adopted, not ended.
    let names: Vec<&str> = plan.profiles.iter().map(|p| p.name.as_str()).collect();
    if !handed.is_empty() {
        tracing::info!(
            "the service manager handed back {} gateway pipes",
            handed.len()
        );
    }
    let mut pipes = handed.pair(&names, &fdstore);
    // A re-exec's program takes over a consistent whole: nothing was left by a run that died,
    // and an instance without a gateway scans the host at its next start, as any start does.
    let reexeced = inherited.is_some();
    let (adopted, resume, exits) = match inherited.take() {
        Some(i) => {
            let (adopted, resume, orphans) = handover::take_over(i.instances, &plan.profiles);
            for c in orphans {
                // Its profile is gone since the program before read them: stopped, as a reload
                // would, with the stop signal.
                tracing::warn!(
                    pid = c.pid,
                    "a gateway handed over has no profile any more: stopping it"
                );
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(c.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            (adopted, resume, i.exits)
        }
        None => (
            crate::supervise::adopt_all(
                &plan.profiles,
                &opts.state_dir,
                &containment,
                &me,
                &mut pipes,
            )
            .await,
            Default::default(),
            Vec::new(),
        ),
    };
    // The pipes of gateways not adopted are drained into their logs (by `Supervisor::start`):
    // the store keeps only live children's pipes.
    for name in pipes.keys() {
        fdstore.remove(name);
    }
    let names: Vec<String> = adopted.keys().cloned().collect();
    let scan = if reexeced {
        crate::supervise::Scan::default()
    } else {
        crate::supervise::clear_leftovers(&plan.profiles, &me, &names).await
    };
    tracing::info!(
        "containment: {}; on a crash the gateways are {}",
        containment.describe(),
        match opts.on_crash {
            OnCrash::Kill => "killed (--on-crash kill)",
            OnCrash::Keep => "kept for the next daemon to adopt (--on-crash keep)",
        }
    );
    if let Some(c) = containment.cgroups().cloned().filter(|_| !reexeced) {
        // Only one live daemon holds the socket, taken above: what is in its cgroups now was left
        // by an earlier run, except the cgroups of the gateways being adopted.
        let keep: Vec<PathBuf> = names.iter().filter_map(|n| containment.dir(n)).collect();
        let ended = tokio::task::spawn_blocking(move || c.sweep(&keep))
            .await
            .unwrap_or_default();
        for (dir, pids) in ended {
            tracing::warn!(cgroup = %dir.display(), "killed processes an earlier run left: {pids:?}");
        }
    }
    let supervisor = match Supervisor::start(
        plan,
        &log_cfg,
        desired.clone(),
        containment,
        CancellationToken::new(),
        me,
        crate::supervise::Running {
            on_crash: opts.on_crash,
            jobs: Some(jobs),
            records,
            adopted,
            resume,
            exits,
            scan,
            fdstore,
            drain: pipes,
            runtimes: crate::runtime::Store::new(&opts.runtimes),
            upgrades: opts.state_dir.join("upgrades"),
        },
    ) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            systemd.fail(&format!("cannot start: {e}"));
            let _ = std::fs::remove_file(&opts.socket);
            return Err(ExitCode::FAILURE);
        }
    };
    supervisor.track();
    supervisor.resume_soaks();
    Ok(Prepared {
        socket,
        tcp,
        signals,
        supervisor,
        desired,
        kept,
    })
}

/// The handed-over control socket, if it is a listener bound at `path` (else it is closed and the
/// socket is bound again).
fn same_socket(fd: OwnedFd, path: &std::path::Path) -> Option<tokio::net::UnixListener> {
    let l = std::os::unix::net::UnixListener::from(fd);
    let bound = l.local_addr().ok()?.as_pathname().map(|p| p == path);
    if bound != Some(true) {
        tracing::warn!(
            "the handed-over control socket is not bound at {}: binding it again",
            path.display()
        );
        return None;
    }
    l.set_nonblocking(true).ok()?;
    tokio::net::UnixListener::from_std(l).ok()
}

/// The handed-over TCP listener, if one is configured and it listens on that address.
fn same_tcp(fd: OwnedFd, want: Option<SocketAddr>) -> Option<tokio::net::TcpListener> {
    let l = std::net::TcpListener::from(fd);
    let at = l.local_addr().ok()?;
    let want = want?;
    if at.ip() != want.ip() || (want.port() != 0 && at.port() != want.port()) {
        return None;
    }
    l.set_nonblocking(true).ok()?;
    tokio::net::TcpListener::from_std(l).ok()
}

/// Reads and checks the profiles: the plan, or the report on stderr and the check's exit code.
fn check_or_refuse(
    opts: &Options,
    systemd: &Notifier,
    containment: &Containment,
) -> Result<profile::Plan, ExitCode> {
    systemd.status("checking the profiles");
    let mut plan = profile::load(&opts.config_dir);
    plan.check_runtimes(&crate::runtime::Store::new(&opts.runtimes));
    let limits = containment.limit_errors(&plan.profiles);
    if !limits.is_empty() {
        plan.report.diagnostics.extend(limits);
        plan.report.sort();
    }
    if !plan.report.ok() {
        eprint!("{}", plan.report);
        eprintln!("{}", plan.report.summary(&opts.config_dir));
        systemd.status(&plan.report.summary(&opts.config_dir));
        eprintln!(
            "openclaw-supervisord: refusing to start: fix the profiles above, then start again"
        );
        return Err(ExitCode::from(crate::cli::EXIT_CHECK_FAILED));
    }
    for d in &plan.report.diagnostics {
        tracing::warn!("{d}");
    }
    tracing::info!("{}", plan.report.summary(&opts.config_dir));
    Ok(plan)
}

/// Serves the API on the listeners, then tells systemd the daemon is ready once every instance
/// meant to run has left `stopped`, and keeps its status and watchdog fed.
async fn serve(opts: &Options, systemd: &Notifier, p: Prepared) -> Result<Serving, ExitCode> {
    let Prepared {
        socket,
        tcp,
        signals,
        supervisor,
        desired,
        kept,
    } = p;
    let (reexec_tx, reexecs) = tokio::sync::mpsc::channel(4);
    let up = SystemTime::now()
        .duration_since(kept.started)
        .unwrap_or_default();
    let api = Arc::new(api::server::Api {
        supervisor: supervisor.clone(),
        config_dir: opts.config_dir.clone(),
        started: Instant::now().checked_sub(up).unwrap_or_else(Instant::now),
        closing: std::sync::Mutex::new(CancellationToken::new()),
        execs: kept.execs,
        binary: opts.binary.clone(),
        reexec: reexec_tx,
    });
    let refusing = Arc::new(AtomicBool::new(false));
    let (services, health) = match services(api.clone()).await {
        Ok(s) => s,
        Err(e) => {
            systemd.fail(&format!("cannot build the API: {e}"));
            supervisor.shutdown().await;
            let _ = std::fs::remove_file(&opts.socket);
            return Err(ExitCode::FAILURE);
        }
    };
    let calls = api::calls::Calls::new(&[
        api::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]);
    let routes = Routes {
        services,
        refusing: refusing.clone(),
        token_file: opts.token_file.clone(),
        calls: calls.clone(),
    };
    let (servers, server_stop) = routes.serve(socket, tcp);
    tracing::info!(socket = %opts.socket.display(), "serving the control API");
    if let Some(addr) = opts.metrics {
        // Ends with the process (a re-exec binds it again).
        let metrics_stop = CancellationToken::new();
        if let Err(e) = crate::metrics::start(
            addr,
            opts.metrics_allow_remote,
            supervisor.clone(),
            calls.family(),
            metrics_stop,
        )
        .await
        {
            systemd.fail(&e);
            tracing::error!("{e}");
            end_servers(servers, &server_stop, DRAIN).await;
            supervisor.shutdown().await;
            let _ = std::fs::remove_file(&opts.socket);
            return Err(ExitCode::FAILURE);
        }
    }

    // Wishes for instances whose profiles are gone are forgotten.
    let instances = supervisor.instances();
    desired
        .retain(&instances.keys().map(String::as_str).collect::<Vec<_>>())
        .await;
    let notifier_stop = CancellationToken::new();
    supervisor.launched().await;
    systemd.ready(&crate::systemd::summary(&supervisor));
    systemd.follow_states(supervisor.clone(), notifier_stop.clone());
    // The watchdog is fed until the very end: stopping gateways can take their stop timeouts.
    let watchdog_stop = CancellationToken::new();
    systemd.keep_watchdog(watchdog_stop.clone());
    Ok(Serving {
        signals,
        supervisor,
        api,
        health,
        servers,
        server_stop,
        notifier_stop,
        watchdog_stop,
        reexecs,
        refusing,
        kept,
        routes,
    })
}

/// The API's services as the servers serve them, kept to serve them again (a failed re-exec).
struct Routes {
    services: tonic::service::Routes,
    refusing: Arc<AtomicBool>,
    token_file: Option<PathBuf>,
    /// Counts every call, refused ones too (for the metrics endpoint).
    calls: api::calls::Calls,
}

/// The API's servers (socket, then TCP), and what ends them.
type Servers = Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>;

impl Routes {
    /// Serves on the control socket, and on TCP (with the token) if given one.
    fn serve(
        &self,
        socket: tokio::net::UnixListener,
        tcp: Option<tokio::net::TcpListener>,
    ) -> (Servers, CancellationToken) {
        let stop = CancellationToken::new();
        let mut servers = Vec::new();
        let until = stop.clone();
        servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .layer(api::calls::CountLayer(self.calls.clone()))
                .layer(tonic::service::InterceptorLayer::new(
                    api::server::refuse_while(self.refusing.clone()),
                ))
                .add_routes(self.services.clone())
                .serve_with_incoming_shutdown(
                    // grpc-core's clients (Python) send the socket's path as :authority; h2 would
                    // refuse every call (api::authority).
                    tokio_stream::StreamExt::map(
                        tokio_stream::wrappers::UnixListenerStream::new(socket),
                        |accepted| accepted.map(api::authority::Normalized::new),
                    ),
                    async move { until.cancelled().await },
                ),
        ));
        if let (Some(tcp), Some(token_file)) = (tcp, self.token_file.clone()) {
            let until = stop.clone();
            let addr = tcp
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            servers.push(tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(api::calls::CountLayer(self.calls.clone()))
                    .layer(tonic::service::InterceptorLayer::new(
                        api::server::refuse_while(self.refusing.clone()),
                    ))
                    .layer(tonic::service::InterceptorLayer::new(
                        api::server::require_token(token_file),
                    ))
                    .add_routes(self.services.clone())
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(tcp),
                        async move { until.cancelled().await },
                    ),
            ));
            tracing::info!(address = %addr, "serving the control API on TCP (token required)");
        }
        (servers, stop)
    }
}

/// Ends `servers` gracefully (each connection is told to go away, and calls under way finish),
/// waiting at most `bound`; then whatever is left is cut.
async fn end_servers(servers: Servers, stop: &CancellationToken, bound: Duration) {
    stop.cancel();
    for server in servers {
        let abort = server.abort_handle();
        if tokio::time::timeout(bound, server).await.is_err() {
            tracing::warn!("clients still connected after {bound:?}; closing their connections");
            abort.abort();
        }
    }
}

impl Serving {
    /// Reloads on each SIGHUP until SIGTERM or SIGINT (stop) or a re-exec (SIGUSR2, the API).
    async fn until_stopped(&mut self, config_dir: &std::path::Path, systemd: &Notifier) -> Next {
        loop {
            tokio::select! {
                _ = self.signals.term.recv() => { tracing::info!("SIGTERM: stopping every instance"); return Next::Stop; }
                _ = self.signals.int.recv() => { tracing::info!("SIGINT: stopping every instance"); return Next::Stop; }
                _ = self.signals.usr2.recv() => { tracing::info!("SIGUSR2: re-executing"); return Next::Reexec(None); }
                Some(ask) = self.reexecs.recv() => { tracing::info!("re-exec asked over the API"); return Next::Reexec(Some(ask)); }
                _ = self.signals.hup.recv() => {
                    systemd.status("reloading the profiles");
                    reload(&self.supervisor, config_dir).await;
                    systemd.status(&crate::systemd::summary(&self.supervisor));
                }
            }
        }
    }
}

/// Stops every instance (in parallel, each by its stop policy), then the API: streams end first,
/// then connections get `DRAIN` to close; a client that neither reads nor hangs up does not keep
/// the daemon from exiting. The watchdog is fed until the end.
async fn shut_down(opts: &Options, systemd: &Notifier, s: Serving) -> ExitCode {
    crate::systemd::mark_stopping(&opts.state_dir);
    s.notifier_stop.cancel();
    systemd.stopping(&format!(
        "stopping {} instances",
        s.supervisor.instances().len()
    ));
    s.health
        .set_not_serving::<SupervisorServiceServer<api::server::Api>>()
        .await;
    s.supervisor.shutdown().await;
    s.api.close_streams(false);
    end_servers(s.servers, &s.server_stop, DRAIN).await;
    let _ = std::fs::remove_file(&opts.socket);
    s.watchdog_stop.cancel();
    crate::systemd::unmark_stopping(&opts.state_dir);
    systemd.status("stopped");
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How long a re-exec waits for every instance to be at an idle point (no start or stop under way)
/// before it gives up, changing nothing.
const HOLD_BOUND: Duration = Duration::from_secs(5);

/// How long a re-exec waits for calls under way to be answered before it cuts their connections.
const REEXEC_DRAIN: Duration = Duration::from_millis(500);

/// Listeners on the sockets `kept` holds (new descriptors of them), to serve again.
fn relisten(
    kept: &Kept,
) -> std::io::Result<(tokio::net::UnixListener, Option<tokio::net::TcpListener>)> {
    let socket = std::os::unix::net::UnixListener::from(kept.socket.try_clone()?);
    socket.set_nonblocking(true)?;
    let tcp = match &kept.tcp {
        Some(t) => {
            let t = std::net::TcpListener::from(t.try_clone()?);
            t.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(t)?)
        }
        None => None,
    };
    Ok((tokio::net::UnixListener::from_std(socket)?, tcp))
}

/// How long the new binary's check may take.
const CHECK_BOUND: Duration = Duration::from_secs(30);

/// Replaces the program with `opts.binary`, handing everything over (`crate::handover`), if its
/// check passes; `ask` (the API's caller) hears the outcome of the check. Returns only if the
/// program was not replaced: the check failed (nothing changed), or the exec did (the instances
/// are taken up again by this program, as the new one would have).
async fn reexec(opts: &Options, systemd: &Notifier, s: &mut Serving, ask: Option<ReexecAsk>) {
    let binary = &opts.binary;
    let args = vec![
        "--config-dir".to_string(),
        opts.config_dir.display().to_string(),
        "handover-check".to_string(),
    ];
    let checked = s
        .supervisor
        .run_tool(binary, args, CHECK_BOUND)
        .await
        .and_then(|(exit, out)| handover::verify(binary, exit, &out));
    let report = match checked {
        Ok(r) => r,
        Err(why) => {
            tracing::error!("re-exec refused, nothing changed: {why}");
            if let Some(ask) = ask {
                let _ = ask.send(Err(why));
            }
            return;
        }
    };
    let execs = s.kept.execs + 1;
    // The profiles as the new program will read them, compared as a reload compares them: an
    // instance whose restart fields changed on disk is restarted by the new program, the others
    // never (whatever the new version's own text of a value).
    let dir = opts.config_dir.clone();
    let on_disk: std::collections::BTreeMap<String, crate::profile::Profile> =
        tokio::task::spawn_blocking(move || crate::profile::load(&dir).profiles)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.to_string(), p))
            .collect();
    let changed: std::collections::BTreeMap<String, Vec<String>> = s
        .supervisor
        .instances()
        .iter()
        .filter_map(|(name, h)| {
            let now = on_disk.get(name)?;
            let fields = crate::supervise::changed_fields(&h.profile, now)
                .into_iter()
                .filter(|f| f.restart)
                .map(|f| f.name.to_string())
                .collect();
            Some((name.clone(), fields))
        })
        .collect();
    drop(on_disk);
    let began = Instant::now();
    // From here every call is refused (UNAVAILABLE), the caller's excepted: it is past the check.
    s.refusing.store(true, Ordering::SeqCst);
    let mut detached = match s.supervisor.detach_all(HOLD_BOUND).await {
        Ok(d) => d,
        Err(why) => {
            s.refusing.store(false, Ordering::SeqCst);
            tracing::error!("re-exec refused, nothing changed: {why}");
            if let Some(ask) = ask {
                let _ = ask.send(Err(why));
            }
            return;
        }
    };
    for (running, d) in &mut detached {
        let (Some(child), Some(fields)) = (d.child.as_mut(), changed.get(running.name.as_str()))
        else {
            continue;
        };
        if !fields.is_empty() {
            tracing::info!(instance = %running.name, "its profile changed on disk ({}): the new program restarts it", fields.join(", "));
        }
        child.changed = Some(fields.clone());
    }
    let instances = detached.len();
    if let Some(ask) = ask {
        let answered = ask.send(Ok(api::v1::ReexecResponse {
            binary: binary.display().to_string(),
            from_version: env!("CARGO_PKG_VERSION").to_string(),
            to_version: report.version.clone(),
            instances: u32::try_from(instances).unwrap_or(u32::MAX),
            execs,
        }));
        // Its bytes leave before the connection closes: the servers' graceful end below lets
        // every call under way finish.
        let _ = answered;
    }
    systemd.reloading(&format!(
        "re-executing {} (version {})",
        binary.display(),
        report.version
    ));
    s.api.close_streams(false);
    // Every connection is told to go away (calls under way get their answer, UNAVAILABLE by now);
    // the listeners stay open (`kept`), so a client that connects meanwhile waits in their
    // backlog for the next program.
    end_servers(std::mem::take(&mut s.servers), &s.server_stop, REEXEC_DRAIN).await;
    let locks: Vec<Option<OwnedFd>> = detached
        .iter_mut()
        .map(|(_, d)| d.lock.take().and_then(|l| l.into_fd().ok()))
        .collect();
    let carry = handover::Carry {
        socket: s.kept.socket.as_fd(),
        tcp: s.kept.tcp.as_ref().map(|t| t.as_fd()),
        execs,
        started: s.kept.started,
    };
    let supervisor = s.supervisor.clone();
    let (message, fds) =
        handover::encode(carry, &detached, &locks, |pid| supervisor.take_exit(pid));
    tracing::info!(
        "re-exec: handing {instances} instances to {} (version {}), {} ms after calls were first refused",
        binary.display(),
        report.version,
        began.elapsed().as_millis()
    );
    let e = handover::exec(s.supervisor.spawner(), binary, &message, &fds).await;
    // Still here: the exec failed. This program takes everything up again.
    tracing::error!(
        "re-exec of {} failed ({e}): this program carries on with every instance",
        binary.display()
    );
    for ((_, d), fd) in detached.iter_mut().zip(locks) {
        d.lock = fd.and_then(|fd| crate::supervise::ownership::Lock::from_fd(fd).ok());
        // This program keeps the profiles it runs: nothing is restarted for one changed on disk
        // (a reload applies that).
        if let Some(c) = d.child.as_mut() {
            c.changed = Some(Vec::new());
        }
    }
    for i in &message.instances {
        if let Some(exit) = i.child.as_ref().and_then(|c| c.exit.map(|e| (c.pid, e))) {
            s.supervisor
                .remember_exit(exit.0, handover::exit_of(&exit.1));
        }
    }
    let profiles: Vec<crate::profile::Profile> =
        detached.iter().map(|(p, _)| (**p).clone()).collect();
    let named = detached
        .into_iter()
        .map(|(p, d)| (p.name.to_string(), d))
        .collect();
    let (mut adopted, resume, _) = handover::take_over(named, &profiles);
    let taken = resume
        .into_iter()
        .map(|(name, r)| (name.clone(), (adopted.remove(&name), r)))
        .collect();
    s.supervisor.reattach(taken);
    s.api.close_streams(true);
    match relisten(&s.kept) {
        Ok((socket, tcp)) => {
            (s.servers, s.server_stop) = s.routes.serve(socket, tcp);
        }
        Err(e) => tracing::error!("cannot serve the API again after the failed re-exec: {e}"),
    }
    s.refusing.store(false, Ordering::SeqCst);
    systemd.ready(&crate::systemd::summary(&s.supervisor));
}

/// SIGHUP: the same reload as the API's, its outcome in the daemon's log.
async fn reload(supervisor: &Supervisor, dir: &std::path::Path) {
    tracing::info!("SIGHUP: reloading the profiles in {}", dir.display());
    let outcome = supervisor.reload(dir, false).await;
    if !outcome.applied {
        tracing::error!(
            "reload refused, nothing changed:\n{}{}",
            outcome.plan.report,
            outcome.plan.report.summary(dir)
        );
        return;
    }
    tracing::info!("{}", reload_applied(&outcome.changes));
    for c in &outcome.changes {
        if let Some(e) = &c.error {
            tracing::error!(instance = %c.name, "reload: {e}");
        }
    }
}

/// The outcome of an applied reload in one line: which instances were added, removed, changed
/// (restarted, with the fields) and updated without a restart.
fn reload_applied(changes: &[crate::supervise::Change]) -> String {
    let names = |action: ReloadAction, with_fields: bool| -> Vec<String> {
        changes
            .iter()
            .filter(|c| {
                c.action == action && (action != ReloadAction::Keep || !c.fields.is_empty())
            })
            .map(|c| {
                if with_fields && !c.fields.is_empty() {
                    format!("{} ({})", c.name, c.fields.join(", "))
                } else {
                    c.name.clone()
                }
            })
            .collect()
    };
    let parts: Vec<String> = [
        ("added", names(ReloadAction::Add, false)),
        ("removed", names(ReloadAction::Remove, false)),
        ("changed and restarted", names(ReloadAction::Change, true)),
        ("updated without a restart", names(ReloadAction::Keep, true)),
    ]
    .into_iter()
    .filter(|(_, n)| !n.is_empty())
    .map(|(what, n)| format!("{what} {}", n.join(", ")))
    .collect();
    if parts.is_empty() {
        let n = changes.len();
        format!(
            "reload applied: nothing changed ({n} instance{})",
            if n == 1 { "" } else { "s" }
        )
    } else {
        format!("reload applied: {}", parts.join("; "))
    }
}

/// The API's services: the supervisor, the standard gRPC health service and server reflection.
async fn services(
    api: Arc<api::server::Api>,
) -> Result<(tonic::service::Routes, tonic_health::server::HealthReporter), String> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SupervisorServiceServer<api::server::Api>>()
        .await;
    // Reflection in both versions: grpcio-reflection, Postman and older grpcurl ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| e.to_string())?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| e.to_string())?;
    let routes = tonic::service::Routes::new(SupervisorServiceServer::from_arc(api))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((routes, health))
}

/// The TCP listener, if one is configured: loopback only unless allowed, and never without a token.
async fn tcp_listener(opts: &Options) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(addr) = opts.tcp else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() && !opts.tcp_allow_remote {
        return Err(format!(
            "--tcp {addr} is not a loopback address; give --tcp-allow-remote to serve other hosts"
        ));
    }
    let Some(file) = &opts.token_file else {
        return Err(format!(
            "--tcp {addr} needs --token-file: every call over TCP must carry a token"
        ));
    };
    match api::server::read_token(file) {
        Ok(t) if !t.is_empty() => {}
        Ok(_) => return Err(format!("the token file {} is empty", file.display())),
        Err(e) => {
            return Err(format!(
                "cannot read the token file {}: {e}",
                file.display()
            ))
        }
    }
    if let Ok(meta) = std::fs::metadata(file) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "the token file can be read by others; chmod 600 it");
        }
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::Change;

    fn change(name: &str, action: ReloadAction, fields: &[&'static str]) -> Change {
        Change {
            name: name.into(),
            action,
            fields: fields.to_vec(),
            error: None,
        }
    }

    #[test]
    fn an_applied_reload_says_what_it_did_in_one_line() {
        let changes = [
            change("main", ReloadAction::Keep, &[]),
            change("ops", ReloadAction::Add, &[]),
            change("old", ReloadAction::Remove, &[]),
            change("rescue", ReloadAction::Change, &["port", "ports"]),
            change("spare", ReloadAction::Keep, &["autostart"]),
        ];
        assert_eq!(
            reload_applied(&changes),
            "reload applied: added ops; removed old; changed and restarted rescue (port, ports); \
             updated without a restart spare (autostart)"
        );
        assert_eq!(
            reload_applied(&changes[..1]),
            "reload applied: nothing changed (1 instance)"
        );
    }
}
