//! What the server tests share: small runs trained on the demo's files, and a minimal
//! HTTP/1.1 client over a plain TCP stream (one request per connection).

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use fusion_run::{Run, RunConfig};

const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The label of a demo digit for each task: the digit, its tags, or a number.
fn label(task: &str, digit: usize) -> serde_json::Value {
    match task {
        "multi_label" => {
            let mut tags = vec![if digit.is_multiple_of(2) { "even" } else { "odd" }];
            if digit >= 5 {
                tags.push("big");
            }
            tags.join(";").into()
        }
        "regression" => (digit as f64 * 1.5).to_string().into(),
        _ => digit.to_string().into(),
    }
}

/// The demo's first `per_split` train and test records with image and audio, their paths
/// absolute, a text naming the digit (every 4th another one), labelled for `task`; a fifth
/// of the train records are val.
pub fn records(task: &str, per_split: usize) -> Vec<serde_json::Value> {
    let demo = fixtures().join("demo");
    let text = std::fs::read_to_string(demo.join("manifest.jsonl")).unwrap();
    let mut out = Vec::new();
    for split in ["train", "test"] {
        let taken = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["split"] == split && r["id"].as_str().unwrap().starts_with(split))
            .filter(|r| r.get("image").is_some() && r.get("audio").is_some())
            .take(per_split);
        for (i, mut record) in taken.enumerate() {
            for field in ["image", "audio"] {
                record[field] = demo.join(record[field].as_str().unwrap()).display().to_string().into();
            }
            let object = record.as_object_mut().unwrap();
            object.remove("video");
            object.remove("group");
            let digit: usize = record["label"].as_str().unwrap().parse().unwrap();
            let said = if i % 4 == 3 { (digit + 3) % 10 } else { digit };
            record["text"] = format!("the {}", WORDS[said]).into();
            record["label"] = label(task, digit);
            // Every fifth training record is held out for val (ensembles select on it).
            if split == "train" && i % 5 == 4 {
                record["split"] = "val".into();
            }
            out.push(record);
        }
    }
    out
}

/// Trains a small image + audio + text run for `task` (`contrastive` too: labelled as a
/// classification) in `dir/run` and returns its folder
/// and the manifest it trained on.
pub fn trained(dir: &Path, task: &str) -> (PathBuf, PathBuf) {
    let lines: Vec<String> = records(task, 40).iter().map(|r| r.to_string()).collect();
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    // A contrastive run aligns the modalities: it has no fusion.
    let fusion = match task {
        "contrastive" => "",
        _ => {
            r#"
  "fusion": {"family": "late", "combiner": "mean"},"#
        }
    };
    let config = format!(
        r#"{{
  "manifest": "manifest.jsonl",
  "allow_paths_outside_manifest": true,
  "cache": "cache",
  "task": "{task}",
  "modalities": [
    {{"name": "image", "features": {{"kind": "pixels", "size": 8}}, "encoder": {{"kind": "mlp", "hidden": [16]}}}},
    {{"name": "audio", "features": {{"kind": "log_mel_stats", "sample_rate": 8000, "n_mels": 16, "frames": 8}}, "encoder": {{"kind": "mlp", "hidden": [16]}}}},
    {{"name": "text", "features": {{"kind": "hashed_words", "dim": 32}}, "encoder": {{"kind": "mlp", "hidden": [16]}}}}
  ],
  "hidden_dim": 16,{fusion}
  "train": {{"epochs": 3, "batch_size": 16, "optimizer": {{"kind": "adam_w", "lr": 0.01}}, "seed": 1}}
}}"#
    );
    let path = dir.join("config.json");
    std::fs::write(&path, config).unwrap();
    let config = RunConfig::load(&path).unwrap();
    let run = Run::new(dir.join("run"));
    fusion_run::fit(
        &config,
        &run,
        tch::Device::Cpu,
        fusion_core::Strategy::SingleProcess,
        Instant::now(),
        &(),
    )
    .unwrap();
    (dir.join("run"), manifest)
}

/// A record of `records` as a predict request gives it: files in base64.
pub fn as_request(record: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    let file = |field: &str| {
        let bytes = std::fs::read(record[field].as_str().unwrap()).unwrap();
        serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(bytes)})
    };
    serde_json::json!({
        "id": record["id"],
        "text": record["text"],
        "image": file("image"),
        "audio": file("audio"),
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on a connection of its own; `None` when the connection is refused or
/// closed before a whole answer came.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    // Headers, then as many bytes as they announce (some servers keep the connection open).
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head += &line;
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok());
    let mut body = Vec::new();
    match length {
        // A connection cut in the middle of the body is not an answer.
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).ok()?;
        }
        None => {
            reader.read_to_end(&mut body).ok()?;
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Some(Answer {
        status,
        headers: head,
        body,
    })
}

/// `POST /v1/predict` with a JSON body.
pub fn predict(addr: SocketAddr, body: &serde_json::Value, token: Option<&str>) -> Option<Answer> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    send(addr, "POST", "/v1/predict", &headers, body.to_string().as_bytes())
}

/// A multipart/form-data body of text fields and files (`name`, file name, bytes).
pub fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "fusion-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    for (name, file, bytes) in files {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
