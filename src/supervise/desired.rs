//! The operator's wishes that outlive the daemon: which instances were started or stopped with
//! `openclawctl`, kept in `STATE_DIR/desired-state.json` so that a daemon restart (an upgrade, a
//! host reboot) does not bring back an instance an operator had stopped, nor leave stopped one
//! whose profile says `autostart: false` but that an operator had started.
//!
//! The file is written whole, atomically (a temp file in the same directory, fsync, rename, fsync
//! of the directory), after every operator start, stop or restart. The temp file is always a new
//! file (0600, `O_EXCL|O_NOFOLLOW`, whatever sat at its name unlinked first) and the file is read
//! with `O_NOFOLLOW`: a link planted at either name is never followed. It is read leniently: a file
//! that cannot be read or parsed, or an entry with an unknown value, is reported and ignored; the
//! daemon then starts as the profiles' `autostart` say.
//!
//! The writing happens on a thread of its own, never on the runtime and never under the map's lock:
//! a change bumps a generation and leaves a snapshot of the whole map for the writer, replacing any
//! snapshot it had not taken yet (only the newest matters, as it holds every earlier change). So a
//! disk that hangs stalls only that thread.
//!
//! `record` (and `retain`) wait for the file, as an operator's `stop` used to reply only once the
//! file was written, but at most [`RECORD_WAIT`]: an operator's command must not hang because the
//! state dir's disk does. Past that, or if the write failed, the wish still holds for this daemon's
//! life, the daemon logs that it is not on disk yet, and the writer keeps trying (a failed write is
//! tried again, less and less often, until it succeeds or a newer snapshot replaces it). A graceful
//! shutdown waits, also bounded, for the last wish to be written ([`DesiredState::flush`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The file's name in the daemon's state dir.
pub const FILE_NAME: &str = "desired-state.json";

/// The mode of a state dir the daemon creates.
pub const DIR_MODE: u32 = 0o700;

/// The format's version; a file of another version is reported and ignored.
const VERSION: u32 = 1;

/// How long `record` and `retain` wait for the file before they return anyway. Long enough for a
/// loaded disk's fsync, short enough that an operator's `stop` answers when the disk hangs.
pub const RECORD_WAIT: Duration = Duration::from_secs(2);

/// A failed write is tried again after this, doubling up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What an operator last asked of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// Started or restarted: run it, whatever `autostart` says.
    Running,
    /// Stopped: leave it stopped.
    Stopped,
}

impl Want {
    fn as_str(self) -> &'static str {
        match self {
            Want::Running => "running",
            Want::Stopped => "stopped",
        }
    }
}

/// The runtime an operator's upgrade chose for an instance, over its profile's `runtime`, until
/// written into the profile (`crate::runtime`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeWish {
    /// The runtime it runs on.
    pub runtime: crate::runtime::Spec,
    /// While the upgrade that chose it is still soaking: what it rolls back to if the soak fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
}

/// An upgrade's soak under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Soak {
    /// When it ends, in ms since the Unix epoch: the instance must have stayed healthy until then.
    pub until_unix_ms: u64,
    /// The runtime it ran before (None: the profile's, or the PATH's `openclaw` without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<crate::runtime::Spec>,
}

/// The file: read with `M` and `R` maps of raw values, so a bad one costs only itself; written
/// with references to the wishes.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize, R: Serialize + Empty"))]
struct FileFormat<M, R> {
    version: u32,
    /// Instance name to its wish.
    instances: M,
    /// Instance name to the runtime an upgrade chose (absent in files of older daemons, and left
    /// out when empty: such a file is what an older daemon wrote).
    #[serde(default, skip_serializing_if = "Empty::empty")]
    runtimes: R,
}

/// Whether a map of the file has nothing in it.
trait Empty {
    fn empty(&self) -> bool;
}

impl<K, V> Empty for BTreeMap<K, V> {
    fn empty(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Empty> Empty for &T {
    fn empty(&self) -> bool {
        (**self).empty()
    }
}

/// The wishes, in memory and on disk. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct DesiredState {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Shared with the writer thread, which waits on the condvar for a snapshot.
    book: Arc<(Mutex<Book>, Condvar)>,
    /// What the writer did last; its sender lives on the writer thread.
    progress: watch::Receiver<Progress>,
}

/// The map and what the writer has yet to take. Held only to change or copy the map, never while
/// the file is written.
struct Book {
    wants: BTreeMap<String, Want>,
    runtimes: BTreeMap<String, RuntimeWish>,
    /// Bumped by every change of `wants`.
    generation: u64,
    /// The newest snapshot the writer has not taken.
    pending: Option<Snapshot>,
    /// Set when the last `DesiredState` is gone: the writer writes what is pending and ends.
    closed: bool,
}

type Snapshot = (u64, Wishes);

/// Everything the file holds.
#[derive(Debug, Clone, Default)]
struct Wishes {
    wants: BTreeMap<String, Want>,
    runtimes: BTreeMap<String, RuntimeWish>,
}

/// The writer's last outcomes, by generation.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The newest generation on disk.
    written: u64,
    /// The newest generation whose write failed (it is being tried again).
    failed: u64,
}

