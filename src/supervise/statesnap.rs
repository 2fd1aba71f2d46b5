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
//! The copy lives in the daemon's own state dir (`STATE/upgrades/NAME/state`, 0700), and exists
//! only complete (built as `state.partial`, renamed into place; at most 16 GiB). Nothing here
//! follows a symlink, though the gateway's state dir may belong to another user: it is opened one
//! component at a time (`O_DIRECTORY|O_NOFOLLOW`) and every step after is relative to that fd;
//! only regular files are copied (`O_NOFOLLOW|O_NONBLOCK`); the restored directory is a new one
//! made by the daemon (the old one renamed away, not deleted), and each restored file is new
//! (`O_EXCL|O_NOFOLLOW`), given the owner of the directory and its own mode (no set-id bits). A
//! restore that fails part way puts the directory back as it was. Both run on a blocking thread,
//! between the stop and the start of a restart.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

/// The directory of the gateway's databases, under its state dir.
const STATE: &str = "state";

/// The most a copy takes (16 GiB): past it the upgrade goes on without one, and says so.
const MAX_COPY: u64 = 16 << 30;

/// Where the copy of `name`'s databases is kept, under the daemon's `upgrades` dir. It exists only
/// complete: it is built beside it (`state.partial`) and renamed into place.
pub fn copy_dir(upgrades: &Path, name: &str) -> PathBuf {
    upgrades.join(name).join(STATE)
}

/// Opens the directory `path` without following a symlink at any of its components (each opened
/// `O_DIRECTORY|O_NOFOLLOW` in the one before). None if a component does not exist.
fn open_dir(path: &Path) -> Result<Option<OwnedFd>, String> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root = if path.is_absolute() { "/" } else { "." };
    let mut dir = openat(nix::fcntl::AT_FDCWD, root, flags, Mode::empty())
        .map_err(|e| format!("cannot open {root}: {e}"))?;
    for part in path.components() {
        let name = match part {
            std::path::Component::Normal(n) => n,
            std::path::Component::RootDir | std::path::Component::CurDir => continue,
            _ => return Err(format!("{} is not a plain path", path.display())),
        };
        dir = match openat(&dir, name, flags, Mode::empty()) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
                return Err(format!(
                    "{} is not a directory (a symlink is not followed)",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
    }
    Ok(Some(dir))
}

/// The names in the open directory `dir` (read through `/proc/self/fd`, which is that very
/// directory, whatever became of its path).
fn names_in(dir: &OwnedFd) -> Result<Vec<OsString>, String> {
    let listed = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| format!("cannot list a directory: {e}"))?;
    let mut out: Vec<OsString> = listed.flatten().map(|e| e.file_name()).collect();
    out.sort();
    Ok(out)
}

/// `name` in `dir`, if it is a regular file (opened `O_NOFOLLOW|O_NONBLOCK`: no link, no FIFO
/// hang), with its mode.
fn regular_at(dir: &OwnedFd, name: &OsStr) -> Option<(File, u32)> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).ok()?;
    let st = fstat(&fd).ok()?;
    (SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
        .then(|| (File::from(fd), st.st_mode & 0o777))
}

/// Copies the regular files of `state_dir/state` into `into` (0700, in the daemon's state dir),
/// each with its mode; complete or not at all. No `state/` yet makes an empty copy (a rollback
/// then leaves the new release's aside and starts the old one on none). Returns a line for the log.
pub fn save(state_dir: &Path, into: &Path) -> Result<String, String> {
    let partial = into.with_extension("partial");
    if let Some(parent) = into.parent() {
        crate::fsx::prepare_dir(parent, 0o700, "the upgrade's copy")?;
    }
    remove_copy(&partial)?;
    remove_copy(into)?;
    crate::fsx::create_dir(&partial, 0o700)
        .map_err(|e| format!("cannot make {}: {e}", partial.display()))?;
    let from = state_dir.join(STATE);
    let (mut files, mut bytes) = (0usize, 0u64);
    if let Some(dir) = open_dir(&from)? {
        for name in names_in(&dir)? {
            let Some((mut input, mode)) = regular_at(&dir, &name) else {
                continue;
            };
            let dst = partial.join(&name);
            let mut out = crate::fsx::create_new(&dst, 0o600)
                .map_err(|e| format!("cannot write {}: {e}", dst.display()))?;
            let limit = MAX_COPY.saturating_sub(bytes) + 1;
            let n = std::io::copy(&mut std::io::Read::take(&mut input, limit), &mut out)
                .map_err(|e| format!("copying {}: {e}", from.join(&name).display()))?;
            bytes += n;
            if bytes > MAX_COPY {
                let _ = remove_copy(&partial);
                return Err(format!(
                    "{} holds more than {} GiB: no copy made",
                    from.display(),
                    MAX_COPY >> 30
                ));
            }
            out.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", dst.display()))?;
            let _ = out.set_permissions(std::fs::Permissions::from_mode(mode));
            files += 1;
        }
    }
    std::fs::rename(&partial, into)
        .map_err(|e| format!("cannot rename {} into place: {e}", partial.display()))?;
    Ok(if files == 0 {
        format!(
            "{} holds no database yet: a rollback starts the previous release on none",
            from.display()
        )
    } else {
        format!(
            "kept a copy of {} ({files} files, {} KiB) for a rollback",
            from.display(),
            bytes.div_ceil(1024)
        )
    })
}

