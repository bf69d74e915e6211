//! How each modality does on its own after training: the trained model evaluated on the
//! validation records that have the modality, every other modality marked absent. A
//! branch whose accuracy alone is no better than always answering the commonest class
//! learned nothing that generalises (its training loss may still have fallen), and the
//! run says so.

use fusion_core::{FusionModel, TensorDataset, evaluate};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::Result;

/// One modality's validation accuracy on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityAlone {
    /// The modality.
    pub modality: String,
    /// Validation records that have it.
    pub samples: usize,
    /// Accuracy of the model with only this modality present.
    pub accuracy: f64,
    /// Share of those records in their commonest class: what answering it always scores.
    pub chance: f64,
    /// Whether `accuracy` is within two standard errors of `chance` (or below it).
    pub at_chance: bool,
}

impl ModalityAlone {
    /// A line for people: the warning when the modality is at chance.
    pub fn warning(&self) -> Option<String> {
        self.at_chance.then(|| {
            format!(
                "modality `{}` alone scores {:.3} on {} validation records, no better than always answering \
                 the commonest class ({:.3}): it carries no signal on its own, or its encoder learned nothing \
                 that carries over to unseen records",
                self.modality, self.accuracy, self.samples, self.chance
            )
        })
    }
}

/// Fewest records on which a judgement is made (the margin over chance widens as they
/// get fewer).
const FEWEST: usize = 10;

/// Each modality of `model` (named `names`) alone on the classification dataset `val`.
/// Modalities present in fewer than 10 validation records are left out.
pub fn modalities_alone(
    model: &FusionModel,
    names: &[String],
    val: &TensorDataset,
    batch_size: usize,
) -> Result<Vec<ModalityAlone>> {
    let mut out = Vec::new();
    for (m, name) in names.iter().enumerate() {
        let Some(present) = val.present.get(m) else {
            continue;
        };
        let rows = present.to_device(Device::Cpu).nonzero().squeeze_dim(1);
        let samples = rows.size()[0] as usize;
        if samples < FEWEST {
            continue;
        }
        let pick = |t: &Tensor| t.index_select(0, &rows.to_device(t.device()));
        let only = TensorDataset {
            features: val.features.iter().map(pick).collect(),
            padding: val.padding.iter().map(|p| p.as_ref().map(pick)).collect(),
            present: val
                .present
                .iter()
                .enumerate()
                .map(|(other, p)| {
                    let kept = pick(p);
                    if other == m { kept } else { kept.zeros_like() }
                })
                .collect(),
            labels: pick(&val.labels),
            groups: None,
            weights: None,
        };
        let accuracy = evaluate(model, &only, batch_size)?.metrics.accuracy;
        let labels = Vec::<i64>::try_from(only.labels.to_device(Device::Cpu).to_kind(Kind::Int64))?;
        let mut counts = std::collections::HashMap::new();
        for label in labels {
            *counts.entry(label).or_insert(0usize) += 1;
        }
        let chance = counts.values().copied().max().unwrap_or(0) as f64 / samples as f64;
        let margin = 2.0 * (chance * (1.0 - chance) / samples as f64).sqrt();
        out.push(ModalityAlone {
            modality: name.clone(),
            samples,
            accuracy,
            chance,
            at_chance: accuracy <= chance + margin,
        });
    }
    Ok(out)
}
