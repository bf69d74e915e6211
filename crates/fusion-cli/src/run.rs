//! The run configuration (`train --config`), its checks against a manifest, and the
//! datasets built from extracted features.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use fusion_core::{EncoderConfig, FusionConfig, ModalityConfig, ModelConfig, TensorDataset, TrainConfig};
use fusion_data::{Extraction, FeatureConfig, FeatureSpec, Manifest, Modality, Problem, Split};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// One modality of a run: where its features come from and how they are encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalitySpec {
    /// `image`, `audio`, `text` or `video`: the manifest field read.
    pub name: String,
    /// How files become feature vectors.
    pub features: FeatureConfig,
    /// Encoder over the feature vector.
    #[serde(default)]
    pub encoder: EncoderConfig,
}

/// A fusion method to train in `compare`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFusion {
    /// Row name in the table.
    pub name: String,
    /// The method.
    pub fusion: FusionConfig,
}

/// Everything `fusion train` needs; saved as `run.json` in the run folder with its paths
/// made absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The dataset manifest (relative to the configuration file).
    pub manifest: PathBuf,
    /// Feature cache folder (relative to the configuration file); default: the user's
    /// cache folder (`$XDG_CACHE_HOME/fusion/features` or `~/.cache/fusion/features`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Modalities in model input order.
    pub modalities: Vec<ModalitySpec>,
    /// Common hidden size of the fusion model.
    #[serde(default = "default_hidden")]
    pub hidden_dim: i64,
    /// Dropout in encoders and classifiers.
    #[serde(default)]
    pub dropout: f64,
    /// The fusion method of `train`.
    pub fusion: FusionConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// Methods trained side by side by `compare` (each with the same encoders and seed);
    /// unimodal baselines are always added.
    #[serde(default)]
    pub compare: Vec<NamedFusion>,
}

fn default_hidden() -> i64 {
    64
}

impl RunConfig {
    /// Reads a JSON configuration; errors name the file and the field (`fusion.method`…).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let mut config: Self = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = e.path().to_string();
            anyhow!("config {}: field `{field}`: {}", path.display(), e.inner())
        })?;
        let parent = path.parent().unwrap_or(Path::new("."));
        // Resolved so that reports and errors show plain paths, not `a/../b`.
        let base = parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf());
        config.manifest = absolute(&base.join(&config.manifest));
        config.cache = config.cache.as_ref().map(|c| absolute(&base.join(c)));
        Ok(config)
    }

    /// Checks what serde cannot: modality names, feature sizes, hidden sizes.
    pub fn validate(&self) -> Result<()> {
        if self.modalities.is_empty() {
            bail!("config: field `modalities`: at least one modality is needed");
        }
        for (i, m) in self.modalities.iter().enumerate() {
            let wanted = modality_name(m.features.modality());
            if m.name != wanted {
                bail!(
                    "config: field `modalities[{i}].name`: `{}` but features of kind {} read the `{wanted}` field",
                    m.name,
                    serde_json::to_value(&m.features)
                        .ok()
                        .and_then(|v| v.get("kind").cloned())
                        .unwrap_or_default()
                );
            }
            if self.modalities[..i].iter().any(|o| o.name == m.name) {
                bail!("config: field `modalities[{i}].name`: `{}` appears twice", m.name);
            }
            m.features
                .validate(&format!("modalities[{i}].features"))
                .map_err(|e| anyhow!("config: {e}"))?;
        }
        self.model_config(2, &self.fusion)
            .validate()
            .map_err(|e| anyhow!("config: {e}"))
    }

    /// Checks the configuration against a manifest: every modality is in some record and
    /// there is something to train on.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<()> {
        for (i, m) in self.modalities.iter().enumerate() {
            let modality = m.features.modality();
            if !manifest.records.iter().any(|r| r.has(modality)) {
                bail!(
                    "config: field `modalities[{i}].name`: no record of {} has `{}`",
                    manifest.path.display(),
                    m.name
                );
            }
        }
        if !manifest
            .records
            .iter()
            .any(|r| r.split.unwrap_or(Split::Train) == Split::Train)
        {
            bail!(
                "{}: no training records (split `train` or none)",
                manifest.path.display()
            );
        }
        Ok(())
    }

    /// `(feature column, feature length)` of each modality, for an extraction made with
    /// [`Self::feature_specs`].
    pub fn columns(&self) -> Vec<(usize, usize)> {
        self.modalities.iter().map(|m| m.features.dim()).enumerate().collect()
    }

    /// Whether `other` continues this run: the same data, features, model and training,
    /// the epoch count aside (the cache folder and the compare list do not matter).
    pub fn same_run(&self, other: &Self) -> bool {
        let comparable = |c: &Self| Self {
            cache: None,
            compare: Vec::new(),
            train: TrainConfig {
                epochs: 0,
                ..c.train.clone()
            },
            ..c.clone()
        };
        comparable(self) == comparable(other)
    }

    /// The feature extraction asked for.
    pub fn feature_specs(&self) -> Vec<FeatureSpec> {
        self.modalities
            .iter()
            .map(|m| FeatureSpec {
                name: m.name.clone(),
                config: m.features.clone(),
            })
            .collect()
    }

    /// The model for `num_classes` classes and `fusion`.
    pub fn model_config(&self, num_classes: i64, fusion: &FusionConfig) -> ModelConfig {
        ModelConfig {
            modalities: self
                .modalities
                .iter()
                .map(|m| ModalityConfig {
                    name: m.name.clone(),
                    input_dim: m.features.dim() as i64,
                    encoder: m.encoder.clone(),
                })
                .collect(),
            num_classes,
            hidden_dim: self.hidden_dim,
            dropout: self.dropout,
            fusion: fusion.clone(),
        }
    }

    /// The same run with only modality `index` (a unimodal baseline).
    pub fn only(&self, index: usize) -> Self {
        Self {
            modalities: vec![self.modalities[index].clone()],
            fusion: FusionConfig::Late {
                combiner: fusion_core::LateCombiner::Mean,
            },
            ..self.clone()
        }
    }

    /// The feature cache to use.
    pub fn cache_folder(&self) -> Option<PathBuf> {
        self.cache.clone().or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("fusion").join("features"))
        })
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The manifest field of a modality.
pub fn modality_name(modality: Modality) -> &'static str {
    match modality {
        Modality::Text => "text",
        Modality::Image => "image",
        Modality::Audio => "audio",
        Modality::Video => "video",
    }
}

