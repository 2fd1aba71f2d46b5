//! The gateway's databases around an upgrade. OpenClaw migrates its state database
//! (`STATE_DIR/state/openclaw.sqlite`) when a newer release starts on it, and an older release then
//! refuses to start on it ("database schema(s) are newer than this build", exit 78): 2026.9.5 on
//! a state 2026.9.6 wrote. So a rollback that only starts the previous release again fails exactly
//! when the new one got as far as its migration. An upgrade therefore copies `STATE_DIR/state/` (its
//! regular files: the databases with their `-wal` and `-shm`) while the gateway is stopped, before
//! the new release first starts ([`save`]), and a rollback, again while it is stopped, puts that
//! copy back ([`restore`]), keeping what the new release wrote beside it
//! (`STATE_DIR/state.rolled-back-from-VERSION-UNIXTIME`), never deleting it.
//!
//! The copy lives in the daemon's own state dir (`STATE/upgrades/NAME/state`, 0700). Nothing here
//! follows a symlink: only regular files are copied, opened `O_NOFOLLOW`; the restored directory
//! is a new one made by the daemon (the old one renamed away, not deleted), and each restored file
//! is a new file (`O_EXCL|O_NOFOLLOW`) given the owner and mode the directory and the copied file
//! had. Both run on a blocking thread, between the stop and the start of a restart.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory of the gateway's databases, under its state dir.
const STATE: &str = "state";

/// Where the copy of `name`'s databases is kept, under the daemon's `upgrades` dir.
pub fn copy_dir(upgrades: &Path, name: &str) -> PathBuf {
    upgrades.join(name).join(STATE)
}

/// Copies the regular files of `state_dir/state` into `into` (made anew, 0700), each with its
/// mode. Nothing to copy (no `state/` yet) leaves `into` empty. Returns a line for the log.
pub fn save(state_dir: &Path, into: &Path) -> Result<String, String> {
    let from = state_dir.join(STATE);
    if let Some(parent) = into.parent() {
        crate::fsx::prepare_dir(parent, 0o700, "the upgrade's copy")?;
    }
    remove_copy(into)?;
    crate::fsx::create_dir(into, 0o700)
        .map_err(|e| format!("cannot make {}: {e}", into.display()))?;
    let meta = match std::fs::symlink_metadata(&from) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!(
                "{} does not exist yet: nothing to keep for a rollback",
                from.display()
            ))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", from.display())),
    };
    if !meta.is_dir() {
        return Err(format!(
            "{} is {}, not a directory: not copied",
            from.display(),
            crate::fsx::kind_of(&meta)
        ));
    }
    let (mut files, mut bytes) = (0usize, 0u64);
    for (name, src) in regular_files(&from)? {
        let mut input = crate::fsx::open_read_nofollow(&src)
            .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let mode = input
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let dst = into.join(&name);
        let mut out = crate::fsx::create_new(&dst, mode & 0o700)
            .map_err(|e| format!("cannot write {}: {e}", dst.display()))?;
        bytes +=
            copy(&mut input, &mut out).map_err(|e| format!("copying {}: {e}", src.display()))?;
        out.sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", dst.display()))?;
        // The mode to give it back with.
        let _ = std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode));
        files += 1;
    }
    Ok(format!(
        "kept a copy of {} ({files} files, {} KiB) for a rollback",
        from.display(),
        bytes.div_ceil(1024)
    ))
}

