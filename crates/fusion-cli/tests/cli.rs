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