/// Puts the copy in `from` back as `state_dir/state`: the directory there is renamed to
/// `state.rolled-back-from-LABEL-UNIXTIME` (kept, not deleted) and a new one made with its owner
/// and mode, holding the copied files (owned as the directory). Every step is relative to the
/// opened state dir, so no symlink put in its place meanwhile is followed. If it fails part way,
/// the directory as it was is put back. Returns a line for the log.
pub fn restore(from: &Path, state_dir: &Path, label: &str) -> Result<String, String> {
    let copied: Vec<(OsString, PathBuf)> = {
        let dir = std::fs::read_dir(from)
            .map_err(|e| format!("no complete copy from before the upgrade ({e})"))?;
        let mut v: Vec<(OsString, PathBuf)> = dir
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| (e.file_name(), e.path()))
            .collect();
        v.sort();
        v
    };
    let sd =
        open_dir(state_dir)?.ok_or_else(|| format!("{} does not exist", state_dir.display()))?;
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let (uid, gid, mode, aside) = match openat(&sd, STATE, flags, Mode::empty()) {
        Ok(cur) => {
            let st = fstat(&cur).map_err(|e| format!("cannot read {STATE}/: {e}"))?;
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = format!("{STATE}.rolled-back-from-{label}-{secs}");
            renameat(&sd, STATE, &sd, aside.as_str())
                .map_err(|e| format!("cannot move {STATE}/ aside: {e}"))?;
            (st.st_uid, st.st_gid, st.st_mode & 0o777, Some(aside))
        }
        Err(nix::errno::Errno::ENOENT) => {
            let st = fstat(&sd).map_err(|e| format!("cannot read the state dir: {e}"))?;
            (st.st_uid, st.st_gid, 0o700, None)
        }
        Err(e) => {
            return Err(format!(
                "{} is not a directory the daemon opens ({e}): nothing restored",
                state_dir.join(STATE).display()
            ))
        }
    };
    let mut made: Vec<OsString> = Vec::new();
    let filled = fill(&sd, &copied, (uid, gid, mode), &mut made);
    if let Err(e) = filled {
        // Put back what was there: the half-made directory goes, the moved one returns.
        if let Ok(nd) = openat(&sd, STATE, flags, Mode::empty()) {
            for name in &made {
                let _ = unlinkat(&nd, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
        let _ = unlinkat(&sd, STATE, UnlinkatFlags::RemoveDir);
        if let Some(a) = &aside {
            let _ = renameat(&sd, a.as_str(), &sd, STATE);
        }
        return Err(format!(
            "{e}; {} is left as the new release left it",
            state_dir.join(STATE).display()
        ));
    }
    let target = state_dir.join(STATE);
    Ok(match aside {
        Some(a) => format!(
            "restored {} as it was before the upgrade ({} files); what the new release wrote is kept in {}",
            target.display(),
            copied.len(),
            state_dir.join(a).display()
        ),
        None => format!(
            "restored {} as it was before the upgrade ({} files)",
            target.display(),
            copied.len()
        ),
    })
}

/// Makes `state/` in the open state dir `sd` and writes `copied` into it, owned by `owner`
/// (uid, gid, and the directory's mode); each name made goes into `made`.
fn fill(
    sd: &OwnedFd,
    copied: &[(OsString, PathBuf)],
    (uid, gid, mode): (u32, u32, u32),
    made: &mut Vec<OsString>,
) -> Result<(), String> {
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    mkdirat(sd, STATE, Mode::from_bits_truncate(0o700))
        .map_err(|e| format!("cannot make {STATE}/: {e}"))?;
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let nd = openat(sd, STATE, flags, Mode::empty())
        .map_err(|e| format!("cannot open the new {STATE}/: {e}"))?;
    for (name, src) in copied {
        if name.as_bytes().contains(&b'/') {
            continue;
        }
        let mut input = crate::fsx::open_read_nofollow(src)
            .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let file_mode = input
            .metadata()
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        let wflags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &nd,
            name.as_os_str(),
            wflags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| format!("cannot make {STATE}/{}: {e}", name.to_string_lossy()))?;
        made.push(name.clone());
        fchown(&fd, owner.0, owner.1).map_err(|e| {
            format!(
                "cannot give {STATE}/{} its owner: {e}",
                name.to_string_lossy()
            )
        })?;
        let mut out = File::from(fd);
        std::io::copy(&mut input, &mut out)
            .map_err(|e| format!("copying into {STATE}/{}: {e}", name.to_string_lossy()))?;
        out.sync_all()
            .map_err(|e| format!("cannot sync {STATE}/{}: {e}", name.to_string_lossy()))?;
        fchmod(&out, Mode::from_bits_truncate(file_mode)).map_err(|e| {
            format!(
                "cannot set the mode of {STATE}/{}: {e}",
                name.to_string_lossy()
            )
        })?;
    }
    fchown(&nd, owner.0, owner.1).map_err(|e| format!("cannot give {STATE}/ its owner: {e}"))?;
    fchmod(&nd, Mode::from_bits_truncate(mode))
        .map_err(|e| format!("cannot set the mode of {STATE}/: {e}"))?;
    Ok(())
}

/// The mark of a rollback decided but not yet done (`upgrades/NAME/restore`, holding the label of
/// the release rolled back from): the copy is put back before the instance's next start, even by
/// the next daemon if this one stops first.
fn pending_mark(upgrades: &Path, name: &str) -> PathBuf {
    upgrades.join(name).join("restore")
}

/// Marks `name`'s copy to be put back before its next start (a rollback from `label`).
pub fn mark_pending(upgrades: &Path, name: &str, label: &str) -> Result<(), String> {
    let mark = pending_mark(upgrades, name);
    let mut f = crate::fsx::create_new(&mark, 0o600)
        .map_err(|e| format!("cannot write {}: {e}", mark.display()))?;
    std::io::Write::write_all(&mut f, label.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", mark.display()))
}

/// If a rollback of `name` is pending, puts its copy back into `state_dir` (then the copy and the
/// mark go; a failure keeps both, and the next start tries again). The line for the log, if any.
pub fn restore_pending(upgrades: &Path, name: &str, state_dir: &Path) -> Option<String> {
    let mark = pending_mark(upgrades, name);
    let label = crate::fsx::read_regular(&mark, 256).ok()?;
    let label: String = label
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    let copy = copy_dir(upgrades, name);
    Some(match restore(&copy, state_dir, &label) {
        Ok(line) => {
            let _ = remove_copy(&copy);
            let _ = std::fs::remove_file(&mark);
            line
        }
        Err(e) => format!(
            "the databases were not restored: {e}; the copy from before the upgrade stays in {}",
            copy.display()
        ),
    })
}

/// Removes a copy (after an upgrade that is kept, or once restored).
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
    fn a_state_directory_replaced_by_a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("gw");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("secret"), "not the gateway's").unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join("state")).unwrap();
        let copy = copy_dir(&tmp.path().join("upgrades"), "main");
        let e = save(&state, &copy).unwrap_err();
        assert!(e.contains("a symlink is not followed"), "{e}");
        assert!(!copy.exists());
        // Nor is a copy put back through it.
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::write(copy.join("openclaw.sqlite"), "17").unwrap();
        let e = restore(&copy, &state, "x").unwrap_err();
        assert!(e.contains("nothing restored"), "{e}");
        assert!(std::fs::symlink_metadata(state.join("state"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
    }

    #[test]
    fn a_pending_rollback_is_done_once() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("gw");
        std::fs::create_dir_all(state.join("state")).unwrap();
        std::fs::write(state.join("state/openclaw.sqlite"), "17").unwrap();
        let upgrades = tmp.path().join("upgrades");
        save(&state, &copy_dir(&upgrades, "main")).unwrap();
        std::fs::write(state.join("state/openclaw.sqlite"), "18").unwrap();
        assert_eq!(restore_pending(&upgrades, "main", &state), None);
        mark_pending(&upgrades, "main", "2026.9.6").unwrap();
        let said = restore_pending(&upgrades, "main", &state).unwrap();
        assert!(said.starts_with("restored"), "{said}");
        assert_eq!(
            std::fs::read_to_string(state.join("state/openclaw.sqlite")).unwrap(),
            "17"
        );
        assert_eq!(restore_pending(&upgrades, "main", &state), None);
        assert!(!upgrades.join("main/state").exists());
    }

    #[test]
    fn nothing_to_copy_before_a_first_start() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = copy_dir(tmp.path(), "main");
        let said = save(&tmp.path().join("fresh"), &copy).unwrap();
        assert!(said.contains("holds no database yet"), "{said}");
        // Restoring an empty copy leaves an empty state dir (the new release's moved aside).
        std::fs::create_dir_all(tmp.path().join("fresh/state")).unwrap();
        std::fs::write(tmp.path().join("fresh/state/openclaw.sqlite"), "18").unwrap();
        restore(&copy, &tmp.path().join("fresh"), "x").unwrap();
        assert!(!tmp.path().join("fresh/state/openclaw.sqlite").exists());
    }
}
