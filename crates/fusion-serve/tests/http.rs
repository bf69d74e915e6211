//! The server on a loopback port: predictions equal `fusion predict`'s, bad requests get
//! their status and reason, a flood beyond the queue is refused at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use common::{as_request, multipart, predict, records, send, trained};
use fusion_serve::{Access, BatchOptions, Batcher, Metrics};

/// A server for `run` on an ephemeral loopback port, on a runtime of its own.
struct Server {
    addr: SocketAddr,
    batcher: Batcher,
    _runtime: tokio::runtime::Runtime,
}

fn start(run: &Path, batch: BatchOptions, access: Access, max_body_bytes: usize) -> Server {
    start_with(run, batch, access, max_body_bytes, 256 << 20)
}

fn start_with(run: &Path, batch: BatchOptions, access: Access, max_body_bytes: usize, bodies_bytes: usize) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let predictor = fusion_run::Predictor::load(run, tch::Device::Cpu).unwrap();
    let batcher = Batcher::start(predictor, batch, Arc::new(Metrics::default())).unwrap();
    let bodies = fusion_serve::Bodies {
        max_bytes: max_body_bytes,
        total_bytes: bodies_bytes,
        timeout: Duration::from_secs(2),
    };
    let app = fusion_serve::router(batcher.clone(), access, bodies);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        batcher,
        _runtime: runtime,
    }
}

#[test]
fn predictions_over_http_equal_fusion_predict_for_every_task() {
    for task in ["classification", "multi_label", "regression"] {
        let dir = tempfile::tempdir().unwrap();
        let (run, _) = trained(dir.path(), task);
        // `fusion predict`'s path on the test records.
        let test: Vec<serde_json::Value> = records(task, 40).into_iter().filter(|r| r["split"] == "test").collect();
        let manifest = dir.path().join("test.jsonl");
        let lines: Vec<String> = test.iter().map(|r| r.to_string()).collect();
        std::fs::write(&manifest, lines.join("\n")).unwrap();
        let predictor = fusion_run::Predictor::load(&run, tch::Device::Cpu).unwrap();
        let expected = predictor.predict_manifest(Some(&manifest), &()).unwrap().predictions;
        assert_eq!(expected.len(), test.len());
        let batch = BatchOptions {
            max_batch: 16,
            max_delay: Duration::from_millis(50),
            ..BatchOptions::default()
        };
        let server = start(&run, batch, Access::default(), 64 << 20);
        // Five requests of four records at once: they share passes through the model.
        let answers: Vec<serde_json::Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = test
                .chunks(4)
                .map(|chunk| {
                    let body = serde_json::json!({"records": chunk.iter().map(as_request).collect::<Vec<_>>()});
                    scope.spawn(move || predict(server.addr, &body, None).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    let answer = h.join().unwrap();
                    assert_eq!(answer.status, 200, "{}", answer.body);
                    answer.json()["predictions"].as_array().unwrap().clone()
                })
                .collect()
        });
        assert_eq!(answers.len(), expected.len(), "{task}");
        for (got, want) in answers.iter().zip(&expected) {
            assert_eq!(got["id"], want.id.as_str());
            assert_eq!(got["prediction"], want.prediction.as_str(), "{task} {}", want.id);
            for (output, p) in &want.probabilities {
                let served = got["probabilities"][output].as_f64().unwrap();
                assert!(
                    (served - f64::from(*p)).abs() < 1e-5,
                    "{task} {} {output}: {served} vs {p}",
                    want.id
                );
            }
            assert_eq!(got["missing"], serde_json::json!([]));
        }
        let metrics = send(server.addr, "GET", "/metrics", &[], b"").unwrap().body;
        let passes: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("fusion_batch_records_count "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(passes < 5.0, "{task}: five requests took {passes} passes:\n{metrics}");
        let signature = send(server.addr, "GET", "/v1/signature", &[], b"").unwrap().json();
        assert_eq!(signature["task"], task);
        assert_eq!(
            signature["outputs"].as_array().unwrap().len(),
            predictor.outputs().len()
        );
    }
}

