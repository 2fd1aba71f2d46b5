//! The Prometheus endpoint (`--metrics ADDR`): the registry, its families, and the HTTP server
//! that serves `GET /metrics` in the OpenMetrics text format (prometheus-client's encoder).
//!
//! Three feeds, so a scrape costs the daemon no walk of /proc: the event broadcast
//! (`Supervisor::events`), followed by one task, keeps the counters and the state gauges; the API
//! servers' layer (`api::calls`) counts the calls; at scrape time the figures the sampler already
//! holds (`Supervisor::reports`: CPU and RSS of each tree), each status (seconds since start) and
//! each log's totals are copied in, one scrape at a time. Without `--metrics` only the call
//! counters exist.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::api::calls::CallLabels;
use crate::supervise::instance::{Event, State};
use crate::supervise::reaper::Exit;
use crate::supervise::Supervisor;

/// Label set of the per-instance families: `instance`, and for some one more label.
type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The registry and its families; shared by the event follower and the HTTP server.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    up: Family<Labels, Gauge>,
    state: Family<Labels, Gauge>,
    starts: Family<Labels, Counter>,
    last_exit_code: Family<Labels, Gauge>,
    last_exit_signal: Family<Labels, Gauge>,
    since_start: Family<Labels, Gauge<f64, AtomicU64>>,
    time_to_ready: HistogramFamily,
    cpu_percent: Family<Labels, Gauge<f64, AtomicU64>>,
    cpu_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    rss: Family<Labels, Gauge>,
    uptime: Gauge<f64, AtomicU64>,
    reloads: Family<Labels, Counter>,
    probe_latency: HistogramFamily,
    log_lines: Family<Labels, Counter>,
    log_bytes: Family<Labels, Counter>,
    log_dropped: Family<Labels, Counter>,
    probe_failures: Family<Labels, Counter>,
    runtime_info: Family<Labels, Gauge>,
    /// When each instance last entered `starting` (for its time to ready).
    starting_since: Mutex<HashMap<String, SystemTime>>,
    /// What the last scrape copied in; held by each scrape while it copies, so two at once
    /// cannot add the same rise twice.
    copied: Mutex<Copied>,
}

/// The totals a scrape copied into the counters, per instance: each next scrape adds the rise.
#[derive(Default)]
struct Copied {
    /// The CPU seconds of each instance's tree, and the child it was of.
    cpu: HashMap<String, (i32, f64)>,
    /// Each instance's log totals (lines, bytes, dropped).
    log: HashMap<String, [u64; 3]>,
    /// The labels of each instance's `instance_runtime_info`: a new version drops the old series.
    runtime: HashMap<String, Labels>,
}

/// What a counter gains when a total that only rises, except when it starts again from zero (a
/// new child's tree, a log opened again), goes from `before` to `now`.
fn rise<T: PartialOrd + std::ops::Sub<Output = T> + Copy>(before: T, now: T) -> T {
    if now >= before {
        now - before
    } else {
        now
    }
}

fn instance(name: &str) -> Labels {
    vec![("instance", name.to_string())]
}

fn with(name: &str, key: &'static str, value: &str) -> Labels {
    vec![("instance", name.to_string()), (key, value.to_string())]
}

fn time_to_ready_histogram() -> Histogram {
    // 0.25 s .. about 2 min.
    Histogram::new(exponential_buckets(0.25, 2.0, 10))
}

fn probe_histogram() -> Histogram {
    // 1 ms .. about 4 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

/// What a start's reason (`Status::reason` of the `starting` event) counts as.
pub fn start_reason(reason: &str) -> &'static str {
    if let Some(after) = reason.strip_prefix("restart by policy after: ") {
        if after.contains("probe") || after.contains("liveness") {
            "probe"
        } else {
            "crash"
        }
    } else if reason.starts_with("operator ") {
        "operator"
    } else if reason.starts_with("reload") {
        "reload"
    } else if reason == "started by the supervisor" {
        "first"
    } else {
        "other"
    }
}

