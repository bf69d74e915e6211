//! Validation of a manifest whose records hold good, missing, corrupt and oversized files
//! of every modality (fixtures from the other crates).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_data::{Limits, Manifest, PathScope, validate};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn bad_records_are_reported_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let f = |p: &str| fixtures().join(p).display().to_string();
    std::fs::write(dir.path().join("corrupt.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    std::fs::write(dir.path().join("latin1.txt"), b"caf\xe9").unwrap();
    std::fs::write(dir.path().join("blank.txt"), b"  \n").unwrap();
    std::fs::write(dir.path().join("fake.wav"), b"RIFF....WAVEjunk").unwrap();
    let rows = [
        "id,label,split,image,audio,video,text,text_path".to_string(),
        format!(
            "good,0,train,{},{},{},a caption,",
            f("image/mnist_digit_28x28.png"),
            f("audio/tone_440hz.wav"),
            f("video/testsrc_h264_aac.mp4")
        ),
        "only_text,1,train,,,,just text,".to_string(),
        "missing_file,1,train,nowhere.png,,,,".to_string(),
        "corrupt_image,2,val,corrupt.png,,,,".to_string(),
        "bad_text,2,val,,,,,latin1.txt".to_string(),
        "blank_text,2,val,,,,,blank.txt".to_string(),
        "fake_audio,3,test,,fake.wav,,,".to_string(),
        format!("no_video_stream,3,test,,,{},,", f("video/sine_only.ogg")),
        format!("too_big,4,test,{},,,,", f("image/bunny_480x270.jpg")),
        "nothing,4,test,,,,,".to_string(),
        ",5,train,,,,,".to_string(),
    ];
    let path = dir.path().join("manifest.csv");
    std::fs::write(&path, rows.join("\n")).unwrap();
    // The fixtures live outside the manifest's folder.
    let manifest = Manifest::load_with(&path, PathScope::Anywhere).unwrap();
    let limits = Limits {
        image_pixels: 100_000,
        ..Limits::default()
    };
    let report = validate(&manifest, &limits);
    assert_eq!(report.checked, 10);
    assert_eq!(report.valid, ["good", "only_text"]);
    let problems: Vec<(&str, Option<&str>)> = report
        .problems
        .iter()
        .map(|p| (p.id.as_str(), p.modality.as_deref()))
        .collect();
    assert_eq!(
        problems,
        [
            ("missing_file", Some("image")),
            ("corrupt_image", Some("image")),
            ("bad_text", Some("text")),
            ("blank_text", Some("text")),
            ("fake_audio", Some("audio")),
            ("no_video_stream", Some("video")),
            ("too_big", Some("image")),
            ("nothing", None),
        ]
    );
    for problem in &report.problems {
        if let Some(path) = &problem.path {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(
                problem.reason.contains(&*name),
                "the reason names the file: {problem:?}"
            );
        }
    }
    assert!(report.problems[6].reason.contains("over the budget"));
    assert_eq!(report.rejected_lines.len(), 1, "the row without an id");
    let out = dir.path().join("report.json");
    report.write_json(&out).unwrap();
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(back["problems"].as_array().unwrap().len(), 8);
}
