//! `openclawctl top`: a full-screen live view of the daemon's instances (ratatui on crossterm).
//!
//! It owns nothing of the daemon's: what it shows comes from the API on one connection (socket or
//! `--endpoint`), through three feeds that write into one channel the screen loop reads:
//! `WatchEvents` (every state change at once), `ListInstances` once a second (CPU, RSS, uptime:
//! the daemon samples them at most once a second anyway) and `TailLogs` with `follow` of the
//! selected instance (restarted when the selection moves). Keys arrive from a thread that reads
//! the terminal. So its cost to the daemon is one list call a second plus the streams' events,
//! about that of `openclawctl status` once a second (`cargo bench --bench top` measures it).
//!
//! The terminal is put back (raw mode off, main screen, cursor shown) on every way out: a quit
//! key, an error of the API, and a panic (a hook restores it before the panic message prints).

use std::collections::{HashMap, VecDeque};
use std::io::Stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Terminal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::remote::{self, Error, Lifecycle, Target};
use crate::api::client::Client;
use crate::api::v1;

/// How often the figures (CPU, RSS) are asked for: the daemon samples them no oftener.
const REFRESH: Duration = Duration::from_secs(1);
/// The log lines of the selected instance kept (and asked for first).
const LOG_LINES: usize = 200;

/// What the feeds and the key reader tell the screen loop.
enum Msg {
    /// A key pressed (or a resize: then `None`).
    Key(Option<KeyEvent>),
    /// A state change.
    Event(Box<v1::Event>),
    /// Every instance with its figures.
    List(Vec<v1::Instance>),
    /// A log line of the instance the feed of generation `.0` follows.
    Log(u64, String),
    /// How an operator's action ended, for the status line.
    Done(String),
    /// An explanation to show.
    Explained(String, Vec<String>),
    /// A feed failed; the text says which and why.
    Failed(String),
}

/// What the keys do now.
enum Mode {
    /// Move, act, quit.
    Normal,
    /// Waiting for y/n before `call` on the instance.
    Confirm(Lifecycle, String),
    /// An instance's explanation over the table; any key closes it.
    Explain(String, Vec<String>),
}

/// The screen's state; only the loop in [`top`] touches it.
struct App {
    /// Every instance, sorted by name.
    instances: Vec<v1::Instance>,
    /// The reason of each instance's last state change, from the events.
    reasons: HashMap<String, String>,
    /// The selected instance's name (kept across reorderings).
    selected: Option<String>,
    /// Its last log lines, and the generation of the feed they came from.
    logs: VecDeque<String>,
    log_feed: u64,
    mode: Mode,
    /// The status line.
    status: String,
}

impl App {
    /// An empty view, `status` on its status line.
    fn new(status: String) -> App {
        App {
            instances: Vec::new(),
            reasons: HashMap::new(),
            selected: None,
            logs: VecDeque::new(),
            log_feed: 0,
            mode: Mode::Normal,
            status,
        }
    }

    fn index(&self) -> Option<usize> {
        let name = self.selected.as_ref()?;
        self.instances.iter().position(|i| &i.name == name)
    }

    fn selected_instance(&self) -> Option<&v1::Instance> {
        self.index().map(|i| &self.instances[i])
    }

    /// Moves the selection by `by` rows, staying inside the table.
    fn step(&mut self, by: isize) {
        if self.instances.is_empty() {
            return;
        }
        let at = self.index().unwrap_or(0) as isize;
        let to = (at + by).clamp(0, self.instances.len() as isize - 1) as usize;
        self.selected = Some(self.instances[to].name.clone());
    }

    /// Takes in a full list: figures from it, the selection kept or set to the first.
    fn list(&mut self, mut list: Vec<v1::Instance>) {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        self.instances = list;
        if self.index().is_none() {
            self.selected = self.instances.first().map(|i| i.name.clone());
        }
    }

    /// Takes in a state change. Events carry no CPU or RSS: the last list's are kept.
    fn event(&mut self, e: v1::Event) {
        let Some(mut i) = e.instance else {
            return;
        };
        if !e.reason.is_empty() {
            self.reasons.insert(i.name.clone(), e.reason);
        }
        match self.instances.iter().position(|x| x.name == i.name) {
            Some(at) if e.removed => {
                self.instances.remove(at);
                if self.index().is_none() {
                    self.selected = self.instances.first().map(|i| i.name.clone());
                }
            }
            Some(at) => {
                let old = &self.instances[at];
                i.cpu_percent = old.cpu_percent;
                i.rss_bytes = old.rss_bytes;
                self.instances[at] = i;
            }
            None if e.removed => {}
            None => {
                self.instances.push(i);
                self.instances.sort_by(|a, b| a.name.cmp(&b.name));
                if self.selected.is_none() {
                    self.selected = self.instances.first().map(|i| i.name.clone());
                }
            }
        }
    }
}

