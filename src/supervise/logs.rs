//! Each instance's log: the child's stdout and stderr, line by line, timestamped and tagged by stream,
//! into `LOG_DIR/NAME.log` (rotated by size, a number of old files kept), plus a bounded in-memory
//! tail and a live feed for the API.
//!
//! Two sides. On the runtime, a line goes at once into the tail and the feed, so `openclawctl logs`
//! answers whatever the disk does. The disk side, writing and rotating every instance's file, is
//! one thread for all instances (`Disk`), fed by a bounded channel and asleep while there is
//! nothing to write: a slow or hung disk stalls only that thread, never the runtime (probes, the
//! API, the watchdog). Nothing on the runtime waits for that channel either: when it is full, the
//! line is counted against its file, and once the queue drains a marker line saying how many lines
//! were dropped is written in their place. So a child that writes faster than the disk is never
//! blocked by the daemon, and no line is lost without a trace.
//!
//! The file is opened as the daemon means it (`fsx::open_append`): created 0640, never through a
//! symlink planted at its name, never anything but a regular file. A file that cannot be opened or
//! written (a planted link, a full disk) costs the instance nothing: it keeps running, its lines
//! stay in the tail, the daemon says so once (its log and the tail), and when the file takes lines
//! again it first ends a torn line, then writes one line saying how many lines and bytes are
//! missing and why. Rotation renames and unlinks names in the log dir, which never follows a link;
//! the log dir itself is the daemon's and no one else's (`fsx::check_dir`, at the daemon's start).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The child's stdout.
    Stdout,
    /// The child's stderr.
    Stderr,
    /// The supervisor itself (starts, exits, dropped-line markers).
    Supervisor,
}

impl Stream {
    /// The tag written in the log file.
    pub fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Supervisor => "supervisor",
        }
    }
}

/// One line of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the daemon read it.
    pub time: SystemTime,
    /// From where.
    pub stream: Stream,
    /// The text, without its newline.
    pub text: String,
}

impl LogLine {
    /// The line as written to the log file: `2026-11-25T06:10:00.123Z stdout | text`.
    pub fn render(&self) -> String {
        format!(
            "{} {} | {}",
            humantime::format_rfc3339_millis(self.time),
            self.stream.tag(),
            self.text
        )
    }
}

/// Log settings shared by all instances.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Where `NAME.log` files go.
    pub dir: PathBuf,
    /// Rotate when a file passes this size.
    pub max_bytes: u64,
    /// How many rotated files (`NAME.log.1` ...) to keep.
    pub keep: usize,
    /// Lines kept in memory per instance.
    pub tail_lines: usize,
}

/// The longest line kept whole; longer ones are split.
const MAX_LINE: usize = 64 * 1024;
/// Batches of lines, of all instances, waiting for the disk before lines are dropped (from the
/// files only: the tails have them).
const QUEUE: usize = 4096;
/// The most lines a pipe reader hands over at once: those it has already read when it hands over.
const READ_BATCH: usize = 64;
/// The most batches the disk thread takes before it writes what it took.
const BATCH: usize = 256;

/// The mode of a log file the daemon creates: the daemon's user writes, its group reads.
const FILE_MODE: u32 = 0o640;
/// The mode of a log dir the daemon creates.
pub const DIR_MODE: u32 = 0o750;
/// How often the disk thread tries again to open a file it could not open.
const REOPEN_EVERY: Duration = Duration::from_secs(5);

/// An instance's log: the tail and live feed the API reads, and its file on the disk side.
#[derive(Clone)]
pub struct InstanceLog {
    disk: Disk,
    file: Arc<LogFile>,
    mem: Arc<Memory>,
}

/// The lines kept in memory: the tail and the live feed.
struct Memory {
    tail: Mutex<VecDeque<LogLine>>,
    tail_lines: usize,
    /// Made on the first `subscribe`: most instances are never followed, and a feed costs memory.
    live: Mutex<Option<broadcast::Sender<LogLine>>>,
}