/// Puts the copy in `from` back as `state_dir/state`: the directory there is renamed to
/// `state.rolled-back-from-LABEL-UNIXTIME` (kept, not deleted) and a new one made with its owner
/// and mode, holding the copied files (owned as the directory). Returns a line for the log.
pub fn restore(from: &Path, state_dir: &Path, label: &str) -> Result<String, String> {
    let copied = regular_files(from)
        .map_err(|e| format!("no copy from before the upgrade to restore ({e})"))?;
    let target = state_dir.join(STATE);
    let meta = std::fs::symlink_metadata(&target).ok();
    let (uid, gid, mode) = match &meta {
        Some(m) if m.is_dir() => (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        Some(m) => {
            return Err(format!(
                "{} is {}, not a directory: nothing restored",
                target.display(),
                crate::fsx::kind_of(m)
            ))
        }
        None => {
            let parent = std::fs::symlink_metadata(state_dir)
                .map_err(|e| format!("cannot read {}: {e}", state_dir.display()))?;
            (parent.uid(), parent.gid(), 0o700)
        }
    };
    let aside = meta.is_some().then(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        state_dir.join(format!("{STATE}.rolled-back-from-{label}-{secs}"))
    });
    if let Some(aside) = &aside {
        // A rename moves the entry itself: a link planted at either name is never followed.
        std::fs::rename(&target, aside).map_err(|e| {
            format!(
                "cannot move {} aside to {}: {e}",
                target.display(),
                aside.display()
            )
        })?;
    }
    std::fs::create_dir(&target).map_err(|e| format!("cannot make {}: {e}", target.display()))?;
    let mut files = 0usize;
    for (name, src) in copied {
        let mut input = crate::fsx::open_read_nofollow(&src)
            .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let file_mode = input
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let dst = target.join(&name);
        let mut out = crate::fsx::create_new(&dst, file_mode)
            .map_err(|e| format!("cannot write {}: {e}", dst.display()))?;
        copy(&mut input, &mut out).map_err(|e| format!("copying into {}: {e}", dst.display()))?;
        out.sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", dst.display()))?;
        let _ = out.set_permissions(std::fs::Permissions::from_mode(file_mode));
        let _ = std::os::unix::fs::fchown(&out, Some(uid), Some(gid));
        files += 1;
    }
    let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode));
    let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
    Ok(match aside {
        Some(a) => format!(
            "restored {} as it was before the upgrade ({files} files); what the new release wrote is kept in {}",
            target.display(),
            a.display()
        ),
        None => format!(
            "restored {} as it was before the upgrade ({files} files)",
            target.display()
        ),
    })
}

/// Removes the copy (after an upgrade that is kept).
pub fn remove_copy(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot remove {}: {e}", dir.display())),
        Ok(_) => {
            std::fs::remove_file(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// The regular files directly in `dir` (no symlink, no subdirectory), by name.
fn regular_files(dir: &Path) -> Result<Vec<(std::ffi::OsString, PathBuf)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            out.push((e.file_name(), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn copy(input: &mut impl Read, out: &mut impl Write) -> std::io::Result<u64> {
    std::io::copy(input, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_put_back_and_what_came_after_is_kept_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("gw");
        std::fs::create_dir_all(state.join("state")).unwrap();
        std::fs::write(state.join("state/openclaw.sqlite"), "schema 17").unwrap();
        std::fs::write(state.join("state/openclaw.sqlite-wal"), "wal 17").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", state.join("state/planted")).unwrap();
        let copy = copy_dir(&tmp.path().join("upgrades"), "main");
        let said = save(&state, &copy).unwrap();
        assert!(said.contains("2 files"), "{said}");
        assert!(!copy.join("planted").exists());
        // The new release migrates, and adds a file.
        std::fs::write(state.join("state/openclaw.sqlite"), "schema 18").unwrap();
        std::fs::write(state.join("state/openclaw.sqlite-shm"), "shm 18").unwrap();
        let said = restore(&copy, &state, "2026.9.6").unwrap();
        assert!(said.contains("2 files"), "{said}");
        let read = |p: &str| std::fs::read_to_string(state.join(p)).unwrap();
        assert_eq!(read("state/openclaw.sqlite"), "schema 17");
        assert_eq!(read("state/openclaw.sqlite-wal"), "wal 17");
        assert!(!state.join("state/openclaw.sqlite-shm").exists());
        let aside: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state.rolled-back-from-2026.9.6-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(read(&format!("{}/openclaw.sqlite", aside[0])), "schema 18");
    }

    #[test]
    fn nothing_to_copy_before_a_first_start() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = copy_dir(tmp.path(), "main");
        let said = save(&tmp.path().join("fresh"), &copy).unwrap();
        assert!(said.contains("does not exist yet"), "{said}");
        // Restoring an empty copy leaves an empty state dir (the new release's moved aside).
        std::fs::create_dir_all(tmp.path().join("fresh/state")).unwrap();
        std::fs::write(tmp.path().join("fresh/state/openclaw.sqlite"), "18").unwrap();
        restore(&copy, &tmp.path().join("fresh"), "x").unwrap();
        assert!(!tmp.path().join("fresh/state/openclaw.sqlite").exists());
    }
}