/// Raw mode and the alternate screen, undone on drop (and by the panic hook).
struct TermGuard;

impl TermGuard {
    fn enter() -> std::io::Result<TermGuard> {
        terminal::enable_raw_mode()?;
        let guard = TermGuard;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(guard)
    }
}

/// Puts the terminal back; harmless when it already is.
fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Restores the terminal before a panic's message is printed (else it lands on the alternate
/// screen, in raw mode, and is lost).
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

/// `openclawctl top`: runs until `q`, Esc or Ctrl-C.
pub async fn top(target: &Target) -> Result<(), Error> {
    let client = remote::connect(target).await?;
    // The first list before the screen changes: no daemon, no blank screen.
    let first = client
        .clone()
        .list_instances(v1::ListInstancesRequest { names: vec![] })
        .await?
        .into_inner()
        .instances;
    install_panic_hook();
    let guard = TermGuard::enter().map_err(|e| Error::Terminal(e.to_string()))?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| Error::Terminal(e.to_string()))?;
    let r = run(&mut term, client, target, first).await;
    drop(term);
    drop(guard);
    r
}

async fn run(
    term: &mut Terminal<CrosstermBackend<Stdout>>,
    client: Client,
    target: &Target,
    first: Vec<v1::Instance>,
) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let keys = read_keys(tx.clone(), stop.clone());
    let feeds = [
        tokio::spawn(watch_feed(client.clone(), tx.clone())),
        tokio::spawn(list_feed(client.clone(), tx.clone())),
    ];
    let mut app = App::new(format!("connected to {target}"));
    app.list(first);
    let mut log_task: Option<(String, JoinHandle<()>)> = None;
    let r = loop {
        // Follow the selected instance's log.
        if app.selected.as_deref() != log_task.as_ref().map(|(n, _)| n.as_str()) {
            if let Some((_, t)) = log_task.take() {
                t.abort();
            }
            app.logs.clear();
            app.log_feed += 1;
            if let Some(name) = app.selected.clone() {
                let t = tokio::spawn(log_feed(
                    client.clone(),
                    name.clone(),
                    app.log_feed,
                    tx.clone(),
                ));
                log_task = Some((name, t));
            }
        }
        if let Err(e) = term.draw(|f| draw(f, &app, target)) {
            break Err(Error::Terminal(e.to_string()));
        }
        let Some(msg) = rx.recv().await else {
            break Ok(());
        };
        match msg {
            Msg::Key(Some(k)) => {
                if !on_key(&mut app, k, &client, &tx) {
                    break Ok(());
                }
            }
            Msg::Key(None) => {}
            Msg::Event(e) => app.event(*e),
            Msg::List(l) => app.list(l),
            Msg::Log(feed, line) if feed == app.log_feed => {
                if app.logs.len() == LOG_LINES {
                    app.logs.pop_front();
                }
                app.logs.push_back(line);
            }
            Msg::Log(..) => {}
            Msg::Done(s) | Msg::Failed(s) => app.status = s,
            Msg::Explained(name, lines) => {
                app.status = format!("{name}: any key closes its explanation");
                app.mode = Mode::Explain(name, lines);
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    for f in feeds {
        f.abort();
    }
    if let Some((_, t)) = log_task {
        t.abort();
    }
    // The key reader wakes at least every 100 ms to see `stop`.
    let _ = tokio::task::spawn_blocking(move || keys.join()).await;
    r
}

/// Handles a key; false to quit.
fn on_key(app: &mut App, k: KeyEvent, client: &Client, tx: &mpsc::UnboundedSender<Msg>) -> bool {
    if k.kind == event::KeyEventKind::Release {
        return true;
    }
    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl_c {
        return false;
    }
    match std::mem::replace(&mut app.mode, Mode::Normal) {
        Mode::Explain(..) => app.status.clear(),
        Mode::Confirm(call, name) => {
            if matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                app.status = format!("{} {name} ...", verb(call));
                tokio::spawn(act(client.clone(), call, name, tx.clone()));
            } else {
                app.status = format!("{} {name}: cancelled", verb(call));
            }
        }
        Mode::Normal => match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Down | KeyCode::Char('j') => app.step(1),
            KeyCode::Up | KeyCode::Char('k') => app.step(-1),
            KeyCode::Home | KeyCode::Char('g') => app.step(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => app.step(isize::MAX / 2),
            KeyCode::Char(c @ ('s' | 'x' | 'r')) => {
                if let Some(name) = app.selected.clone() {
                    let call = match c {
                        's' => Lifecycle::Start,
                        'x' => Lifecycle::Stop,
                        _ => Lifecycle::Restart,
                    };
                    app.status = format!("{} {name}? (y/n)", verb(call));
                    app.mode = Mode::Confirm(call, name);
                }
            }
            KeyCode::Char('e') => {
                if let Some(name) = app.selected_instance().map(|i| i.name.clone()) {
                    let reason = app.reasons.get(&name).cloned().unwrap_or_default();
                    app.status = format!("explaining {name} ...");
                    tokio::spawn(explain(client.clone(), name, reason, tx.clone()));
                }
            }
            _ => {}
        },
    }
    true
}

fn verb(call: Lifecycle) -> &'static str {
    match call {
        Lifecycle::Start => "start",
        Lifecycle::Stop => "stop",
        Lifecycle::Restart => "restart",
    }
}

