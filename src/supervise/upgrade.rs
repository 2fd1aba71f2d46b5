//! An upgrade of one instance to another runtime (`openclawctl upgrade NAME --to VERSION`), owned
//! by the daemon: it goes on if the client goes away, and one runs at a time per instance.
//!
//! The steps: install the runtime if needed; choose it in the desired state with a soak under way
//! (`RuntimeWish::soak`: until when, and what it ran before); restart the instance (an operator's
//! restart, so it starts on `Shared::runtime_for`, which reads that choice); it must become ready
//! within its start deadline and then stay healthy for the soak (running, the same pid, no
//! restart, no failed probe). Then the soak is cleared and the choice stays; otherwise the choice
//! goes back to what it ran before and the instance is restarted on it, and the answer says why
//! (the state, the exit or the probe's error, and the last log lines). A daemon that stops in the
//! middle leaves the soak in the desired state; the next one resumes watching for the time left
//! ([`Supervisor::resume_soaks`]). An operator's stop ends a soak and keeps the choice.
//!
//! `--write` writes the choice into the instance's profile (`crate::profile::edit`), then clears it
//! from the desired state and gives the instance's task the profile that says it, so that the
//! next reload sees nothing to restart. Every step goes into the instance's history and log.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::desired::{RuntimeWish, Soak};
use super::instance::{Between, Command, CommandError, State};
use super::{statesnap, Supervisor};
use crate::runtime::Spec;

/// The soak when none is given.
pub const DEFAULT_SOAK: Duration = Duration::from_secs(60);

/// How often a soak looks at the instance.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// How many of the instance's last log lines a rollback reports.
const LOG_LINES: usize = 10;

/// What an operator asked.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The instance.
    pub name: String,
    /// The runtime to upgrade to; None with `write` alone: write the current choice.
    pub to: Option<Spec>,
    /// How long it must stay healthy once ready.
    pub soak: Duration,
    /// Then write the choice into the profile.
    pub write: bool,
    /// Where the call came from ("socket", "TCP 127.0.0.1:40112").
    pub by: String,
}

/// How an upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It runs on the new runtime, which stays chosen.
    Kept,
    /// It failed, and runs on what it ran before (or was restarted on it).
    RolledBack,
    /// The choice is written into the profile.
    Written,
    /// Nothing to do: it runs on that runtime already.
    Nothing,
    /// It could not be done (an install failed, the profile could not be written, the daemon is
    /// stopping); the reason says what holds now.
    Failed,
    /// An operator stopped it before the soak ended: the new runtime stays chosen, unproven (and
    /// is not written into the profile).
    Stopped,
}

/// The last word of an upgrade.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
    /// For a rollback: the instance's last log lines before it.
    pub log_lines: Vec<String>,
}

impl Outcome {
    fn of(verdict: Verdict, reason: impl Into<String>) -> Outcome {
        Outcome {
            verdict,
            reason: reason.into(),
            log_lines: Vec::new(),
        }
    }
}

/// What an upgrade sends its client: progress lines, then its outcome.
#[derive(Debug, Clone)]
pub enum Step {
    /// A line of progress.
    Line(String),
    /// The end.
    Done(Outcome),
}

/// The instance's place in the set of upgrades under way; freed when dropped.
struct Slot {
    sup: Arc<Supervisor>,
    name: String,
}

