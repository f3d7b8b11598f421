//! Where things live: the workspace, the servers' data under `target/`, and the download
//! cache that survives `cargo clean` and new clones on the same machine.

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// `target/servers/`: one directory per server with its data, log and pid file.
pub fn servers_dir() -> PathBuf {
    target_dir().join("servers")
}

/// The download cache: `$VALKEYRIE_CACHE`, else `$XDG_CACHE_HOME/valkeyrie`, else
/// `~/.cache/valkeyrie`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VALKEYRIE_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("valkeyrie");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("valkeyrie")
}

/// `../shared/`, beside the workspace, where checked copies of downloads may be.
pub fn shared_dir() -> PathBuf {
    workspace()
        .parent()
        .map_or_else(|| PathBuf::from("../shared"), |p| p.join("shared"))
}
