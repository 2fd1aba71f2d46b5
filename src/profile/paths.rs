//! Paths as the profile code compares them: made absolute, `.` removed, `..` resolved lexically
//! ([`normalize`]) or through the file system ([`RealPaths`], which follows symlinks). Both resolving a
//! profile (does the config file's workspace name the profile's?) and the check (do two instances
//! share a place?) need them, so they live here rather than in either.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `p` made absolute against the current directory, without touching the file system.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Removes `.` components, keeping `..`: a `..` after a symlink leads where the symlink's target
/// leads, so only the check (which resolves symlinks first) may resolve it.
pub fn without_dots(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect()
}

/// Removes `.` and resolves `..` lexically. Used on how a path is written; the check compares paths
/// after resolving symlinks too ([`RealPaths`]).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// Resolves paths to the places they name, remembering every directory it resolved: profiles
/// share parents, so a check of thousands of paths makes few system calls.
#[derive(Default)]
pub struct RealPaths {
    /// Path as written -> the place it names.
    known: HashMap<PathBuf, Place>,
}

/// Where a path leads.
#[derive(Debug, Clone)]
struct Place {
    /// Symlinks and `..` resolved.
    real: PathBuf,
    /// Whether something is there: below a missing directory nothing is, so no need to ask.
    exists: bool,
}

impl RealPaths {
    /// The place `p` names: its longest existing ancestor with symlinks and `..` resolved, followed
    /// by the rest (which does not exist yet, so it holds no symlink) with `..` resolved lexically.
    pub fn resolve(&mut self, p: &Path) -> PathBuf {
        self.lookup(p).real
    }

    fn lookup(&mut self, p: &Path) -> Place {
        if let Some(r) = self.known.get(p) {
            return r.clone();
        }
        // A path under a directory known to be missing is missing too: no system call needed.
        let parent_missing = p
            .parent()
            .and_then(|parent| self.known.get(parent))
            .is_some_and(|place| !place.exists);
        let found = if parent_missing {
            None
        } else {
            std::fs::canonicalize(p).ok()
        };
        let r = match found {
            Some(real) => Place { real, exists: true },
            None => {
                let real = match (p.components().next_back(), p.parent()) {
                    (Some(last), Some(parent)) => {
                        let mut r = self.lookup(parent).real;
                        r.push(last.as_os_str());
                        normalize(&r)
                    }
                    _ => normalize(p),
                };
                Place {
                    real,
                    exists: false,
                }
            }
        };
        self.known.insert(p.to_path_buf(), r.clone());
        r
    }
}

/// The place a path names (see [`RealPaths::resolve`]).
pub fn real_path(p: &Path) -> PathBuf {
    RealPaths::default().resolve(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/../../..")), PathBuf::from("/"));
    }
}
