//! Each instance's log: the child's stdout and stderr, line by line, timestamped and tagged by stream,
//! into `LOG_DIR/NAME.log` (rotated by size, a number of old files kept), plus a bounded in-memory
//! tail for the API.
//!
//! The pipe readers never wait for the disk: they hand lines to the writer through a bounded channel
//! and, when it is full, count what they could not hand over and later write a marker line saying how
//! many lines were dropped. So a child that writes faster than the disk is never blocked by the
//! daemon, and no line is lost without a trace.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};

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
/// Lines waiting for the disk before readers start dropping.
const QUEUE: usize = 8192;

/// An instance's log: where readers send lines, and the tail and live feed the API reads.
#[derive(Clone)]
pub struct InstanceLog {
    tx: mpsc::Sender<LogLine>,
    tail: Arc<Mutex<VecDeque<LogLine>>>,
    /// Made on the first `subscribe`: most instances are never followed, and a feed costs memory.
    live: Live,
}

type Live = Arc<Mutex<Option<broadcast::Sender<LogLine>>>>;

impl InstanceLog {
    /// Opens (creating) `dir/NAME.log` and starts its writer task.
    pub fn open(cfg: &LogConfig, name: &str) -> std::io::Result<InstanceLog> {
        std::fs::create_dir_all(&cfg.dir)?;
        let path = cfg.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = mpsc::channel(QUEUE);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let live: Live = Arc::new(Mutex::new(None));
        let writer = Writer {
            path,
            file,
            buf: Vec::new(),
            size,
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            tail: tail.clone(),
            tail_lines: cfg.tail_lines,
            live: live.clone(),
        };
        tokio::spawn(writer.run(rx));
        Ok(InstanceLog { tx, tail, live })
    }

    /// Writes a line of the supervisor's own about this instance.
    pub async fn note(&self, text: impl Into<String>) {
        let _ = self
            .tx
            .send(LogLine {
                time: SystemTime::now(),
                stream: Stream::Supervisor,
                text: text.into(),
            })
            .await;
    }

    /// Starts reading a child's pipe until it closes.
    pub fn capture(&self, fd: OwnedFd, stream: Stream) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("cannot read the child's {}: {e}", stream.tag());
                    return;
                }
            };
            read_lines(pipe, stream, tx).await;
        });
    }

    /// The last `n` lines (all kept if `n` is 0) and the feed of the lines after them: no line
    /// missed between the two, none twice.
    pub fn tail_and_follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let feed = self
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
}

async fn read_lines(
    pipe: tokio::net::unix::pipe::Receiver,
    stream: Stream,
    tx: mpsc::Sender<LogLine>,
) {
    let mut reader = BufReader::with_capacity(1024, pipe);
    let mut buf = Vec::new();
    let mut dropped: u64 = 0;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .unwrap_or_default();
        if n == 0 {
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = LogLine {
            time: SystemTime::now(),
            stream,
            text: String::from_utf8_lossy(&buf).into_owned(),
        };
        if dropped > 0 {
            match tx.try_send(dropped_marker(stream, dropped)) {
                Ok(()) => dropped = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        match tx.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
    if dropped > 0 {
        let _ = tx.send(dropped_marker(stream, dropped)).await;
    }
}

fn dropped_marker(stream: Stream, n: u64) -> LogLine {
    LogLine {
        time: SystemTime::now(),
        stream: Stream::Supervisor,
        text: format!(
            "dropped {n} line{} of {}: the child wrote faster than the log could be written",
            if n == 1 { "" } else { "s" },
            stream.tag()
        ),
    }
}

struct Writer {
    path: PathBuf,
    file: std::fs::File,
    /// The rendered lines of one batch, written with one system call.
    buf: Vec<u8>,
    size: u64,
    max_bytes: u64,
    keep: usize,
    tail: Arc<Mutex<VecDeque<LogLine>>>,
    tail_lines: usize,
    live: Live,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<LogLine>) {
        // The file writes are small and buffered; they run on this task, and the readers never wait
        // for them (see `read_lines`). The batch is made anew each time, so an idle instance holds
        // none.
        loop {
            let mut batch = Vec::new();
            if rx.recv_many(&mut batch, 256).await == 0 {
                break;
            }
            for line in batch {
                self.write(line);
            }
            self.flush();
        }
        self.flush();
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.write_all(&self.buf) {
            tracing::warn!(file = %self.path.display(), "cannot write the log: {e}");
        }
        self.buf.clear();
        // An idle instance keeps no buffer around.
        self.buf.shrink_to(0);
    }

    fn write(&mut self, line: LogLine) {
        let text = line.render();
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(b'\n');
        self.size += text.len() as u64 + 1;
        if self.size >= self.max_bytes {
            self.rotate();
        }
        // Under the tail's lock, so that `tail_and_follow` sees each line exactly once: in the tail
        // it copies or on the feed it joins.
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = self.live.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = live.send(line.clone());
        }
        if tail.len() == self.tail_lines {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    fn rotate(&mut self) {
        self.flush();
        let numbered = |i: usize| -> PathBuf {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            p.into()
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(i), numbered(i + 1));
            }
            let _ = std::fs::rename(&self.path, numbered(1));
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.file = f;
                self.size = 0;
            }
            Err(e) => tracing::warn!(file = %self.path.display(), "cannot reopen the log: {e}"),
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_that_cannot_hand_lines_over_counts_them_and_says_so() {
        let (rd, wr) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut wr = wr;
            for i in 0..100 {
                writeln!(wr, "line {i}").unwrap();
            }
        });
        writer.join().unwrap();
        // A queue of 4 that nobody drains while the pipe is read: the writer is "slower than the disk".
        let (tx, mut rx) = mpsc::channel(4);
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(rd)).unwrap();
        let reader = tokio::spawn(read_lines(pipe, Stream::Stdout, tx));
        // The reader never waits for the queue: it finishes with the queue still full ...
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(rx.recv().await.unwrap().text);
        }
        reader.await.unwrap();
        while let Some(l) = rx.recv().await {
            got.push(l.text);
        }
        // ... and the lines it could not queue are counted in a marker, never silently lost.
        let kept: Vec<&String> = got.iter().filter(|t| t.starts_with("line ")).collect();
        let dropped: u64 = got
            .iter()
            .filter_map(|t| t.strip_prefix("dropped "))
            .map(|t| t.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(dropped > 0, "{got:?}");
        assert_eq!(kept.len() as u64 + dropped, 100, "{got:?}");
        assert_eq!(kept[0], "line 0");
    }
}
