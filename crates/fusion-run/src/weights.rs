//! Each training record's weight in the loss: its own `weight` times its class's weight.

use std::collections::BTreeMap;

use fusion_core::Task;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Class weights of [`RunConfig::class_weights`](crate::RunConfig::class_weights).
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// Classes weigh in inverse proportion to their training records: `n / (C · n_c)`, as
    /// scikit-learn's `"balanced"`; a multi-label task's positives of each label weigh
    /// its negatives over its positives.
    Balanced,
    /// A weight per class name (a multi-label task: per label, on its positives); classes
    /// not named weigh 1.
    PerClass(BTreeMap<String, f64>),
}

impl Serialize for ClassWeights {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Balanced => serializer.serialize_str("balanced"),
            Self::PerClass(weights) => weights.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let expected = "`\"balanced\"` or an object of a weight per class";
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(name) if name == "balanced" => Ok(Self::Balanced),
            serde_json::Value::String(name) => Err(serde::de::Error::custom(format!(
                "unknown class weights `{name}`, expected {expected}"
            ))),
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(class, weight)| match weight.as_f64() {
                    Some(w) if w.is_finite() && w >= 0.0 => Ok((class, w)),
                    _ => Err(serde::de::Error::custom(format!(
                        "class `{class}`: weight {weight} must be a finite number ≥ 0"
                    ))),
                })
                .collect::<std::result::Result<_, _>>()
                .map(Self::PerClass),
            other => Err(serde::de::Error::custom(format!("{other}: expected {expected}"))),
        }
    }
}

