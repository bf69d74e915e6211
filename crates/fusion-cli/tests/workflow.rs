//! The whole CLI on a small generated image + audio dataset with bad records and missing
//! modalities: train → resume → eval → predict → explain → robustness → export, compare,
//! and configuration errors that name the field.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{fusion, json, ok};

/// Three classes. Class c: an 8×8 image bright in band c (plus noise), a tone at
/// 400·(c+1) Hz. Every 7th record has no audio, every 11th no image (r59 neither); two
/// records have a corrupt image and a missing recording.
/// Seeded uniform values in [0, 1) (a linear congruential generator: no dependency).
fn noise(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    }
}

fn dataset(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let mut noise = noise(12345);
    let mut lines = Vec::new();
    for i in 0..90usize {
        let class = i % 3;
        let split = match i % 10 {
            0..=6 => "train",
            7 => "val",
            _ => "test",
        };
        let pixels: Vec<u8> = (0..64)
            .map(|p| {
                let band = (p / 8) * 3 / 8;
                let base = if band == class { 200.0 } else { 30.0 };
                (base + 50.0 * noise()) as u8
            })
            .collect();
        let image = format!("files/{i}.png");
        image::GrayImage::from_raw(8, 8, pixels)
            .unwrap()
            .save(dir.join(&image))
            .unwrap();
        let audio = format!("files/{i}.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(dir.join(&audio), spec).unwrap();
        let hz = 400.0 * (class + 1) as f32;
        for t in 0..2400 {
            let value = (2.0 * std::f32::consts::PI * hz * t as f32 / 8000.0).sin() * 0.5 + 0.2 * (noise() - 0.5);
            writer.write_sample((value * 20000.0) as i16).unwrap();
        }
        writer.finalize().unwrap();
        let group = if i % 2 == 0 { "even" } else { "odd" };
        let mut record =
            serde_json::json!({"id": format!("r{i}"), "label": format!("c{class}"), "split": split, "group": group});
        if i % 7 != 3 {
            record["audio"] = audio.into();
        }
        if i % 11 != 4 {
            record["image"] = image.into();
        }
        lines.push(record.to_string());
    }
    std::fs::write(dir.join("files/corrupt.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    lines.push(r#"{"id": "corrupt", "label": "c0", "split": "train", "image": "files/corrupt.png"}"#.into());
    lines.push(r#"{"id": "lost", "label": "c1", "split": "test", "audio": "files/lost.wav"}"#.into());
    // A good image beside an audio file that does not decode: the image is kept.
    std::fs::write(dir.join("files/noise.wav"), b"RIFF....WAVEjunk").unwrap();
    lines.push(
        r#"{"id": "half", "label": "c0", "split": "train", "image": "files/0.png", "audio": "files/noise.wav"}"#.into(),
    );
    lines.push("{ not json".into());
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    manifest
}

fn config(dir: &Path, fusion: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"{{
  "manifest": "manifest.jsonl",
  "cache": "cache",
  "modalities": [
    {{"name": "image", "features": {{"kind": "pixels", "size": 8}}, "encoder": {{"kind": "mlp", "hidden": [32]}}}},
    {{"name": "audio", "features": {{"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 8}}, "encoder": {{"kind": "mlp", "hidden": [32]}}}}
  ],
  "hidden_dim": 32,
  "fusion": {fusion},
  "train": {{"epochs": 3, "batch_size": 16, "optimizer": {{"kind": "adam_w", "lr": 0.01}}, "seed": 1}}{extra}
}}"#
    );
    let path = dir.join(format!("config{}.json", text.len()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn train_resume_eval_predict_explain_robustness_export() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let hybrid = config(
        dir.path(),
        r#"{"family": "hybrid", "early": {"method": "concat"}, "combiner": {"combiner": "mean"}}"#,
        "",
    );
    let run = dir.path().join("run");
    let (c, r) = (hybrid.to_str().unwrap(), run.to_str().unwrap());

    let first = ok(&["train", "--config", c, "--run", r, "--device", "cpu"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    let stdout = String::from_utf8_lossy(&first.stdout);
    // Per-group metrics, and the gap between groups, on the terminal too.
    assert!(
        stdout.contains("group even: accuracy") && stdout.contains("macro-F1"),
        "{stdout}"
    );
    assert!(stdout.contains("largest gap between groups: accuracy"), "{stdout}");
    assert!(
        stdout.contains("worst group ") && stdout.contains("modality leaned on most differently"),
        "{stdout}"
    );
    assert!(stderr.contains("skipped record corrupt (image)"), "{stderr}");
    assert!(
        stderr.contains("skipped record lost (audio)") && stderr.contains("lost.wav"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unusable file, its modality left out: half (audio)") && stderr.contains("noise.wav"),
        "{stderr}"
    );
    assert!(stderr.contains("line 94"), "the unreadable line is named: {stderr}");
    assert!(
        stdout.contains(
            "93 records: 90 usable, 3 skipped, 1 files unusable (modality left out), 1 unreadable manifest lines"
        ),
        "{stdout}"
    );
    for file in [
        "run.json",
        "classes.json",
        "model.json",
        "metrics.jsonl",
        "checkpoints/best.safetensors",
        "eval.json",
        "report.md",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    for plot in ["training", "confusion"] {
        for ext in ["png", "svg"] {
            let path = run.join(format!("plots/{plot}.{ext}"));
            assert!(std::fs::metadata(&path).unwrap().len() > 1000, "{}", path.display());
        }
    }
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    // A second run of the same configuration reads every feature from the cache, and with
    // more epochs continues the first instead of starting over.
    let resumed = json(&ok(&[
        "train", "--config", c, "--run", r, "--epochs", "5", "--json", "--device", "cpu",
    ]));
    assert_eq!(resumed["resumed_from"], 3);
    assert_eq!(resumed["epochs"].as_array().unwrap().len(), 5);
    assert_eq!(resumed["skipped"].as_array().unwrap().len(), 3);
    // Fewer epochs than trained: nothing is trained, and it says so.
    let fewer = ok(&["train", "--config", c, "--run", r, "--epochs", "2", "--device", "cpu"]);
    let said = String::from_utf8_lossy(&fewer.stderr);
    assert!(
        said.contains("already trained 5 epochs (asked for 2): nothing trained"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    // Another configuration in the same folder is refused before anything is written.
    let before = std::fs::read_to_string(run.join("run.json")).unwrap();
    let other = config(dir.path(), r#"{"family": "late", "combiner": "mean"}"#, "");
    let refused = fusion(&["train", "--config", other.to_str().unwrap(), "--run", r]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds a run of another configuration"));
    assert_eq!(
        std::fs::read_to_string(run.join("run.json")).unwrap(),
        before,
        "the run is untouched"
    );
    let extract = json(&ok(&["extract", "--config", c, "--json"]));
    let bad_shard = fusion(&["extract", "--config", c, "--shard", "2/2"]);
    assert!(!bad_shard.status.success());
    assert!(String::from_utf8_lossy(&bad_shard.stderr).contains("need 0 ≤ i < n"));
    assert_eq!(extract["computed"], 0, "{extract}");
    assert!(extract["cached"].as_u64().unwrap() > 150);

    let eval = json(&ok(&["eval", "--run", r, "--json", "--device", "cpu"]));
    assert_eq!(eval["split"], "test");
    assert_eq!(eval["metrics"]["count"], 17);
    let accuracy = eval["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "an easy task: {accuracy}");
    assert_eq!(eval["classes"], serde_json::json!(["c0", "c1", "c2"]));
    // Fairness: each group's accuracy is the per-group metrics' one, the worst group has
    // the lowest, the gap is the spread, and every modality has a mean Shapley value.
    let fairness = &eval["fairness"];
    let groups = fairness["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{fairness}");
    let scores: Vec<(String, f64)> = groups
        .iter()
        .map(|g| (g["group"].as_str().unwrap().to_string(), g["score"].as_f64().unwrap()))
        .collect();
    for (group, score) in &scores {
        assert_eq!(eval["groups"]["groups"][group]["accuracy"].as_f64(), Some(*score));
    }
    let lowest = scores.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let highest = scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    assert_eq!(fairness["worst"].as_str(), Some(lowest.0.as_str()));
    assert!((fairness["gap"].as_f64().unwrap() - (highest - lowest.1)).abs() < 1e-12);
    assert_eq!(fairness["modalities"], serde_json::json!(["image", "audio"]));
    assert!(
        groups
            .iter()
            .all(|g| g["shapley"].as_array().unwrap().iter().all(|v| v.is_f64()))
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("### Fairness")
            && report.contains("| group | records | accuracy | ECE | Shapley image | Shapley audio |"),
        "{report}"
    );

    let predictions = dir.path().join("predictions.jsonl");
    ok(&[
        "predict",
        "--run",
        r,
        "--out",
        predictions.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&predictions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 93, "90 predictions and 3 error lines");
    let half = lines.iter().find(|l| l["id"] == "half").unwrap();
    assert_eq!(half["missing"], serde_json::json!(["audio"]));
    assert!(half["unusable"][0].as_str().unwrap().contains("noise.wav"), "{half}");
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l.get("error").is_some())
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["r59", "corrupt", "lost"]);
    for line in lines.iter().filter(|l| l.get("prediction").is_some()) {
        let total: f64 = line["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{line}");
    }
    let r3 = lines.iter().find(|l| l["id"] == "r3").unwrap();
    assert_eq!(r3["missing"], serde_json::json!(["audio"]));
    let right = lines
        .iter()
        .filter(|l| l.get("prediction").is_some() && l["prediction"] == l["label"])
        .count();
    assert!(right > 80, "{right} of 90 right");

    // A manifest without labels predicts the same; eval refuses it, naming the reason.
    let unlabelled = dir.path().join("unlabelled.jsonl");
    let text = std::fs::read_to_string(dir.path().join("manifest.jsonl")).unwrap();
    let stripped: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|mut record| {
            record.as_object_mut().unwrap().remove("label");
            record.to_string()
        })
        .collect();
    std::fs::write(&unlabelled, stripped.join("\n")).unwrap();
    let unlabelled_out = dir.path().join("unlabelled_predictions.jsonl");
    let u = unlabelled.to_str().unwrap();
    ok(&[
        "predict",
        "--run",
        r,
        "--manifest",
        u,
        "--out",
        unlabelled_out.to_str().unwrap(),
        "--quiet",
    ]);
    let again: Vec<serde_json::Value> = std::fs::read_to_string(&unlabelled_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again.len(), lines.len());
    for (with, without) in lines.iter().zip(&again) {
        assert_eq!(with["prediction"], without["prediction"]);
        assert!(without.get("label").is_none());
    }
    let refused = fusion(&["eval", "--run", r, "--manifest", u]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("has no label"));

    let explain = json(&ok(&["explain", "--run", r, "--json", "--device", "cpu"]));
    assert_eq!(explain["shapley"]["modalities"], serde_json::json!(["image", "audio"]));
    assert!(
        explain["shapley"]["mean_abs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64().unwrap() > 0.0)
    );
    let robust = json(&ok(&["robustness", "--run", r, "--json", "--device", "cpu"]));
    assert_eq!(robust["subsets"].as_array().unwrap().len(), 3);
    assert_eq!(robust["noise"].as_array().unwrap().len(), 2);
    let exported = json(&ok(&["export", "--run", r, "--json", "--device", "cpu"]));
    assert!(run.join("model.pt").exists());
    assert_eq!(exported["signature"]["inputs"].as_array().unwrap().len(), 4);
    assert_eq!(exported["signature"]["inputs"][0]["shape"][0], "batch");
    assert_eq!(exported["signature"]["classes"], serde_json::json!(["c0", "c1", "c2"]));
    for plot in ["contributions", "missing_modalities", "noise"] {
        assert!(run.join(format!("plots/{plot}.png")).exists(), "{plot}");
    }
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("takes raw features"),
        "the export note says how inputs are scaled"
    );
    // The noise curves as numbers, the Shapley means' population, the hybrid's train loss.
    assert!(report.contains("| modality | 0 | 0.1 | 0.2 |"), "{report}");
    assert!(
        report.contains("| image | ") && report.contains("records with it"),
        "{report}"
    );
    assert!(report.contains("× the mean of the per-branch losses"), "{report}");
    assert!(report.contains("Largest gap between groups: accuracy"), "{report}");
    for section in [
        "## Training",
        "## Evaluation on test",
        "## Modality contributions",
        "## Robustness",
        "## Export",
    ] {
        assert!(report.contains(section), "{section} missing from report.md");
    }
}

#[test]
fn compare_trains_every_method_and_the_unimodal_baselines() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let methods = r#",
  "compare": [
    {"name": "early: concat", "fusion": {"family": "early", "method": "concat"}},
    {"name": "late: mean", "fusion": {"family": "late", "combiner": "mean"}}
  ]"#;
    let config = config(dir.path(), r#"{"family": "late", "combiner": "mean"}"#, methods);
    let out = dir.path().join("compare");
    let result = ok(&[
        "compare",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    for row in [
        "| image only |",
        "| audio only |",
        "| early: concat |",
        "| late: mean |",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    // Two modalities alone, two methods, then the simple baselines on the same inputs:
    // a logistic regression per modality and their late fusion.
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "image only",
            "audio only",
            "early: concat",
            "late: mean",
            "baseline: logistic regression: image",
            "baseline: logistic regression: audio",
            "baseline: late fusion of the logistic regressions"
        ]
    );
    assert!(
        rows[4..]
            .iter()
            .all(|r| r.get("run").is_none() && r["parameters"].as_i64().unwrap() > 0)
    );
    assert!(
        stdout.contains("| baseline: late fusion of the logistic regressions |"),
        "{stdout}"
    );
    assert!(out.join("baselines.json").exists());
    assert!(out.join("plots/compare.png").exists() && out.join("report.md").exists());
    // Every row is tested on the same 17 records (r59 has neither modality), also those
    // without the row's modality.
    for row in &rows {
        assert_eq!(row["samples"], 17, "{row}");
    }
    let image_eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("00_image_only/eval.json")).unwrap()).unwrap();
    assert_eq!(image_eval["metrics"]["count"], 17);
    // The records have groups: each trained row names its worst group's accuracy and the
    // gap, as its run's evaluation does; the baselines have none.
    assert!(stdout.contains("| worst group | group gap |"), "{stdout}");
    let fairness = &image_eval["fairness"];
    let worst = fairness["worst"].as_str().unwrap();
    assert_eq!(
        rows[0]["worst_group_score"],
        image_eval["groups"]["groups"][worst]["accuracy"]
    );
    assert_eq!(rows[0]["group_gap"], fairness["gap"]);
    assert!(
        rows[..4].iter().all(|r| r["worst_group_score"].is_f64())
            && rows[4..].iter().all(|r| r.get("worst_group_score").is_none())
    );
    ensemble_of_the_compared_runs(dir.path(), &rows);
}

/// The compared runs as one ensemble: weights selected on val, evaluated and predicted
/// like a run; its probabilities are the weighted mean of its members'.
fn ensemble_of_the_compared_runs(dir: &Path, rows: &[serde_json::Value]) {
    let members: Vec<&str> = rows.iter().filter_map(|r| r["run"].as_str()).collect();
    let e = dir.join("ensemble");
    let mut args = vec![
        "ensemble",
        "--out",
        e.to_str().unwrap(),
        "--rounds",
        "10",
        "--json",
        "--runs",
    ];
    args.extend(&members);
    let built = json(&ok(&args));
    let chosen = &built["ensemble"];
    let weights: Vec<f64> = chosen["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(weights.len(), 4);
    assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{chosen}");
    assert!(
        weights.iter().all(|w| (w * 10.0 - (w * 10.0).round()).abs() < 1e-9),
        "picks of 10 rounds"
    );
    // Greedy selection never ends above its best member on the records it selected on.
    let ensemble_loss = chosen["losses"].as_array().unwrap().last().unwrap().as_f64().unwrap();
    for member in chosen["members"].as_array().unwrap() {
        assert!(ensemble_loss <= member["loss"].as_f64().unwrap() + 1e-9, "{chosen}");
    }
    assert_eq!(built["eval"]["split"], "test");
    // A calibration fitted to the ensemble goes when the ensemble is built again (it would
    // scale other members' probabilities).
    let calibrated = json(&ok(&["calibrate", "--run", e.to_str().unwrap(), "--json"]));
    assert!(calibrated["temperature"].as_f64().unwrap() > 0.0, "{calibrated}");
    assert!(e.join("calibration.json").exists());
    ok(&args);
    assert!(!e.join("calibration.json").exists(), "a stale calibration was kept");
    let eval = json(&ok(&["eval", "--run", e.to_str().unwrap(), "--json"]));
    assert_eq!(eval["metrics"], built["eval"]["metrics"]);
    assert!(eval["metrics"]["accuracy"].as_f64().unwrap() > 0.8, "{eval}");

    let lines = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let by_id = |values: Vec<serde_json::Value>| -> std::collections::HashMap<String, serde_json::Value> {
        values
            .into_iter()
            .map(|v| (v["id"].as_str().unwrap().to_string(), v))
            .collect()
    };
    let predictions = dir.join("ensemble.jsonl");
    ok(&[
        "predict",
        "--run",
        e.to_str().unwrap(),
        "--out",
        predictions.to_str().unwrap(),
        "--quiet",
    ]);
    let ensemble = by_id(lines(&predictions));
    assert_eq!(ensemble.len(), 93, "every record once, unreadable ones as errors");
    let mut expected = [0.0f64; 3];
    for (member, weight) in members.iter().zip(&weights) {
        let out = dir.join(format!("member{weight}.jsonl"));
        ok(&["predict", "--run", member, "--out", out.to_str().unwrap(), "--quiet"]);
        let line = &by_id(lines(&out))["r0"];
        for (c, class) in ["c0", "c1", "c2"].iter().enumerate() {
            expected[c] += weight * line["probabilities"][class].as_f64().unwrap();
        }
    }
    let r0 = &ensemble["r0"];
    let used = weights.iter().filter(|&&w| w > 0.0).count();
    assert_eq!(r0["members"], used, "members with weight 0 are not run: {r0}");
    for (c, class) in ["c0", "c1", "c2"].iter().enumerate() {
        let got = r0["probabilities"][class].as_f64().unwrap();
        assert!((got - expected[c]).abs() < 1e-5, "{class}: {got} vs {}", expected[c]);
    }
    assert!(ensemble["corrupt"]["error"].is_string(), "{}", ensemble["corrupt"]);

    let explain = fusion(&["explain", "--run", e.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&explain.stderr).contains("is an ensemble"));
    let twice = fusion(&[
        "ensemble",
        "--out",
        e.to_str().unwrap(),
        "--runs",
        members[0],
        members[0],
    ]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("listed twice"));
    let into_a_run = fusion(&["ensemble", "--out", members[1], "--runs", members[0], members[1]]);
    assert!(String::from_utf8_lossy(&into_a_run.stderr).contains("holds a trained run"));
    assert!(!Path::new(members[1]).join("ensemble.json").exists());

    // An ensemble.json edited to other classes, or to weights that are no distribution,
    // is refused naming the file (it once blended into accuracy 0.07 and exit 0).
    let file = e.join("ensemble.json");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["classes"] = serde_json::json!(["c2", "c1", "c0"]);
    std::fs::write(&file, edited.to_string()).unwrap();
    let refused = fusion(&["eval", "--run", e.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("ensemble.json") && said.contains("are not those of member"),
        "{said}"
    );
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["members"][0]["weight"] = serde_json::json!(5.0);
    std::fs::write(&file, edited.to_string()).unwrap();
    let refused = fusion(&[
        "predict",
        "--run",
        e.to_str().unwrap(),
        "--out",
        dir.join("x.jsonl").to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("sum to 1"), "{said}");
    std::fs::write(&file, original).unwrap();
}

#[test]
fn bad_configurations_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let run = dir.path().join("run");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = std::fs::read_to_string(config(dir.path(), r#"{"family": "late", "combiner": "mean"}"#, "")).unwrap();
    let last_modality = "{\"kind\": \"mlp\", \"hidden\": [32]}}\n  ],";
    let with_video = good.replace(
        last_modality,
        r#"{"kind": "mlp", "hidden": [32]}},
    {"name": "video", "features": {"kind": "video_frames", "frames": 2, "size": 4}}
  ],"#,
    );
    assert_ne!(with_video, good);
    let cases = [
        (
            config(dir.path(), r#"{"family": "early", "method": "magic"}"#, ""),
            vec!["field `fusion`", "magic"],
        ),
        (
            config(
                dir.path(),
                r#"{"family": "early", "method": "attention", "heads": 5, "layers": 1}"#,
                "",
            ),
            vec!["fusion.heads"],
        ),
        (
            write("misspelt.json", good.replace(r#""hidden_dim""#, r#""hiden_dim""#)),
            vec!["unknown field `hiden_dim`"],
        ),
        (
            write(
                "dropout.json",
                good.replace(r#""seed": 1"#, r#""seed": 1, "modality_dropuot": 0.2"#),
            ),
            vec![
                "field `train.modality_dropuot`",
                "unknown field `modality_dropuot`",
                "did you mean `modality_dropout`?",
            ],
        ),
        (
            write(
                "decay.json",
                good.replace(r#""lr": 0.01"#, r#""lr": 0.01, "weight_decy": 0.5"#),
            ),
            vec!["field `train.optimizer`", "did you mean `weight_decay`?"],
        ),
        (
            write("eps.json", good.replace(r#""lr": 0.01"#, r#""lr": 0.01, "eps": -1"#)),
            vec!["train.optimizer.eps", "positive"],
        ),
        (
            write(
                "constant.json",
                good.replace(
                    r#""seed": 1"#,
                    r#""seed": 1, "schedule": {"kind": "constant", "gamma": 0.5}"#,
                ),
            ),
            vec!["train.schedule", "unknown field `gamma`"],
        ),
        (
            config(
                dir.path(),
                r#"{"family": "early", "method": "low_rank", "rnak": 4}"#,
                "",
            ),
            vec!["field `fusion`", "did you mean `rank`?"],
        ),
        (
            config(
                dir.path(),
                r#"{"family": "late", "combiner": "mean", "weights": [1, 2]}"#,
                "",
            ),
            vec!["field `fusion`", "unknown field `weights`"],
        ),
        (
            write(
                "limit_typo.json",
                good.replace(
                    r#""hidden_dim": 32,"#,
                    r#""hidden_dim": 32, "limits": {"audio_secs": 1},"#,
                ),
            ),
            vec!["field `limits.audio_secs`", "did you mean `audio_seconds`?"],
        ),
        (
            write(
                "limit_negative.json",
                good.replace(
                    r#""hidden_dim": 32,"#,
                    r#""hidden_dim": 32, "limits": {"audio_seconds": -1},"#,
                ),
            ),
            vec!["limits.audio_seconds", "not positive"],
        ),
        (
            write("video.json", with_video),
            vec!["modalities[2].name", "no record", "video"],
        ),
        (
            write("wrong.json", good.replace(r#""name": "audio""#, r#""name": "sound""#)),
            vec!["modalities[1].name", "sound"],
        ),
        // Class weights reach the trainer: every class weighing 0 leaves nothing to learn.
        (
            write(
                "zero_weights.json",
                good.replace(
                    r#""hidden_dim": 32,"#,
                    r#""hidden_dim": 32, "class_weights": {"c0": 0, "c1": 0, "c2": 0},"#,
                ),
            ),
            vec!["every sample weight is 0"],
        ),
        (
            write(
                "class_typo.json",
                good.replace(
                    r#""hidden_dim": 32,"#,
                    r#""hidden_dim": 32, "class_weights": {"c9": 2},"#,
                ),
            ),
            vec!["class_weights", "`c9` is not a class"],
        ),
        (
            write(
                "objective_typo.json",
                good.replace(r#""seed": 1"#, r#""seed": 1, "objective": "group_dor""#),
            ),
            vec!["train.objective", "group_dro"],
        ),
    ];
    for (config, expected) in cases {
        let out = fusion(&[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", config.display());
        for text in expected {
            assert!(stderr.contains(text), "{}: `{text}` not in {stderr}", config.display());
        }
    }
    assert!(
        !run.join("model.json").exists(),
        "nothing trained on a bad configuration"
    );
    // A compare row's name becomes a folder's: `fusion compare` refuses one of 100,000
    // characters before anything trains (`fusion train` of the file trains the run alone).
    let long_row = config(
        dir.path(),
        r#"{"family": "late", "combiner": "mean"}"#,
        &format!(
            r#", "compare": [{{"name": "{}", "fusion": {{"family": "late", "combiner": "max"}}}}]"#,
            "x".repeat(100_000)
        ),
    );
    let rows = dir.path().join("rows");
    let out = fusion(&[
        "compare",
        "--config",
        long_row.to_str().unwrap(),
        "--out",
        rows.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("compare[0].name") && stderr.contains("100000 characters"),
        "{stderr}"
    );
    assert!(!rows.join("compare.json").exists(), "nothing compared");
}

#[test]
fn demo_fusion_beats_each_modality_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let result = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(["demo", "--out", out.to_str().unwrap(), "--device", "cpu", "--json"])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    // --json: one value on stdout with the table, the best method and its explanations.
    let summary = json(&result);
    let rows = summary["compare"].as_array().unwrap();
    let trained = rows.iter().filter(|r| r.get("run").is_some()).count();
    assert_eq!(trained, 10, "3 modalities alone, 5 methods on MLPs, 2 on LeNets");
    assert!(rows.len() > trained, "and the simple baselines");
    assert_eq!(
        summary["explain"]["shapley"]["modalities"],
        serde_json::json!(["image", "audio", "video"])
    );
    assert_eq!(summary["robustness"]["subsets"].as_array().unwrap().len(), 7);
    let accuracy = |name: &str| {
        rows.iter().find(|r| r["name"] == name).unwrap()["accuracy"]
            .as_f64()
            .unwrap()
    };
    let best_alone = accuracy("image only").max(accuracy("audio only"));
    for fused in [
        "early: concat",
        "hybrid: concat + learned",
        "LeNet early: concat",
        "LeNet hybrid: concat + learned",
    ] {
        assert!(
            accuracy(fused) > best_alone + 0.03,
            "{fused} {} vs {best_alone}",
            accuracy(fused)
        );
    }
    // Each bad file costs its record that modality, not the record.
    let read = |name: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    assert_eq!(read("skipped.json"), Vec::<serde_json::Value>::new());
    let unusable = read("unusable.json");
    let ids: Vec<(&str, &str)> = unusable
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["modality"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("broken_image", "image"),
            ("lost_audio", "audio"),
            ("truncated_video", "video")
        ]
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| hybrid: concat + learned |"));
}

/// Deep encoders through the program: a CNN over images and a GRU's frame states fused by
/// pairwise cross-modal attention train, evaluate, predict and export.
#[test]
fn deep_encoders_and_sequence_fusion_through_the_program() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let text = r#"{
  "manifest": "manifest.jsonl",
  "cache": "cache",
  "modalities": [
    {"name": "image", "features": {"kind": "image", "size": 8, "grey": true}, "encoder": {"kind": "resnet18", "width": 4}},
    {"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 8}, "encoder": {"kind": "audio_gru", "hidden": 16, "sequence": true}}
  ],
  "hidden_dim": 16,
  "fusion": {"family": "early", "method": "cross_modal", "heads": 2, "layers": 1},
  "train": {"epochs": 4, "batch_size": 16, "optimizer": {"kind": "adam_w", "lr": 0.01}, "seed": 1}
}"#;
    let config = dir.path().join("deep.json");
    std::fs::write(&config, text).unwrap();
    let run = dir.path().join("deep_run");
    let (c, r) = (config.to_str().unwrap(), run.to_str().unwrap());
    let trained = json(&ok(&["train", "--config", c, "--run", r, "--json", "--device", "cpu"]));
    assert_eq!(trained["epochs"].as_array().unwrap().len(), 4);
    let model = std::fs::read_to_string(run.join("model.json")).unwrap();
    assert!(model.contains("resnet18") && model.contains("audio_gru"), "{model}");
    let eval = json(&ok(&["eval", "--run", r, "--json", "--device", "cpu"]));
    assert_eq!(eval["metrics"]["count"], 17);
    let predictions = dir.path().join("deep.jsonl");
    ok(&["predict", "--run", r, "--out", predictions.to_str().unwrap(), "--quiet"]);
    assert_eq!(std::fs::read_to_string(&predictions).unwrap().lines().count(), 93);
    let exported = json(&ok(&["export", "--run", r, "--json", "--device", "cpu"]));
    let inputs = exported["signature"]["inputs"].as_array().unwrap();
    assert_eq!(
        inputs[0]["shape"],
        serde_json::json!(["batch", 1, 8, 8]),
        "images [B, C, H, W]"
    );
    assert_eq!(
        inputs[2]["shape"],
        serde_json::json!(["batch", 8, 16]),
        "log-mel [B, frames, mels]"
    );
    assert_eq!(exported["signature"]["classes"], serde_json::json!(["c0", "c1", "c2"]));
}

/// A table from elsewhere, three classes: `photo` (an 8×8 image bright in band c),
/// `description` (words, one of them the class's), `mass` and `height` (numbers, the
/// first one shifted by class, both sometimes empty), `colour` (a category that follows
/// the class 80 % of the time, sometimes empty), `row` (an id), `batch` (one value),
/// `kind` (the label). No split column.
fn table(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("photos")).unwrap();
    let mut noise = noise(99);
    let mut csv = String::from("row,photo,description,mass,height,colour,batch,kind\n");
    let words = ["plain", "ordinary", "simple", "common"];
    for i in 0..120usize {
        let class = i % 3;
        let pixels: Vec<u8> = (0..64)
            .map(|p| {
                let band = (p / 8) * 3 / 8;
                (if band == class { 180.0 } else { 40.0 } + 60.0 * noise()) as u8
            })
            .collect();
        image::GrayImage::from_raw(8, 8, pixels)
            .unwrap()
            .save(dir.join(format!("photos/{i}.png")))
            .unwrap();
        let marker = ["striped", "dotted", "checked"][class];
        let description = format!("a {} {marker} item, {} made", words[i % 4], words[(i / 4) % 4]);
        let weight = if i % 9 == 4 {
            String::new()
        } else {
            format!("{:.2}", 10.0 * class as f32 + 6.0 * noise())
        };
        let height = if i % 13 == 5 {
            String::new()
        } else {
            format!("{:.1}", 100.0 * noise())
        };
        let colour = match (i % 10, i % 17) {
            (_, 3) => "",
            (0 | 1, _) => "grey",
            _ => ["red", "green", "blue"][class],
        };
        csv.push_str(&format!(
            "id{i},photos/{i}.png,\"{description}\",{weight},{height},{colour},b1,class{class}\n"
        ));
    }
    let path = dir.join("listings.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Zero-config training: the columns' kinds are inferred and written, the preset's
/// configuration trains, and that written configuration trains again to the same metrics.
#[test]
fn a_table_trains_with_no_configuration_and_its_written_config_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let csv = table(dir.path());
    let run = dir.path().join("auto");
    let (t, r) = (csv.to_str().unwrap(), run.to_str().unwrap());
    let typo = fusion(&["train", "--manifest", t, "--label", "knd", "--run", r]);
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        !typo.status.success() && stderr.contains("did you mean `kind`"),
        "{stderr}"
    );
    let trained = json(&ok(&[
        "train",
        "--manifest",
        t,
        "--label",
        "kind",
        "--run",
        r,
        "--json",
        "--device",
        "cpu",
    ]));
    let inferred: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("columns.json")).unwrap()).unwrap();
    let kinds: Vec<(&str, &str)> = inferred["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("row", "id"),
            ("photo", "image"),
            ("description", "text"),
            ("mass", "numeric"),
            ("height", "numeric"),
            ("colour", "categorical"),
            ("batch", "ignore"),
            ("kind", "label"),
        ]
    );
    // The run's configuration carries the table statistics fitted on its training split.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let table = saved["modalities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "table")
        .unwrap();
    assert!(table["features"]["columns"][0]["mean"].is_number(), "{table}");
    let mut categories: Vec<&str> = table["features"]["columns"][2]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    categories.sort();
    assert_eq!(categories, ["blue", "green", "grey", "red"], "{table}");
    let eval = &trained["eval"];
    // 15 % of each class's 40 records held out for test.
    assert_eq!(eval["metrics"]["count"], 18, "{eval}");
    assert!(eval["metrics"]["accuracy"].as_f64().unwrap() >= 0.8, "{eval}");
    // Beside the run: a logistic regression per modality on the same inputs (the frozen
    // text encoder's outputs for the descriptions, whose marker word names the class) and
    // their late fusion; and each modality alone on val.
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(name)).unwrap()).unwrap()
    };
    let baselines = read("baselines.json");
    let names: Vec<&str> = baselines["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.last(),
        Some(&"late fusion of the logistic regressions"),
        "{baselines}"
    );
    assert!(names.contains(&"logistic regression: table"), "{baselines}");
    let fused = &baselines["rows"][names.len() - 1];
    assert!(fused["accuracy"].as_f64().unwrap() >= 0.8, "{baselines}");
    let alone = read("modalities.json");
    let text = alone
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["modality"] == "text")
        .unwrap();
    assert_eq!(text["at_chance"], false, "{alone}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("## Simple baselines on test") && report.contains("Fusion gain over the best baseline"));
    assert!(report.contains("## Each modality alone"));
    // What the run cost, from the process's start: recorded, and in the report.
    let resources = read("resources.json");
    let (wall, training) = (
        resources["wall_seconds"].as_f64().unwrap(),
        resources["train_seconds"].as_f64().unwrap(),
    );
    assert!(wall > training && training > 0.0, "{resources}");
    assert!(resources["peak_rss_mb"].as_f64().unwrap() > 10.0, "{resources}");
    assert!(report.contains("Cost: wall time"), "{report}");

    let again = dir.path().join("again");
    let config = run.join("config.json");
    let rerun = json(&ok(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--run",
        again.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]));
    for metric in ["accuracy", "macro_f1"] {
        assert_eq!(rerun["eval"]["metrics"][metric], eval["metrics"][metric], "{metric}");
    }
    let loss = |v: &serde_json::Value| v["eval"]["loss"].as_f64().unwrap();
    assert!((loss(&rerun) - loss(&trained)).abs() < 1e-5);
    let predictions = dir.path().join("p.jsonl");
    ok(&["predict", "--run", r, "--out", predictions.to_str().unwrap(), "--quiet"]);
    let predicted = std::fs::read_to_string(&predictions).unwrap();
    assert_eq!(predicted.lines().count(), 120);

    // The run folder and its data moved to another machine: another folder, another cache
    // folder (the models linked in, no cached features), the old files gone. It predicts
    // the same, to the last digit.
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = |path: &Path| elsewhere.path().join(path.strip_prefix(dir.path()).unwrap());
    for file in walk(&run)
        .into_iter()
        .chain(walk(&dir.path().join("photos")))
        .chain([csv.clone()])
    {
        std::fs::create_dir_all(moved(&file).parent().unwrap()).unwrap();
        std::fs::copy(&file, moved(&file)).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("photos")).unwrap();
    let cache = elsewhere.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    if let Some(models) = fusion_run::models_dir().filter(|m| m.exists()) {
        // Models are named, not found by this machine's paths (which exist here still).
        let written = std::fs::read_to_string(run.join("run.json")).unwrap();
        assert!(!written.contains(models.to_str().unwrap()), "{written}");
        std::os::unix::fs::symlink(models, cache.join("models")).unwrap();
    }
    let there = elsewhere.path().join("p.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(["predict", "--run", moved(&run).to_str().unwrap(), "--quiet"])
        .args([
            "--manifest",
            moved(&csv).to_str().unwrap(),
            "--out",
            there.to_str().unwrap(),
        ])
        .env("FUSION_CACHE_DIR", &cache)
        .env("XDG_CACHE_HOME", elsewhere.path().join("xdg"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(&there).unwrap(), predicted);

    // Calibration on val: the fitted temperature lowers val's NLL, leaves every decision
    // as it was, and from then on eval and predict apply it (on the moved data: the
    // pictures above are gone).
    let data = moved(&csv);
    let m = data.to_str().unwrap();
    let refused = fusion(&["predict", "--run", again.to_str().unwrap(), "--coverage", "0.9"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("not calibrated"), "{said}");
    let calibrated = json(&ok(&[
        "calibrate",
        "--run",
        r,
        "--manifest",
        m,
        "--json",
        "--device",
        "cpu",
    ]));
    let (before, after) = (&calibrated["before"], &calibrated["after"]);
    assert!(calibrated["temperature"].as_f64().unwrap() > 0.0, "{calibrated}");
    assert!(
        after["nll"].as_f64().unwrap() <= before["nll"].as_f64().unwrap() + 1e-9,
        "{calibrated}"
    );
    assert_eq!(after["accuracy"], before["accuracy"], "{calibrated}");
    let eval = json(&ok(&["eval", "--run", r, "--manifest", m, "--json", "--device", "cpu"]));
    assert_eq!(
        eval["metrics"]["accuracy"], trained["eval"]["metrics"]["accuracy"],
        "{eval}"
    );
    let coverage = eval["calibration"]["coverage"].as_array().unwrap();
    assert_eq!(coverage.len(), 3, "{eval}");
    // The reliability diagram: bins of the records evaluated, before and after, plotted.
    for side in ["reliability_before", "reliability_after"] {
        let counted: u64 = eval["calibration"][side]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, eval["metrics"]["count"].as_u64().unwrap(), "{eval}");
    }
    assert!(run.join("plots/reliability.png").exists() && run.join("plots/reliability.svg").exists());
    assert!(
        std::fs::read_to_string(run.join("report.md"))
            .unwrap()
            .contains("plots/reliability.png")
    );
    // Predictions apply the stored temperature, whatever it is: one that softens
    // near-certain outputs visibly is written in.
    let file = run.join("calibration.json");
    let mut stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    stored["temperature"] = serde_json::json!(3.0);
    std::fs::write(&file, stored.to_string()).unwrap();
    let with_sets = dir.path().join("sets.jsonl");
    ok(&[
        "predict",
        "--run",
        r,
        "--coverage",
        "0.9",
        "--manifest",
        m,
        "--out",
        with_sets.to_str().unwrap(),
        "--quiet",
    ]);
    let temperature = 3.0;
    for (line, raw) in std::fs::read_to_string(&with_sets)
        .unwrap()
        .lines()
        .zip(predicted.lines())
    {
        let (line, raw): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(line).unwrap(), serde_json::from_str(raw).unwrap());
        let set = line["set"].as_array().unwrap();
        assert_eq!(set[0], line["prediction"], "{line}");
        // Each probability is the model's own at the temperature: p ∝ exp(ln p / T).
        let scaled: Vec<(String, f64)> = raw["probabilities"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(c, p)| (c.clone(), (p.as_f64().unwrap().max(1e-12).ln() / temperature).exp()))
            .collect();
        let total: f64 = scaled.iter().map(|(_, p)| p).sum();
        for (class, p) in scaled {
            let written = line["probabilities"][&class].as_f64().unwrap();
            assert!(
                (written - p / total).abs() < 1e-4,
                "{class}: {written} vs {} at T {temperature}",
                p / total
            );
        }
    }
}

/// A table of two numbers and a colour with a numeric label and a tag-set label.
fn numbers_table(dir: &Path) -> PathBuf {
    let mut noise = noise(7);
    let mut uniform = move || f64::from(noise()) * 2.0 - 1.0;
    let mut csv = String::from("id,x1,x2,colour,price,tags\n");
    for i in 0..240 {
        let (x1, x2) = (uniform() * 3.0, uniform() * 3.0);
        let colour = ["red", "blue", "green"][i % 3];
        let red = colour == "red";
        let price = 100.0 + 3.0 * x1 - 2.0 * x2 + if red { 10.0 } else { 0.0 } + 0.1 * uniform();
        let tags: Vec<&str> = [(x1 > 0.0, "big"), (x2 > 0.0, "heavy"), (red, "red")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, tag)| *tag)
            .collect();
        // A record with no tag is written `;`.
        let tags = if tags.is_empty() {
            ";".to_string()
        } else {
            tags.join(";")
        };
        csv.push_str(&format!("r{i},{x1:.3},{x2:.3},{colour},{price:.3},{tags}\n"));
    }
    let path = dir.join("numbers.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// The label's cells choose the task: numbers with fractions train a regression, `;`-joined
/// tags a multi-label model; eval, predict, explain and robustness speak the task's terms.
#[test]
fn regression_and_multi_label_tables_train_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let csv = numbers_table(dir.path());
    let t = csv.to_str().unwrap();
    let train = |label: &str, run: &Path| {
        json(&ok(&[
            "train",
            "--manifest",
            t,
            "--label",
            label,
            "--run",
            run.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ]))
    };
    let read =
        |path: PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };

    let run = dir.path().join("price");
    let eval = train("price", &run)["eval"].clone();
    assert_eq!(read(run.join("columns.json"))["label"], "numbers");
    assert_eq!(read(run.join("run.json"))["task"], "regression");
    assert_eq!(eval["task"]["task"], "regression", "{eval}");
    // 15 % of 240 held out for test, not per value (each value is its own).
    assert_eq!(eval["task"]["count"], 36, "{eval}");
    // The price's std is about 6: R² 0.9 is an RMSE near 2.
    assert!(eval["task"]["r2"].as_f64().unwrap() > 0.9, "{eval}");
    let predictions = dir.path().join("price.jsonl");
    ok(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--out",
        predictions.to_str().unwrap(),
        "--quiet",
    ]);
    let text = std::fs::read_to_string(&predictions).unwrap();
    let errors: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|p| {
            let predicted: f64 = p["prediction"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                p["probabilities"]["value"].as_f64().unwrap() as f32,
                predicted as f32,
                "{p}"
            );
            (predicted - p["label"].as_str().unwrap().parse::<f64>().unwrap()).abs()
        })
        .collect();
    assert_eq!(errors.len(), 240);
    assert!(errors.iter().sum::<f64>() / 240.0 < 3.0, "{errors:?}");
    // Conformal intervals from the val records' residuals: eval reports their coverage on
    // test, predict --coverage gives each record one.
    let r = run.to_str().unwrap();
    let refused = fusion(&["predict", "--run", r, "--coverage", "0.9", "--quiet"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("intervals come from its held-out residuals"),
        "{said}"
    );
    let intervals = json(&ok(&["calibrate", "--run", r, "--json"]));
    let residuals: Vec<f64> = intervals["residuals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        residuals.len() >= 20 && residuals.windows(2).all(|w| w[0] <= w[1]),
        "{intervals}"
    );
    let eval = json(&ok(&["eval", "--run", r, "--json"]));
    let at_90 = &eval["intervals"]["coverage"][1];
    assert_eq!(at_90["target"], 0.9, "{eval}");
    assert!(at_90["achieved"].as_f64().unwrap() >= 0.75, "{eval}");
    // The width is twice the ⌈(n + 1) · 0.9⌉-th smallest residual.
    let q = residuals[((residuals.len() as f64 + 1.0) * 0.9).ceil() as usize - 1];
    assert!((at_90["width"].as_f64().unwrap() - 2.0 * q).abs() < 1e-9, "{eval}");
    let covered = dir.path().join("price-intervals.jsonl");
    ok(&[
        "predict",
        "--run",
        r,
        "--coverage",
        "0.9",
        "--out",
        covered.to_str().unwrap(),
        "--quiet",
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&covered)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut held = 0;
    for p in &lines {
        let (low, high) = (p["interval"][0].as_f64().unwrap(), p["interval"][1].as_f64().unwrap());
        let value = p["probabilities"]["value"].as_f64().unwrap();
        assert!((value - low - q).abs() < 1e-3 && (high - value - q).abs() < 1e-3, "{p}");
        let label: f64 = p["label"].as_str().unwrap().parse().unwrap();
        held += usize::from(low <= label && label <= high);
    }
    assert!(held as f64 >= 0.75 * lines.len() as f64, "{held} of {}", lines.len());
    assert!(
        std::fs::read_to_string(run.join("report.md"))
            .unwrap()
            .contains("### Conformal intervals")
    );
    let robust = json(&ok(&["robustness", "--run", run.to_str().unwrap(), "--json"]));
    assert!(robust["subsets"][0]["accuracy"].as_f64().unwrap() > 0.9, "{robust}");
    ok(&["explain", "--run", run.to_str().unwrap(), "--quiet"]);
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("R²") && report.contains("the predicted number"),
        "{report}"
    );
    ok(&["export", "--run", run.to_str().unwrap(), "--quiet"]);
    let signature = read(run.join("model.pt.json"));
    assert_eq!(signature["task"], "regression");
    assert_eq!(signature["outputs"], serde_json::json!(["value"]));
    // Every default method of `compare` trains the regression; rows rank by R².
    let compared = dir.path().join("compare-price");
    let config = run.join("config.json");
    let table = ok(&[
        "compare",
        "--config",
        config.to_str().unwrap(),
        "--out",
        compared.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(stdout.contains("| method | samples | R² | ECE |"), "{stdout}");
    let rows = read(compared.join("compare.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in rows {
        assert!(row["accuracy"].as_f64().unwrap() > 0.8, "{row}");
    }

    let run = dir.path().join("tags");
    let eval = train("tags", &run)["eval"].clone();
    assert_eq!(read(run.join("columns.json"))["label"], "tags");
    assert_eq!(
        read(run.join("classes.json")),
        serde_json::json!(["big", "heavy", "red"])
    );
    assert_eq!(eval["task"]["task"], "multi_label", "{eval}");
    assert!(eval["task"]["label_accuracy"].as_f64().unwrap() > 0.85, "{eval}");
    assert!(eval["task"]["macro_roc_auc"].as_f64().unwrap() > 0.9, "{eval}");
    let predictions = dir.path().join("tags.jsonl");
    ok(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--out",
        predictions.to_str().unwrap(),
        "--quiet",
    ]);
    let exact = std::fs::read_to_string(&predictions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|p| {
            let set = |s: &str| {
                s.split(';')
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            set(p["prediction"].as_str().unwrap()) == set(p["label"].as_str().unwrap())
        })
        .count();
    assert!(exact > 160, "{exact} of 240 label sets right");
    // A temperature per label, fitted on val: NLL there does not rise, every decision at 0.5
    // stays, and predictions then carry σ(logit(p) / T) of each label's probability.
    let r = run.to_str().unwrap();
    let calibration = json(&ok(&["calibrate", "--run", r, "--json", "--device", "cpu"]));
    let temperatures: Vec<f64> = calibration["temperatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(temperatures.len(), 3, "{calibration}");
    assert!(
        calibration["after"]["nll"].as_f64() <= calibration["before"]["nll"].as_f64(),
        "{calibration}"
    );
    assert_eq!(
        calibration["after"]["label_accuracy"],
        calibration["before"]["label_accuracy"]
    );
    let calibrated = dir.path().join("tags-calibrated.jsonl");
    ok(&["predict", "--run", r, "--out", calibrated.to_str().unwrap(), "--quiet"]);
    let lines = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let logit = |p: f64| (p / (1.0 - p)).ln();
    for (before, after) in lines(&predictions).iter().zip(lines(&calibrated)) {
        for (k, tag) in ["big", "heavy", "red"].iter().enumerate() {
            let p = before["probabilities"][tag].as_f64().unwrap();
            // Near 0 or 1 a float's last digits decide the logit.
            if !(1e-4..1.0 - 1e-4).contains(&p) {
                continue;
            }
            let expected = 1.0 / (1.0 + (-logit(p) / temperatures[k]).exp());
            let got = after["probabilities"][tag].as_f64().unwrap();
            assert!((got - expected).abs() < 1e-4, "{tag}: {got} vs {expected}");
        }
    }
    let eval = json(&ok(&["eval", "--run", r, "--json", "--device", "cpu"]));
    assert_eq!(
        eval["label_calibration"]["temperatures"].as_array().unwrap().len(),
        3,
        "{eval}"
    );
    // The export traces the temperatures in, and says so in its signature.
    let exported = json(&ok(&["export", "--run", r, "--json", "--device", "cpu"]));
    let traced: Vec<f64> = exported["signature"]["temperatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(traced, temperatures);
    let refused = fusion(&["predict", "--run", r, "--coverage", "0.9", "--out", "/dev/null"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("multi-label run has neither"));
    // `--task` overrides the label's suggestion: tags are not numbers.
    let forced = fusion(&[
        "train",
        "--manifest",
        t,
        "--label",
        "tags",
        "--task",
        "regression",
        "--run",
        dir.path().join("forced").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(
        !forced.status.success() && stderr.contains("not a finite number"),
        "{stderr}"
    );
}

/// `extract` exists to fill the cache: a cache that cannot be written fails it (after the
/// features are computed and reported); `eval` on a split without the run's classes fails
/// instead of reporting an accuracy over nothing.
#[test]
fn exit_statuses_tell_a_script_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let path = config(dir.path(), r#"{"family": "late", "combiner": "mean"}"#, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(r#""cache": "cache""#, r#""cache": "blocked""#);
    std::fs::write(dir.path().join("blocked"), b"a file, not a folder").unwrap();
    let blocked = dir.path().join("blocked.json");
    std::fs::write(&blocked, text).unwrap();
    let out = fusion(&["extract", "--config", blocked.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("computed but not cached") && stderr.contains("blocked"),
        "{stderr}"
    );

    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    ok(&[
        "train",
        "--config",
        path.to_str().unwrap(),
        "--run",
        r,
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]);
    let unseen = dir.path().join("unseen.jsonl");
    std::fs::write(
        &unseen,
        r#"{"id": "u", "label": "c9", "split": "test", "image": "files/0.png", "audio": "files/0.wav"}"#,
    )
    .unwrap();
    let eval = fusion(&["eval", "--run", r, "--manifest", unseen.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&eval.stderr);
    assert!(!eval.status.success(), "{stderr}");
    assert!(stderr.contains("one of the run's"), "{stderr}");
}

/// A checkpoint that cannot be written (a file-size limit on the process, as a full disk
/// would do) stops the run with a message saying which checkpoint is intact; the previous
/// checkpoint is untouched, no temporary file stays behind, and the same command without
/// the limit resumes from it.
#[test]
fn a_checkpoint_write_that_fails_leaves_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let path = config(dir.path(), r#"{"family": "early", "method": "concat"}"#, "");
    let run = dir.path().join("run");
    let (c, r) = (path.to_str().unwrap(), run.to_str().unwrap());
    ok(&["train", "--config", c, "--run", r, "--epochs", "2", "--device", "cpu"]);
    let checkpoint = run.join("checkpoints/last.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    // `ulimit -f` counts 1024-byte blocks. SIGXFSZ keeps its default (kill) disposition
    // here: the program itself must turn it into a failed write (EFBIG).
    let blocks = before.len() / 2 / 1024;
    assert!(blocks >= 4, "checkpoint of {} bytes", before.len());
    let limited = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f {blocks}; trap - XFSZ; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_fusion"))
        .args(["train", "--config", c, "--run", r, "--epochs", "4", "--device", "cpu"])
        .env("FUSION_TEST", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert!(!limited.status.success(), "{stderr}");
    assert!(
        stderr.contains("last.safetensors")
            && stderr.contains("not saved")
            && stderr.contains("the checkpoint of epoch 2 is intact"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        before,
        "the previous checkpoint changed"
    );
    let leftovers: Vec<_> = walk(&run)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let resumed = json(&ok(&[
        "--json", "train", "--config", c, "--run", r, "--epochs", "4", "--device", "cpu",
    ]));
    assert_eq!(resumed["resumed_from"], 2, "{resumed}");
    assert_eq!(resumed["epochs"].as_array().map(Vec::len), Some(4), "{resumed}");
}

fn walk(folder: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn two_local_ranks_train_data_parallel_as_one_process_does() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    // No dropout: its masks are drawn per rank, so only then are the runs the same.
    let early = config(
        dir.path(),
        r#"{"family": "early", "method": "concat"}"#,
        r#", "dropout": 0.0"#,
    );
    let (single, parallel) = (dir.path().join("single"), dir.path().join("parallel"));
    let c = early.to_str().unwrap();
    let base = ["--json", "--device", "cpu", "train", "--config", c, "--run"];
    let alone = json(&ok(&[&base[..], &[single.to_str().unwrap()]].concat()));
    let together = json(&ok(
        &[&base[..], &[parallel.to_str().unwrap(), "--world-size", "2"]].concat()
    ));
    // Rank 0 printed the result and wrote the whole run; nothing else wrote beside it.
    assert_eq!(together["epochs"].as_array().map(Vec::len), Some(3));
    let names = |run: &Path| {
        let mut names: Vec<String> = walk(run)
            .iter()
            .filter_map(|p| Some(p.strip_prefix(run).ok()?.display().to_string()))
            .filter(|p| !p.ends_with(".lock"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&parallel), names(&single));
    let close = |key: &str, a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() < 1e-4, "{key}: one process {a}, two ranks {b}");
    };
    close("test loss", &alone["eval"]["loss"], &together["eval"]["loss"]);
    close(
        "test accuracy",
        &alone["eval"]["metrics"]["accuracy"],
        &together["eval"]["metrics"]["accuracy"],
    );
    for (a, b) in alone["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(together["epochs"].as_array().unwrap())
    {
        close("train loss", &a["train_loss"], &b["train_loss"]);
        close("val loss", &a["val_loss"], &b["val_loss"]);
    }

    // A rank outside the world, an address without a port, and --rank without a configuration.
    let bad = dir.path().join("bad");
    let refused = |how: &[&str], rank: &str, master: &str| {
        let base = [
            "--device",
            "cpu",
            "train",
            "--run",
            bad.to_str().unwrap(),
            "--world-size",
            "2",
        ];
        let out = fusion(&[&base[..], how, &["--rank", rank, "--master", master]].concat());
        assert!(!out.status.success(), "{how:?} rank {rank} at {master} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let outside = refused(&["--config", c], "2", "127.0.0.1:29400");
    assert!(outside.contains("rank 2 of a world of 2"), "{outside}");
    let no_port = refused(&["--config", c], "1", "localhost");
    assert!(no_port.contains("--master `localhost`: no port"), "{no_port}");
    let no_config = refused(&["--manifest", "m.csv", "--label", "y"], "1", "h:1");
    let nobody = fusion(&["train", "--config", c, "--run", "r", "--world-size", "0"]);
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("at least 1"),
        "{nobody:?}"
    );
    assert!(no_config.contains("--rank needs --config"), "{no_config}");
}

/// Processes whose command line names `needle` (Linux's /proc).
fn processes_naming(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                    String::from_utf8_lossy(&cmdline).contains(needle).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ranks_end_when_their_launcher_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let long = config(dir.path(), r#"{"family": "early", "method": "concat"}"#, "")
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(&long)
        .unwrap()
        .replace("\"epochs\": 3", "\"epochs\": 100000");
    std::fs::write(&long, text).unwrap();
    let run = dir.path().join("orphans");
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(["--quiet", "--device", "cpu", "train", "--config", &long, "--run"])
        .arg(&run)
        .args(["--world-size", "2"])
        .spawn()
        .unwrap();
    let needle = format!("{}\0--world-size\02\0--rank", run.display());
    let waited = |done: &dyn Fn(usize) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if done(processes_naming(&needle).len()) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    };
    assert!(waited(&|ranks| ranks == 2), "the two ranks never started");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    if !waited(&|ranks| ranks == 0) {
        let orphans = processes_naming(&needle);
        // Not left training for ever after a failed test.
        let _ = Command::new("kill")
            .arg("-9")
            .args(orphans.iter().map(u32::to_string))
            .status();
        panic!("ranks outlived their launcher: {orphans:?}");
    }
}

/// A table whose label is visible in one modality alone (an 8×8 picture bright in the
/// class's band) and whose other modalities are noise (a white-noise recording, a random
/// number, a random category).
fn planted_table(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let mut noise = noise(2024);
    let mut csv = String::from("photo,sound,reading,shade,kind\n");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    for i in 0..180usize {
        let class = i % 3;
        let pixels: Vec<u8> = (0..64)
            .map(|p| (if (p / 8) * 3 / 8 == class { 170.0 } else { 50.0 } + 60.0 * noise()) as u8)
            .collect();
        image::GrayImage::from_raw(8, 8, pixels)
            .unwrap()
            .save(dir.join(format!("files/{i}.png")))
            .unwrap();
        let mut wav = hound::WavWriter::create(dir.join(format!("files/{i}.wav")), spec).unwrap();
        for _ in 0..4000 {
            wav.write_sample(((noise() - 0.5) * 20000.0) as i16).unwrap();
        }
        wav.finalize().unwrap();
        let shade = ["light", "dark", "mid", "pale"][(noise() * 4.0) as usize % 4];
        csv.push_str(&format!(
            "files/{i}.png,files/{i}.wav,{:.3},{shade},c{class}\n",
            noise() * 50.0
        ));
    }
    let path = dir.join("planted.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// A label no modality predicts alone: `same` when the picture's bright half (top or
/// bottom) agrees with the reading's sign, `differ` otherwise.
fn xor_table(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let mut noise = noise(77);
    let mut csv = String::from("photo,reading,kind\n");
    for i in 0..240usize {
        let (top, positive) = (noise() < 0.5, noise() < 0.5);
        let pixels: Vec<u8> = (0..64)
            .map(|p| (if (p < 32) == top { 180.0 } else { 40.0 } + 50.0 * noise()) as u8)
            .collect();
        image::GrayImage::from_raw(8, 8, pixels)
            .unwrap()
            .save(dir.join(format!("files/{i}.png")))
            .unwrap();
        let reading = if positive { 1.0 } else { -1.0 } + 0.3 * (noise() - 0.5);
        let kind = if top == positive { "same" } else { "differ" };
        csv.push_str(&format!("files/{i}.png,{reading:.3},{kind}\n"));
    }
    let path = dir.join("xor.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// `fast` on a label that needs both modalities: late fusion learns nothing, every
/// modality alone is at chance, so the run trains low-rank tensor fusion too and keeps it
/// in the run folder (its configuration, and why, written there).
#[test]
fn fast_tries_interactions_when_every_modality_alone_is_at_chance() {
    let dir = tempfile::tempdir().unwrap();
    let csv = xor_table(dir.path());
    let run = dir.path().join("xor");
    let out = ok(&[
        "train",
        "--manifest",
        csv.to_str().unwrap(),
        "--label",
        "kind",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("kept low-rank tensor fusion"), "{said}");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(name)).unwrap()).unwrap()
    };
    assert_eq!(read("run.json")["fusion"]["method"], "low_rank");
    assert_eq!(read("config.json")["fusion"]["method"], "low_rank");
    let fallback = read("fallback.json");
    assert!(
        fallback["low_rank_tensor_fusion_val_accuracy"].as_f64() > fallback["late_fusion_val_accuracy"].as_f64(),
        "{fallback}"
    );
    let accuracy = read("eval.json")["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.85, "{accuracy}");
    assert!(run.join("columns.json").exists() && run.join("report.md").exists());
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("xor."))
        .collect();
    assert_eq!(beside, ["xor.csv"], "nothing left beside the run");
}

/// A planted easy modality is learned to 0.95 test accuracy or more by both presets and by
/// every fusion family (early, late, hybrid), with the other modalities as noise.
#[test]
fn a_planted_modality_is_learned_by_every_preset_and_fusion_family() {
    let dir = tempfile::tempdir().unwrap();
    let csv = planted_table(dir.path());
    let accuracy = |out: &Output| json(out)["eval"]["metrics"]["accuracy"].as_f64().unwrap();
    let mut fast_config = None;
    for preset in ["fast", "best"] {
        let run = dir.path().join(preset);
        let out = ok(&[
            "train",
            "--manifest",
            csv.to_str().unwrap(),
            "--label",
            "kind",
            "--preset",
            preset,
            "--run",
            run.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ]);
        assert!(accuracy(&out) >= 0.95, "{preset}: {}", json(&out)["eval"]);
        // The evaluation training printed is the one `fusion eval` gives the folder (the
        // portfolio blends its runs' test scores in memory; eval reads them back).
        let again = ok(&["eval", "--run", run.to_str().unwrap(), "--json", "--device", "cpu"]);
        let (trained, read) = (&json(&out)["eval"], json(&again));
        assert_eq!(read["metrics"]["accuracy"], trained["metrics"]["accuracy"], "{preset}");
        let loss = |v: &serde_json::Value| v["loss"].as_f64().unwrap();
        assert!(
            (loss(&read) - loss(trained)).abs() < 1e-5,
            "{preset}: {read} vs {trained}"
        );
        fast_config.get_or_insert(run.join("config.json"));
    }
    // The bagged members trained on val too: nothing held out to calibrate on.
    let refused = fusion(&["calibrate", "--run", dir.path().join("best").to_str().unwrap()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("no held-out split to calibrate on"),
        "{said}"
    );
    // A time limit that the first member already spends: the ensemble is that member.
    let limited = dir.path().join("limited");
    let out = fusion(&[
        "train",
        "--manifest",
        csv.to_str().unwrap(),
        "--label",
        "kind",
        "--preset",
        "best",
        "--time-limit",
        "0.001",
        "--run",
        limited.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("time limit: 1 of 4 members trained"),
        "{said}"
    );
    let ensemble: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(limited.join("ensemble.json")).unwrap()).unwrap();
    // 180 records, a val split far under 500: the member is bagged over five folds of
    // train+val, and the weights are selected on their out-of-fold predictions.
    assert_eq!(ensemble["members"].as_array().unwrap().len(), 5, "{ensemble}");
    assert_eq!(ensemble["selected_on"], "out-of-fold train+val (5 folds)", "{ensemble}");
    let fast_run = dir.path().join("fast-limited");
    let fast_only = fusion(&[
        "train",
        "--manifest",
        csv.to_str().unwrap(),
        "--label",
        "kind",
        "--time-limit",
        "5",
        "--run",
        fast_run.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&fast_only.stderr);
    assert!(
        !fast_only.status.success() && said.contains("with --preset best"),
        "{said}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fast_config.unwrap()).unwrap()).unwrap();
    let families = [
        serde_json::json!({"family": "early", "method": "concat"}),
        serde_json::json!({"family": "late", "combiner": "mean"}),
        serde_json::json!({"family": "late", "combiner": "learned"}),
        serde_json::json!({"family": "hybrid", "early": {"method": "concat"}, "combiner": {"combiner": "learned"}}),
    ];
    for (i, fusion) in families.into_iter().enumerate() {
        let mut edited = config.clone();
        edited["fusion"] = fusion.clone();
        let path = dir.path().join(format!("family{i}.json"));
        std::fs::write(&path, edited.to_string()).unwrap();
        let run = dir.path().join(format!("family{i}"));
        let out = ok(&[
            "train",
            "--config",
            path.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ]);
        assert!(accuracy(&out) >= 0.95, "{fusion}: {}", json(&out)["eval"]);
    }
}