impl InstanceLog {
    /// Opens (creating, 0640) `dir/NAME.log`, written from now on by `disk`. Fails only if the log
    /// dir cannot be made: a file that cannot be opened (a symlink planted at its name, say) is
    /// reported, in the daemon's log and the instance's tail, and the instance's lines are kept in
    /// the tail until the file can be opened (tried again every few seconds, never through a link).
    pub fn open(cfg: &LogConfig, disk: &Disk, name: &str) -> std::io::Result<InstanceLog> {
        crate::fsx::create_dir(&cfg.dir, DIR_MODE)?;
        let path = cfg.dir.join(format!("{name}.log"));
        let mem = Arc::new(Memory {
            tail: Mutex::new(VecDeque::new()),
            tail_lines: cfg.tail_lines,
            live: Mutex::new(None),
        });
        let mut state = FileState {
            path,
            file: None,
            reopen_at: Instant::now(),
            buf: Vec::new(),
            size: 0,
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            loss: None,
        };
        state.reopen(&mem);
        Ok(InstanceLog {
            disk: disk.clone(),
            file: Arc::new(LogFile {
                dropped: AtomicU64::new(0),
                totals: Totals::default(),
                state: Mutex::new(state),
                mem: mem.clone(),
            }),
            mem,
        })
    }

    /// Lines and bytes handed to the disk writer, and lines dropped (the queue full), since the
    /// log was opened.
    pub fn counts(&self) -> LogCounts {
        let t = &self.file.totals;
        LogCounts {
            lines: t.lines.load(Ordering::Relaxed),
            bytes: t.bytes.load(Ordering::Relaxed),
            dropped: t.dropped.load(Ordering::Relaxed),
        }
    }

    /// Writes a line of the supervisor's own about this instance.
    pub fn note(&self, text: impl Into<String>) {
        self.push(LogLine {
            time: SystemTime::now(),
            stream: Stream::Supervisor,
            text: text.into(),
        });
    }

    /// Writes lines a child wrote while no daemon read them (kept in a pipe by the service
    /// manager's fd store: `super::fdstore`), as if captured now.
    pub fn lines(&self, stream: Stream, texts: Vec<String>) {
        if texts.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let rendered = texts
            .into_iter()
            .map(|text| {
                self.remember(LogLine {
                    time: now,
                    stream,
                    text,
                })
            })
            .collect();
        self.disk.write(&self.file, rendered);
    }

    /// Starts reading a child's pipe until it closes, or until the returned [`Capture`] takes the
    /// pipe back (a re-exec). `pending`: bytes already read from the pipe and not yet written as
    /// lines (what a handover carried over), read before the pipe.
    pub fn capture(&self, fd: OwnedFd, stream: Stream, pending: Vec<u8>) -> Capture {
        let log = self.clone();
        // A token, not a channel: dropping the `Capture` (its child ended) does not stop the
        // reading; only `take_back` does.
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("cannot read the child's {}: {e}", stream.tag());
                    return None;
                }
            };
            let mut reader = BufReader::with_capacity(
                1024,
                AsyncReadExt::chain(std::io::Cursor::new(pending), pipe),
            );
            // Taken back: the pipe, and every byte read from it that is not a line yet, in order
            // (the line begun, what the reader buffered after it, what the cursor still holds).
            let mut left = read_lines(&mut reader, stream, &log, stopped).await?;
            left.extend_from_slice(reader.buffer());
            let (cursor, pipe) = reader.into_inner().into_inner();
            let pos = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            left.extend(cursor.get_ref().get(pos..).unwrap_or_default());
            match pipe.into_nonblocking_fd() {
                Ok(fd) => Some((fd, left)),
                Err(e) => {
                    tracing::warn!("cannot take back the child's {}: {e}", stream.tag());
                    None
                }
            }
        });
        Capture { stop, task }
    }

    /// Puts lines a handover carried (the tail of the daemon that ran before) in the tail, before
    /// anything else: not in the file, which has them, nor in the feed.
    pub fn restore_tail(&self, lines: Vec<LogLine>) {
        let mut tail = self.mem.tail.lock().unwrap_or_else(|e| e.into_inner());
        let keep = self.mem.tail_lines.saturating_sub(tail.len());
        let skip = lines.len().saturating_sub(keep);
        for (i, line) in lines.into_iter().skip(skip).enumerate() {
            tail.insert(i, line);
        }
    }

    /// The tail now, oldest first: what a handover carries.
    pub fn tail(&self) -> Vec<LogLine> {
        let tail = self.mem.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect()
    }

    /// The last `n` lines (all kept if `n` is 0) and the feed of the lines after them: no line
    /// missed between the two, none twice.
    pub fn tail_and_follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let tail = self.mem.tail.lock().unwrap_or_else(|e| e.into_inner());
        let feed = self
            .mem
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            // Followers that fall more than this behind skip ahead (and are told how far).
            .get_or_insert_with(|| broadcast::channel(256).0)
            .subscribe();
        let skip = if n == 0 {
            0
        } else {
            tail.len().saturating_sub(n)
        };
        (tail.iter().skip(skip).cloned().collect(), feed)
    }

    /// Puts a line in the tail and the feed at once, and hands it to the disk side without
    /// waiting.
    fn push(&self, line: LogLine) {
        let text = self.remember(line);
        self.disk.write(&self.file, vec![text]);
    }

    /// Puts a line in the tail and the feed; returns it as the file will have it.
    fn remember(&self, line: LogLine) -> String {
        self.mem.remember(line)
    }
}

