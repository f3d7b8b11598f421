//! A crate outside this workspace that depends only on `valkeyrie` with one feature opens
//! that store by URL, with no `use valkeyrie_boltlike as _;` line: built and run here.

use std::path::Path;
use std::process::Command;

const MAIN: &str = r#"
#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("a database path");
    let kv = valkeyrie::open(&format!("boltlike://{path}")).await.expect("open by URL");
    kv.put("greeting", "hello").await.expect("put");
    let pair = kv.get("greeting").await.expect("get").expect("the key was written");
    println!("{}", String::from_utf8_lossy(&pair.value));
}
"#;

#[test]
fn a_crate_outside_the_workspace_opens_a_store_by_url() {
    let facade = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = facade.parent().expect("the facade lives in the workspace");
    let outside = tempfile::tempdir().expect("a temporary directory");
    let manifest = format!(
        r#"[package]
name = "outside"
version = "0.1.0"
edition = "2021"
publish = false

# Not part of any workspace above it.
[workspace]

[dependencies]
valkeyrie = {{ path = {facade:?}, default-features = false, features = ["boltlike"] }}
tokio = {{ version = "1", features = ["rt-multi-thread", "macros"] }}
"#
    );
    std::fs::write(outside.path().join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::create_dir(outside.path().join("src")).expect("create src");
    std::fs::write(outside.path().join("src/main.rs"), MAIN).expect("write main.rs");
    // The workspace's lock file pins the same versions, so the build reuses what it can.
    std::fs::copy(workspace.join("Cargo.lock"), outside.path().join("Cargo.lock")).expect("copy Cargo.lock");

    let database = outside.path().join("kv.db");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(outside.path().join("Cargo.toml"))
        .arg("--")
        .arg(&database)
        .env("CARGO_TARGET_DIR", workspace.join("target/outside-crate"))
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "the outside crate failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello");
}