#[test]
fn bad_requests_get_their_status_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let record = &records("classification", 1)[1];
    std::fs::copy(record["image"].as_str().unwrap(), allowed.join("digit.png")).unwrap();
    std::fs::write(dir.path().join("outside.png"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.png"), allowed.join("link.png")).unwrap();
    let access = Access {
        token: Some("s3cret-token".into()),
        files: Some(allowed.canonicalize().unwrap()),
        scratch: None,
    };
    let server = start(&run, BatchOptions::default(), access, 1 << 20);
    let token = Some("s3cret-token");
    let good = serde_json::json!({"records": [as_request(record)], "explain": true});
    let expect = |body: &serde_json::Value, token: Option<&str>, status: u16, words: &str| {
        let answer = predict(server.addr, body, token).unwrap();
        assert_eq!(answer.status, status, "{body:.200}: {}", answer.body);
        let text = answer.json().to_string();
        assert!(text.contains(words), "{words} not in {text}");
        answer
    };
    // The token: missing, wrong, right.
    let refused = expect(&good, None, 401, "bearer token");
    assert!(
        refused.headers.contains("www-authenticate: Bearer"),
        "{}",
        refused.headers
    );
    expect(&good, Some("s3cret-tokem"), 401, "bearer token");
    let answer = expect(&good, token, 200, "prediction");
    let explanation = &answer.json()["predictions"][0]["explanation"];
    for modality in ["image", "audio", "text"] {
        assert!(explanation[modality].is_f64(), "{explanation}");
    }
    assert_eq!(send(server.addr, "GET", "/metrics", &[], b"").unwrap().status, 401);
    // Bodies that are not requests.
    let raw = send(
        server.addr,
        "POST",
        "/v1/predict",
        &[
            ("Authorization", "Bearer s3cret-token"),
            ("Content-Type", "application/json"),
        ],
        b"{\"records\": [",
    )
    .unwrap();
    assert_eq!(raw.status, 400, "{}", raw.body);
    assert!(raw.body.contains("EOF"), "{}", raw.body);
    expect(
        &serde_json::json!({"records": [{"imag": {"base64": ""}}]}),
        token,
        400,
        "records[0].imag: unknown field `imag`",
    );
    expect(
        &serde_json::json!({"records": [{"video": {"base64": "AAAA"}}]}),
        token,
        400,
        "`video` is not read by this model (it reads image, audio, text)",
    );
    expect(&serde_json::json!({"records": []}), token, 400, "no records");
    // Counted before the records are built: these would otherwise be refused (400) for
    // their repeated id.
    let many = serde_json::json!({"records": vec![serde_json::json!({"id": "same"}); 65]});
    expect(&many, token, 413, "65 records in one request; at most 64");
    expect(
        &serde_json::json!({"records": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}),
        token,
        400,
        "given twice",
    );
    expect(
        &serde_json::json!({"records": [{"image": {"base64": "not base64!"}}]}),
        token,
        400,
        "not base64",
    );
    // A file that does not decode: that record's image is absent; alone, nothing is predicted.
    let broken = serde_json::json!({"records": [{"id": "b", "image": {"base64": "iVBORw0KGgpicm9rZW4="}}]});
    let answer = expect(&broken, token, 422, "cannot decode image upload/0.image");
    assert_eq!(answer.json()["errors"][0]["modality"], "image");
    let mut half = as_request(record);
    half["image"] = serde_json::json!({"base64": "iVBORw0KGgpicm9rZW4="});
    let answer = expect(&serde_json::json!({"records": [half]}), token, 200, "prediction");
    assert_eq!(answer.json()["predictions"][0]["missing"], serde_json::json!(["image"]));
    let unusable = answer.json()["predictions"][0]["unusable"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        unusable.starts_with(&format!("{} (image)", record["id"].as_str().unwrap()))
            && unusable.contains("upload/0.image"),
        "{unusable}"
    );
    // Over the body limit (1 MiB here).
    let huge = serde_json::json!({"records": [{"text": "x".repeat(2 << 20)}]});
    expect(&huge, token, 413, "limit");
    // Files on the server: inside the allowed folder only, links out of it refused.
    expect(
        &serde_json::json!({"records": [{"image": {"path": "digit.png"}}]}),
        token,
        200,
        "prediction",
    );
    expect(
        &serde_json::json!({"records": [{"image": {"path": "../outside.png"}}]}),
        token,
        403,
        "outside",
    );
    let linked = expect(
        &serde_json::json!({"records": [{"image": {"path": "link.png"}}]}),
        token,
        403,
        "`image` link.png is outside the folder this server reads from",
    );
    assert!(!linked.body.contains(&*dir.path().to_string_lossy()), "{}", linked.body);
    expect(
        &serde_json::json!({"records": [{"image": {"path": "/etc/passwd"}}]}),
        token,
        403,
        "outside",
    );
    // One record as a multipart upload (with the token).
    let image = std::fs::read(record["image"].as_str().unwrap()).unwrap();
    let upload = |fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]| {
        let (kind, body) = multipart(fields, files);
        let headers = [
            ("Authorization", "Bearer s3cret-token"),
            ("Content-Type", kind.as_str()),
        ];
        send(server.addr, "POST", "/v1/predict", &headers, &body).unwrap()
    };
    let answer = upload(
        &[("id", "m1"), ("text", "the seven"), ("explain", "true")],
        &[("image", "d.png", &image)],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    assert_eq!(json["predictions"][0]["id"], "m1");
    assert_eq!(json["predictions"][0]["missing"], serde_json::json!(["audio"]));
    assert_eq!(json["predictions"][0]["explanation"]["audio"], 0.0);
    let answer = upload(&[("text", "one"), ("text", "two")], &[]);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("`text` is given twice"), "{}", answer.body);
    let answer = upload(&[("colour", "red")], &[]);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("multipart field `colour`"), "{}", answer.body);
    // Health, readiness and the page need no token.
    assert_eq!(send(server.addr, "GET", "/healthz", &[], b"").unwrap().status, 200);
    assert_eq!(send(server.addr, "GET", "/readyz", &[], b"").unwrap().status, 200);
    let page = send(server.addr, "GET", "/", &[], b"").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/v1/signature") && page.body.contains("/v1/predict"));
    let metrics = send(
        server.addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret-token")],
        b"",
    )
    .unwrap();
    assert!(
        metrics
            .body
            .contains("fusion_decode_failures_total{modality=\"image\"} 2"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("fusion_requests_total{endpoint=\"/v1/predict\",status=\"401\"} 2"),
        "{}",
        metrics.body
    );
    server.batcher.close();
    assert_eq!(send(server.addr, "GET", "/readyz", &[], b"").unwrap().status, 503);
    let answer = predict(server.addr, &good, token).unwrap();
    assert_eq!(answer.status, 503);
    assert!(answer.headers.to_ascii_lowercase().contains("retry-after: 1"));
}

