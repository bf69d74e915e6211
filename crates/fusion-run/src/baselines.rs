//! Simple strong baselines beside a trained run: per modality, a multinomial logistic
//! regression on what the modality's encoder reads (a frozen encoder's cached outputs,
//! band statistics, table rows…), standardised on the training records, fitted to
//! convergence with L-BFGS and its L2 penalty chosen on validation accuracy; and the late
//! fusion of those regressions (the sum of their log-probabilities over the modalities a
//! record has). A deep fusion model that does not beat them adds nothing, and the run says
//! so ("fusion gain").

use fusion_core::{Task, TensorDataset};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Result, RunConfig};

/// One baseline's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// `logistic regression: <modality>` or `late fusion of the logistic regressions`.
    pub name: String,
    /// The L2 penalty chosen on validation (`None` for the fusion).
    pub l2: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Accuracy on the held-out split (a record without the modality counts as wrong:
    /// the regression has nothing to say about it).
    pub accuracy: f64,
    /// Macro-F1 on the held-out split.
    pub macro_f1: f64,
    /// Expected calibration error on the held-out split (a record without the modality
    /// counts as a wrong answer given with no confidence).
    #[serde(default)]
    pub ece: f64,
    /// Weights and biases fitted (the fusion: those of its regressions).
    #[serde(default)]
    pub parameters: i64,
    /// Seconds of fitting (every penalty tried; the fusion: its regressions').
    #[serde(default)]
    pub seconds: f64,
}

/// Baselines of a classification run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baselines {
    /// The split the accuracies are on (`test`, or `val` without a test split).
    pub split: String,
    /// Per modality, then their late fusion.
    pub rows: Vec<Baseline>,
    /// Modalities without a baseline, and why (token ids, inputs too wide).
    pub skipped: Vec<String>,
}

impl Baselines {
    /// The best baseline's accuracy on the held-out split.
    pub fn best(&self) -> Option<&Baseline> {
        self.rows.iter().max_by(|a, b| a.accuracy.total_cmp(&b.accuracy))
    }
}

/// Inputs wider than this get no baseline (a raw 224² picture; its frozen encoder's
/// outputs are what a baseline should read).
pub const MAX_BASELINE_INPUTS: i64 = 1 << 14;

/// L2 penalties tried (on the mean loss), the largest of the best kept.
const PENALTIES: [f64; 6] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// L-BFGS iterations per fit (each a full pass over the training records).
const ITERATIONS: usize = 200;

