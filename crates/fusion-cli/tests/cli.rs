//! Runs the built `fusion` binary: it must start (find libtorch at run time) and report sanely.

use std::{path::Path, process::Command};

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
fn a_reader_that_went_away_costs_the_output_not_the_command() {
    // `fusion info | head -c 0`: stdout's reader is closed before anything is written.
    for args in [&["info", "--json", "--device", "cpu"][..], &["info", "--device", "cpu"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_fusion"))
            .args(args)
            .stdout(writer)
            .output()
            .expect("run fusion");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
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
    let outside = fixtures.join("image/mnist_digit_28x28.png");
    let good = dir.path().join("digit.png");
    std::fs::copy(&outside, &good).expect("copy");
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

    // A file outside the manifest's folder is read only when the user says so.
    let far = dir.path().join("far.jsonl");
    std::fs::write(
        &far,
        format!(r#"{{"id": "far", "label": 7, "image": "{}"}}"#, outside.display()),
    )
    .expect("write");
    let refused = fusion(&["validate", far.to_str().expect("utf-8"), "--strict"]);
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains("line 1: `image`") && said.contains("is outside the manifest's folder"),
        "{said}"
    );
    assert_eq!(refused.status.code(), Some(2));
    let allowed = fusion(&[
        "validate",
        far.to_str().expect("utf-8"),
        "--strict",
        "--allow-paths-outside-manifest",
    ]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stdout));
    let missing = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(["validate", "/nonexistent.csv"])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.csv"));
}

/// Files whose headers claim gigabytes (a 100000² PNG, WAVs of 1 Hz, 4 GHz and 10 hours, a
/// 16000² video) are each refused from the header by `validate` and `extract` running
/// under a 1 GiB address-space limit: each would once have allocated 6 to 34 GB and aborted
/// the process.
#[test]
fn hostile_headers_stay_within_a_memory_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.path().join(name), bytes).expect("write");
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut bytes = (data.len() as u32).to_be_bytes().to_vec();
        bytes.extend(kind);
        bytes.extend(data);
        bytes.extend(crc32fast::hash(&bytes[4..]).to_be_bytes());
        bytes
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = [100_000u32.to_be_bytes(), 100_000u32.to_be_bytes()].concat();
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    write("bomb.png", png);
    let wav = |rate: u32, claimed: u32| {
        let mut bytes = b"RIFF".to_vec();
        bytes.extend((36u32 + 8192).to_le_bytes());
        bytes.extend(b"WAVEfmt \x10\0\0\0\x01\0\x01\0");
        bytes.extend(rate.to_le_bytes());
        bytes.extend(rate.wrapping_mul(2).to_le_bytes());
        bytes.extend(b"\x02\0\x10\0data");
        bytes.extend(claimed.to_le_bytes());
        bytes.extend([0u8; 8192]);
        bytes
    };
    write("one_hz.wav", wav(1, 8192));
    write("four_ghz.wav", wav(4_294_967_291, 8192));
    write("ten_hours.wav", wav(8000, 576_000_000));
    let mut y4m = b"YUV4MPEG2 W16000 H16000 F10:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
    y4m.extend([128u8; 4608]);
    write("huge.y4m", y4m);
    let video_fixture = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/video")
                .join(name),
        )
        .expect(name)
    };
    write("huge_h264.mp4", video_fixture("black_16000x16000.mp4"));
    write("ten_hours.mp4", video_fixture("ten_hours_16x16.mp4"));
    let records = [
        r#"{"id": "png", "label": "a", "image": "bomb.png"}"#,
        r#"{"id": "hz1", "label": "a", "audio": "one_hz.wav"}"#,
        r#"{"id": "ghz", "label": "b", "audio": "four_ghz.wav"}"#,
        r#"{"id": "long", "label": "b", "audio": "ten_hours.wav"}"#,
        r#"{"id": "y4m", "label": "b", "video": "huge.y4m", "text": "kept"}"#,
        r#"{"id": "h264", "label": "a", "video": "huge_h264.mp4", "text": "kept"}"#,
        r#"{"id": "tenh", "label": "b", "video": "ten_hours.mp4", "text": "kept"}"#,
    ];
    write("m.jsonl", records.join("\n").into_bytes());
    let config = r#"{"manifest": "m.jsonl", "cache": "cache", "modalities": [
      {"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "mlp", "hidden": [8]}},
      {"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 8}, "encoder": {"kind": "mlp", "hidden": [8]}},
      {"name": "video", "features": {"kind": "video_frames", "frames": 2, "size": 4, "grey": true}, "encoder": {"kind": "mlp", "hidden": [8]}},
      {"name": "text", "features": {"kind": "hashed_words", "dim": 64}, "encoder": {"kind": "mlp", "hidden": [8]}}],
      "fusion": {"family": "early", "method": "concat"}, "train": {"epochs": 1, "batch_size": 4}}"#;
    write("c.json", config.as_bytes().to_vec());
    let limited = |args: &[&str]| {
        Command::new("bash")
            .arg("-c")
            .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_fusion"))
            .args(args)
            .current_dir(dir.path())
            .env("RAYON_NUM_THREADS", "2")
            .env("MALLOC_ARENA_MAX", "2")
            .output()
            .expect("run fusion")
    };
    let validated = limited(&["validate", "--strict", "m.jsonl"]);
    let said = String::from_utf8_lossy(&validated.stdout);
    assert_eq!(
        validated.status.code(),
        Some(2),
        "{said}{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    for expected in [
        "bad png (image): image bomb.png is 100000×100000 pixels",
        "bad hz1 (audio): unusable WAV one_hz.wav: a sample rate of 1 Hz",
        "bad ghz (audio): unusable WAV four_ghz.wav: a sample rate of 4294967291 Hz",
        "bad long (audio): unusable WAV ten_hours.wav: 36000.0 s long",
        "bad y4m (video): huge.y4m: 16000×16000 frames",
        "bad h264 (video): huge_h264.mp4: 16000×16000 frames",
        "bad tenh (video): ten_hours.mp4: a video of 36000.0 s, over the limit of 3600 s",
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
    let extracted = limited(&["extract", "--config", "c.json"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&extracted.stdout),
        String::from_utf8_lossy(&extracted.stderr)
    );
    assert!(extracted.status.success(), "{said}");
    assert!(
        said.contains("7 records: 3 usable, 4 skipped, 3 files unusable"),
        "{said}"
    );
}
