//! Where things live: the repository and the cache outside it.

use std::path::{Path, PathBuf};

/// The repository root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cache for libtorch, models and data, outside the repository so that every clone
/// shares it: `$FUSION_CACHE_DIR`, else `$XDG_CACHE_HOME/fusion`, else `~/.cache/fusion`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("FUSION_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = non_empty_env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty_env("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("fusion")
}

pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

pub fn data_dir() -> PathBuf {
    cache_dir().join("data")
}

pub fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
