//! Frozen pretrained encoders run once per file: their outputs are cached like features,
//! keyed by the file's content, the preprocessing and the weights' content.

use std::collections::{BTreeMap, HashMap};

use fusion_data::{Extraction, FeatureCache, FeatureSpec};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor, nn};

use crate::{Error, ModalitySpec, Result, RunConfig, SplitData, data::modality_tensor};

/// Backbone outputs reused from the cache and computed (one forward pass per file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrozenCounts {
    /// Outputs read from the cache.
    pub cached: usize,
    /// Outputs computed by running the backbone.
    pub computed: usize,
}

/// Records per forward pass when computing outputs (a batch of 224² pictures through
/// EfficientNet holds about 25 MB of activations per record).
const BATCH: usize = 16;

/// The cache folder of a modality's frozen-encoder outputs.
fn cache_name(spec: &ModalitySpec) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(b"frozen encoder outputs, version 1");
    hasher.update(spec.features.hash().as_bytes());
    hasher.update(serde_json::to_vec(&spec.encoder.without_paths()).unwrap_or_default());
    hash_weight_files(spec, &mut hasher);
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("frozen-{}", &digest[..16]))
}

/// Feeds the names and contents' SHA-256 of a pretrained encoder's weight files to `hasher`.
fn hash_weight_files(spec: &ModalitySpec, hasher: &mut Sha256) {
    for file in spec.encoder.weight_files() {
        // Optional files (a folder without pooling settings) hash as absent.
        if let Ok(bytes) = std::fs::read(&file) {
            hasher.update(
                file.file_name()
                    .map(|n| n.as_encoded_bytes().to_vec())
                    .unwrap_or_default(),
            );
            hasher.update(Sha256::digest(&bytes));
        }
    }
}

/// The file of a run that names, per modality, the weights its frozen pretrained encoder
/// was trained with (they are not in its checkpoints).
pub(crate) const BACKBONES_FILE: &str = "backbones.json";

/// SHA-256 of the weight files of every modality of `config` whose frozen pretrained
/// encoder lives outside the checkpoints, by modality name.
pub(crate) fn backbone_digests(config: &RunConfig) -> BTreeMap<String, String> {
    config
        .modalities
        .iter()
        .filter(|spec| spec.encoder.has_external_weights())
        .map(|spec| {
            let mut hasher = Sha256::new();
            hash_weight_files(spec, &mut hasher);
            let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            (spec.name.clone(), digest)
        })
        .collect()
}

/// Replaces, in `data` (built from `extraction` for `config`), the raw inputs of every
/// modality with a cacheable frozen encoder by that encoder's outputs `[N, D]`: read from
/// the cache when the same file, preprocessing and weights were seen before, computed (and
/// stored) otherwise.
pub(crate) fn encode_frozen(
    config: &RunConfig,
    extraction: &Extraction,
    specs: &[FeatureSpec],
    data: &mut SplitData,
    device: Device,
) -> Result<FrozenCounts> {
    let mut counts = FrozenCounts::default();
    let columns = config.columns(specs)?;
    let cache = config.cache_folder().map(FeatureCache::new);
    for (m, spec) in config.modalities.iter().enumerate() {
        if !spec.encoder.caches_outputs() {
            continue;
        }
        let column = columns[m];
        let dim = spec.encoder.output_dim(&spec.features, config.hidden_dim)?;
        let name = cache_name(spec)?;
        let fits = |shape: &[usize]| shape == [dim as usize];
        let mut outputs: HashMap<String, Vec<f32>> = match &cache {
            Some(cache) => cache
                .load_named(&name, &fits, &format!("[{dim}]"))?
                .into_iter()
                .map(|(key, (_, values))| (key, values))
                .collect(),
            None => HashMap::new(),
        };
        // Each distinct missing file once.
        let mut missing: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &i in &data.records {
            if let Some(key) = &extraction.keys[column][i] {
                if outputs.contains_key(key) {
                    counts.cached += 1;
                } else if seen.insert(key.clone()) {
                    missing.push(i);
                }
            }
        }
        if !missing.is_empty() {
            let vs = nn::VarStore::new(device);
            let encoder = spec
                .encoder
                .build(&vs.root(), &spec.features, config.hidden_dim, config.dropout)?;
            let mut fresh = BTreeMap::new();
            for chunk in missing.chunks(BATCH) {
                let (features, padding, present) = modality_tensor(extraction, column, spec, chunk);
                let input = fusion_core::ModalityInput {
                    features: features.to_device(device),
                    padding_mask: padding.map(|p| p.to_device(device)),
                    present: present.to_device(device),
                };
                encoder
                    .check_input(&input.features)
                    .map_err(|why| Error::Config(format!("modality `{}`: {why}", spec.name)))?;
                let encoded = tch::no_grad(|| encoder.forward(&input, false)).to_device(Device::Cpu);
                let rows = Vec::<Vec<f32>>::try_from(encoded.to_kind(Kind::Float))?;
                for (&i, row) in chunk.iter().zip(rows) {
                    if let Some(key) = &extraction.keys[column][i] {
                        fresh.insert(key.clone(), (vec![dim as usize], row.clone()));
                        outputs.insert(key.clone(), row);
                    }
                }
            }
            counts.computed += fresh.len();
            if let Some(cache) = &cache {
                let description = serde_json::json!({"features": spec.features, "encoder": spec.encoder});
                // The cache only saves time: a failed write costs the next run a recompute.
                let _ = cache.store_named(&name, &fresh, &description);
            }
        }
        let mut values = Vec::with_capacity(data.records.len() * dim as usize);
        for &i in &data.records {
            match extraction.keys[column][i].as_ref().and_then(|k| outputs.get(k)) {
                Some(row) => values.extend_from_slice(row),
                None => values.extend(std::iter::repeat_n(0f32, dim as usize)),
            }
        }
        let n = data.records.len() as i64;
        data.data.features[m] = Tensor::from_slice(&values).view([n, dim]).to_device(device);
        data.data.padding[m] = None;
    }
    Ok(counts)
}
