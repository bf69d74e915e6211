//! Layers created under a path and remembered by their checkpoint key (the path below the
//! module's, dotted), so pretrained weights (HuggingFace, efficientnet_pytorch…) load by
//! name into a model that lives inside a larger var store.

use std::path::Path;

use tch::{Tensor, nn};

/// The tensors of a pretrained module, by checkpoint key: a layer at
/// `root / "encoder" / "layer" / 0 / "output" / "dense"` is `encoder.layer.0.output.dense`.
#[derive(Debug)]
pub struct ParameterSet {
    root: Vec<String>,
    entries: Vec<(String, Tensor)>,
}

/// `key.name`, or `name` for a layer at the module's own path.
fn entry_name(key: &str, name: &str) -> String {
    match key {
        "" => name.to_string(),
        key => format!("{key}.{name}"),
    }
}

impl ParameterSet {
    /// The parameters of the module at `root`.
    pub fn new(root: &nn::Path) -> Self {
        Self {
            root: root.components().map(String::from).collect(),
            entries: Vec::new(),
        }
    }

    /// The checkpoint key of the layer at `p`: its path below the module's, dotted (the
    /// whole path for one outside the module).
    fn key(&self, p: &nn::Path) -> String {
        let parts: Vec<&str> = p.components().collect();
        let below = match parts.strip_prefix(self.root.iter().map(String::as_str).collect::<Vec<_>>().as_slice()) {
            Some(below) => below,
            None => &parts,
        };
        below.join(".")
    }

    /// A linear layer at `p` (`KEY.weight`, `KEY.bias`).
    pub fn linear(&mut self, p: nn::Path, input: i64, output: i64) -> nn::Linear {
        let key = self.key(&p);
        let linear = crate::linear(p, input, output);
        self.entries
            .push((entry_name(&key, "weight"), linear.ws.shallow_clone()));
        if let Some(bias) = &linear.bs {
            self.entries.push((entry_name(&key, "bias"), bias.shallow_clone()));
        }
        linear
    }

    /// A 2-D convolution at `p`.
    pub fn conv2d(&mut self, p: nn::Path, input: i64, output: i64, kernel: i64, config: nn::ConvConfig) -> nn::Conv2D {
        let key = self.key(&p);
        let conv = nn::conv2d(p, input, output, kernel, config);
        self.entries.push((entry_name(&key, "weight"), conv.ws.shallow_clone()));
        if let Some(bias) = &conv.bs {
            self.entries.push((entry_name(&key, "bias"), bias.shallow_clone()));
        }
        conv
    }

    /// A layer norm over the last `size` values at `p`.
    pub fn layer_norm(&mut self, p: nn::Path, size: i64, eps: f64) -> nn::LayerNorm {
        let key = self.key(&p);
        let norm = nn::layer_norm(
            p,
            vec![size],
            nn::LayerNormConfig {
                eps,
                ..Default::default()
            },
        );
        if let (Some(weight), Some(bias)) = (&norm.ws, &norm.bs) {
            self.entries.push((entry_name(&key, "weight"), weight.shallow_clone()));
            self.entries.push((entry_name(&key, "bias"), bias.shallow_clone()));
        }
        norm
    }

    /// A 2-D batch norm at `p`, running statistics included (they load too).
    pub fn batch_norm2d(&mut self, p: nn::Path, size: i64, config: nn::BatchNormConfig) -> nn::BatchNorm {
        let key = self.key(&p);
        let norm = nn::batch_norm2d(p, size, config);
        if let (Some(weight), Some(bias)) = (&norm.ws, &norm.bs) {
            self.entries.push((entry_name(&key, "weight"), weight.shallow_clone()));
            self.entries.push((entry_name(&key, "bias"), bias.shallow_clone()));
        }
        self.entries
            .push((entry_name(&key, "running_mean"), norm.running_mean.shallow_clone()));
        self.entries
            .push((entry_name(&key, "running_var"), norm.running_var.shallow_clone()));
        norm
    }

