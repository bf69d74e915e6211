//! Datasets of a run: extracted features laid out for their encoders, with presence and
//! padding masks, the task's targets (class indices, 0/1 per tag, numbers) and groups.

use fusion_core::{Task, TensorDataset};
use fusion_data::{Extraction, Problem};
use tch::{Device, Kind, Tensor};

use crate::{ModalitySpec, Result};

/// Class names in index order: numeric labels first, by value, then the others
/// alphabetically (one consistent order, whatever the mix); empty labels (records without
/// one) are not a class.
pub fn classes_of<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let unique: std::collections::BTreeSet<&str> = labels.filter(|l| !l.is_empty()).collect();
    let mut classes: Vec<String> = unique.into_iter().map(str::to_string).collect();
    classes.sort_by(|a, b| {
        let key = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
        match (key(a), key(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y).then_with(|| a.cmp(b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(b),
        }
    });
    classes
}

/// Separates the tags of a multi-label record's label.
pub const TAG_SEPARATOR: char = ';';

/// The tags of a multi-label record's label (`a;b`), trimmed, empty ones dropped.
pub fn tags_of(label: &str) -> impl Iterator<Item = &str> {
    label.split(TAG_SEPARATOR).map(str::trim).filter(|t| !t.is_empty())
}

/// The model's outputs for a task, from the training records' labels: the classes, the
/// tags (multi-label), or the one name `value` (regression).
pub fn outputs_of<'a>(task: Task, labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    match task {
        Task::Classification | Task::Contrastive => classes_of(labels),
        Task::MultiLabel => classes_of(labels.flat_map(tags_of)),
        Task::Regression => vec![REGRESSION_OUTPUT.to_string()],
    }
}

/// The name of a regression's one output.
pub const REGRESSION_OUTPUT: &str = "value";

/// A record's label as the task's target: a class index, 0/1 per tag, or the number; the
/// error says why the record cannot be used.
fn target_of(task: Task, label: &str, outputs: &[String]) -> std::result::Result<Vec<f64>, String> {
    if task == Task::Contrastive {
        // Pairs are their own targets: a label only names a known class (-1: none).
        return Ok(vec![outputs.iter().position(|c| c == label).map_or(-1.0, |i| i as f64)]);
    }
    if label.trim().is_empty() {
        return Err("has no label".into());
    }
    match task {
        // A contrastive record returned above.
        Task::Classification | Task::Contrastive => outputs
            .iter()
            .position(|c| c == label)
            .map(|i| vec![i as f64])
            .ok_or_else(|| format!("label `{label}` is not one of the model's classes")),
        Task::MultiLabel => {
            // A tag the model was not trained on cannot be predicted: the record is scored
            // on the model's tags (dropping it would bias the metrics towards common tags).
            let mut row = vec![0.0; outputs.len()];
            for i in tags_of(label).filter_map(|tag| outputs.iter().position(|c| c == tag)) {
                row[i] = 1.0;
            }
            Ok(row)
        }
        // Targets are trained on as 32-bit floats: 1e308 would become infinite there.
        Task::Regression => match label.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v.abs() <= f64::from(f32::MAX) => Ok(vec![v]),
            Ok(v) if v.is_finite() => Err(format!(
                "label `{label}` is beyond ±3.4e38, the range of the 32-bit floats targets are trained on"
            )),
            _ => Err(format!("label `{label}` is not a finite number")),
        },
    }
}

/// The kept records of a split as a dataset; records whose label the task cannot use (no
/// label, a class the model does not know, not a number) are left out and reported.
#[derive(Debug)]
pub struct SplitData {
    /// Features, presence, labels and groups.
    pub data: TensorDataset,
    /// Index into the extraction of each sample.
    pub records: Vec<usize>,
    /// Records left out, with the reason.
    pub problems: Vec<Problem>,
}

/// One modality's features of `records` as `[N, ...]` (flat or shaped for its encoder;
/// int64 for token ids, padded to the longest with a padding mask) and presence `[N]`.
pub fn modality_tensor(
    extraction: &Extraction,
    column: usize,
    spec: &ModalitySpec,
    records: &[usize],
) -> (Tensor, Option<Tensor>, Tensor) {
    let per_record = &extraction.features[column];
    let n = records.len() as i64;
    let here: Vec<bool> = records.iter().map(|&i| per_record[i].is_some()).collect();
    let present = Tensor::from_slice(&here);
    if spec.features.variable_length() {
        let longest = records
            .iter()
            .filter_map(|&i| per_record[i].as_ref().map(Vec::len))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut ids = vec![0i64; records.len() * longest];
        let mut mask = vec![false; records.len() * longest];
        for (row, &i) in records.iter().enumerate() {
            // An absent text is one padding token that nothing attends to but itself.
            let values = per_record[i].as_deref().unwrap_or(&[]);
            for (t, &v) in values.iter().enumerate() {
                ids[row * longest + t] = v as i64;
                mask[row * longest + t] = true;
            }
            if values.is_empty() {
                mask[row * longest] = true;
            }
        }
        let shape = [n, longest as i64];
        return (
            Tensor::from_slice(&ids).view(shape),
            Some(Tensor::from_slice(&mask).view(shape)),
            present,
        );
    }
    let dim = spec.features.dim();
    let mut values = Vec::with_capacity(records.len() * dim);
    for &i in records {
        match &per_record[i] {
            Some(v) => values.extend_from_slice(v),
            None => values.extend(std::iter::repeat_n(0f32, dim)),
        }
    }
    let shape = [vec![n], spec.input_shape()].concat();
    (Tensor::from_slice(&values).view(shape.as_slice()), None, present)
}