/// How a wait for the file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saved {
    Yes,
    Failed,
    NotYet,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (book, wake) = &*self.book;
        book.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        wake.notify_one();
    }
}

impl DesiredState {
    /// Reads `dir/desired-state.json` and starts the thread that writes it. A missing file is an
    /// empty set of wishes; anything wrong with the file comes back as warnings (with the file,
    /// line and field), never as an error.
    pub fn load(dir: &Path) -> (DesiredState, Vec<String>) {
        let path = dir.join(FILE_NAME);
        let (wishes, mut warnings) = match read_nofollow(&path) {
            Ok(text) => parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Wishes::default(), Vec::new()),
            Err(e) => (
                Wishes::default(),
                vec![format!(
                    "{}: cannot read it ({e}); ignored: instances start as their profiles' autostart say",
                    path.display()
                )],
            ),
        };
        let book = Arc::new((
            Mutex::new(Book {
                wants: wishes.wants,
                runtimes: wishes.runtimes,
                generation: 0,
                pending: None,
                closed: false,
            }),
            Condvar::new(),
        ));
        let (progress_tx, progress) = watch::channel(Progress::default());
        let writer = {
            let (path, book) = (path.clone(), book.clone());
            std::thread::Builder::new()
                .name("desired-state".into())
                .spawn(move || write_loop(&path, &book, &progress_tx))
        };
        if let Err(e) = writer {
            warnings.push(format!(
                "{}: cannot start the thread that writes it ({e}): operators' starts and stops hold only until the daemon stops",
                path.display()
            ));
        }
        let state = DesiredState {
            inner: Arc::new(Inner {
                path,
                book,
                progress,
            }),
        };
        (state, warnings)
    }

    /// What an operator last asked of `name`, if anything.
    pub fn get(&self, name: &str) -> Option<Want> {
        self.lock().wants.get(name).copied()
    }

    /// Whether `name` should run when the daemon (re)starts it: the operator's last wish, else
    /// the profile's `autostart`.
    pub fn should_run(&self, name: &str, autostart: bool) -> bool {
        match self.get(name) {
            Some(w) => w == Want::Running,
            None => autostart,
        }
    }

    /// Records an operator's wish and waits, at most [`RECORD_WAIT`], for the file to hold it.
    /// A wish not on disk by then (or whose write failed) is logged and still holds for this
    /// daemon's life; the writer keeps trying.
    pub async fn record(&self, name: &str, want: Want) {
        let generation = {
            let mut book = self.lock();
            if book.wants.insert(name.to_string(), want) != Some(want) {
                self.changed(&mut book)
            } else {
                // Unchanged, but perhaps not on disk yet: the same wait tells.
                book.generation
            }
        };
        match self.wait(generation, RECORD_WAIT).await {
            Saved::Yes => {}
            Saved::Failed => tracing::warn!(
                instance = name,
                file = %self.inner.path.display(),
                "{name} is {} as asked, but that is not saved (the error is above); still trying: a daemon restart before it is saved starts {name} as its profile's autostart says",
                want.as_str()
            ),
            Saved::NotYet => tracing::warn!(
                instance = name,
                file = %self.inner.path.display(),
                "{name} is {} as asked, but that is not on disk after {RECORD_WAIT:?} (the disk is slow or hangs); still writing it: a daemon restart before then starts {name} as its profile's autostart says",
                want.as_str()
            ),
        }
    }

    /// The runtime an upgrade chose for `name`, if any (and its soak, while under way).
    pub fn runtime(&self, name: &str) -> Option<RuntimeWish> {
        self.lock().runtimes.get(name).cloned()
    }

    /// Every instance's runtime wish.
    pub fn runtimes(&self) -> BTreeMap<String, RuntimeWish> {
        self.lock().runtimes.clone()
    }

    /// Records (or, with None, forgets) the runtime an upgrade chose for `name`, and waits for the
    /// file as `record` does. Returns whether it is on disk.
    pub async fn set_runtime(&self, name: &str, wish: Option<RuntimeWish>) -> bool {
        let generation = {
            let mut book = self.lock();
            let before = match &wish {
                Some(w) => book.runtimes.insert(name.to_string(), w.clone()),
                None => book.runtimes.remove(name),
            };
            if before != wish {
                self.changed(&mut book)
            } else {
                book.generation
            }
        };
        let saved = self.wait(generation, RECORD_WAIT).await;
        if saved != Saved::Yes {
            tracing::warn!(
                instance = name,
                file = %self.inner.path.display(),
                "{name}'s runtime choice is not on disk yet; still trying: a daemon restart before it is saved runs {name} on its profile's runtime"
            );
        }
        saved == Saved::Yes
    }

    /// Forgets every instance not in `names` (removed by a reload or gone from the profiles), and
    /// waits for the file as `record` does.
    pub async fn retain(&self, names: &[&str]) {
        let generation = {
            let mut book = self.lock();
            let before = (book.wants.len(), book.runtimes.len());
            book.wants.retain(|n, _| names.contains(&n.as_str()));
            book.runtimes.retain(|n, _| names.contains(&n.as_str()));
            if (book.wants.len(), book.runtimes.len()) != before {
                self.changed(&mut book)
            } else {
                book.generation
            }
        };
        if self.wait(generation, RECORD_WAIT).await != Saved::Yes {
            tracing::warn!(
                file = %self.inner.path.display(),
                "the wishes of removed instances are forgotten, but not on disk yet; still trying"
            );
        }
    }

    /// Waits, at most `bound`, for the newest wishes to be on disk (at shutdown); says so if they
    /// are not.
    pub async fn flush(&self, bound: Duration) {
        let generation = self.lock().generation;
        if self.wait(generation, bound).await != Saved::Yes {
            tracing::error!(
                file = %self.inner.path.display(),
                "the operators' latest starts and stops are not on disk after {bound:?}: the next daemon may start instances as their profiles' autostart say"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.inner.book.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the writer a snapshot of the changed map; returns its generation.
    fn changed(&self, book: &mut Book) -> u64 {
        book.generation += 1;
        book.pending = Some((
            book.generation,
            Wishes {
                wants: book.wants.clone(),
                runtimes: book.runtimes.clone(),
            },
        ));
        self.inner.book.1.notify_one();
        book.generation
    }

    /// Waits until `generation` (or a later one) is written or has failed, at most `bound`.
    async fn wait(&self, generation: u64, bound: Duration) -> Saved {
        let mut progress = self.inner.progress.clone();
        let done = async {
            progress
                .wait_for(|p| p.written >= generation || p.failed >= generation)
                .await
                .map(|p| *p)
        };
        match tokio::time::timeout(bound, done).await {
            Ok(Ok(p)) if p.written >= generation => Saved::Yes,
            Ok(Ok(_)) => Saved::Failed,
            // The writer thread is gone (it could not start).
            Ok(Err(_)) => Saved::Failed,
            Err(_) => Saved::NotYet,
        }
    }
}

/// The writer thread: waits for a snapshot, writes it, publishes the outcome; tries a failed one
/// again, later and later, unless a newer one comes. It sleeps while there is nothing to write.
fn write_loop(path: &Path, book: &(Mutex<Book>, Condvar), progress: &watch::Sender<Progress>) {
    let (lock, wake) = book;
    let mut retry: Option<Snapshot> = None;
    let mut delay = RETRY_FIRST;
    let mut failing = false;
    loop {
        let job = {
            let mut b = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(s) = b.pending.take() {
                    break Some(s);
                }
                if b.closed {
                    break None;
                }
                if retry.is_some() {
                    let (guard, waited) = wake
                        .wait_timeout(b, delay)
                        .unwrap_or_else(|e| e.into_inner());
                    b = guard;
                    if waited.timed_out() && b.pending.is_none() {
                        break retry.take();
                    }
                } else {
                    b = wake.wait(b).unwrap_or_else(|e| e.into_inner());
                }
            }
        };
        let Some((generation, wants)) = job else {
            return;
        };
        let started = Instant::now();
        match write_atomically(path, &wants) {
            Ok(()) => {
                progress.send_modify(|p| p.written = generation);
                let took = started.elapsed();
                if failing || took > RECORD_WAIT {
                    tracing::info!(
                        file = %path.display(),
                        "the instances' desired state is saved (the write took {took:?})"
                    );
                }
                failing = false;
                retry = None;
                delay = RETRY_FIRST;
            }
            Err(e) => {
                progress.send_modify(|p| p.failed = generation);
                if !failing {
                    tracing::error!(
                        file = %path.display(),
                        "cannot save the instances' desired state ({e}): trying again; a daemon restart before it is saved starts them as their profiles' autostart say"
                    );
                } else {
                    tracing::debug!(file = %path.display(), "still cannot save the desired state: {e}");
                }
                delay = if failing {
                    (delay * 2).min(RETRY_MAX)
                } else {
                    RETRY_FIRST
                };
                failing = true;
                retry = Some((generation, wants));
            }
        }
    }
}

fn parse(path: &Path, text: &str) -> (Wishes, Vec<String>) {
    let ignored = "ignored: instances start as their profiles' autostart say";
    type Raw = BTreeMap<String, serde_json::Value>;
    let file: FileFormat<Raw, Raw> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return (
                Wishes::default(),
                vec![format!(
                    "{}:{}: cannot parse it ({e}); {ignored}",
                    path.display(),
                    e.line()
                )],
            )
        }
    };
    if file.version != VERSION {
        return (
            Wishes::default(),
            vec![format!(
                "{}: version {} is not the version this daemon writes ({VERSION}); {ignored}",
                path.display(),
                file.version
            )],
        );
    }
    let mut wants = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, value) in file.instances {
        match serde_json::from_value::<Want>(value.clone()) {
            Ok(w) => {
                wants.insert(name, w);
            }
            Err(_) => warnings.push(format!(
                "{}: instances.{name}: {value} is neither \"running\" nor \"stopped\"; ignored: {name} starts as its profile's autostart says",
                path.display()
            )),
        }
    }
    let mut runtimes = BTreeMap::new();
    for (name, value) in file.runtimes {
        let wish = serde_json::from_value::<RuntimeWish>(value.clone())
            .map_err(|e| e.to_string())
            .and_then(|w| {
                crate::runtime::Spec::parse(&w.runtime.to_string())?;
                Ok(w)
            });
        match wish {
            Ok(w) => {
                runtimes.insert(name, w);
            }
            Err(e) => warnings.push(format!(
                "{}: runtimes.{name}: {value} is not a runtime choice ({e}); ignored: {name} runs on its profile's runtime",
                path.display()
            )),
        }
    }
    (Wishes { wants, runtimes }, warnings)
}

