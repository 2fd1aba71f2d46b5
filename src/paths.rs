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