/// Reads the terminal's keys on a thread of its own (crossterm's reads block), until `stop`.
fn read_keys(tx: mpsc::UnboundedSender<Msg>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    let _ = tx.send(Msg::Failed(format!("cannot read the terminal: {e}")));
                    return;
                }
            }
            let msg = match event::read() {
                Ok(TermEvent::Key(k)) => Msg::Key(Some(k)),
                Ok(TermEvent::Resize(..)) => Msg::Key(None),
                Ok(_) => continue,
                Err(e) => Msg::Failed(format!("cannot read the terminal: {e}")),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    })
}

/// Forwards every state change; connects again a second after the stream ends (a re-exec of the
/// daemon, say). A new stream begins with every instance's current state, so nothing is missed.
async fn watch_feed(mut client: Client, tx: mpsc::UnboundedSender<Msg>) {
    loop {
        let r = client
            .watch_events(v1::WatchEventsRequest { names: vec![] })
            .await;
        match r {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(e)) => {
                            if tx.send(Msg::Event(Box::new(e))).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(s) => {
                            let _ = tx.send(Msg::Failed(format!("events: {}", s.message())));
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                let _ = tx.send(Msg::Failed(format!("events: {}", s.message())));
            }
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Asks for every instance's figures once a [`REFRESH`].
async fn list_feed(mut client: Client, tx: mpsc::UnboundedSender<Msg>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let msg = match client
            .list_instances(v1::ListInstancesRequest { names: vec![] })
            .await
        {
            Ok(r) => Msg::List(r.into_inner().instances),
            Err(s) => Msg::Failed(format!("status: {}", s.message())),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Follows `name`'s log: its last lines, then each new one.
async fn log_feed(mut client: Client, name: String, feed: u64, tx: mpsc::UnboundedSender<Msg>) {
    let r = client
        .tail_logs(v1::TailLogsRequest {
            name: name.clone(),
            lines: LOG_LINES as u32,
            follow: true,
        })
        .await;
    let mut stream = match r {
        Ok(s) => s.into_inner(),
        Err(s) => {
            let _ = tx.send(Msg::Failed(format!("logs of {name}: {}", s.message())));
            return;
        }
    };
    loop {
        let line = match stream.message().await {
            Ok(Some(l)) if l.skipped > 0 => format!("... {} lines skipped", l.skipped),
            Ok(Some(l)) => l.rendered,
            Ok(None) => return,
            Err(s) => {
                let _ = tx.send(Msg::Failed(format!("logs of {name}: {}", s.message())));
                return;
            }
        };
        if tx.send(Msg::Log(feed, line)).is_err() {
            return;
        }
    }
}

/// An operator's start, stop or restart; the outcome goes to the status line.
async fn act(mut client: Client, call: Lifecycle, name: String, tx: mpsc::UnboundedSender<Msg>) {
    let r = match call {
        Lifecycle::Start => {
            client
                .start_instance(v1::StartInstanceRequest { name: name.clone() })
                .await
        }
        Lifecycle::Stop => {
            client
                .stop_instance(v1::StopInstanceRequest {
                    name: name.clone(),
                    timeout_ms: 0,
                })
                .await
        }
        Lifecycle::Restart => {
            client
                .restart_instance(v1::RestartInstanceRequest { name: name.clone() })
                .await
        }
    };
    let text = match r {
        Ok(i) => {
            let i = i.into_inner();
            let pid = if i.pid == 0 {
                String::new()
            } else {
                format!(" (pid {})", i.pid)
            };
            format!(
                "{} {name}: {}{pid}",
                verb(call),
                remote::state_name(i.state)
            )
        }
        Err(s) => format!("{} {name} failed: {}", verb(call), s.message()),
    };
    let _ = tx.send(Msg::Done(text));
}

/// The explanation `e` shows. For now the instance's status in detail, with the reason of its
/// last change and its last error; when the daemon has the `Explain` call, this is the one
/// function to change: call `client.explain(v1::ExplainRequest { name })` and turn each
/// `HistoryEntry` into a line (`time kind: text`), then `next` as the last line.
async fn explain(mut client: Client, name: String, reason: String, tx: mpsc::UnboundedSender<Msg>) {
    let msg = match client
        .get_instance(v1::GetInstanceRequest { name: name.clone() })
        .await
    {
        Ok(i) => {
            let mut lines = status_lines(&i.into_inner(), &reason);
            // Then what comes next and its history, newest first (the popup may cut the end),
            // as `openclawctl explain` prints each entry.
            if let Ok(e) = client
                .explain(v1::ExplainRequest { name: name.clone() })
                .await
            {
                let text = remote::explain_text(&e.into_inner(), false);
                let mut all: Vec<&str> = text.lines().collect();
                let next = all.pop().unwrap_or_default();
                lines.push(next.to_string());
                lines.push(String::new());
                lines.extend(all.iter().rev().take(EXPLAIN_LINES).map(|l| l.to_string()));
            }
            Msg::Explained(name, lines)
        }
        Err(s) => Msg::Failed(format!("explain {name}: {}", s.message())),
    };
    let _ = tx.send(msg);
}

/// How many entries of an instance's history (`Explain`) `e` shows below its status and what
/// comes next, newest first.
const EXPLAIN_LINES: usize = 16;

/// An instance's status, a line a field, as `e` shows it.
fn status_lines(i: &v1::Instance, reason: &str) -> Vec<String> {
    let now_ms = now_ms();
    let mut out = vec![
        format!("state:      {}", remote::state_name(i.state)),
        format!(
            "reason:     {}",
            if reason.is_empty() { "-" } else { reason }
        ),
        format!(
            "pid:        {}",
            if i.pid == 0 {
                "-".into()
            } else {
                i.pid.to_string()
            }
        ),
        format!("uptime:     {}", remote::uptime(i, now_ms)),
        format!("restarts:   {}", remote::restarts_cell(i)),
        format!("port:       {}", i.port),
        format!(
            "want:       {}",
            if i.want_running { "running" } else { "stopped" }
        ),
        format!(
            "last exit:  {}",
            i.last_exit.as_ref().map_or("-", |e| e.text.as_str())
        ),
        format!(
            "last error: {}",
            if i.last_error.is_empty() {
                "-"
            } else {
                &i.last_error
            }
        ),
    ];
    if i.next_start_in_ms != 0 {
        out.push(format!(
            "next start: in {}",
            humantime::format_duration(Duration::from_millis(i.next_start_in_ms))
        ));
    }
    if let Some(h) = &i.holder {
        out.push(format!(
            "blocked by: pid {} ({}), which {}",
            h.pid, h.command, h.what
        ));
    }
    if !i.openclaw_version.is_empty() || !i.runtime.is_empty() {
        let on = if i.runtime.is_empty() {
            "PATH"
        } else {
            &i.runtime
        };
        out.push(format!(
            "openclaw:   {} on node {} ({on})",
            if i.openclaw_version.is_empty() {
                "-"
            } else {
                &i.openclaw_version
            },
            if i.node_version.is_empty() {
                "-"
            } else {
                &i.node_version
            },
        ));
    }
    out.push(format!("profile:    {}", i.profile_file));
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn state_style(state: i32) -> Style {
    use v1::InstanceState as S;
    let colour = match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Running => Color::Green,
        S::Starting | S::Stopping => Color::Yellow,
        S::Unhealthy | S::Backoff => Color::Magenta,
        S::Fatal | S::Blocked => Color::Red,
        S::Stopped | S::Exited | S::Unspecified => Color::DarkGray,
    };
    Style::default().fg(colour).add_modifier(Modifier::BOLD)
}

fn draw(f: &mut ratatui::Frame, app: &App, target: &Target) {
    let rows = app.instances.len() as u16 + 3;
    let [head, table, logs, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Max(rows),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                "openclawctl top",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "  {target}  {} instances   ↑↓/jk select  s start  x stop  r restart  e explain  q quit",
                app.instances.len()
            )),
        ])),
        head,
    );
    draw_table(f, app, table);
    let title = app
        .selected
        .as_deref()
        .map_or(" log ".to_string(), |n| format!(" log of {n} "));
    let height = logs.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .logs
        .iter()
        .skip(app.logs.len().saturating_sub(height))
        .map(|l| Line::raw(l.as_str()))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        logs,
    );
    let status_style = if matches!(app.mode, Mode::Confirm(..)) {
        Style::default().fg(Color::Black).bg(Color::Yellow)
    } else {
        Style::default()
    };
    f.render_widget(
        Paragraph::new(app.status.as_str()).style(status_style),
        status,
    );
    if let Mode::Explain(name, lines) = &app.mode {
        let area = centred(f.area(), 90, lines.len() as u16 + 2);
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(
                lines
                    .iter()
                    .map(|l| Line::raw(l.as_str()))
                    .collect::<Vec<_>>(),
            )
            .wrap(Wrap { trim: false })
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" explain {name} (any key closes) ")),
            ),
            area,
        );
    }
}