impl Memory {
    /// Puts a line in the tail and the feed; returns it as the file will have it.
    fn remember(&self, line: LogLine) -> String {
        let text = line.render();
        // Under the tail's lock, so that `tail_and_follow` sees each line exactly once: in the
        // tail it copies or on the feed it joins.
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = self.live.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = live.send(line.clone());
        }
        if tail.len() >= self.tail_lines {
            tail.pop_front();
        }
        tail.push_back(line);
        text
    }

    /// A line of the supervisor's in the tail and the feed only: what the file cannot hold.
    fn note(&self, text: String) {
        self.remember(LogLine {
            time: SystemTime::now(),
            stream: Stream::Supervisor,
            text,
        });
    }
}

/// The reading of one pipe, to be taken back before a re-exec.
#[derive(Debug)]
pub struct Capture {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Option<(OwnedFd, Vec<u8>)>>,
}

impl Capture {
    /// Stops reading, once the lines already read are handed to the disk side: the pipe and the
    /// bytes read that are not a whole line yet. `None` if the pipe had closed (the child's end
    /// is gone) or could not be taken back.
    pub async fn take_back(self) -> Option<(OwnedFd, Vec<u8>)> {
        self.stop.cancel();
        self.task.await.ok().flatten()
    }
}

/// Reads lines until the pipe closes (`None`) or `stop` fires: then the bytes of the line begun
/// (the rest of what was read is in `reader`'s buffer), for [`Capture::take_back`].
async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    stream: Stream,
    log: &InstanceLog,
    stop: tokio_util::sync::CancellationToken,
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut batch = Vec::new();
    let mut stopped = None;
    loop {
        buf.clear();
        let mut limited = (&mut *reader).take(MAX_LINE as u64);
        let n = tokio::select! {
            biased;
            // `read_until` is cancel safe: what it read of a line is in `buf`.
            _ = stop.cancelled() => {
                stopped = Some(std::mem::take(&mut buf));
                break;
            }
            n = limited.read_until(b'\n', &mut buf) => n.unwrap_or_default(),
        };
        if n == 0 {
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        batch.push(log.remember(LogLine {
            time: SystemTime::now(),
            stream,
            text: String::from_utf8_lossy(&buf).into_owned(),
        }));
        // Lines already read go to the disk side together: one hand-over, one wake-up of its
        // thread, for a chatty child's burst.
        if batch.len() < READ_BATCH && reader.buffer().contains(&b'\n') {
            continue;
        }
        log.disk.write(&log.file, std::mem::take(&mut batch));
    }
    if !batch.is_empty() {
        log.disk.write(&log.file, batch);
    }
    stopped
}

fn dropped_marker(n: u64) -> LogLine {
    LogLine {
        time: SystemTime::now(),
        stream: Stream::Supervisor,
        text: format!(
            "dropped {n} line{} here: the log's disk did not keep up (they were in the daemon's in-memory tail)",
            if n == 1 { "" } else { "s" },
        ),
    }
}

