//! Binary, multi-label and regression metrics against scikit-learn
//! (fixtures/metrics/sklearn_reference.json, made by
//! fixtures/metrics/make_sklearn_reference.py): scores with ties, both outcomes.
#![allow(clippy::unwrap_used)]

use fusion_core::{BinaryMetrics, MultiLabelMetrics, RegressionMetrics, THRESHOLD};
use serde_json::Value;

fn reference() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/metrics/sklearn_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn flags(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect()
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() < 1e-9,
        "{what}: ours {ours}, scikit-learn {theirs}"
    );
}

#[test]
fn binary_metrics_match_scikit_learn() {
    let cases = reference()["binary"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let m = BinaryMetrics::compute(&floats(&case["scores"]), &flags(&case["truths"]), THRESHOLD);
        close(m.roc_auc.unwrap(), &case["roc_auc"], "ROC-AUC");
        close(
            m.average_precision.unwrap(),
            &case["average_precision"],
            "average precision",
        );
        close(m.precision, &case["precision"], "precision");
        close(m.recall, &case["recall"], "recall");
        close(m.f1, &case["f1"], "F1");
    }
}

#[test]
fn multi_label_metrics_match_scikit_learn() {
    let case = &reference()["multi_label"][0];
    let scores: Vec<Vec<f64>> = case["scores"].as_array().unwrap().iter().map(floats).collect();
    let truths: Vec<Vec<bool>> = case["truths"].as_array().unwrap().iter().map(flags).collect();
    let m = MultiLabelMetrics::compute(&scores, &truths);
    close(m.subset_accuracy, &case["subset_accuracy"], "subset accuracy");
    close(m.label_accuracy, &case["label_accuracy"], "label accuracy");
    close(m.micro_f1, &case["micro_f1"], "micro-F1");
    close(m.macro_f1, &case["macro_f1"], "macro-F1");
    close(m.macro_roc_auc.unwrap(), &case["macro_roc_auc"], "macro ROC-AUC");
    close(
        m.macro_average_precision.unwrap(),
        &case["macro_average_precision"],
        "macro average precision",
    );
}

#[test]
fn regression_metrics_match_scikit_learn() {
    for case in reference()["regression"].as_array().unwrap() {
        let m = RegressionMetrics::compute(&floats(&case["predicted"]), &floats(&case["targets"]));
        close(m.rmse, &case["rmse"], "RMSE");
        close(m.mae, &case["mae"], "MAE");
        close(m.r2.unwrap(), &case["r2"], "R²");
    }
}