fn draw_table(f: &mut ratatui::Frame, app: &App, area: Rect) {
    let now_ms = now_ms();
    let header = Row::new(
        [
            "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU", "RSS", "PORT", "OPENCLAW",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let rows = app.instances.iter().map(|i| {
        Row::new(vec![
            Cell::from(i.name.clone()),
            Cell::from(remote::state_name(i.state)).style(state_style(i.state)),
            Cell::from(if i.pid == 0 {
                "-".into()
            } else {
                i.pid.to_string()
            }),
            Cell::from(remote::uptime(i, now_ms)),
            Cell::from(remote::restarts_cell(i)),
            Cell::from(remote::tenths(
                (f64::from(i.cpu_percent.max(0.0)) * 10.0).round() as u64,
                '%',
            )),
            Cell::from(remote::mib(i.rss_bytes)),
            Cell::from(i.port.to_string()),
            Cell::from(remote::openclaw_cell(i)),
        ])
    });
    // The names as wide as the longest; what is left goes to the last column.
    let name_width = app
        .instances
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4) as u16;
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_width),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(22),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Min(8),
        ],
    )
    .header(header)
    .block(Block::default().borders(Borders::ALL).title(" instances "))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(app.index());
    f.render_stateful_widget(table, area, &mut state);
}

/// A rectangle `width` percent of `area` wide and `height` rows high, in its middle.
fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let w = area.width * width / 100;
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, state: v1::InstanceState, pid: u32) -> v1::Instance {
        v1::Instance {
            name: name.into(),
            state: state as i32,
            pid,
            ..Default::default()
        }
    }

    fn app() -> App {
        App::new(String::new())
    }

    #[test]
    fn an_event_keeps_the_figures_of_the_last_list_and_the_selection() {
        let mut a = app();
        let mut main = instance("main", v1::InstanceState::Running, 10);
        main.rss_bytes = 5 << 20;
        a.list(vec![
            instance("rescue", v1::InstanceState::Running, 11),
            main,
        ]);
        assert_eq!(a.selected.as_deref(), Some("main"));
        a.step(1);
        assert_eq!(a.selected.as_deref(), Some("rescue"));
        a.step(5);
        assert_eq!(a.selected.as_deref(), Some("rescue"));
        a.event(v1::Event {
            instance: Some(instance("main", v1::InstanceState::Starting, 12)),
            reason: "operator restart (socket)".into(),
            ..Default::default()
        });
        assert_eq!(a.instances[0].pid, 12);
        assert_eq!(a.instances[0].rss_bytes, 5 << 20);
        assert_eq!(a.reasons["main"], "operator restart (socket)");
        assert_eq!(a.selected.as_deref(), Some("rescue"));
    }

    #[test]
    fn a_removed_selected_instance_moves_the_selection() {
        let mut a = app();
        a.list(vec![
            instance("a", v1::InstanceState::Running, 1),
            instance("b", v1::InstanceState::Running, 2),
        ]);
        a.event(v1::Event {
            instance: Some(instance("a", v1::InstanceState::Stopped, 0)),
            removed: true,
            ..Default::default()
        });
        assert_eq!(a.instances.len(), 1);
        assert_eq!(a.selected.as_deref(), Some("b"));
    }
}
