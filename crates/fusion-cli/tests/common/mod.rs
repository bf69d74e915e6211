//! Running the `fusion` binary from the integration tests.

use std::process::{Command, Output};

/// `fusion ARGS` with `FUSION_TEST` set, whatever its status.
pub fn fusion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(args)
        .env("FUSION_TEST", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run fusion: {e}"))
}

/// [`fusion`], which must succeed (else its output is shown).
pub fn ok(args: &[&str]) -> Output {
    let out = fusion(args);
    assert!(
        out.status.success(),
        "fusion {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The one JSON value a `--json` command printed.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
