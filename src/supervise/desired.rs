//! The operator's wishes that outlive the daemon: which instances were started or stopped with
//! `openclawctl`, kept in `STATE_DIR/desired-state.json` so that a daemon restart (an upgrade, a
//! host reboot) does not bring back an instance an operator had stopped, nor leave stopped one
//! whose profile says `autostart: false` but that an operator had started.
//!
//! The file is written whole, atomically (a temp file in the same directory, fsync, rename, fsync
//! of the directory), after every operator start, stop or restart. It is read leniently: a file
//! that cannot be read or parsed, or an entry with an unknown value, is reported and ignored; the
//! daemon then starts as the profiles' `autostart` say.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The file's name in the daemon's state dir.
pub const FILE_NAME: &str = "desired-state.json";

/// The format's version; a file of another version is reported and ignored.
const VERSION: u32 = 1;

/// What an operator last asked of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// Started or restarted: run it, whatever `autostart` says.
    Running,
    /// Stopped: leave it stopped.
    Stopped,
}

/// The file: read with `M` a map of raw values, so a bad one costs only itself; written with `M` a
/// reference to the wishes.
#[derive(Serialize, Deserialize)]
struct FileFormat<M> {
    version: u32,
    /// Instance name to its wish.
    instances: M,
}

/// The wishes, in memory and on disk. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct DesiredState {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Held while the map changes and while it is written, so the file always ends with the
    /// latest map.
    wants: Mutex<BTreeMap<String, Want>>,
}

impl DesiredState {
    /// Reads `dir/desired-state.json`. A missing file is an empty set of wishes; anything wrong
    /// with the file comes back as warnings (with the file, line and field), never as an error.
    pub fn load(dir: &Path) -> (DesiredState, Vec<String>) {
        let path = dir.join(FILE_NAME);
        let (wants, warnings) = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), Vec::new()),
            Err(e) => (
                BTreeMap::new(),
                vec![format!(
                    "{}: cannot read it ({e}); ignored: instances start as their profiles' autostart say",
                    path.display()
                )],
            ),
        };
        let state = DesiredState {
            inner: Arc::new(Inner {
                path,
                wants: Mutex::new(wants),
            }),
        };
        (state, warnings)
    }

    /// What an operator last asked of `name`, if anything.
    pub fn get(&self, name: &str) -> Option<Want> {
        self.lock().get(name).copied()
    }

    /// Whether `name` should run when the daemon (re)starts it: the operator's last wish, else
    /// the profile's `autostart`.
    pub fn should_run(&self, name: &str, autostart: bool) -> bool {
        match self.get(name) {
            Some(w) => w == Want::Running,
            None => autostart,
        }
    }

    /// Records an operator's wish and writes the file (off the runtime). A failed write is
    /// logged: the wish still holds for this daemon's life.
    pub async fn record(&self, name: &str, want: Want) {
        let changed = self.lock().insert(name.to_string(), want) != Some(want);
        if changed {
            self.persist().await;
        }
    }

    /// Forgets every instance not in `names` (removed by a reload or gone from the profiles).
    pub async fn retain(&self, names: &[&str]) {
        let changed = {
            let mut wants = self.lock();
            let before = wants.len();
            wants.retain(|n, _| names.contains(&n.as_str()));
            wants.len() != before
        };
        if changed {
            self.persist().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Want>> {
        self.inner.wants.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn persist(&self) {
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || {
            let wants = inner.wants.lock().unwrap_or_else(|e| e.into_inner());
            write_atomically(&inner.path, &wants)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                file = %self.inner.path.display(),
                "cannot save the instances' desired state ({e}): a daemon restart will start them as their profiles' autostart say"
            ),
            Err(e) => tracing::error!("saving the desired state failed: {e}"),
        }
    }
}

fn parse(path: &Path, text: &str) -> (BTreeMap<String, Want>, Vec<String>) {
    let ignored = "ignored: instances start as their profiles' autostart say";
    let file: FileFormat<BTreeMap<String, serde_json::Value>> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return (
                BTreeMap::new(),
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
            BTreeMap::new(),
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
    (wants, warnings)
}

/// Writes the file so that a crash at any point leaves either the old file or the new one.
fn write_atomically(path: &Path, wants: &BTreeMap<String, Want>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file = FileFormat {
        version: VERSION,
        instances: wants,
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
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