/// The disk side of every instance's log: one thread that writes and rotates the files, fed by a
/// bounded channel. Cheap to clone; the thread ends, after writing what it was handed, when the
/// last clone is gone.
#[derive(Clone)]
pub struct Disk {
    tx: mpsc::Sender<Job>,
    /// Files that dropped lines since their last marker, for the thread to mark once it drains.
    owed: Owed,
}

type Owed = Arc<Mutex<Vec<Arc<LogFile>>>>;

enum Job {
    /// Rendered lines, without their newlines, for a file.
    Lines(Arc<LogFile>, Vec<String>),
    /// Files owe markers: a wake-up for the thread, which looks at `owed` after every batch.
    Owed,
    /// Answered once every job before it is written.
    Flush(oneshot::Sender<()>),
}

/// What `InstanceLog::counts` reads.
#[derive(Default)]
struct Totals {
    lines: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

/// An instance log's totals (`InstanceLog::counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Lines handed to the disk writer.
    pub lines: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Lines dropped because the disk writer did not keep up.
    pub dropped: u64,
}

/// One instance's file.
struct LogFile {
    /// Lines that found the queue full since the last marker.
    dropped: AtomicU64,
    /// Totals for the metrics (`InstanceLog::counts`).
    totals: Totals,
    /// Locked by the disk thread alone (a mutex so that the file can travel in jobs).
    state: Mutex<FileState>,
    /// The instance's tail, where the disk thread says what the file could not take.
    mem: Arc<Memory>,
}

struct FileState {
    path: PathBuf,
    /// `None` while it cannot be opened; tried again at `reopen_at`.
    file: Option<std::fs::File>,
    reopen_at: Instant,
    /// The rendered lines taken and not yet written: one write per batch.
    buf: Vec<u8>,
    size: u64,
    max_bytes: u64,
    keep: usize,
    /// What the file is missing since it last took a write, for the line that will say so.
    loss: Option<Loss>,
}

/// Lines that did not reach the file in one episode of failed writes (or of a file that cannot
/// be opened).
#[derive(Debug)]
struct Loss {
    lines: u64,
    bytes: u64,
    /// The first error of the episode.
    why: String,
    /// The file ends in part of a line.
    torn: bool,
}

impl Loss {
    fn marker(&self) -> LogLine {
        LogLine {
            time: SystemTime::now(),
            stream: Stream::Supervisor,
            text: format!(
                "lost {} line{} ({} bytes) here: {} (the daemon's in-memory tail had the latest)",
                self.lines,
                if self.lines == 1 { "" } else { "s" },
                self.bytes,
                self.why
            ),
        }
    }
}

impl Disk {
    /// Starts the disk thread. It sleeps while no line comes.
    pub fn start() -> std::io::Result<Disk> {
        let (disk, rx) = Disk::unstarted(QUEUE);
        let owed = disk.owed.clone();
        std::thread::Builder::new()
            .name("log-disk".into())
            .spawn(move || disk_loop(rx, &owed))?;
        Ok(disk)
    }

    /// The handle and the receiving end that `disk_loop` drains.
    fn unstarted(queue: usize) -> (Disk, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(queue);
        let disk = Disk {
            tx,
            owed: Arc::new(Mutex::new(Vec::new())),
        };
        (disk, rx)
    }

    /// Waits, at most `bound`, until every line handed over so far is written (at shutdown); says
    /// so if they are not.
    pub async fn flush(&self, bound: Duration) {
        let (reply, done) = oneshot::channel();
        let flushed = async {
            self.tx.send(Job::Flush(reply)).await.ok()?;
            done.await.ok()
        };
        if tokio::time::timeout(bound, flushed).await.is_err() {
            tracing::error!(
                "the instances' logs are not all written after {bound:?}: the disk is slow or hangs, and their last lines may be lost"
            );
        }
    }