    /// An embedding table at `p`, initialised N(0, 0.02²) as BERT does.
    pub fn embedding(&mut self, p: nn::Path, count: i64, size: i64) -> nn::Embedding {
        let key = self.key(&p);
        let config = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 },
            ..Default::default()
        };
        let embedding = nn::embedding(p, count, size, config);
        self.entries
            .push((entry_name(&key, "weight"), embedding.ws.shallow_clone()));
        embedding
    }

    /// Every tensor with its key.
    pub fn entries(&self) -> &[(String, Tensor)] {
        &self.entries
    }

    /// Copies values from a safetensors file: each key as it is or behind one of
    /// `prefixes` (e.g. `bert.`). Every tensor must be there with its shape; extra entries
    /// are ignored. The error says which key and why.
    pub fn load_safetensors(&self, path: &Path, prefixes: &[&str]) -> Result<(), WeightsMismatch> {
        let saved = crate::read_checked_safetensors(path).map_err(WeightsMismatch::File)?;
        tch::no_grad(|| {
            for (key, tensor) in &self.entries {
                let value = std::iter::once(String::new())
                    .chain(prefixes.iter().map(|p| p.to_string()))
                    .find_map(|prefix| saved.get(&format!("{prefix}{key}")))
                    .ok_or_else(|| WeightsMismatch::Missing { key: key.clone() })?;
                if value.size() != tensor.size() {
                    return Err(WeightsMismatch::Shape {
                        key: key.clone(),
                        saved: value.size(),
                        needed: tensor.size(),
                    });
                }
                let mut target = tensor.shallow_clone();
                target
                    .f_copy_(&value.to_kind(tensor.kind()).to_device(tensor.device()))
                    .map_err(|source| WeightsMismatch::Copy {
                        key: key.clone(),
                        source,
                    })?;
            }
            Ok(())
        })
    }

    /// Switches gradients of every trainable tensor on or off (batch-norm statistics are
    /// never trained): frozen, the module is a fixed feature extractor and optimisers skip it.
    pub fn set_trainable(&self, trainable: bool) {
        for (key, tensor) in &self.entries {
            if !key.ends_with(".running_mean") && !key.ends_with(".running_var") {
                let _ = tensor.set_requires_grad(trainable);
            }
        }
    }

    /// Whether the first tensor receives gradients.
    pub fn is_trainable(&self) -> bool {
        self.entries.first().is_some_and(|(_, t)| t.requires_grad())
    }
}

/// Why a weights file does not fit a set of parameters.
#[derive(Debug, thiserror::Error)]
pub enum WeightsMismatch {
    /// The file itself cannot be read or is not safetensors.
    #[error(transparent)]
    File(crate::Error),
    /// A parameter the file lacks.
    #[error("`{key}` is missing")]
    Missing {
        /// The parameter.
        key: String,
    },
    /// A parameter of another shape.
    #[error("`{key}` has shape {saved:?}, the configuration needs {needed:?}")]
    Shape {
        /// The parameter.
        key: String,
        /// Its shape in the file.
        saved: Vec<i64>,
        /// The shape the configuration builds.
        needed: Vec<i64>,
    },
    /// A value libtorch would not copy.
    #[error("`{key}`: {source}")]
    Copy {
        /// The parameter.
        key: String,
        /// Why.
        source: tch::TchError,
    },
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn weights_load_by_key_behind_a_prefix_and_a_misfit_names_the_key() -> crate::Result<()> {
        let dir = tempfile::tempdir().map_err(|source| crate::Error::Io {
            path: "tmp".into(),
            source,
        })?;
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root() / "text";
        let mut params = ParameterSet::new(&root);
        params.linear(&root / "pooler" / "dense", 2, 3);
        let keys: Vec<&str> = params.entries().iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["pooler.dense.weight", "pooler.dense.bias"]);
        assert!(vs.variables().contains_key("text.pooler.dense.weight"));
        // A module that is one layer: its own tensors are `weight` and `bias`.
        let norm_path = vs.root() / "norm";
        let mut norm = ParameterSet::new(&norm_path);
        norm.layer_norm(norm_path.clone(), 3, 1e-5);
        let keys: Vec<&str> = norm.entries().iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["weight", "bias"]);
        let weight = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([3, 2]);
        let bias = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);

        let good = dir.path().join("good.safetensors");
        Tensor::write_safetensors(
            &[("bert.pooler.dense.weight", &weight), ("bert.pooler.dense.bias", &bias)],
            &good,
        )?;
        params
            .load_safetensors(&good, &["bert."])
            .map_err(|e| crate::Error::Damaged {
                path: good.clone(),
                reason: e.to_string(),
            })?;
        let loaded = &params.entries()[0].1;
        assert_eq!(Vec::<f32>::try_from(loaded.view([-1]))?, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

        let missing = dir.path().join("missing.safetensors");
        Tensor::write_safetensors(&[("pooler.dense.weight", &weight)], &missing)?;
        assert!(matches!(
            params.load_safetensors(&missing, &[]),
            Err(WeightsMismatch::Missing { key }) if key == "pooler.dense.bias"
        ));

        let wide = dir.path().join("wide.safetensors");
        let wider = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("pooler.dense.weight", &wider), ("pooler.dense.bias", &bias)], &wide)?;
        assert!(matches!(
            params.load_safetensors(&wide, &[]),
            Err(WeightsMismatch::Shape { key, saved, needed })
                if key == "pooler.dense.weight" && saved == [3, 4] && needed == [3, 2]
        ));

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"not safetensors").map_err(|source| crate::Error::Io {
            path: garbage.clone(),
            source,
        })?;
        assert!(matches!(
            params.load_safetensors(&garbage, &[]),
            Err(WeightsMismatch::File(crate::Error::Damaged { path, .. })) if path == garbage
        ));
        Ok(())
    }
}
