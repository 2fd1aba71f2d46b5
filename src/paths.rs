//! Where the supervisor looks for things when not told: system paths when run as root (a system
//! service), XDG paths for anyone else (a user service or a developer's shell).

use std::path::PathBuf;

/// True when the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// The profiles directory: `/etc/openclaw-supervisor/supervisor.d` for root,
/// `$XDG_CONFIG_HOME/openclaw-supervisor/supervisor.d` (default `~/.config/...`) otherwise.
pub fn default_config_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/etc/openclaw-supervisor/supervisor.d")
    } else {
        xdg("XDG_CONFIG_HOME", ".config").join("openclaw-supervisor/supervisor.d")
    }
}

/// The control socket: `/run/openclaw-supervisor/supervisor.sock` for root,
/// `$XDG_RUNTIME_DIR/openclaw-supervisor/supervisor.sock` otherwise (`/tmp/openclaw-supervisor-UID/...`
/// when XDG_RUNTIME_DIR is unset).
pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/openclaw-supervisor/supervisor.sock");
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("openclaw-supervisor"))
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "/tmp/openclaw-supervisor-{}",
                nix::unistd::geteuid()
            ))
        });
    dir.join("supervisor.sock")
}

/// Instance logs: `/var/log/openclaw-supervisor` for root, `$XDG_STATE_HOME/openclaw-supervisor/logs`
/// (`~/.local/state/...`) otherwise.
pub fn default_log_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/log/openclaw-supervisor")
    } else {
        xdg("XDG_STATE_HOME", ".local/state").join("openclaw-supervisor/logs")
    }
}

/// The daemon's own state: `/var/lib/openclaw-supervisor` for root,
/// `$XDG_STATE_HOME/openclaw-supervisor` otherwise.
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/openclaw-supervisor")
    } else {
        xdg("XDG_STATE_HOME", ".local/state").join("openclaw-supervisor")
    }
}
