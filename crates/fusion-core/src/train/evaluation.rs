//! Evaluation of a model on a dataset: loss, metrics per task and per group.

use super::*;

/// Predictions and metrics on a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean loss of the fused prediction (negative log-likelihood; binary cross-entropy
    /// per label; squared error of the standardised target).
    pub loss: f64,
    /// Classification metrics. A multi-label task's accuracy is the subset accuracy and its
    /// macro-F1 the mean over labels (no confusion matrix); a regression's are 0.
    pub metrics: Metrics,
    /// Per-group metrics when the dataset has groups (classification).
    pub groups: Option<GroupMetrics>,
    /// Predicted class of each sample (classification).
    pub predicted: Vec<usize>,
    /// True class of each sample (classification).
    pub labels: Vec<usize>,
    /// Each sample's class probabilities, label probabilities (multi-label), or its
    /// predicted number (regression, one value).
    pub probabilities: Vec<Vec<f32>>,
    /// The task's own metrics.
    pub task: TaskMetrics,
}

/// Metrics that only a task has.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskMetrics {
    /// Everything is in [`Evaluation::metrics`].
    #[default]
    Classification,
    /// Subset and per-label accuracy, micro/macro-F1, ROC-AUC and AP per label.
    MultiLabel(MultiLabelMetrics),
    /// RMSE, MAE, R².
    Regression(RegressionMetrics),
    /// Retrieval between every ordered pair of modalities (a contrastive task, whose
    /// [`Evaluation::metrics`] accuracy is the mean recall@1 over them).
    Retrieval {
        /// Each direction's recall@K, median rank and MRR.
        pairs: Vec<crate::contrastive::PairRetrieval>,
    },
}

impl TaskMetrics {
    /// The task's accuracy: `metrics.accuracy` (a multi-label task's subset accuracy), or a
    /// regression's R² (`None` for a constant target).
    pub fn accuracy(&self, metrics: &Metrics) -> Option<f64> {
        match self {
            Self::Regression(r) => r.r2,
            _ => Some(metrics.accuracy),
        }
    }
}

impl Evaluation {
    /// The score early stopping and robustness curves compare (higher is better): the
    /// task's accuracy ([`TaskMetrics::accuracy`]) for `Accuracy`, macro-F1 (a regression's
    /// R²) for `MacroF1`, the lowest group accuracy for `WorstGroupAccuracy`, minus the
    /// loss for `Loss` and for a regression without R².
    pub fn score(&self, metric: StopMetric) -> f64 {
        let accuracy = self.task.accuracy(&self.metrics);
        match (&self.task, metric) {
            (_, StopMetric::Loss) => -self.loss,
            (_, StopMetric::WorstGroupAccuracy) => self
                .groups
                .as_ref()
                .and_then(|g| g.groups.values().map(|m| m.accuracy).reduce(f64::min))
                .unwrap_or(self.metrics.accuracy),
            (TaskMetrics::Regression(_), _) | (_, StopMetric::Accuracy) => accuracy.unwrap_or(-self.loss),
            (_, StopMetric::MacroF1) => self.metrics.macro_f1,
        }
    }
}

/// Runs `model` in evaluation mode over `data`.
pub fn evaluate(model: &FusionModel, data: &TensorDataset, batch_size: usize) -> Result<Evaluation> {
    model.check_labels(&data.labels)?;
    if model.task() == Task::Contrastive {
        return evaluate_retrieval(model, data, batch_size);
    }
    let device = model.device();
    let outputs = model.config().num_classes as usize;
    let mut loss_sum = 0.0;
    let mut probabilities = Vec::with_capacity(data.len() as usize);
    tch::no_grad(|| -> Result<()> {
        for indices in data.batches(batch_size, None) {
            let (inputs, labels) = data.batch(&indices, device);
            let output = model.forward_t(&inputs, false)?;
            loss_sum += f64::try_from(output.per_sample_loss(&labels).sum(Kind::Double))?;
            probabilities.extend(Vec::<Vec<f32>>::try_from(output.scores().to_device(tch::Device::Cpu))?);
        }
        Ok(())
    })?;
    let loss = loss_sum / data.len().max(1) as f64;
    let count = probabilities.len();
    let cpu_labels = data.labels.to_device(tch::Device::Cpu);
    let widen = |rows: &[Vec<f32>]| -> Vec<Vec<f64>> {
        rows.iter().map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect()
    };
    Ok(match model.task() {
        Task::Classification => {
            let labels: Vec<usize> = Vec::<i64>::try_from(&cpu_labels)?
                .into_iter()
                .map(|l| l.max(0) as usize)
                .collect();
            let (_, metrics, groups, predicted) =
                crate::probability_metrics(&probabilities, &labels, data.groups.as_deref(), outputs);
            Evaluation {
                loss,
                metrics,
                groups,
                predicted,
                labels,
                probabilities,
                task: TaskMetrics::Classification,
            }
        }
        Task::MultiLabel => {
            let truths = label_states(&cpu_labels)?;
            let scores = widen(&probabilities);
            let task = MultiLabelMetrics::compute(&scores, &truths);
            let (predicted, truth): (Vec<usize>, Vec<usize>) = scores
                .iter()
                .flatten()
                .zip(truths.iter().flatten())
                .map(|(&s, &t)| (usize::from(s >= THRESHOLD), usize::from(t)))
                .unzip();
            let confidence: Vec<f64> = scores.iter().flatten().map(|&s| s.max(1.0 - s)).collect();
            let metrics = Metrics {
                accuracy: task.subset_accuracy,
                macro_f1: task.macro_f1,
                ece: crate::expected_calibration_error(&predicted, &truth, &confidence),
                ..Metrics::empty(count)
            };
            Evaluation {
                loss,
                metrics,
                groups: None,
                predicted: Vec::new(),
                labels: Vec::new(),
                probabilities,
                task: TaskMetrics::MultiLabel(task),
            }
        }
        Task::Contrastive => unreachable!("a contrastive model is evaluated by evaluate_retrieval"),
        Task::Regression => {
            let targets: Vec<f64> = Vec::<f64>::try_from(cpu_labels.to_kind(Kind::Double))?;
            let predicted: Vec<f64> = probabilities.iter().map(|p| f64::from(p[0])).collect();
            Evaluation {
                loss,
                metrics: Metrics::empty(count),
                groups: None,
                predicted: Vec::new(),
                labels: Vec::new(),
                probabilities,
                task: TaskMetrics::Regression(RegressionMetrics::compute(&predicted, &targets)),
            }
        }
    })
}