/// Baselines of `config` (a classification) on its training, validation and held-out
/// datasets (`held_out_split` names the last), for `classes` classes.
pub fn fit_baselines(
    config: &RunConfig,
    train: &TensorDataset,
    val: &TensorDataset,
    held_out: &TensorDataset,
    held_out_split: &str,
    classes: usize,
) -> Result<Option<Baselines>> {
    if config.task != Task::Classification || val.is_empty() || held_out.is_empty() {
        return Ok(None);
    }
    let cpu = |t: &Tensor| t.to_device(Device::Cpu);
    let labels = |d: &TensorDataset| cpu(&d.labels).to_kind(Kind::Int64);
    let (train_y, val_y, test_y) = (labels(train), labels(val), labels(held_out));
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut val_fused = Tensor::zeros([val.len(), classes as i64], (Kind::Float, Device::Cpu));
    let mut test_fused = Tensor::zeros([held_out.len(), classes as i64], (Kind::Float, Device::Cpu));
    for (m, spec) in config.modalities.iter().enumerate() {
        let flat = |d: &TensorDataset| cpu(&d.features[m]).flatten(1, -1).to_kind(Kind::Float);
        // A frozen text encoder's cached outputs are a vector like any other; token ids
        // and padded sequences are not.
        if !train.features[m].is_floating_point() || train.padding[m].is_some() {
            skipped.push(format!("{}: token ids or sequences, not a fixed vector", spec.name));
            continue;
        }
        let width = train.features[m].size().iter().skip(1).product::<i64>();
        if width > MAX_BASELINE_INPUTS {
            skipped.push(format!(
                "{}: {width} inputs, over {MAX_BASELINE_INPUTS} (a frozen encoder's outputs would do)",
                spec.name
            ));
            continue;
        }
        let present = |d: &TensorDataset| cpu(&d.present[m]).to_kind(Kind::Bool);
        let rows_of = |d: &TensorDataset| present(d).nonzero().squeeze_dim(1);
        let train_rows = rows_of(train);
        if train_rows.size()[0] < 2 {
            skipped.push(format!("{}: fewer than two training records have it", spec.name));
            continue;
        }
        let x = flat(train).index_select(0, &train_rows);
        let y = train_y.index_select(0, &train_rows);
        let mean = x.mean_dim(0, true, Kind::Float);
        let std = x.std_dim(0, false, true).clamp_min(1e-6);
        let scale = |x: &Tensor| (x - &mean) / &std;
        let x = scale(&x);
        let (val_x, test_x) = (scale(&flat(val)), scale(&flat(held_out)));
        let (val_present, test_present) = (present(val), present(held_out));
        let started = std::time::Instant::now();
        let mut best: Option<(f64, f64, Tensor, Tensor)> = None;
        for l2 in PENALTIES {
            let (weights, bias) = fit_logistic(&x, &y, classes as i64, l2)?;
            let log_p = (val_x.matmul(&weights) + &bias).log_softmax(-1, Kind::Float);
            let accuracy = accuracy_where(&log_p, &val_y, &val_present)?;
            if best.as_ref().is_none_or(|b| accuracy >= b.0) {
                best = Some((accuracy, l2, weights, bias));
            }
        }
        let Some((val_accuracy, l2, weights, bias)) = best else {
            continue;
        };
        let log_p = |x: &Tensor, present: &Tensor| {
            (x.matmul(&weights) + &bias).log_softmax(-1, Kind::Float) * present.to_kind(Kind::Float).unsqueeze(-1)
        };
        let (val_log_p, test_log_p) = (log_p(&val_x, &val_present), log_p(&test_x, &test_present));
        val_fused += &val_log_p;
        test_fused += &test_log_p;
        let (accuracy, macro_f1, ece) = scores(&test_log_p, &test_y, &test_present, classes)?;
        rows.push(Baseline {
            name: format!("logistic regression: {}", spec.name),
            l2: Some(l2),
            val_accuracy,
            accuracy,
            macro_f1,
            ece,
            parameters: (weights.numel() + bias.numel()) as i64,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    if rows.len() > 1 {
        let everyone = |d: &TensorDataset| Tensor::ones([d.len()], (Kind::Bool, Device::Cpu));
        let (accuracy, macro_f1, ece) = scores(&test_fused, &test_y, &everyone(held_out), classes)?;
        rows.push(Baseline {
            name: "late fusion of the logistic regressions".into(),
            l2: None,
            val_accuracy: accuracy_where(&val_fused, &val_y, &everyone(val))?,
            accuracy,
            macro_f1,
            ece,
            parameters: rows.iter().map(|r| r.parameters).sum(),
            seconds: rows.iter().map(|r| r.seconds).sum(),
        });
    }
    Ok(Some(Baselines {
        split: held_out_split.to_string(),
        rows,
        skipped,
    }))
}

/// Accuracy of `log_p`'s argmax over the rows where `present` (absent rows count wrong).
fn accuracy_where(log_p: &Tensor, labels: &Tensor, present: &Tensor) -> Result<f64> {
    let right = log_p.argmax(-1, false).eq_tensor(labels).logical_and(present);
    Ok(f64::try_from(right.to_kind(Kind::Double).mean(Kind::Double))?)
}

/// Accuracy, macro-F1 and ECE of `log_p` (log-probabilities, or their sum over modalities:
/// renormalised here); a record without the modality is predicted as no class, with no
/// confidence.
fn scores(log_p: &Tensor, labels: &Tensor, present: &Tensor, classes: usize) -> Result<(f64, f64, f64)> {
    let predicted: Vec<i64> = Vec::try_from(log_p.argmax(-1, false))?;
    let confidence: Vec<f64> = Vec::try_from(
        log_p.log_softmax(-1, Kind::Double).exp().amax(&[-1i64][..], false) * present.to_kind(Kind::Double),
    )?;
    let present: Vec<bool> = Vec::try_from(present)?;
    let truth: Vec<i64> = Vec::try_from(labels)?;
    let predicted: Vec<usize> = predicted
        .iter()
        .zip(&present)
        .map(|(&p, &here)| if here { p as usize } else { classes })
        .collect();
    let truth: Vec<usize> = truth.iter().map(|&t| t as usize).collect();
    let metrics = fusion_core::Metrics::compute(&predicted, &truth, &confidence, classes + 1);
    Ok((
        metrics.accuracy,
        fusion_core::macro_f1(&metrics.confusion, classes),
        metrics.ece,
    ))
}

/// Weights `[D, C]` and bias `[C]` minimising the mean cross-entropy of `x` `[N, D]` to
/// `y` `[N]` plus `l2 · ‖W‖²`, by L-BFGS (memory 10, backtracking line search on the
/// sufficient-decrease condition), from zero.
pub fn fit_logistic(x: &Tensor, y: &Tensor, classes: i64, l2: f64) -> Result<(Tensor, Tensor)> {
    let inputs = x.size()[1];
    let count = inputs * classes + classes;
    let objective = |theta: &Tensor| -> Tensor {
        let weights = theta.narrow(0, 0, inputs * classes).view([inputs, classes]);
        let bias = theta.narrow(0, inputs * classes, classes);
        let logits = x.matmul(&weights) + bias;
        logits.cross_entropy_for_logits(y) + weights.square().sum(Kind::Float) * l2
    };
    let value_and_gradient = |theta: &Tensor| -> Result<(f64, Tensor)> {
        let theta = theta.detach().set_requires_grad(true);
        let loss = objective(&theta);
        let gradient = Tensor::f_run_backward(&[&loss], &[&theta], false, false)?.remove(0);
        Ok((f64::try_from(&loss)?, gradient))
    };
    let mut theta = Tensor::zeros([count], (Kind::Float, x.device()));
    let (mut value, mut gradient) = value_and_gradient(&theta)?;
    let mut history: std::collections::VecDeque<(Tensor, Tensor, f64)> = std::collections::VecDeque::new();
    for _ in 0..ITERATIONS {
        if f64::try_from(gradient.abs().max())? < 1e-6 {
            break;
        }
        // Two-loop recursion: the direction −H·g from the last steps' curvature pairs.
        let mut q = gradient.copy();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let alpha = rho * f64::try_from(s.dot(&q))?;
            q -= y * alpha;
            alphas.push(alpha);
        }
        if let Some((s, y, _)) = history.back() {
            let gamma = f64::try_from(s.dot(y))? / f64::try_from(y.dot(y))?.max(1e-12);
            q *= gamma;
        }
        for ((s, y, rho), alpha) in history.iter().zip(alphas.iter().rev()) {
            let beta = rho * f64::try_from(y.dot(&q))?;
            q += s * (alpha - beta);
        }
        let mut direction = -q;
        let mut slope = f64::try_from(gradient.dot(&direction))?;
        if slope >= 0.0 {
            // Not a descent direction (curvature lost): restart from the gradient.
            history.clear();
            direction = -gradient.copy();
            slope = f64::try_from(gradient.dot(&direction))?;
        }
        let mut step = if history.is_empty() {
            1.0 / f64::try_from(gradient.abs().sum(Kind::Float))?.max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..30 {
            let candidate = &theta + &direction * step;
            let (candidate_value, candidate_gradient) = value_and_gradient(&candidate)?;
            if candidate_value <= value + 1e-4 * step * slope {
                accepted = Some((candidate, candidate_value, candidate_gradient));
                break;
            }
            step *= 0.5;
        }
        let Some((next, next_value, next_gradient)) = accepted else {
            break;
        };
        let s = &next - &theta;
        let y = &next_gradient - &gradient;
        let sy = f64::try_from(s.dot(&y))?;
        if sy > 1e-10 {
            history.push_back((s, y, 1.0 / sy));
            if history.len() > 10 {
                history.pop_front();
            }
        }
        let converged = (value - next_value).abs() <= 1e-9 * value.abs().max(1.0);
        (theta, value, gradient) = (next, next_value, next_gradient);
        if converged {
            break;
        }
    }
    let weights = theta.narrow(0, 0, inputs * classes).view([inputs, classes]).detach();
    let bias = theta.narrow(0, inputs * classes, classes).detach();
    Ok((weights, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On separable-ish data with a known answer: L-BFGS reaches the optimum gradient
    /// descent reaches after many more steps, and the gradient there is (near) zero.
    #[test]
    fn logistic_regression_reaches_the_optimum() -> Result<()> {
        // The values need not repeat: any draw has an optimum to reach.
        tch::manual_seed(3);
        let x = Tensor::randn([300, 5], (Kind::Float, Device::Cpu));
        let truth = Tensor::from_slice(&[
            2.0f32, -1.0, 0.5, 0.0, 1.5, -2.0, 0.3, 1.0, -0.5, 0.0, 0.2, 1.1, -1.3, 0.7, 0.0,
        ])
        .view([5, 3]);
        let y = (x.matmul(&truth) + Tensor::randn([300, 3], (Kind::Float, Device::Cpu)) * 0.5).argmax(-1, false);
        let l2 = 1e-3;
        let (weights, bias) = fit_logistic(&x, &y, 3, l2)?;
        // The gradient of the objective at the answer.
        let w = weights.detach().set_requires_grad(true);
        let b = bias.detach().set_requires_grad(true);
        let loss = (x.matmul(&w) + &b).cross_entropy_for_logits(&y) + w.square().sum(Kind::Float) * l2;
        let grads = Tensor::f_run_backward(&[&loss], &[&w, &b], false, false)?;
        for g in &grads {
            let largest = f64::try_from(g.abs().max())?;
            assert!(largest < 1e-4, "gradient {largest}");
        }
        // It separates the training data about as well as the generating weights do.
        let fitted = f64::try_from(
            (x.matmul(&weights) + &bias)
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float),
        )?;
        assert!(fitted > 0.8, "training accuracy {fitted}");
        Ok(())
    }

    #[test]
    fn macro_f1_leaves_out_the_no_prediction_column() {
        // Two classes and "none": class 0 right twice, class 1 once right, once absent.
        let confusion = vec![vec![2, 0, 0], vec![0, 1, 1], vec![0, 0, 0]];
        // F1 of class 0: 2·2/(2+2) = 1; class 1: 2·1/(2+1) = 2/3.
        let f1 = fusion_core::macro_f1(&confusion, 2);
        assert!((f1 - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{f1}");
    }
}