#[test]
fn a_flood_beyond_the_queue_is_refused_at_once_and_every_admitted_request_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    let batch = BatchOptions {
        max_batch: 4,
        max_delay: Duration::from_millis(20),
        queue: 4,
        decode_threads: 1,
        max_records: 2,
        ..BatchOptions::default()
    };
    let server = start(&run, batch, Access::default(), 64 << 20);
    let test: Vec<serde_json::Value> = records("classification", 40)
        .into_iter()
        .filter(|r| r["split"] == "test")
        .collect();
    let body = serde_json::json!({"records": [as_request(&test[0]), as_request(&test[1])]});
    let over = serde_json::json!({"records": [as_request(&test[0]), as_request(&test[1]), as_request(&test[2])]});
    let answer = predict(server.addr, &over, None).unwrap();
    assert_eq!(answer.status, 413, "{}", answer.body);
    let statuses: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..40)
            .map(|_| scope.spawn(|| predict(server.addr, &body, None).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let a = h.join().unwrap();
                (a.status, a.json())
            })
            .collect()
    });
    let answered = statuses.iter().filter(|(s, _)| *s == 200).count();
    let refused = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(answered + refused, 40, "{statuses:?}");
    assert!(refused > 0 && answered > 0, "{answered} answered, {refused} refused");
    for (_, json) in statuses.iter().filter(|(s, _)| *s == 200) {
        assert_eq!(json["predictions"].as_array().unwrap().len(), 2, "{json}");
    }
    assert_eq!(server.batcher.metrics().rejected_count(), refused as u64);
    assert_eq!(settled_in_flight(&server.batcher), 0);
}

/// Records in flight once the server has settled (up to 5 s): a handler frees its records
/// just after its answer is written, so a client can read the answer a moment before.
fn settled_in_flight(batcher: &fusion_serve::Batcher) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while batcher.in_flight() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    batcher.in_flight()
}

