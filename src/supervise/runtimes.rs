//! The daemon's side of the runtime store (`crate::runtime`): installing a runtime (the embedded
//! installer, started by the spawning thread and reaped by the reaper like every child of the
//! daemon), which instances use which runtime, and removing one that none uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{reaper::Exit, spawn, Supervisor};
use crate::runtime::{InstallError, Runtime, Spec, Store};

/// Why a runtime was not removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No installed runtime is what the spec asks for.
    #[error("{0} is not installed (openclawctl runtime list shows what is)")]
    NotInstalled(Spec),
    /// Instances use it.
    #[error("{runtime} is in use by {}: move them to another runtime first", users.join(", "))]
    InUse {
        /// The runtime's id.
        runtime: String,
        /// The instances that use it.
        users: Vec<String>,
    },
    /// The files could not be removed.
    #[error("{0}")]
    Failed(String),
}

impl Supervisor {
    /// The runtime store.
    pub fn runtime_store(&self) -> &Store {
        &self.shared.runtimes
    }

    /// Each installed runtime (by id) with the instances that use it: those whose profile's or
    /// upgrade's choice resolves to it, those whose upgrade soaks with it as the runtime to roll
    /// back to, and those whose running gateway was started from it (its PATH starts with the
    /// runtime's `bin`). Reads a few small files of the store and of /proc: call it off the
    /// runtime.
    pub fn runtime_users(&self, installed: &[Runtime]) -> BTreeMap<String, Vec<String>> {
        let store = &self.shared.runtimes;
        let mut users: BTreeMap<String, Vec<String>> =
            installed.iter().map(|r| (r.id(), Vec::new())).collect();
        for (name, h) in self.instances().iter() {
            let mut uses: Vec<Spec> = Vec::new();
            uses.extend(self.shared.runtime_for(name, &h.profile));
            // Its profile's, even while an upgrade's choice wins: the one a rollback (or a
            // choice given up) goes back to.
            uses.extend(h.profile.runtime.as_ref().map(|r| r.value.clone()));
            uses.extend(
                self.shared
                    .desired
                    .runtime(name)
                    .and_then(|w| w.soak)
                    .and_then(|s| s.previous),
            );
            let mut ids: Vec<String> = uses
                .iter()
                .filter_map(|s| store.find(s))
                .map(|r| r.id())
                .collect();
            // What its running gateway was started from, as its status recorded at the start;
            // and a runtime whose `bin` its PATH starts with (a PATH set by hand to one).
            let (pid, started_from) = {
                let st = h.status.borrow();
                (st.pid, st.versions.runtime.clone())
            };
            if pid.is_some() {
                ids.extend(started_from);
            }
            if let Some(first) = pid.and_then(first_on_path) {
                let real = std::fs::canonicalize(&first).ok();
                ids.extend(
                    installed
                        .iter()
                        .filter(|r| {
                            r.bin_dir() == first
                                || real.is_some() && std::fs::canonicalize(r.bin_dir()).ok() == real
                        })
                        .map(Runtime::id),
                );
            }
            for id in ids {
                if let Some(list) = users.get_mut(&id) {
                    if !list.contains(name) {
                        list.push(name.clone());
                    }
                }
            }
        }
        users
    }

