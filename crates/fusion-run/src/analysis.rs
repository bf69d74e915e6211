//! What a trained run is measured on besides its evaluation: each modality's contribution
//! to its predictions (exact Shapley values) and its robustness to missing modalities and
//! noise, written to `explain.json` and `robustness.json`.

use fusion_core::{NOISE_LEVELS, NoiseCurve, ShapleyReport, SubsetAccuracy};
use fusion_data::Split;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::{EVAL_BATCH, Observer, Result, Run, SplitData};

/// `explain.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExplainRecord {
    /// Split explained.
    pub split: String,
    /// Per-modality Shapley values of the true class's probability.
    pub shapley: ShapleyReport,
}

/// `robustness.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RobustnessRecord {
    /// Split measured.
    pub split: String,
    /// Accuracy with only each subset of modalities present.
    pub subsets: Vec<SubsetAccuracy>,
    /// Accuracy as Gaussian noise grows on each modality.
    pub noise: Vec<NoiseCurve>,
}

impl Run {
    /// Exact per-modality Shapley values of the best weights on `data` (of `split`),
    /// written to `explain.json`.
    pub fn explain(&self, data: &SplitData, split: Split, device: Device) -> Result<ExplainRecord> {
        let (model, _vs) = self.model(device)?;
        let record = ExplainRecord {
            split: split.name().into(),
            shapley: fusion_core::shapley_values(&model, &data.data, EVAL_BATCH)?,
        };
        self.write_json("explain.json", &record)?;
        Ok(record)
    }

    /// The best weights' score on `data` (of `split`) with only each subset of modalities
    /// present and, with `noise`, as Gaussian noise grows on each modality (not on token
    /// ids: said to `observer`), written to `robustness.json`.
    pub fn robustness(
        &self,
        data: &SplitData,
        split: Split,
        noise: bool,
        device: Device,
        observer: &dyn Observer,
    ) -> Result<RobustnessRecord> {
        let (model, _vs) = self.model(device)?;
        let subsets = fusion_core::missing_modality_accuracy(&model, &data.data, EVAL_BATCH)?;
        // Gaussian noise on token ids means nothing: runs with them get no noise curves.
        let noise = if !noise {
            Vec::new()
        } else if data.data.features.iter().all(Tensor::is_floating_point) {
            fusion_core::noise_robustness(&model, &data.data, EVAL_BATCH, &NOISE_LEVELS, 0)?
        } else {
            observer.warn("noise curves skipped: a modality is token ids (integers)");
            Vec::new()
        };
        let record = RobustnessRecord {
            split: split.name().into(),
            subsets,
            noise,
        };
        self.write_json("robustness.json", &record)?;
        Ok(record)
    }
}