    /// Hands lines to the thread without waiting; if the queue is full, counts them against
    /// their file.
    fn write(&self, file: &Arc<LogFile>, mut lines: Vec<String>) {
        let owed = file.dropped.swap(0, Ordering::AcqRel);
        if owed > 0 {
            // The marker goes first, where the lines went missing.
            lines.insert(0, dropped_marker(owed).render());
        }
        let n = lines.len() as u64;
        let bytes: usize = lines.iter().map(String::len).sum();
        if self.tx.try_send(Job::Lines(file.clone(), lines)).is_err() {
            // The marker (if any) is not a line of the child's: count only what it counted.
            let lost = n - u64::from(owed > 0);
            file.totals.dropped.fetch_add(lost, Ordering::Relaxed);
            self.count_dropped(file, lost + owed);
        } else {
            file.totals.lines.fetch_add(n, Ordering::Relaxed);
            file.totals.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn count_dropped(&self, file: &Arc<LogFile>, n: u64) {
        if file.dropped.fetch_add(n, Ordering::AcqRel) == 0 {
            self.owed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(file.clone());
            // Wakes the thread if it has just gone to sleep; if the queue is full it is awake.
            let _ = self.tx.try_send(Job::Owed);
        }
    }
}

/// The disk thread: takes up to `BATCH` jobs, writes each touched file once, marks the files that
/// dropped lines, answers flushes; sleeps in `blocking_recv` while there is nothing.
fn disk_loop(mut rx: mpsc::Receiver<Job>, owed: &Mutex<Vec<Arc<LogFile>>>) {
    let mut dirty: Vec<Arc<LogFile>> = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            match job {
                Job::Lines(file, lines) => append(&file, &lines, &mut dirty),
                Job::Owed => {}
                Job::Flush(reply) => flushes.push(reply),
            }
            taken += 1;
            if taken < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let owing = std::mem::take(&mut *owed.lock().unwrap_or_else(|e| e.into_inner()));
        for file in owing {
            let n = file.dropped.swap(0, Ordering::AcqRel);
            if n > 0 {
                append(&file, &[dropped_marker(n).render()], &mut dirty);
            }
        }
        for file in dirty.drain(..) {
            file.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush(&file.mem);
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Adds lines to their file's batch (noting the file as to be written), rotating the file
/// whenever it is full.
fn append(file: &Arc<LogFile>, lines: &[String], dirty: &mut Vec<Arc<LogFile>>) {
    let mut state = file.state.lock().unwrap_or_else(|e| e.into_inner());
    if state.buf.is_empty() {
        dirty.push(file.clone());
    }
    for text in lines {
        state.buf.extend_from_slice(text.as_bytes());
        state.buf.push(b'\n');
        state.size += text.len() as u64 + 1;
        if state.size >= state.max_bytes {
            state.rotate(&file.mem);
        }
    }
}

impl FileState {
    /// Writes the batch. A file that could not be opened is tried again (at most every
    /// `REOPEN_EVERY`); a failed or partial write starts or extends a loss; the first write that
    /// works after a loss ends the torn line and says what is missing first.
    fn flush(&mut self, mem: &Memory) {
        let batch = std::mem::take(&mut self.buf);
        self.write_batch(&batch, mem);
        // An idle instance keeps no buffer around.
        self.buf = Vec::new();
    }

    fn write_batch(&mut self, batch: &[u8], mem: &Memory) {
        if self.file.is_none() && (Instant::now() < self.reopen_at || !self.reopen(mem)) {
            self.lose(batch, 0, None, mem);
            return;
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Some(loss) = self.loss.as_mut() {
            let mut head = Vec::new();
            if loss.torn {
                head.push(b'\n');
            }
            head.extend_from_slice(loss.marker().render().as_bytes());
            head.push(b'\n');
            match write_counting(file, &head) {
                Ok(()) => {
                    self.size += head.len() as u64;
                    tracing::info!(
                        file = %self.path.display(),
                        "the log takes lines again; {} lines ({} bytes) are missing from it, marked there",
                        loss.lines,
                        loss.bytes
                    );
                    mem.note(format!(
                        "{} takes lines again; {} lines ({} bytes) are missing from it: {}",
                        self.path.display(),
                        loss.lines,
                        loss.bytes,
                        loss.why
                    ));
                    self.loss = None;
                }
                Err((written, _)) => {
                    if written > 0 {
                        loss.torn = head[written - 1] != b'\n';
                    }
                    self.lose(batch, 0, None, mem);
                    return;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err((written, e)) = write_counting(file, batch) {
            self.lose(batch, written, Some(format!("writing it failed: {e}")), mem);
        }
    }

    /// Counts what of `batch` past `written` did not reach the file; the first loss of an
    /// episode is said once, in the daemon's log and the instance's tail.
    fn lose(&mut self, batch: &[u8], written: usize, why: Option<String>, mem: &Memory) {
        let rest = &batch[written.min(batch.len())..];
        let lines = rest.iter().filter(|b| **b == b'\n').count() as u64;
        let bytes = rest.len() as u64;
        self.size = self.size.saturating_sub(bytes);
        let torn = written > 0 && batch.get(written - 1) != Some(&b'\n');
        match self.loss.as_mut() {
            Some(loss) => {
                loss.lines += lines;
                loss.bytes += bytes;
                if written > 0 {
                    loss.torn = torn;
                }
            }
            None => {
                let why = why.unwrap_or_else(|| "the log file cannot be written".to_string());
                self.start_loss(why, mem);
                if let Some(loss) = self.loss.as_mut() {
                    loss.lines = lines;
                    loss.bytes = bytes;
                    loss.torn = torn;
                }
            }
        }
    }

    /// The start of an episode: said once.
    fn start_loss(&mut self, why: String, mem: &Memory) {
        tracing::warn!(
            file = %self.path.display(),
            "cannot write the instance's log: {why}; the instance keeps running and its lines stay in the daemon's in-memory tail (openclawctl logs); the file will say how many lines it misses once it takes them again"
        );
        mem.note(format!(
            "cannot write {}: {why}; lines are kept in memory only (openclawctl logs) until it can",
            self.path.display()
        ));
        self.loss = Some(Loss {
            lines: 0,
            bytes: 0,
            why,
            torn: false,
        });
    }

    /// Opens the file (never through a link); on failure starts a loss, unless one is under way,
    /// and tries again after `REOPEN_EVERY`.
    fn reopen(&mut self, mem: &Memory) -> bool {
        match crate::fsx::open_append(&self.path, FILE_MODE) {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
                true
            }
            Err(e) => {
                self.file = None;
                self.reopen_at = Instant::now() + REOPEN_EVERY;
                if self.loss.is_none() {
                    self.start_loss(format!("cannot open it: {e}"), mem);
                }
                false
            }
        }
    }

    fn rotate(&mut self, mem: &Memory) {
        self.flush(mem);
        let numbered = |i: usize| -> PathBuf {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            p.into()
        };
        // Renames and unlinks act on the names themselves: a link planted at a numbered name is
        // replaced or removed, never followed.
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(i), numbered(i + 1));
            }
            let _ = std::fs::rename(&self.path, numbered(1));
        }
        self.file = None;
        self.size = 0;
        self.reopen(mem);
    }
}

/// Writes all of `data`, or says how much of it was written before the error.
fn write_counting(file: &mut std::fs::File, data: &[u8]) -> Result<(), (usize, std::io::Error)> {
    let mut written = 0;
    while written < data.len() {
        match file.write(&data[written..]) {
            Ok(0) => return Err((written, std::io::Error::from(std::io::ErrorKind::WriteZero))),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(dir: &Path) -> LogConfig {
        LogConfig {
            dir: dir.to_path_buf(),
            max_bytes: u64::MAX,
            keep: 1,
            tail_lines: 1000,
        }
    }

    #[tokio::test]
    async fn a_pipe_taken_back_mid_line_carries_the_line_begun_to_the_next_reader() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::start().unwrap();
        let log = InstanceLog::open(&config(dir.path()), &disk, "main").unwrap();
        let (rd, mut wr) = std::io::pipe().unwrap();
        write!(wr, "one\ntwo\nthr").unwrap();
        let capture = log.capture(OwnedFd::from(rd), Stream::Stdout, Vec::new());
        for _ in 0..1000 {
            if log.tail().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (fd, pending) = capture.take_back().await.expect("the pipe back");
        assert_eq!(pending, b"thr");
        // More of the line comes while nobody reads; the next reader starts with what was read.
        write!(wr, "ee\nfour\n").unwrap();
        drop(wr);
        let capture = log.capture(fd, Stream::Stdout, pending);
        // Read to the end: nothing to take back.
        assert!(capture.task.await.unwrap().is_none());
        let texts: Vec<String> = log.tail().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["one", "two", "three", "four"]);
    }

    #[tokio::test]
    async fn lines_the_disk_cannot_take_are_in_the_tail_and_counted_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A queue of one batch that no thread drains yet: the disk "hangs".
        let (disk, rx) = Disk::unstarted(1);
        let log = InstanceLog::open(&config(dir.path()), &disk, "main").unwrap();
        let (rd, wr) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut wr = wr;
            for i in 0..100 {
                writeln!(wr, "line {i}").unwrap();
            }
        });
        writer.join().unwrap();
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(rd)).unwrap();
        // The reader never waits for the disk: it reads to the end of the pipe ...
        let never = tokio_util::sync::CancellationToken::new();
        let left = read_lines(&mut BufReader::new(pipe), Stream::Stdout, &log, never).await;
        assert_eq!(left, None, "read to the end, not stopped");
        // ... and every line is in the tail at once, for `openclawctl logs`.
        let (tail, _) = log.tail_and_follow(0);
        assert_eq!(tail.len(), 100);
        assert_eq!(tail[99].text, "line 99");

        // The disk comes back: what it could not take is counted in a marker, never silently lost.
        let owed = disk.owed.clone();
        let thread = std::thread::spawn(move || disk_loop(rx, &owed));
        disk.flush(Duration::from_secs(60)).await;
        let text = std::fs::read_to_string(dir.path().join("main.log")).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" | ")?.1.strip_prefix("line "))
            .collect();
        let dropped: u64 = text
            .lines()
            .filter_map(|l| l.split_once(" | ")?.1.strip_prefix("dropped "))
            .map(|t| t.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(dropped > 0, "{text}");
        assert_eq!(kept.len() as u64 + dropped, 100, "{text}");
        assert_eq!(kept[0], "0", "{text}");
        // The thread ends once every handle is gone.
        drop((log, disk));
        thread.join().unwrap();
    }