/// Builds the dataset of the extraction's records at `indices` for `modalities`, whose
/// features are in the extraction's `columns`; labels are the task's targets over
/// `outputs` (see [`outputs_of`]).
pub fn dataset(
    extraction: &Extraction,
    indices: &[usize],
    (task, outputs): (Task, &[String]),
    modalities: &[ModalitySpec],
    columns: &[usize],
    device: Device,
) -> Result<SplitData> {
    labelled(
        extraction,
        indices,
        (task, outputs),
        modalities,
        columns,
        device,
        Inputs::Raw,
    )
}

/// Which inputs a dataset holds for a modality whose frozen encoder's outputs are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inputs {
    /// The raw features, as for any modality.
    Raw,
    /// `[N, 0]`: nothing, for the encoder's outputs to replace (its raw inputs, a 224²
    /// picture per record, are never gathered into one tensor).
    EncodedLater,
}

/// [`dataset`], choosing what cached frozen encoders' modalities hold.
pub(crate) fn labelled(
    extraction: &Extraction,
    indices: &[usize],
    (task, outputs): (Task, &[String]),
    modalities: &[ModalitySpec],
    columns: &[usize],
    device: Device,
    inputs: Inputs,
) -> Result<SplitData> {
    let mut kept = Vec::new();
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for &i in indices {
        let record = &extraction.records[i];
        match target_of(task, &record.label, outputs) {
            Ok(target) => {
                kept.push(i);
                targets.extend(target);
            }
            Err(reason) => problems.push(Problem {
                id: record.id.clone(),
                modality: None,
                path: None,
                reason,
            }),
        }
    }
    build(
        extraction,
        kept,
        &targets,
        (task, outputs),
        modalities,
        columns,
        device,
        problems,
        inputs,
    )
}

/// Every record at `indices` as model inputs whatever its label (to predict): the labels
/// are placeholders of the task's kind.
pub(crate) fn unlabelled(
    extraction: &Extraction,
    indices: &[usize],
    (task, outputs): (Task, &[String]),
    modalities: &[ModalitySpec],
    columns: &[usize],
    device: Device,
    inputs: Inputs,
) -> Result<SplitData> {
    let width = if task == Task::MultiLabel { outputs.len() } else { 1 };
    let targets = vec![0.0; indices.len() * width];
    build(
        extraction,
        indices.to_vec(),
        &targets,
        (task, outputs),
        modalities,
        columns,
        device,
        Vec::new(),
        inputs,
    )
}

#[allow(clippy::too_many_arguments)]
fn build(
    extraction: &Extraction,
    kept: Vec<usize>,
    targets: &[f64],
    (task, outputs): (Task, &[String]),
    modalities: &[ModalitySpec],
    columns: &[usize],
    device: Device,
    problems: Vec<Problem>,
    inputs: Inputs,
) -> Result<SplitData> {
    let labels = match task {
        Task::Classification | Task::Contrastive => Tensor::from_slice(targets).to_kind(Kind::Int64),
        Task::MultiLabel => Tensor::from_slice(targets)
            .to_kind(Kind::Float)
            .view([kept.len() as i64, outputs.len() as i64]),
        Task::Regression => Tensor::from_slice(targets).to_kind(Kind::Float),
    };
    let mut features = Vec::new();
    let mut padding = Vec::new();
    let mut present = Vec::new();
    for (spec, &column) in modalities.iter().zip(columns) {
        if inputs == Inputs::EncodedLater && spec.encoder.caches_outputs() {
            let here: Vec<bool> = kept.iter().map(|&i| extraction.features[column][i].is_some()).collect();
            features.push(Tensor::zeros([kept.len() as i64, 0], (Kind::Float, device)));
            padding.push(None);
            present.push(Tensor::from_slice(&here).to_device(device));
            continue;
        }
        let (values, mask, here) = modality_tensor(extraction, column, spec, &kept);
        features.push(values.to_device(device));
        padding.push(mask.map(|m| m.to_device(device)));
        present.push(here.to_device(device));
    }
    let groups: Vec<Option<String>> = kept.iter().map(|&i| extraction.records[i].group.clone()).collect();
    let data = TensorDataset {
        features,
        padding,
        present,
        labels: labels.to_device(device),
        groups: groups.iter().any(Option::is_some).then(|| {
            groups
                .into_iter()
                .map(|g| g.unwrap_or_else(|| "(none)".into()))
                .collect()
        }),
        weights: None,
    };
    data.check()?;
    Ok(SplitData {
        data,
        records: kept,
        problems,
    })
}

