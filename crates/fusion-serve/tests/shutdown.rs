//! SIGTERM while requests are in flight: every request the server accepted is answered,
//! later ones are refused, and `serve` returns. (A test binary of its own: the signal goes
//! to the whole process.)

#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::mpsc, time::Duration};

use common::{as_request, predict, records, trained};
use fusion_serve::{BatchOptions, ServeOptions};

#[test]
fn sigterm_during_load_loses_no_accepted_request() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    let predictor = fusion_run::Predictor::load(&run, tch::Device::Cpu).unwrap();
    let options = ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        // Long batching delays keep requests in flight when the signal comes.
        batch: BatchOptions {
            max_batch: 64,
            max_delay: Duration::from_millis(400),
            ..BatchOptions::default()
        },
        ..ServeOptions::default()
    };
    let (told, address) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(fusion_serve::serve(predictor, options, |addr| told.send(addr).unwrap()))
    });
    let addr = address.recv_timeout(Duration::from_secs(30)).unwrap();
    let test: Vec<serde_json::Value> = records("classification", 40)
        .into_iter()
        .filter(|r| r["split"] == "test")
        .collect();
    let body = serde_json::json!({"records": [as_request(&test[0])]});
    let answers = std::thread::scope(|scope| {
        let early: Vec<_> = (0..12).map(|_| scope.spawn(|| predict(addr, &body, None))).collect();
        // Let the first requests reach the batching queue, then stop the server.
        std::thread::sleep(Duration::from_millis(150));
        let pid = std::process::id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(50));
        let late: Vec<_> = (0..4).map(|_| scope.spawn(|| predict(addr, &body, None))).collect();
        let early: Vec<_> = early.into_iter().map(|h| h.join().unwrap()).collect();
        let late: Vec<_> = late.into_iter().map(|h| h.join().unwrap()).collect();
        (early, late)
    });
    let (early, late) = answers;
    // Every request sent before the signal is answered in full: predicted, or refused
    // with 503 if it had not reached the server when the signal came; none is cut off.
    let mut predicted = 0;
    for answer in &early {
        let answer = answer
            .as_ref()
            .expect("a request sent before the signal lost its answer");
        match answer.status {
            200 => {
                assert_eq!(answer.json()["predictions"].as_array().unwrap().len(), 1);
                predicted += 1;
            }
            status => assert_eq!(status, 503, "{}", answer.body),
        }
    }
    assert!(
        predicted >= early.len() / 2,
        "only {predicted} of {} predicted",
        early.len()
    );
    // After the signal a request is refused: no connection, or 503 while the last finish.
    for answer in late.iter().flatten() {
        assert_eq!(answer.status, 503, "{}", answer.body);
    }
    server.join().unwrap().unwrap();
}
