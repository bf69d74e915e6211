//! Runs the built `fusion` binary: it must start (find libtorch at run time) and report sanely.

use std::process::Command;

fn fusion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(args)
        .output()
        .expect("run fusion")
}

#[test]
fn info_reports_runtime_as_json() {
    let out = fusion(&["info", "--json", "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["device"], "Cpu");
    let devices = report["cuda_devices"].as_u64().expect("device count");
    assert_eq!(report["cuda_available"].as_bool(), Some(devices > 0));
    assert!(report["threads"].as_i64().is_some_and(|t| t >= 1));
}

#[test]
fn unknown_device_is_rejected_with_its_name() {
    let out = fusion(&["info", "--device", "tpu"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown device `tpu`"), "{stderr}");
}

#[test]
fn validate_reports_bad_records_and_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let manifest = dir.path().join("m.jsonl");
    let good = fixtures.join("image/mnist_digit_28x28.png");
    let lines = [
        format!(r#"{{"id": "good", "label": "7", "image": "{}"}}"#, good.display()),
        r#"{"id": "missing", "label": "1", "image": "absent.png"}"#.to_string(),
        "not json".to_string(),
    ];
    std::fs::write(&manifest, lines.join("\n")).expect("write");
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args([
            "validate",
            manifest.to_str().expect("utf-8"),
            "--report",
            report.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run fusion");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("bad missing (image)") && stdout.contains("absent.png"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 records checked: 1 valid, 1 with problems, 1 unreadable lines"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(report).expect("report").contains("\"valid\""));
    // `--strict` makes the same report a failure a script can see.
    let strict = fusion(&["validate", manifest.to_str().expect("utf-8"), "--strict"]);
    assert_eq!(strict.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&strict.stdout).contains("bad missing (image)"));

    // A typo in a field name is reported with the field it means; a clean manifest passes
    // `--strict` only without it.
    let typo = dir.path().join("typo.jsonl");
    std::fs::write(
        &typo,
        format!(r#"{{"id": "good", "label": 7, "imgae": "{}"}}"#, good.display()),
    )
    .expect("write");
    let typo_out = fusion(&["validate", typo.to_str().expect("utf-8"), "--strict"]);
    let said = String::from_utf8_lossy(&typo_out.stdout);
    assert!(
        said.contains("unknown field `imgae`") && said.contains("did you mean `image`?"),
        "{said}"
    );
    assert_eq!(typo_out.status.code(), Some(2));
    std::fs::write(
        &typo,
        format!(r#"{{"id": "good", "label": 7, "image": "{}"}}"#, good.display()),
    )
    .expect("write");
    let clean = fusion(&["validate", typo.to_str().expect("utf-8"), "--strict"]);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stdout));
    let missing = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(["validate", "/nonexistent.csv"])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.csv"));
}