/// Class names in index order: numeric labels first, by value, then the others
/// alphabetically (one consistent order, whatever the mix).
pub fn classes_of<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let unique: std::collections::BTreeSet<&str> = labels.collect();
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

#[cfg(test)]
mod tests {
    use super::classes_of;

    #[test]
    fn classes_sort_numbers_by_value_then_words() {
        let labels = ["10", "2", "1a", "cat", "2", "-1", "NaN", "b"];
        assert_eq!(
            classes_of(labels.into_iter()),
            ["-1", "2", "10", "1a", "NaN", "b", "cat"]
        );
    }
}

/// The kept records of `indices` as a dataset on `device`; records whose label is not a
/// known class are left out and reported.
pub struct SplitData {
    /// Features, presence, labels and groups.
    pub data: TensorDataset,
    /// Index into the extraction of each sample.
    pub records: Vec<usize>,
    /// Records left out (unknown label).
    pub problems: Vec<Problem>,
}

/// Builds the dataset of the extraction's records at `indices`.
pub fn dataset(
    extraction: &Extraction,
    indices: &[usize],
    classes: &[String],
    columns: &[(usize, usize)],
    device: Device,
) -> Result<SplitData> {
    let mut kept = Vec::new();
    let mut labels = Vec::new();
    let mut problems = Vec::new();
    for &i in indices {
        let record = &extraction.records[i];
        match classes.iter().position(|c| *c == record.label) {
            Some(label) => {
                kept.push(i);
                labels.push(label as i64);
            }
            None => problems.push(Problem {
                id: record.id.clone(),
                modality: None,
                path: None,
                reason: format!("label `{}` is not one of the model's classes", record.label),
            }),
        }
    }
    let n = kept.len() as i64;
    let mut features = Vec::new();
    let mut present = Vec::new();
    for &(column, dim) in columns {
        let per_record = &extraction.features[column];
        let mut values = Vec::with_capacity(kept.len() * dim);
        let mut here = Vec::with_capacity(kept.len());
        for &i in &kept {
            match &per_record[i] {
                Some(v) => {
                    values.extend_from_slice(v);
                    here.push(true);
                }
                None => {
                    values.extend(std::iter::repeat_n(0f32, dim));
                    here.push(false);
                }
            }
        }
        features.push(Tensor::from_slice(&values).view([n, dim as i64]).to_device(device));
        present.push(Tensor::from_slice(&here).to_device(device));
    }
    let groups: Vec<Option<String>> = kept.iter().map(|&i| extraction.records[i].group.clone()).collect();
    let data = TensorDataset {
        padding: features.iter().map(|_| None).collect(),
        features,
        present,
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64).to_device(device),
        groups: groups.iter().any(Option::is_some).then(|| {
            groups
                .into_iter()
                .map(|g| g.unwrap_or_else(|| "(none)".into()))
                .collect()
        }),
    };
    data.check()?;
    Ok(SplitData {
        data,
        records: kept,
        problems,
    })
}

/// Per-modality input standardisation fitted on the training split: each feature minus
/// its training mean, divided by the modality's overall training standard deviation (one
/// scale per modality, so features constant in training cannot blow up at test time).
/// Saved as `normalization.json`; absent modalities stay zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per modality, per feature: training mean.
    pub mean: Vec<Vec<f32>>,
    /// Per modality: standard deviation of the centred training features.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Fits on the present samples of `data`.
    pub fn fit(data: &TensorDataset) -> Result<Self> {
        let mut mean = Vec::new();
        let mut std = Vec::new();
        for (features, present) in data.features.iter().zip(&data.present) {
            let rows = features
                .index_select(0, &present.nonzero().squeeze_dim(1))
                .to_kind(Kind::Float);
            if rows.size()[0] == 0 {
                let dim = features.size()[1];
                mean.push(vec![0.0; dim as usize]);
                std.push(1.0);
                continue;
            }
            let m = rows.mean_dim(0, false, Kind::Float);
            let s = f64::try_from((&rows - &m).square().mean(Kind::Float).sqrt())? as f32;
            mean.push(Vec::<f32>::try_from(m.to_device(Device::Cpu))?);
            std.push(if s > 1e-6 { s } else { 1.0 });
        }
        Ok(Self { mean, std })
    }

    /// Standardises `data` in place.
    pub fn apply(&self, data: &mut TensorDataset) -> Result<()> {
        if self.mean.len() != data.features.len() {
            bail!(
                "normalization.json has {} modalities, the data {}",
                self.mean.len(),
                data.features.len()
            );
        }
        for (m, features) in data.features.iter_mut().enumerate() {
            let device = features.device();
            let mean = Tensor::from_slice(&self.mean[m]).to_device(device);
            let present = data.present[m].unsqueeze(1).to_kind(Kind::Float);
            *features = (&*features - mean) / f64::from(self.std[m]) * present;
        }
        Ok(())
    }
}