    #[tokio::test]
    async fn a_follower_sees_each_line_once_and_the_file_has_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::start().unwrap();
        let log = InstanceLog::open(&config(dir.path()), &disk, "main").unwrap();
        log.note("before");
        let (tail, mut feed) = log.tail_and_follow(0);
        log.note("after");
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].text, "before");
        assert_eq!(feed.recv().await.unwrap().text, "after");
        disk.flush(Duration::from_secs(60)).await;
        let text = std::fs::read_to_string(dir.path().join("main.log")).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" | "))
            .map(|(_, t)| t)
            .collect();
        assert_eq!(lines, vec!["before", "after"]);
    }

    #[test]
    fn lines_a_full_disk_refused_are_counted_in_one_line_once_it_takes_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Memory {
            tail: Mutex::new(VecDeque::new()),
            tail_lines: 100,
            live: Mutex::new(None),
        };
        let path = dir.path().join("main.log");
        // /dev/full: every write fails with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut state = FileState {
            path: path.clone(),
            file: Some(full),
            reopen_at: Instant::now(),
            buf: b"one\ntwo\n".to_vec(),
            size: 0,
            max_bytes: u64::MAX,
            keep: 1,
            loss: None,
        };
        state.flush(&mem);
        state.buf = b"three\n".to_vec();
        state.flush(&mem);
        let notes: Vec<String> = mem
            .tail
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.text.clone())
            .collect();
        assert_eq!(notes.len(), 1, "said once per episode: {notes:?}");
        assert!(notes[0].contains("No space left on device"), "{notes:?}");

        // The disk takes lines again.
        state.file = Some(crate::fsx::open_append(&path, FILE_MODE).unwrap());
        state.buf = b"four\n".to_vec();
        state.flush(&mem);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(
                "lost 3 lines (14 bytes) here: writing it failed: No space left on device"
            ),
            "{text}"
        );
        assert_eq!(lines[1], "four");
        assert!(state.loss.is_none());
    }
}