/// The file, read without following a link at its name (nor opening anything but a regular file).
fn read_nofollow(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    crate::fsx::open_read_nofollow(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Writes the file so that a crash at any point leaves either the old file or the new one.
fn write_atomically(path: &Path, wishes: &Wishes) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::fsx::create_dir(dir, DIR_MODE)?;
    let file = FileFormat {
        version: VERSION,
        instances: &wishes.wants,
        runtimes: &wishes.runtimes,
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    {
        // Always a new file of ours: whatever sits at the temp name (a planted link) is unlinked,
        // never followed, and the file is created O_EXCL|O_NOFOLLOW.
        let mut f = crate::fsx::create_new(&tmp, 0o600)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_survives_a_reload_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (state, warnings) = DesiredState::load(dir.path());
        assert!(warnings.is_empty());
        assert!(state.should_run("main", true));
        state.record("main", Want::Stopped).await;
        state.record("rescue", Want::Running).await;

        let (again, warnings) = DesiredState::load(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!again.should_run("main", true));
        assert!(again.should_run("rescue", false));
        assert!(again.should_run("other", true));
        assert!(!again.should_run("other", false));
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);

        again.retain(&["rescue"]).await;
        let (third, _) = DesiredState::load(dir.path());
        assert_eq!(third.get("main"), None);
        assert_eq!(third.get("rescue"), Some(Want::Running));
    }

    #[tokio::test]
    async fn a_failed_write_is_tried_again_until_it_succeeds() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        // A file where the state dir should be: every write fails until it goes.
        std::fs::write(&dir, "in the way").unwrap();
        let (state, _) = DesiredState::load(&dir);
        state.record("main", Want::Stopped).await;
        assert_eq!(state.get("main"), Some(Want::Stopped));
        // A failed write is reported as such, not waited for until the bound.
        let generation = state.lock().generation;
        assert_eq!(
            state.wait(generation, Duration::from_secs(3600)).await,
            Saved::Failed
        );

        std::fs::remove_file(&dir).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while DesiredState::load(&dir).0.get("main").is_none() {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        state.flush(RECORD_WAIT).await;
        assert_eq!(DesiredState::load(&dir).0.get("main"), Some(Want::Stopped));
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_line_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            "{\n  \"version\": 1,\n  \"instances\": {\"main\": \"stop",
        )
        .unwrap();
        let (state, warnings) = DesiredState::load(dir.path());
        assert_eq!(state.get("main"), None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!("{}:3: cannot parse it", path.display())),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_bad_entry_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version": 1, "instances": {"main": "paused", "rescue": "stopped"}}"#,
        )
        .unwrap();
        let (state, warnings) = DesiredState::load(dir.path());
        assert_eq!(state.get("main"), None);
        assert_eq!(state.get("rescue"), Some(Want::Stopped));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("instances.main: \"paused\" is neither"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn another_version_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version": 2, "instances": {"main": "stopped"}}"#,
        )
        .unwrap();
        let (state, warnings) = DesiredState::load(dir.path());
        assert_eq!(state.get("main"), None);
        assert!(warnings[0].contains("version 2"), "{}", warnings[0]);
    }
}
