//! A contrastive run end to end through the program: pictures paired with descriptions
//! trained with `"task": "contrastive"`, its retrieval evaluation (duplicated descriptions
//! counted as hits), `fusion embed`, `fusion search` and zero-shot classification from
//! prompts and from prototypes.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use common::{fusion, json, ok};

const COLOURS: [&str; 4] = ["red", "green", "blue", "gold"];
const ANIMALS: [&str; 4] = ["cat", "dog", "fox", "owl"];

/// 240 pictures, 8×8 grey: a bright row band for the colour and a bright column band for
/// the animal, with noise; each described as `colour animal` (16 descriptions, so each
/// is shared by 15 records, 3 of them in test) and labelled with its colour. Returns the manifest and
/// the ids of the test records described `red cat`.
fn pairs(dir: &Path) -> (PathBuf, Vec<String>) {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let mut state = 99u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let mut lines = Vec::new();
    let mut red_cats = Vec::new();
    for i in 0..240usize {
        let (colour, animal) = (i % 4, (i / 4) % 4);
        // Blocks of 16 hold every description once.
        let split = match (i / 16) % 5 {
            0..=2 => "train",
            3 => "val",
            _ => "test",
        };
        let pixels: Vec<u8> = (0..64)
            .map(|p| {
                let (row, column) = (p / 8, p % 8);
                let lit = row / 2 == colour || column / 2 == animal;
                ((if lit { 180.0 } else { 40.0 }) + 60.0 * noise()) as u8
            })
            .collect();
        let image = format!("files/{i}.png");
        image::GrayImage::from_raw(8, 8, pixels)
            .unwrap()
            .save(dir.join(&image))
            .unwrap();
        let text = format!("{} {}", COLOURS[colour], ANIMALS[animal]);
        if split == "test" && text == "red cat" {
            red_cats.push(format!("p{i}"));
        }
        lines.push(
            serde_json::json!({"id": format!("p{i}"), "label": COLOURS[colour], "split": split, "image": image, "text": text})
                .to_string(),
        );
    }
    let manifest = dir.join("pairs.jsonl");
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    (manifest, red_cats)
}

