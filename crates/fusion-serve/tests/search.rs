//! `POST /v1/search`: a contrastive run's records found over HTTP as the library finds
//! them, and the requests it refuses.

#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{as_request, records, send, trained};
use fusion_serve::{Access, BatchOptions, Batcher, Metrics};

#[test]
fn search_over_http_finds_what_the_library_finds_and_refuses_bad_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (run, manifest) = trained(dir.path(), "contrastive");
    let predictor = fusion_run::Predictor::load(&run, tch::Device::Cpu).unwrap();
    let index_path = dir.path().join("index.safetensors");
    predictor
        .embed_manifest(Some(&manifest), None, &())
        .unwrap()
        .write(&index_path)
        .unwrap();
    // The library's answer for a text-only query.
    let searcher = fusion_run::Searcher::open(&predictor, &index_path).unwrap();
    let query = fusion_data::Record {
        id: "q".into(),
        text: Some("the seven".into()),
        ..Default::default()
    };
    let embedded = predictor.embed_records(&[query]).unwrap().record_vectors(0).unwrap();
    let expected = searcher.search(&embedded, Some("image"), 5).unwrap();
    assert_eq!(expected.hits.len(), 5);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batcher = Batcher::start(predictor, BatchOptions::default(), Arc::new(Metrics::default())).unwrap();
    let bodies = fusion_serve::Bodies {
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let serve = |index: Option<fusion_serve::SearchIndex>| {
        let app = fusion_serve::router_with_index(batcher.clone(), Access::default(), bodies.clone(), index);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let addr = serve(Some(fusion_serve::SearchIndex::new(searcher)));
    let post = |path: &str, body: &serde_json::Value| {
        send(
            addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    let answer = post(
        "/v1/search?k=5&among=image",
        &serde_json::json!({"records": [{"id": "q", "text": "the seven"}]}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    let result = &json["results"][0];
    assert_eq!(
        (result["id"].as_str(), result["query_modality"].as_str()),
        (Some("q"), Some("text"))
    );
    assert_eq!(result["approximate"], false);
    let hits: Vec<(String, f64)> = result["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_str().unwrap().to_string(), h["score"].as_f64().unwrap()))
        .collect();
    let library: Vec<(String, f64)> = expected
        .hits
        .iter()
        .map(|h| (h.id.clone(), f64::from(h.score)))
        .collect();
    assert_eq!(hits.len(), library.len());
    for ((id, score), (expected_id, expected_score)) in hits.iter().zip(&library) {
        assert_eq!(id, expected_id);
        assert!((score - expected_score).abs() < 1e-5, "{score} vs {expected_score}");
    }
    // A picture's query searches the first other indexed modality by default.
    let picture = as_request(&records("contrastive", 1)[0]);
    let by_picture = post(
        "/v1/search?k=3",
        &serde_json::json!({"records": [{"id": "p", "image": picture["image"]}]}),
    );
    assert_eq!(by_picture.status, 200, "{}", by_picture.body);
    assert_eq!(by_picture.json()["results"][0]["among"], "audio");
    assert_eq!(by_picture.json()["results"][0]["hits"].as_array().unwrap().len(), 3);

    // A record giving two modalities is that record's error; alone in its request: 422.
    let both = post(
        "/v1/search",
        &serde_json::json!({"records": [{"id": "two", "text": "the one", "image": picture["image"]}]}),
    );
    assert_eq!(both.status, 422, "{}", both.body);
    let error = both.json()["errors"][0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("exactly one modality of the run") && error.contains("image, text"),
        "{error}"
    );
    // Beside a good record: the good one answered, the other its error (200).
    let mixed = post(
        "/v1/search?k=2",
        &serde_json::json!({"records": [
            {"id": "good", "text": "the two"},
            {"id": "bad", "text": "the one", "image": picture["image"]},
        ]}),
    );
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    let mixed = mixed.json();
    assert_eq!(mixed["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        (mixed["results"][0]["id"].as_str(), mixed["errors"][0]["id"].as_str()),
        (Some("good"), Some("bad"))
    );
    for (path, expected) in [
        ("/v1/search?among=sound", "no indexed record has a `sound`"),
        ("/v1/search?k=0", "k: between 1"),
        ("/v1/search?top=3", "the query string"),
    ] {
        let answer = post(path, &serde_json::json!({"records": [{"text": "the one"}]}));
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(expected), "{path}: {error}");
    }
    // Graphs instead of exact search, their recall reported with its k.
    let predictor = fusion_run::Predictor::load(&run, tch::Device::Cpu).unwrap();
    let mut graphs = fusion_run::Searcher::open(&predictor, &index_path).unwrap();
    assert_eq!(graphs.approximate_above(0, None, 10).unwrap().len(), 3);
    let approximate = serve(Some(fusion_serve::SearchIndex::new(graphs)));
    let answer = send(
        approximate,
        "POST",
        "/v1/search?k=5&among=image",
        &[("Content-Type", "application/json")],
        br#"{"records": [{"id": "q", "text": "the seven"}]}"#,
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = &answer.json()["results"][0];
    assert_eq!(
        (result["approximate"].as_bool(), result["recall_k"].as_u64()),
        (Some(true), Some(10))
    );
    assert!(result["recall_against_exact"].as_f64().unwrap() > 0.9, "{result}");
    // A server started without an index.
    let bare = serve(None);
    let answer = send(
        bare,
        "POST",
        "/v1/search",
        &[("Content-Type", "application/json")],
        br#"{"records": [{"text": "the one"}]}"#,
    )
    .unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body.contains("fusion serve --index"), "{}", answer.body);
}