#[test]
fn a_request_past_its_deadline_gets_504() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    let batch = BatchOptions {
        deadline: Duration::from_micros(50),
        ..BatchOptions::default()
    };
    let server = start(&run, batch, Access::default(), 64 << 20);
    let record = &records("classification", 1)[1];
    let answer = predict(server.addr, &serde_json::json!({"records": [as_request(record)]}), None).unwrap();
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(answer.body.contains("deadline"), "{}", answer.body);
    // Nothing admitted is left behind.
    assert_eq!(settled_in_flight(&server.batcher), 0);
}

#[test]
fn the_batcher_without_http_answers_many_tasks_as_predict_does() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    let predictor = fusion_run::Predictor::load(&run, tch::Device::Cpu).unwrap();
    let test: Vec<fusion_data::Record> = records("classification", 40)
        .into_iter()
        .filter(|r| r["split"] == "test")
        .map(|r| serde_json::from_value(r).unwrap())
        .collect();
    let expected = predictor.predict(&test).unwrap();
    let batcher = Batcher::start(predictor, BatchOptions::default(), Arc::new(Metrics::default())).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answers = runtime.block_on(async {
        let tasks: Vec<_> = test
            .iter()
            .map(|record| {
                let (batcher, record) = (batcher.clone(), record.clone());
                tokio::spawn(async move { batcher.predict(vec![record], false).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }
        answers
    });
    for (answer, want) in answers.iter().zip(&expected) {
        let got = &answer.predictions.predictions[0];
        assert_eq!((&got.id, &got.prediction), (&want.id, &want.prediction));
        for (a, b) in got.scores.iter().zip(&want.scores) {
            assert!((a - b).abs() < 1e-5, "{}: {a} vs {b}", want.id);
        }
        assert!(answer.explanation.is_none());
    }
    // Twenty one-record tasks at once share passes through the model.
    let text = batcher.metrics().render(0, 0);
    let passes: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("fusion_batch_records_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(passes < test.len(), "{passes} passes for {} records", test.len());
}

#[test]
fn an_ensemble_folder_is_served_and_refuses_explanations() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (first, _) = trained(&a, "classification");
    let (second, _) = trained(&b, "classification");
    let folder = dir.path().join("ensemble");
    fusion_run::build_ensemble(&[first, second], &folder, 5, tch::Device::Cpu, &()).unwrap();
    let test: Vec<serde_json::Value> = records("classification", 40)
        .into_iter()
        .filter(|r| r["split"] == "test")
        .collect();
    let manifest = dir.path().join("test.jsonl");
    std::fs::write(
        &manifest,
        test.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let predictor = fusion_run::Predictor::load(&folder, tch::Device::Cpu).unwrap();
    let expected = predictor.predict_manifest(Some(&manifest), &()).unwrap().predictions;
    let server = start(&folder, BatchOptions::default(), Access::default(), 64 << 20);
    let signature = send(server.addr, "GET", "/v1/signature", &[], b"").unwrap().json();
    assert_eq!(signature["explainable"], false);
    let members = predictor
        .ensemble()
        .unwrap()
        .members
        .iter()
        .filter(|m| m.weight > 0.0)
        .count();
    assert_eq!(signature["members"], members);
    let body = serde_json::json!({"records": test.iter().take(6).map(as_request).collect::<Vec<_>>()});
    let answer = predict(server.addr, &body, None).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    for (got, want) in answer.json()["predictions"].as_array().unwrap().iter().zip(&expected) {
        assert_eq!(got["prediction"], want.prediction.as_str());
        assert_eq!(got["members"], want.members.unwrap());
        let served = got["confidence"].as_f64().unwrap();
        assert!((served - f64::from(want.confidence.unwrap())).abs() < 1e-5);
    }
    let mut explained = body.clone();
    explained["explain"] = true.into();
    let answer = predict(server.addr, &explained, None).unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("ensemble"), "{}", answer.body);
}

#[test]
fn bodies_beyond_the_budget_are_refused_before_they_are_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    // 64 KiB of bodies at once: a slow client announcing 60 KB holds most of it.
    // Bodies may take 2 s to arrive (see `start_with`).
    let server = start_with(&run, BatchOptions::default(), Access::default(), 64 << 10, 64 << 10);
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    let head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{\"records\": [";
    slow.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let record = &records("classification", 1)[1];
    let body = serde_json::json!({"records": [as_request(record)]});
    let answer = predict(server.addr, &body, None).unwrap();
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(answer.headers.to_ascii_lowercase().contains("retry-after: 1"));
    // The slow body is not waited for past the deadline; then the same request is read.
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut slow, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    let answer = predict(server.addr, &body, None).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
}