impl ClassWeights {
    /// Refuses class weights for a task without classes (a regression).
    pub fn check_task(task: Task) -> Result<()> {
        match task {
            Task::Regression => Err(Error::Config(
                "config: field `class_weights`: a regression has no classes to weigh".into(),
            )),
            Task::Contrastive => Err(Error::Config(
                "config: field `class_weights`: a contrastive task trains on pairs, not classes".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Refuses what cannot apply to `task` or `outputs` (a class the training records do
    /// not have), naming the field.
    pub fn check(&self, task: Task, outputs: &[String]) -> Result<()> {
        Self::check_task(task)?;
        if let Self::PerClass(weights) = self
            && let Some(unknown) = weights.keys().find(|c| !outputs.contains(c))
        {
            return Err(Error::Config(format!(
                "config: field `class_weights`: `{unknown}` is not a class of the training records ({})",
                outputs.join(", ")
            )));
        }
        Ok(())
    }
}

/// The weights of training records with `targets` (class indices `[N]`, or 0/1 per label
/// `[N, L]`) and their own weights (`None`: 1): `[N]`, or `[N, L]` for a multi-label task
/// with class weights. `None` when every record weighs 1.
pub fn training_weights(
    task: Task,
    outputs: &[String],
    targets: &Tensor,
    record_weights: &[Option<f64>],
    class_weights: Option<&ClassWeights>,
) -> Result<Option<Tensor>> {
    let own: Vec<f32> = record_weights.iter().map(|w| w.unwrap_or(1.0) as f32).collect();
    let own_given = record_weights.iter().any(Option::is_some);
    let Some(class_weights) = class_weights else {
        return Ok(own_given.then(|| Tensor::from_slice(&own)));
    };
    class_weights.check(task, outputs)?;
    let targets = targets.to_device(tch::Device::Cpu);
    let named = |name: &str, balanced: f64| match class_weights {
        ClassWeights::Balanced => balanced,
        ClassWeights::PerClass(weights) => weights.get(name).copied().unwrap_or(1.0),
    };
    let own = Tensor::from_slice(&own);
    Ok(Some(match task {
        Task::MultiLabel => {
            let positives = Vec::<f64>::try_from(targets.sum_dim_intlist(0, false, Kind::Double))?;
            let n = targets.size()[0] as f64;
            let positive_weight: Vec<f32> = outputs
                .iter()
                .zip(&positives)
                .map(|(name, &p)| {
                    let balanced = if p > 0.0 { (n - p) / p } else { 1.0 };
                    named(name, balanced) as f32
                })
                .collect();
            // A positive of label l weighs w_l, a negative 1.
            let targets = targets.to_kind(Kind::Float);
            let per_label = &targets * (Tensor::from_slice(&positive_weight) - 1.0) + 1.0;
            per_label * own.unsqueeze(1)
        }
        _ => {
            let labels = Vec::<i64>::try_from(&targets)?;
            let mut counts = vec![0usize; outputs.len()];
            labels
                .iter()
                .for_each(|&l| counts[l.clamp(0, outputs.len() as i64 - 1) as usize] += 1);
            let present = counts.iter().filter(|&&c| c > 0).count().max(1) as f64;
            let per_class: Vec<f64> = outputs
                .iter()
                .zip(&counts)
                .map(|(name, &count)| named(name, labels.len() as f64 / (present * count.max(1) as f64)))
                .collect();
            let weights: Vec<f32> = labels
                .iter()
                .map(|&l| per_class[l.clamp(0, outputs.len() as i64 - 1) as usize] as f32)
                .collect();
            Tensor::from_slice(&weights) * own
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.reshape([-1])).unwrap_or_default()
    }

    #[test]
    fn balanced_classes_weigh_as_scikit_learn_does() -> Result<()> {
        // Labels 0,0,0,1: n/(C·n_c) = 4/(2·3), 4/(2·1); times the records' own weights.
        let outputs = ["a".to_string(), "b".to_string()];
        let targets = Tensor::from_slice(&[0i64, 0, 0, 1]);
        let weights = training_weights(
            Task::Classification,
            &outputs,
            &targets,
            &[None, Some(3.0), None, Some(0.5)],
            Some(&ClassWeights::Balanced),
        )?;
        let expected = [4.0 / 6.0, 3.0 * 4.0 / 6.0, 4.0 / 6.0, 0.5 * 2.0];
        let got = values(&weights.unwrap());
        assert!(
            got.iter().zip(expected).all(|(g, e)| (f64::from(*g) - e).abs() < 1e-6),
            "{got:?}"
        );
        // A map: unnamed classes weigh 1.
        let map = ClassWeights::PerClass([("b".to_string(), 5.0)].into());
        let got = values(&training_weights(Task::Classification, &outputs, &targets, &[None; 4], Some(&map))?.unwrap());
        assert_eq!(got, [1.0, 1.0, 1.0, 5.0]);
        // Nothing to weigh: none.
        assert!(training_weights(Task::Classification, &outputs, &targets, &[None; 4], None)?.is_none());
        Ok(())
    }

    #[test]
    fn multi_label_positives_weigh_negatives_over_positives() -> Result<()> {
        // Label x: 1 positive of 4 (weight 3); label y: 2 of 4 (weight 1).
        let outputs = ["x".to_string(), "y".to_string()];
        let targets = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view([4, 2]);
        let weights = training_weights(
            Task::MultiLabel,
            &outputs,
            &targets,
            &[Some(2.0), None, None, None],
            Some(&ClassWeights::Balanced),
        )?
        .unwrap();
        assert_eq!(weights.size(), [4, 2]);
        assert_eq!(values(&weights), [6.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        Ok(())
    }

    #[test]
    fn what_cannot_apply_is_refused_by_name() {
        let outputs = ["a".to_string()];
        let targets = Tensor::from_slice(&[0i64]);
        let typo = ClassWeights::PerClass([("c".to_string(), 2.0)].into());
        let message = training_weights(Task::Classification, &outputs, &targets, &[None], Some(&typo))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("class_weights") && message.contains("`c`"),
            "{message}"
        );
        let message = ClassWeights::Balanced
            .check(Task::Regression, &outputs)
            .unwrap_err()
            .to_string();
        assert!(message.contains("regression"), "{message}");
        for bad in [r#""balance""#, r#"{"a": -1}"#, r#"{"a": "x"}"#, "[1]"] {
            assert!(serde_json::from_str::<ClassWeights>(bad).is_err(), "{bad}");
        }
        let parsed: ClassWeights = serde_json::from_str(r#"{"a": 2}"#).unwrap_or(ClassWeights::Balanced);
        assert_eq!(parsed, ClassWeights::PerClass([("a".to_string(), 2.0)].into()));
        assert_eq!(
            serde_json::to_string(&ClassWeights::Balanced).unwrap_or_default(),
            r#""balanced""#
        );
    }
}