impl Metrics {
    /// A registry with every family registered (`calls`: the API servers' counters), and the
    /// daemon's build info.
    pub fn new(calls: Family<CallLabels, Counter>) -> Self {
        let mut registry = Registry::with_prefix("openclaw_supervisor");
        let m = Metrics {
            registry: Registry::default(),
            started: Instant::now(),
            up: Family::default(),
            state: Family::default(),
            starts: Family::default(),
            last_exit_code: Family::default(),
            last_exit_signal: Family::default(),
            since_start: Family::default(),
            time_to_ready: Family::new_with_constructor(time_to_ready_histogram),
            cpu_percent: Family::default(),
            cpu_seconds: Family::default(),
            rss: Family::default(),
            uptime: Gauge::default(),
            reloads: Family::default(),
            probe_latency: Family::new_with_constructor(probe_histogram),
            log_lines: Family::default(),
            log_bytes: Family::default(),
            log_dropped: Family::default(),
            probe_failures: Family::default(),
            runtime_info: Family::default(),
            starting_since: Mutex::new(HashMap::new()),
            copied: Mutex::new(Copied::default()),
        };
        registry.register(
            "instance_up",
            "1 while the instance is running and ready, else 0",
            m.up.clone(),
        );
        registry.register(
            "instance_state",
            "1 for the state the instance is in, 0 for the others",
            m.state.clone(),
        );
        registry.register(
            "instance_starts",
            "Starts of the instance's gateway by reason (first, operator, crash, probe, reload, other); every reason but first is a restart",
            m.starts.clone(),
        );
        registry.register(
            "instance_last_exit_code",
            "Exit code of the instance's last child (-1: it did not exit with a code)",
            m.last_exit_code.clone(),
        );
        registry.register(
            "instance_last_exit_signal",
            "Signal that ended the instance's last child (0: no signal)",
            m.last_exit_signal.clone(),
        );
        registry.register(
            "instance_seconds_since_start",
            "Seconds since the instance's current child started (0 without a child)",
            m.since_start.clone(),
        );
        registry.register(
            "instance_time_to_ready_seconds",
            "Time from a start to ready",
            m.time_to_ready.clone(),
        );
        registry.register(
            "instance_cpu_percent",
            "CPU use of the instance's process tree in percent of one core, at the sampler's last sample",
            m.cpu_percent.clone(),
        );
        registry.register(
            "instance_cpu_seconds",
            "CPU time used by the instance's process trees (or cgroup), all its children together, at the sampler's last sample",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "instance_rss_bytes",
            "Resident memory of the instance's process tree, at the sampler's last sample",
            m.rss.clone(),
        );
        registry.register(
            "instance_probe_seconds",
            "Latency of each liveness probe (answered or not)",
            m.probe_latency.clone(),
        );
        registry.register(
            "instance_probe_failures",
            "Liveness probes that failed",
            m.probe_failures.clone(),
        );
        registry.register(
            "instance_log_lines",
            "Lines of the instance's log handed to the disk writer",
            m.log_lines.clone(),
        );
        registry.register(
            "instance_log_bytes",
            "Bytes of the instance's log handed to the disk writer",
            m.log_bytes.clone(),
        );
        registry.register(
            "instance_log_dropped_lines",
            "Lines of the instance's log dropped because its disk did not keep up",
            m.log_dropped.clone(),
        );
        registry.register(
            "instance_runtime_info",
            "1, labelled with the OpenClaw and Node versions the instance's child runs (or last ran), as read at its start (empty when not known)",
            m.runtime_info.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since this daemon process started",
            m.uptime.clone(),
        );
        registry.register(
            "reloads",
            "Reloads of the profiles by outcome (applied, refused)",
            m.reloads.clone(),
        );
        registry.register(
            "api_calls",
            "Calls answered by the control API (socket and TCP), by service, method and gRPC code; a stream counts when it ends",
            calls,
        );
        registry.register(
            "build",
            "The daemon's build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Both outcomes from the start: a rate over a series that appears late misses its first rise.
        for outcome in ["applied", "refused"] {
            let _ = m
                .reloads
                .get_or_create(&vec![("outcome", outcome.to_string())]);
        }
        Metrics { registry, ..m }
    }

    /// Counts a reload: `applied` or `refused`.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// One liveness probe of `name`: how long it took, and whether it failed.
    pub fn probe(&self, name: &str, took: std::time::Duration, ok: bool) {
        let one = instance(name);
        self.probe_latency
            .get_or_create(&one)
            .observe(took.as_secs_f64());
        let failures = self.probe_failures.get_or_create(&one);
        if !ok {
            failures.inc();
        }
    }

    /// Takes one state change in.
    pub fn event(&self, e: &Event) {
        let name = e.status.name.as_str();
        if e.removed {
            self.forget(name);
            return;
        }
        let st = &e.status;
        self.up
            .get_or_create(&instance(name))
            .set(i64::from(st.state == State::Running));
        for s in State::ALL {
            self.state
                .get_or_create(&with(name, "state", s.as_str()))
                .set(i64::from(s == st.state));
        }
        let (code, signal) = match st.last_exit {
            Some(Exit::Code(c)) => (i64::from(c), 0),
            Some(Exit::Signal(s)) => (-1, i64::from(s)),
            Some(Exit::Unknown) | None => (-1, 0),
        };
        self.last_exit_code.get_or_create(&instance(name)).set(code);
        self.last_exit_signal
            .get_or_create(&instance(name))
            .set(signal);
        let Ok(mut since) = self.starting_since.lock() else {
            return;
        };
        match st.state {
            State::Starting if e.previous != Some(State::Starting) => {
                since.insert(name.to_string(), e.time);
                self.starts
                    .get_or_create(&with(name, "reason", start_reason(&st.reason)))
                    .inc();
            }
            State::Running => {
                if let Some(t) = since.remove(name) {
                    let took = e.time.duration_since(t).unwrap_or_default();
                    self.time_to_ready
                        .get_or_create(&instance(name))
                        .observe(took.as_secs_f64());
                }
            }
            State::Starting => {}
            _ => {
                since.remove(name);
            }
        }
    }

    /// Drops a removed instance's series.
    fn forget(&self, name: &str) {
        let one = instance(name);
        self.up.remove(&one);
        self.last_exit_code.remove(&one);
        self.last_exit_signal.remove(&one);
        self.since_start.remove(&one);
        self.time_to_ready.remove(&one);
        self.cpu_percent.remove(&one);
        self.cpu_seconds.remove(&one);
        self.rss.remove(&one);
        self.probe_latency.remove(&one);
        self.log_lines.remove(&one);
        self.log_bytes.remove(&one);
        self.log_dropped.remove(&one);
        self.probe_failures.remove(&one);
        for s in State::ALL {
            self.state.remove(&with(name, "state", s.as_str()));
        }
        for r in ["first", "operator", "crash", "probe", "reload", "other"] {
            self.starts.remove(&with(name, "reason", r));
        }
        if let Ok(mut since) = self.starting_since.lock() {
            since.remove(name);
        }
        let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        copied.cpu.remove(name);
        copied.log.remove(name);
        if let Some(labels) = copied.runtime.remove(name) {
            self.runtime_info.remove(&labels);
        }
    }

    /// The text of one scrape: the figures the sampler holds copied in, then everything encoded.
    pub async fn scrape(&self, supervisor: &Supervisor) -> Result<String, std::fmt::Error> {
        let reports = supervisor.reports(&[]).await;
        let now = SystemTime::now();
        let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        let copied = &mut *copied;
        for r in reports {
            let name = r.status.name.as_str();
            let one = instance(name);
            let since = r
                .status
                .started_at
                .filter(|_| r.status.pid.is_some())
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            self.since_start
                .get_or_create(&one)
                .set(since.as_secs_f64());
            self.cpu_percent
                .get_or_create(&one)
                .set(f64::from(r.cpu_percent));
            self.rss
                .get_or_create(&one)
                .set(i64::try_from(r.rss_bytes).unwrap_or(i64::MAX));
            let v = &r.status.versions;
            let labels = vec![
                ("instance", name.to_string()),
                ("openclaw", v.openclaw.clone().unwrap_or_default()),
                ("node", v.node.clone().unwrap_or_default()),
            ];
            if let Some(old) = copied.runtime.get(name).filter(|old| **old != labels) {
                self.runtime_info.remove(old);
            }
            self.runtime_info.get_or_create(&labels).set(1);
            copied.runtime.insert(name.to_string(), labels);
            // Each child's tree counts from zero; the counter goes on across children.
            let cpu = self.cpu_seconds.get_or_create(&one);
            if let Some(pid) = r.status.pid.filter(|_| r.cpu_seconds > 0.0) {
                let before = match copied.cpu.get(name) {
                    Some((p, s)) if *p == pid => *s,
                    _ => 0.0,
                };
                cpu.inc_by(rise(before, r.cpu_seconds));
                copied.cpu.insert(name.to_string(), (pid, r.cpu_seconds));
            }
        }
        for (name, h) in supervisor.instances().iter() {
            let c = h.log.counts();
            let one = instance(name);
            let now = [c.lines, c.bytes, c.dropped];
            let before = copied.log.get(name).copied().unwrap_or_default();
            for (i, family) in [&self.log_lines, &self.log_bytes, &self.log_dropped]
                .into_iter()
                .enumerate()
            {
                family.get_or_create(&one).inc_by(rise(before[i], now[i]));
            }
            copied.log.insert(name.clone(), now);
        }
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Binds `addr` (loopback unless `allow_remote`), seeds the families with every instance's
/// status, and starts the event follower and the HTTP server; both end with `stop`.
pub async fn start(
    addr: SocketAddr,
    allow_remote: bool,
    supervisor: Arc<Supervisor>,
    calls: Family<CallLabels, Counter>,
    stop: CancellationToken,
) -> Result<Arc<Metrics>, String> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "--metrics {addr} is not a loopback address; give --metrics-allow-remote to serve other hosts"
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for --metrics: {e}"))?;
    let metrics = Arc::new(Metrics::new(calls));
    supervisor.set_metrics(metrics.clone());
    let mut events = supervisor.events();
    for h in supervisor.instances().values() {
        let status = h.status.borrow().clone();
        metrics.event(&Event {
            time: SystemTime::now(),
            previous: None,
            removed: false,
            file: h.file.clone(),
            status,
        });
    }
    let m = metrics.clone();
    let until = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = until.cancelled() => return,
                e = events.recv() => match e {
                    Ok(e) => m.event(&e),
                    Err(RecvError::Lagged(n)) => tracing::warn!("metrics missed {n} state changes"),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let shown = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    tracing::info!(address = %shown, "serving metrics on /metrics");
    let m = metrics.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (m, sup) = (m.clone(), supervisor.clone());
            let service = hyper::service::service_fn(move |req| {
                let (m, sup) = (m.clone(), sup.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&m, &sup, &req).await) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(metrics)
}

/// `GET /metrics`: the scrape; anything else: 404 (or 405 for another method on /metrics).
async fn answer<B>(
    m: &Metrics,
    sup: &Supervisor,
    req: &hyper::Request<B>,
) -> hyper::Response<String> {
    let reply = |code: u16, ctype: &str, body: String| {
        let mut r = hyper::Response::new(body);
        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "not found; try /metrics\n".into());
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(405, "text/plain", "only GET\n".into());
    }
    match m.scrape(sup).await {
        Ok(text) => reply(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(e) => reply(
            500,
            "text/plain",
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::start_reason;

    #[test]
    fn start_reasons() {
        assert_eq!(start_reason("started by the supervisor"), "first");
        assert_eq!(start_reason("operator restart (socket)"), "operator");
        assert_eq!(
            start_reason("restart by policy after: ended by signal SIGKILL"),
            "crash"
        );
        assert_eq!(
            start_reason("restart by policy after: 3 failed liveness probes"),
            "probe"
        );
        assert_eq!(start_reason("reload: changed env"), "reload");
    }
}