#[test]
fn a_contrastive_run_trains_evaluates_embeds_searches_and_classifies_zero_shot() {
    let dir = tempfile::tempdir().unwrap();
    let (_, red_cats) = pairs(dir.path());
    let config = dir.path().join("contrastive.json");
    std::fs::write(
        &config,
        r#"{
  "manifest": "pairs.jsonl",
  "task": "contrastive",
  "modalities": [
    {"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "mlp", "hidden": [32]}},
    {"name": "text", "features": {"kind": "hashed_words", "dim": 64}, "encoder": {"kind": "mlp", "hidden": [32]}}
  ],
  "hidden_dim": 16,
  "train": {"epochs": 40, "batch_size": 32, "optimizer": {"kind": "adam_w", "lr": 0.01}, "seed": 3}
}"#,
    )
    .unwrap();
    let run = dir.path().join("run");
    let (c, r) = (config.to_str().unwrap(), run.to_str().unwrap());
    let trained = ok(&["train", "--config", c, "--run", r, "--device", "cpu"]);
    let stdout = String::from_utf8_lossy(&trained.stdout);
    assert!(stdout.contains("image → text: R@1"), "{stdout}");

    let eval = json(&ok(&["--json", "eval", "--run", r, "--split", "test"]));
    let pairs = eval["task"]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2, "{eval}");
    let recall = |query: &str, at: usize| -> f64 {
        let pair = pairs.iter().find(|p| p["query"] == query).unwrap();
        let entry = pair["metrics"]["recall_at"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == at)
            .unwrap();
        entry[1].as_f64().unwrap()
    };
    // A description is shared by three test records: each of their pictures is right for
    // it, and it is right for each of them.
    assert!(recall("image", 1) > 0.9, "{eval}");
    assert!(recall("text", 1) > 0.9, "{eval}");
    assert_eq!(pairs[0]["metrics"]["queries"], 48);
    for plot in ["similarity.png", "similarity.svg"] {
        assert!(run.join("plots").join(plot).exists(), "{plot}");
    }

    // `compare` trains the configuration and each row of encoders (here a smaller text
    // tower) on the same records, scored by mean recall@1 over both directions.
    let text = std::fs::read_to_string(&config).unwrap();
    let row = r#"{"name": "small text tower", "modalities": [
    {"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "mlp", "hidden": [32]}},
    {"name": "text", "features": {"kind": "hashed_words", "dim": 64}, "encoder": {"kind": "mlp", "hidden": [4]}}]}"#;
    let with_rows = dir.path().join("compare.json");
    let compared_config = text.replacen("\"hidden_dim\"", &format!("\"compare\": [{row}],\n  \"hidden_dim\""), 1);
    std::fs::write(&with_rows, &compared_config).unwrap();
    let out = dir.path().join("compared");
    let rows = json(&ok(&[
        "--json",
        "compare",
        "--config",
        with_rows.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["image + text", "small text tower"]);
    let mean_recall = (recall("image", 1) + recall("text", 1)) / 2.0;
    assert!(
        (rows[0]["accuracy"].as_f64().unwrap() - mean_recall).abs() < 1e-6,
        "the configuration's row is the run trained above: {} vs {mean_recall}",
        rows[0]
    );
    for row in rows {
        let summary = &row["retrieval"];
        assert_eq!(summary["directions"], 2, "{row}");
        assert_eq!(summary["recall_at"][0][1], row["accuracy"], "{row}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| small text tower | 48 |"), "{report}");
    // A row naming a fusion is refused, the field named.
    let fused_row = dir.path().join("fused-row.json");
    std::fs::write(
        &fused_row,
        compared_config.replacen(
            "\"name\": \"small text tower\",",
            "\"name\": \"small text tower\", \"fusion\": {\"family\": \"late\", \"combiner\": \"mean\"},",
            1,
        ),
    )
    .unwrap();
    let refused = fusion(&[
        "compare",
        "--config",
        fused_row.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`compare[0].fusion`"));

    // Its predictions are each record's embeddings, one unit vector per modality it has.
    let out = dir.path().join("embedded.jsonl");
    ok(&["predict", "--run", r, "--out", out.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 240);
    for line in &lines {
        let embeddings = line["embeddings"].as_object().unwrap();
        assert_eq!(embeddings.len(), 2, "{line}");
        for values in embeddings.values() {
            let norm: f64 = values
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap().powi(2))
                .sum();
            assert_eq!(values.as_array().unwrap().len(), 16);
            assert!((norm - 1.0).abs() < 1e-4, "{line}");
        }
        assert_eq!(line["prediction"], "");
    }

    let embed_to = |out: &Path| {
        json(&ok(&[
            "--json",
            "embed",
            "--run",
            r,
            "--split",
            "test",
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let index = dir.path().join("index.safetensors");
    let embedded = embed_to(&index);
    assert_eq!(embedded["records"], 48);
    assert_eq!(embedded["dim"], 16);
    assert!(dir.path().join("index.ids.json").exists());
    // The same records for data tools: one Arrow IPC file, nothing beside it.
    let table = dir.path().join("embedded.arrow");
    let exported = embed_to(&table);
    assert_eq!(exported["records"], 48);
    let bytes = std::fs::read(&table).unwrap();
    assert!(
        bytes.starts_with(b"ARROW1") && bytes.ends_with(b"ARROW1"),
        "not an Arrow IPC file"
    );
    assert!(!dir.path().join("embedded.ids.json").exists());

    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    let search = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "search",
            "--run",
            r,
            "--index",
            index.to_str().unwrap(),
            "--query",
            "red cat",
        ];
        args.extend(["--k", "3"]);
        args.extend(extra);
        json(&ok(&args))
    };
    let found = search(&[]);
    assert_eq!(found["query_modality"], "text");
    assert_eq!(found["among"], "image");
    let hits = ids(&found);
    let wanted: HashSet<&String> = red_cats.iter().collect();
    assert_eq!(hits.len(), 3);
    assert!(
        hits.iter().filter(|h| wanted.contains(h)).count() >= 2,
        "{hits:?} vs {red_cats:?}"
    );

    // An index is searched with the run that wrote it.
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("\"seed\": 3", "\"seed\": 4"),
    )
    .unwrap();
    let other_run = dir.path().join("other-run");
    ok(&[
        "--quiet",
        "train",
        "--config",
        other.to_str().unwrap(),
        "--run",
        other_run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let refused = fusion(&[
        "search",
        "--run",
        other_run.to_str().unwrap(),
        "--index",
        index.to_str().unwrap(),
        "--query",
        "red cat",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("written by another run"),
        "{refused:?}"
    );

    // The same search through an HNSW graph (a smoke test: on 48 vectors the graph's search
    // visits them all; its recall is tested in fusion-ann and fusion-core).
    let graph = search(&["--approximate-above", "10"]);
    assert_eq!(graph["approximate"], true);
    assert!(graph["recall_against_exact"].as_f64().unwrap() >= 0.9, "{graph}");
    assert_eq!(ids(&graph), ids(&found));

    // Classes described by a word the model only ever saw beside an animal's.
    let zero_shot = |extra: &[&str]| {
        let mut args = vec!["--json", "eval", "--run", r, "--split", "test", "--modality", "image"];
        args.extend(extra);
        json(&ok(&args))
    };
    let prompts = zero_shot(&[
        "--classes",
        "red,green,blue,gold",
        "--template",
        "{}",
        "--template",
        "a {} one",
    ]);
    assert_eq!(prompts["method"], "prompts");
    assert_eq!(prompts["metrics"]["count"], 48);
    let accuracy = prompts["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.6, "{prompts}");
    let prototypes = zero_shot(&["--shots", "5"]);
    assert_eq!(prototypes["method"], "prototypes");
    assert!(
        prototypes["metrics"]["accuracy"].as_f64().unwrap() > 0.8,
        "{prototypes}"
    );
    assert!(run.join("zero_shot.json").exists());
}