impl Slot {
    fn take(sup: &Arc<Supervisor>, name: &str) -> Option<Slot> {
        let mut set = sup.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(name.to_string()).then(|| Slot {
            sup: sup.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sup
            .upgrading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

/// Where an upgrade says what it does: the client (if still there), the instance's history and
/// its log.
struct Say {
    sup: Arc<Supervisor>,
    name: String,
    out: Option<mpsc::Sender<Step>>,
}

impl Say {
    /// A step: to the client, the history and the log.
    async fn step(&self, text: impl Into<String>) {
        let text = text.into();
        if let Some(h) = self.sup.get(&self.name) {
            h.history.push("upgrade", text.clone());
            h.log.note(format!("upgrade: {text}"));
        }
        tracing::info!(instance = %self.name, "upgrade: {text}");
        self.line(text).await;
    }

    /// A line for the client only (an installer's progress).
    async fn line(&self, text: String) {
        if let Some(out) = &self.out {
            // A client gone away, or one that does not read, is no reason to stop or to wait:
            // what it misses is in the history and the log.
            let _ = out.try_send(Step::Line(text));
        }
    }
}

/// The least a soak resumed after a daemon restart watches the instance, once it is ready.
const MIN_RESUMED_SOAK: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What `name` runs on with the choice `r`: it, else its profile's runtime, else the PATH's.
fn shown(sup: &Supervisor, name: &str, r: &Option<Spec>) -> String {
    if let Some(s) = r {
        return s.to_string();
    }
    match sup.get(name).and_then(|h| h.profile.runtime.clone()) {
        Some(p) => format!("{} (its profile's)", p.value),
        None => "the PATH's openclaw".into(),
    }
}

impl Supervisor {
    /// Starts the upgrade `ask` in a task of the daemon's; its steps and outcome come on the
    /// receiver (dropping it does not stop the upgrade). Refused, with why, if an upgrade of that
    /// instance is under way or there is no such instance.
    pub fn upgrade(self: &Arc<Self>, ask: Ask) -> Result<mpsc::Receiver<Step>, String> {
        if self.get(&ask.name).is_none() {
            return Err(format!("no instance named {}", ask.name));
        }
        let Some(slot) = Slot::take(self, &ask.name) else {
            return Err(format!(
                "an upgrade of {} is under way; wait for it (`openclawctl explain {}` shows its steps)",
                ask.name, ask.name
            ));
        };
        let (tx, rx) = mpsc::channel(64);
        let say = Say {
            sup: self.clone(),
            name: ask.name.clone(),
            out: Some(tx.clone()),
        };
        tokio::spawn(async move {
            let outcome = run(&say, ask).await;
            drop(slot);
            let _ = tx.send(Step::Done(outcome)).await;
        });
        Ok(rx)
    }

    /// At the daemon's start: every instance whose upgrade was soaking when the daemon before
    /// stopped is watched for the time left (none left: decided at once from its state), and
    /// rolled back if it is not healthy. It started on the new runtime (the choice stands).
    pub fn resume_soaks(self: &Arc<Self>) {
        for (name, wish) in self.shared.desired.runtimes() {
            let Some(soak) = wish.soak.clone() else {
                continue;
            };
            if self.get(&name).is_none() {
                continue;
            }
            let Some(slot) = Slot::take(self, &name) else {
                continue;
            };
            let say = Say {
                sup: self.clone(),
                name: name.clone(),
                out: None,
            };
            tokio::spawn(async move {
                let left = soak.until_unix_ms.saturating_sub(now_ms());
                say.step(format!(
                    "resuming the soak of {} after a daemon restart ({} left)",
                    wish.runtime,
                    humantime::format_duration(Duration::from_millis(left))
                ))
                .await;
                // Watched for what was left, and at least a moment: a soak whose time ran out while
                // no daemon watched is not taken as passed unseen.
                let watch_for = Duration::from_millis(left).max(MIN_RESUMED_SOAK);
                let outcome = soak_then(&say, &wish.runtime, &soak.previous, Some(watch_for)).await;
                tracing::info!(instance = %name, "upgrade after a daemon restart: {:?}: {}", outcome.verdict, outcome.reason);
                drop(slot);
            });
        }
    }

    /// The end of `name`'s soak under way, in ms since the epoch (API: `soak_until_unix_ms`).
    pub fn soak_until(&self, name: &str) -> Option<u64> {
        self.shared
            .desired
            .runtime(name)
            .and_then(|w| w.soak)
            .map(|s| s.until_unix_ms)
    }
}

/// The whole upgrade.
async fn run(say: &Say, ask: Ask) -> Outcome {
    let sup = &say.sup;
    let name = ask.name.as_str();
    let Some(h) = sup.get(name) else {
        return Outcome::of(Verdict::Failed, format!("{name} is gone"));
    };
    let wish = sup.shared.desired.runtime(name);
    if let Some(s) = wish.as_ref().and_then(|w| w.soak.as_ref()) {
        return Outcome::of(
            Verdict::Failed,
            format!(
                "{name}'s upgrade to {} is still soaking (for {} more); try again after it",
                wish.as_ref()
                    .map_or(String::new(), |w| w.runtime.to_string()),
                humantime::format_duration(Duration::from_millis(
                    s.until_unix_ms.saturating_sub(now_ms()) / 1000 * 1000
                ))
            ),
        );
    }
    let Some(to) = ask.to.clone() else {
        // `--write` alone: the choice there is.
        return match wish {
            Some(w) => write(say, &w.runtime).await,
            None => Outcome::of(
                Verdict::Nothing,
                format!(
                    "no upgrade choice to write: {name} runs on {}",
                    shown(sup, name, &None)
                ),
            ),
        };
    };
    let store = sup.shared.runtimes.clone();
    say.step(format!("upgrade of {name} to {to} asked ({})", ask.by))
        .await;
    let runtime = {
        // Through the daemon's install (its child forked and reaped as the gateways are).
        let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
        let install = sup.install_runtime(&to, line_tx);
        tokio::pin!(install);
        let done = loop {
            tokio::select! {
                r = &mut install => break r,
                Some(l) = line_rx.recv() => say.line(l).await,
            }
        };
        while let Ok(l) = line_rx.try_recv() {
            say.line(l).await;
        }
        match done {
            Ok(r) => r,
            Err(e) => {
                let why = format!("cannot install {to}: {e}; nothing changed");
                say.step(why.clone()).await;
                return Outcome::of(Verdict::Failed, why);
            }
        }
    };
    let target = runtime.spec();
    let current = sup.shared.runtime_for(name, &h.profile);
    let same = {
        let (store, current, dir) = (store.clone(), current.clone(), runtime.dir.clone());
        tokio::task::spawn_blocking(move || {
            current.and_then(|c| store.find(&c)).map(|r| r.dir) == Some(dir)
        })
        .await
        .unwrap_or(false)
    };
    if same {
        let why = format!("{name} runs on {target} already");
        say.step(why.clone()).await;
        return if ask.write {
            write(say, &target).await
        } else {
            Outcome::of(Verdict::Nothing, why)
        };
    }
    // What it rolls back to: the choice of an earlier upgrade, else (None) the profile's.
    let previous = wish.map(|w| w.runtime);
    let start_deadline = h.profile.health.start_deadline;
    // Until it is ready, the soak's end is as late as it can be; set again once it is.
    let until = now_ms()
        .saturating_add(ms(start_deadline))
        .saturating_add(ms(ask.soak));
    choose_soaking(sup, name, &target, &previous, until).await;
    say.step(format!(
        "restarting {name} on {target} (it ran {}); it must be ready within {} and stay healthy for {}",
        shown(sup, name, &previous),
        humantime::format_duration(start_deadline),
        humantime::format_duration(ask.soak)
    ))
    .await;
    let reason = format!("upgrade to {target} ({})", ask.by);
    // The databases as the release it runs now left them, for a rollback (see `statesnap`).
    let save = {
        let state_dir = h.profile.state_dir.value.clone();
        let copy = statesnap::copy_dir(&sup.shared.upgrades, name);
        Between(Box::new(move || {
            statesnap::save(&state_dir, &copy).unwrap_or_else(|e| {
                format!(
                    "no copy of the databases for a rollback: {e}; a rollback cannot restore them"
                )
            })
        }))
    };
    let outcome = match restart(sup, name, reason, Some(save), start_deadline).await {
        Restarted::Ready => soak_then(say, &target, &previous, Some(ask.soak)).await,
        Restarted::Failed(why) => rollback(say, &target, &previous, why).await,
        Restarted::Stopped => stopped(say, &target).await,
        Restarted::Away(why) => Outcome::of(Verdict::Failed, why),
    };
    if outcome.verdict == Verdict::Kept && ask.write {
        return write(say, &target).await;
    }
    outcome
}

/// Chooses `target` for `name` in the desired state, soaking until `until` (ms since the epoch),
/// to go back to `previous` if it fails.
async fn choose_soaking(
    sup: &Supervisor,
    name: &str,
    target: &Spec,
    previous: &Option<Spec>,
    until: u64,
) {
    sup.shared
        .desired
        .set_runtime(
            name,
            Some(RuntimeWish {
                runtime: target.clone(),
                soak: Some(Soak {
                    until_unix_ms: until,
                    previous: previous.clone(),
                }),
            }),
        )
        .await;
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How an operator-like restart ended.
enum Restarted {
    Ready,
    /// It did not become ready: why.
    Failed(String),
    /// An operator stopped it meanwhile.
    Stopped,
    /// The daemon is stopping (or re-executing), or a reload replaced the instance: the soak
    /// stays in the desired state for the next daemon.
    Away(String),
}

/// Restarts `name` as an operator's restart does, for `why`, and waits until it is ready or has
/// failed (bounded: its start deadline and a margin for the stop before it).
async fn restart(
    sup: &Arc<Supervisor>,
    name: &str,
    why: String,
    between: Option<Between>,
    deadline: Duration,
) -> Restarted {
    let Some(h) = sup.get(name) else {
        return Restarted::Away(format!("{name} was removed"));
    };
    // A guard only (the task holds the start to its deadline), past the stop and the work between
    // the stop and the start (a copy of large databases may take minutes).
    let margin = Duration::from_secs(if between.is_some() { 600 } else { 10 });
    let (tx, rx) = oneshot::channel();
    if h.tx.send(Command::Restart(why, between, tx)).await.is_err() {
        return Restarted::Away(format!(
            "{name} was replaced by a reload or the supervisor is stopping"
        ));
    }
    let bound = deadline + h.profile.stop.timeout + margin;
    let cancel = sup.cancel.clone();
    tokio::select! {
        _ = cancel.cancelled() => Restarted::Away("the supervisor is stopping; the next one resumes the soak".into()),
        r = tokio::time::timeout(bound, rx) => match r {
            Ok(Ok(Ok(_))) => Restarted::Ready,
            Ok(Ok(Err(CommandError::StoppedBeforeReady))) => Restarted::Stopped,
            Ok(Ok(Err(e @ (CommandError::ShuttingDown | CommandError::Reexec)))) => {
                Restarted::Away(format!("{e}; the next supervisor resumes the soak"))
            }
            Ok(Ok(Err(e))) => Restarted::Failed(e.to_string()),
            Ok(Err(_)) => Restarted::Away(format!("{name} was replaced by a reload")),
            Err(_) => Restarted::Failed(format!(
                "not ready within {}",
                humantime::format_duration(bound)
            )),
        }
    }
}

/// How a soak ended.
enum Soaked {
    Healthy,
    Unhealthy(String),
    Stopped,
    Away(String),
}

/// Waits (at most its start deadline and a margin) for `name` to be running, then watches it
/// until the soak's end (`soak`, from when it is ready; None: the end the desired state says).
/// Then keeps the choice or rolls back.
async fn soak_then(
    say: &Say,
    target: &Spec,
    previous: &Option<Spec>,
    soak: Option<Duration>,
) -> Outcome {
    let sup = &say.sup;
    let name = say.name.as_str();
    let soaked = match ready(sup, name).await {
        Err(s) => s,
        Ok(pid) => {
            let until = match soak {
                Some(d) => {
                    let until = now_ms().saturating_add(ms(d));
                    choose_soaking(sup, name, target, previous, until).await;
                    say.step(format!(
                        "{name} is ready on {target} (pid {pid}); soaking for {}",
                        humantime::format_duration(d)
                    ))
                    .await;
                    until
                }
                None => sup.soak_until(name).unwrap_or(0),
            };
            watch(sup, name, pid, until).await
        }
    };
    match soaked {
        Soaked::Healthy => {
            // Said (history, log) before the soak leaves the desired state, which is what others
            // watch for the end.
            let why = format!(
                "kept: {name} stayed healthy on {target}; `openclawctl upgrade {name} --write` writes it into its profile"
            );
            say.step(why.clone()).await;
            end_soak(sup, name, target).await;
            Outcome::of(Verdict::Kept, why)
        }
        Soaked::Unhealthy(why) => rollback(say, target, previous, why).await,
        Soaked::Stopped => stopped(say, target).await,
        Soaked::Away(why) => Outcome::of(Verdict::Failed, why),
    }
}

/// Waits for `name` to be running: its pid; or how it failed.
async fn ready(sup: &Arc<Supervisor>, name: &str) -> Result<i32, Soaked> {
    let Some(h) = sup.get(name) else {
        return Err(Soaked::Away(format!("{name} was removed")));
    };
    let bound = tokio::time::Instant::now()
        + h.profile.health.start_deadline
        + h.profile.stop.timeout
        + Duration::from_secs(10);
    loop {
        let Some(h) = sup.get(name) else {
            return Err(Soaked::Away(format!("{name} was removed")));
        };
        let st = h.status.borrow().clone();
        if !st.want_running {
            return Err(Soaked::Stopped);
        }
        match (st.state, st.pid) {
            (State::Running, Some(pid)) => return Ok(pid),
            (State::Starting | State::Stopped | State::Stopping, _) => {}
            _ => return Err(Soaked::Unhealthy(failure(&st))),
        }
        if tokio::time::Instant::now() > bound {
            return Err(Soaked::Unhealthy(format!(
                "not ready in time ({})",
                failure(&st)
            )));
        }
        tokio::select! {
            _ = sup.cancel.cancelled() => return Err(Soaked::Away("the supervisor is stopping; the next one resumes the soak".into())),
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// What went wrong with an instance, from its status: its state and why, its last exit and error.
fn failure(st: &super::Status) -> String {
    let mut why = format!("{}: {}", st.state.as_str(), st.reason);
    if let Some(e) = st.last_exit {
        why.push_str(&format!("; last exit: {e}"));
    }
    if let Some(e) = st
        .last_error
        .as_ref()
        .filter(|e| !st.reason.contains(e.as_str()))
    {
        why.push_str(&format!("; {e}"));
    }
    why
}

/// Watches `name` until `until` (ms since the epoch): it must stay running with `pid`, with no
/// failed liveness probe.
async fn watch(sup: &Arc<Supervisor>, name: &str, pid: i32, until: u64) -> Soaked {
    let since = SystemTime::now();
    loop {
        let Some(h) = sup.get(name) else {
            return Soaked::Away(format!("{name} was removed by a reload"));
        };
        let st = h.status.borrow().clone();
        if !st.want_running {
            return Soaked::Stopped;
        }
        if st.pid != Some(pid) {
            let exit = st
                .last_exit
                .map_or("how is not known".into(), |e| e.to_string());
            let now = match st.pid {
                Some(p) => format!("; the restart policy started pid {p}"),
                None => String::new(),
            };
            return Soaked::Unhealthy(format!(
                "pid {pid} ended ({exit}) during the soak{now}; {}",
                failure(&st)
            ));
        }
        if st.state != State::Running {
            return Soaked::Unhealthy(failure(&st));
        }
        if let Some(p) = h
            .history
            .entries()
            .into_iter()
            .rev()
            .take_while(|e| e.time >= since)
            .find(|e| e.kind == "probe")
        {
            return Soaked::Unhealthy(p.text);
        }
        let left = until.saturating_sub(now_ms());
        if left == 0 {
            return Soaked::Healthy;
        }
        let nap = LOOK_EVERY.min(Duration::from_millis(left));
        tokio::select! {
            _ = sup.cancel.cancelled() => return Soaked::Away("the supervisor is stopping; the next one resumes the soak".into()),
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// An operator stopped the instance during the upgrade: the soak ends, the choice stays.
async fn stopped(say: &Say, target: &Spec) -> Outcome {
    let name = say.name.as_str();
    end_soak(&say.sup, name, target).await;
    let why = format!(
        "an operator stopped {name} during its soak: the soak ends, {target} stays chosen (`openclawctl start {name}` runs it)"
    );
    say.step(why.clone()).await;
    Outcome::of(Verdict::Stopped, why)
}

/// The soak is over and `target` stays chosen: no rollback can come any more, so the copy of
/// `name`'s databases goes.
async fn end_soak(sup: &Supervisor, name: &str, target: &Spec) {
    sup.shared
        .desired
        .set_runtime(
            name,
            Some(RuntimeWish {
                runtime: target.clone(),
                soak: None,
            }),
        )
        .await;
    let copy = statesnap::copy_dir(&sup.shared.upgrades, name);
    let _ = tokio::task::spawn_blocking(move || statesnap::remove_copy(&copy)).await;
}

/// The upgrade failed for `why`: the choice goes back to `previous` (None: the profile's) and the
/// instance is restarted on it.
async fn rollback(say: &Say, target: &Spec, previous: &Option<Spec>, why: String) -> Outcome {
    let sup = &say.sup;
    let name = say.name.as_str();
    let log_lines: Vec<String> = sup
        .get(name)
        .map(|h| {
            let tail = h.log.tail();
            let skip = tail.len().saturating_sub(LOG_LINES);
            tail[skip..].iter().map(|l| l.render()).collect()
        })
        .unwrap_or_default();
    if statesnap::copy_dir(&sup.shared.upgrades, name).is_dir() {
        let (upgrades, n, label) = (
            sup.shared.upgrades.clone(),
            name.to_string(),
            target.openclaw.clone(),
        );
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || statesnap::mark_pending(&upgrades, &n, &label))
                .await
        {
            tracing::warn!(instance = name, "{e}: the rollback puts the databases back only if this daemon lives until the restart");
        }
    }
    sup.shared
        .desired
        .set_runtime(
            name,
            previous.clone().map(|runtime| RuntimeWish {
                runtime,
                soak: None,
            }),
        )
        .await;
    say.step(format!(
        "{target} failed ({why}): rolling back to {}",
        shown(sup, name, previous)
    ))
    .await;
    let deadline = sup
        .get(name)
        .map_or(Duration::from_secs(60), |h| h.profile.health.start_deadline);
    let reason = format!("rollback from {target}");
    // The databases as they were before the upgrade: the previous release may refuse the ones the
    // new one migrated (see `statesnap`). Put back between the stop and the start; or, should the
    // daemon stop first, before the next start (the mark, written before the choice changes).
    let put_back = sup.get(name).map(|h| {
        let state_dir = h.profile.state_dir.value.clone();
        let upgrades = sup.shared.upgrades.clone();
        let name = name.to_string();
        Between(Box::new(move || {
            statesnap::restore_pending(&upgrades, &name, &state_dir)
                .unwrap_or_else(|| "no copy of the databases to put back".into())
        }))
    });
    let after = match restart(sup, name, reason, put_back, deadline).await {
        Restarted::Ready => {
            let pid = sup
                .get(name)
                .and_then(|h| h.status.borrow().pid)
                .map_or(String::new(), |p| format!(", pid {p}"));
            format!("{name} runs on {} again{pid}", shown(sup, name, previous))
        }
        Restarted::Failed(e) => format!(
            "{name} is back on {}, but did not start: {e}",
            shown(sup, name, previous)
        ),
        Restarted::Stopped => format!("an operator stopped {name} during the rollback"),
        Restarted::Away(e) => e,
    };
    say.step(format!("rolled back: {after}")).await;
    Outcome {
        verdict: Verdict::RolledBack,
        reason: format!("{target} failed: {why}; {after}"),
        log_lines,
    }
}

/// Writes `target` into the instance's profile, then clears the choice and gives the instance the
/// profile that says it, so that the next reload restarts nothing.
async fn write(say: &Say, target: &Spec) -> Outcome {
    let sup = &say.sup;
    let name = say.name.as_str();
    let Some(h) = sup.get(name) else {
        return Outcome::of(Verdict::Failed, format!("{name} is gone"));
    };
    let file = h.profile.file.clone();
    let written = {
        let (file, target) = (file.clone(), target.clone());
        tokio::task::spawn_blocking(move || crate::profile::edit::set_runtime(&file, &target))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    if let Err(e) = written {
        let why = format!("not written: {e}; {target} stays chosen in the daemon's state");
        say.step(why.clone()).await;
        return Outcome::of(Verdict::Failed, why);
    }
    let mut profile = (*h.profile).clone();
    profile.runtime = Some(crate::profile::Sourced {
        value: target.clone(),
        origin: crate::profile::Origin::Profile(crate::profile::Location::file(&file)),
    });
    sup.take_profile(name, Arc::new(profile)).await;
    sup.shared.desired.set_runtime(name, None).await;
    let why = format!("wrote runtime {target} into {}", file.display());
    say.step(why.clone()).await;
    Outcome::of(Verdict::Written, why)
}