/// The embeddings `[N, M, D]` of every sample of `data` (absent modalities' rows zero), in
/// evaluation mode, on the CPU: a contrastive model's output.
pub fn embed(model: &FusionModel, data: &TensorDataset, batch_size: usize) -> Result<Tensor> {
    if model.task() != Task::Contrastive {
        return Err(Error::Config(format!(
            "embeddings come from a contrastive model, not a {} one",
            model.task().name()
        )));
    }
    let device = model.device();
    let mut parts = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for indices in data.batches(batch_size, None) {
            let (inputs, _) = data.batch(&indices, device);
            let output = model.forward_t(&inputs, false)?;
            parts.push(output.prediction.to_kind(Kind::Float).to_device(tch::Device::Cpu));
        }
        Ok(())
    })?;
    let (modalities, dim) = (model.config().modalities.len() as i64, model.config().hidden_dim);
    Ok(if parts.is_empty() {
        Tensor::zeros([0, modalities, dim], (Kind::Float, tch::Device::Cpu))
    } else {
        Tensor::cat(&parts, 0)
    })
}

/// A contrastive model on `data`: the loss over batches of `batch_size` records in order
/// (their mean, as a training epoch reads it), and retrieval in every direction over the
/// whole set ([`crate::contrastive::retrieval_between`]).
fn evaluate_retrieval(model: &FusionModel, data: &TensorDataset, batch_size: usize) -> Result<Evaluation> {
    let embeddings = embed(model, data, batch_size)?;
    let scale = model.contrastive_scale()?.detach().to_device(tch::Device::Cpu);
    let (mut loss_sum, mut start) = (0.0, 0);
    while start < embeddings.size()[0] {
        let len = (batch_size.max(2) as i64).min(embeddings.size()[0] - start);
        let shares = crate::contrastive::pairwise_sample_losses(&embeddings.narrow(0, start, len), &scale);
        loss_sum += f64::try_from(shares.sum(Kind::Double))?;
        start += len;
    }
    let loss = loss_sum / embeddings.size()[0].max(1) as f64;
    let content = crate::contrastive::content_digests(data)?;
    let pairs = crate::contrastive::retrieval_between(&embeddings, model.modality_names(), &content)?;
    let count = data.len() as usize;
    let metrics = Metrics {
        accuracy: crate::contrastive::mean_recall_at(&pairs, 1),
        ..Metrics::empty(count)
    };
    Ok(Evaluation {
        loss,
        metrics,
        groups: None,
        predicted: Vec::new(),
        labels: Vec::new(),
        probabilities: Vec::<Vec<f32>>::try_from(embeddings.flatten(1, -1))?,
        task: TaskMetrics::Retrieval { pairs },
    })
}

/// Each sample's labels on or off (at 0.5) from a multi-label target `[N, L]`.
pub fn label_states(labels: &Tensor) -> Result<Vec<Vec<bool>>> {
    let width = labels.size().get(1).copied().unwrap_or(1).max(1) as usize;
    Ok(
        Vec::<f32>::try_from(labels.to_device(tch::Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?
            .chunks(width)
            .map(|row| row.iter().map(|&v| v >= 0.5).collect())
            .collect(),
    )
}

/// Index of the largest value (the first on a tie; 0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}