/// Standardisation statistics of each modality fitted on the present samples of `data`:
/// per-value mean and one standard deviation of the centred values (one scale per
/// modality, so values constant in training cannot blow up at test time), or, for
/// features scaled per value, each value's own deviation (at least a tenth of the common
/// one, for the same reason). `None` for modalities that are not standardised (token ids,
/// pretrained encoders' inputs).
pub fn fit_standardization(data: &TensorDataset, modalities: &[ModalitySpec]) -> Result<Vec<Option<(Tensor, Tensor)>>> {
    let mut fitted = Vec::new();
    for ((features, present), spec) in data.features.iter().zip(&data.present).zip(modalities) {
        if !standardized(spec) {
            fitted.push(None);
            continue;
        }
        let rows = features
            .index_select(0, &present.nonzero().squeeze_dim(1))
            .to_kind(Kind::Float)
            .to_device(Device::Cpu);
        let shape = &features.size()[1..];
        let scale_shape = if spec.features.scaled_per_value() {
            shape
        } else {
            &[1][..]
        };
        if rows.size()[0] == 0 {
            fitted.push(Some((
                Tensor::zeros(shape, (Kind::Float, Device::Cpu)),
                Tensor::ones(scale_shape, (Kind::Float, Device::Cpu)),
            )));
            continue;
        }
        let mean = rows.mean_dim(0, false, Kind::Float);
        let centred = (&rows - &mean).square();
        let common = f64::try_from(centred.mean(Kind::Float).sqrt())?;
        let common = if common > 1e-6 { common } else { 1.0 };
        let scale = if spec.features.scaled_per_value() {
            centred.mean_dim(0, false, Kind::Float).sqrt().clamp_min(common / 10.0)
        } else {
            Tensor::from_slice(&[common as f32])
        };
        fitted.push(Some((mean, scale)));
    }
    Ok(fitted)
}

/// Whether a modality's inputs are standardised inside the model.
pub(crate) fn standardized(spec: &ModalitySpec) -> bool {
    // Table rows are standardised per column already and carry category ids.
    let table = matches!(spec.features, fusion_data::FeatureConfig::Table { .. });
    !spec.features.integer() && !spec.encoder.pretrained() && !table
}

#[cfg(test)]
mod tests {
    use fusion_core::Task;

    use super::{classes_of, outputs_of, target_of};

    #[test]
    fn targets_of_each_task() {
        let tags = outputs_of(Task::MultiLabel, ["b; a", "c", "", "a;;"].into_iter());
        assert_eq!(tags, ["a", "b", "c"]);
        assert_eq!(target_of(Task::MultiLabel, " c ;a", &tags), Ok(vec![1.0, 0.0, 1.0]));
        assert_eq!(target_of(Task::MultiLabel, ";", &tags), Ok(vec![0.0; 3]));
        assert_eq!(target_of(Task::MultiLabel, "a;d", &tags), Ok(vec![1.0, 0.0, 0.0]));
        let value = outputs_of(Task::Regression, ["3"].into_iter());
        assert_eq!(target_of(Task::Regression, " -2.5e1", &value), Ok(vec![-25.0]));
        for bad in ["cheap", "NaN", "inf", "1e308", "-3.5e38"] {
            assert!(target_of(Task::Regression, bad, &value).is_err(), "{bad}");
        }
        assert_eq!(target_of(Task::Regression, "3e38", &value), Ok(vec![3e38]));
        let classes = outputs_of(Task::Classification, ["y", "x"].into_iter());
        assert_eq!(target_of(Task::Classification, "y", &classes), Ok(vec![1.0]));
        assert!(target_of(Task::Classification, "", &classes).is_err_and(|e| e == "has no label"));
    }

    #[test]
    fn classes_sort_numbers_by_value_then_words() {
        let labels = ["10", "2", "1a", "cat", "2", "-1", "NaN", "b", ""];
        assert_eq!(
            classes_of(labels.into_iter()),
            ["-1", "2", "10", "1a", "NaN", "b", "cat"]
        );
    }
}