    /// Installs the runtime `spec` asks for, unless installed: runs the embedded installer (npm
    /// from the daemon's PATH), each line of its progress sent to `progress`, then tells the
    /// instances ([`Supervisor::runtime_installed`]).
    pub async fn install_runtime(
        &self,
        spec: &Spec,
        progress: mpsc::UnboundedSender<String>,
    ) -> Result<Runtime, InstallError> {
        let store = self.shared.runtimes.clone();
        let (found, prepared) = {
            let (store, spec) = (store.clone(), spec.clone());
            tokio::task::spawn_blocking(move || (store.find(&spec), store.prepare()))
                .await
                .map_err(|e| format!("the install's thread failed: {e}"))?
        };
        if let Some(r) = found {
            let _ = progress.send(format!(
                "{} is installed already in {}",
                r.id(),
                r.dir.display()
            ));
            return Ok(r);
        }
        prepared?;
        let bash =
            spawn::resolve_program("bash", std::env::var_os("PATH"), std::path::Path::new("/"))
                .map_err(|e| crate::runtime::missing_bash(&e))?;
        let req = spawn::SpawnRequest {
            program: bash,
            args: store.installer_args(spec)?,
            env: Vec::new(),
            cwd: None,
            cgroup: None,
        };
        let child = self
            .shared
            .spawner
            .spawn(req)
            .await
            .map_err(|e| crate::runtime::missing_bash(&e.to_string()))?;
        let exit = self.shared.reaper.watch(child.pid);
        let out = tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(child.stdout), &mut out);
            out
        });
        let err = tokio::task::spawn_blocking(move || {
            crate::runtime::follow_lines(std::fs::File::from(child.stderr), &mut |line| {
                let _ = progress.send(line.to_string());
            })
        });
        let (out, last, exit) = tokio::join!(out, err, exit);
        let code = match exit.unwrap_or(Exit::Unknown) {
            Exit::Code(c) => Ok(c),
            other => Err(other.to_string()),
        };
        let (out, last) = (out.unwrap_or_default(), last.unwrap_or_default());
        let spec = spec.clone();
        let installed =
            tokio::task::spawn_blocking(move || store.installed(&spec, code, &out, &last))
                .await
                .map_err(|e| format!("the install's thread failed: {e}"))??;
        self.runtime_installed().await;
        Ok(installed)
    }

    /// Removes the installed runtime `spec` asks for, unless an instance uses it (see
    /// [`Supervisor::runtime_users`]); its Node goes too when no runtime left is on it.
    pub async fn remove_runtime(self: &Arc<Self>, spec: &Spec) -> Result<Runtime, RemoveError> {
        let store = self.shared.runtimes.clone();
        let (found, mut users) = {
            let (sup, spec) = (self.clone(), spec.clone());
            tokio::task::spawn_blocking(move || {
                let store = &sup.shared.runtimes;
                (store.find(&spec), sup.runtime_users(&store.list()))
            })
            .await
            .map_err(|e| RemoveError::Failed(format!("the remove's thread failed: {e}")))?
        };
        let r = found.ok_or_else(|| RemoveError::NotInstalled(spec.clone()))?;
        let users = users.remove(&r.id()).unwrap_or_default();
        if !users.is_empty() {
            return Err(RemoveError::InUse {
                runtime: r.id(),
                users,
            });
        }
        let gone = r.clone();
        tokio::task::spawn_blocking(move || store.remove(&gone))
            .await
            .map_err(|e| RemoveError::Failed(format!("the remove's thread failed: {e}")))?
            .map_err(RemoveError::Failed)?;
        Ok(r)
    }
}

/// A reload's profiles (`profile::load_marking`) with what the check says of their runtimes.
pub(super) fn load_checked(
    dir: &std::path::Path,
    fresh: &dyn Fn(&crate::profile::Profile) -> bool,
    store: &Store,
) -> crate::profile::Plan {
    let mut plan = crate::profile::load_marking(dir, fresh);
    plan.check_runtimes(store);
    plan
}

/// The first directory on the PATH of process `pid`, from its `/proc/PID/environ`.
fn first_on_path(pid: i32) -> Option<PathBuf> {
    first_on_path_of(&std::fs::read(format!("/proc/{pid}/environ")).ok()?)
}

/// The first directory on the PATH of an environment as `/proc/PID/environ` holds it.
fn first_on_path_of(env: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let path = env
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"PATH="))?;
    let first = path.split(|b| *b == b':').next()?;
    (!first.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_directory_on_a_path_is_read_from_an_environment() {
        let env = b"HOME=/root\0PATH=/s/openclaw-1.2.3+node-4.5.6/bin:/usr/bin\0MYPATH=/x\0";
        assert_eq!(
            first_on_path_of(env),
            Some(PathBuf::from("/s/openclaw-1.2.3+node-4.5.6/bin"))
        );
        assert_eq!(first_on_path_of(b"PATH=\0"), None);
        assert_eq!(first_on_path_of(b"XPATH=/a\0"), None);
        assert_eq!(first_on_path_of(b""), None);
    }
}
