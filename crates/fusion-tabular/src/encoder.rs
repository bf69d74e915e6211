//! Table encoders on libtorch (feature `torch`): both read the row vectors of
//! [`crate::encode_row`], `[B, width]`, and implement fusion-nn's [`Encoder`].

use fusion_nn::{Encoder, InputMismatch, ModalityInput};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::{Column, Error, Result};

/// Where a column's values lie in the row vector.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Standardised value at `offset`, missing indicator at `offset + 1`.
    Numeric { offset: i64 },
    /// Category id at `offset`, below `cardinality`.
    Categorical { offset: i64, cardinality: i64 },
}

fn slots(columns: &[Column]) -> Result<Vec<Slot>> {
    crate::check_columns(columns)?;
    let mut offset = 0;
    columns
        .iter()
        .map(|column| {
            let slot = match column {
                Column::Numeric { .. } => Slot::Numeric { offset },
                Column::Categorical { .. } => Slot::Categorical {
                    offset,
                    cardinality: column
                        .cardinality()
                        .ok_or_else(|| Error::Columns(format!("column `{}` has no fitted categories", column.name())))?
                        as i64,
                },
            };
            offset += column.width() as i64;
            Ok(slot)
        })
        .collect()
}

fn check_rows(features: &Tensor, width: i64) -> std::result::Result<(), InputMismatch> {
    let size = features.size();
    if size.len() == 2 && size[1] == width && features.is_floating_point() {
        Ok(())
    } else {
        Err(InputMismatch::new(format!("table rows [B, {width}] (float)"), features))
    }
}

/// A category id column `[B]` as int64, ids out of range read as unseen (0).
fn ids(features: &Tensor, offset: i64, cardinality: i64) -> Tensor {
    let ids = features.select(1, offset).to_kind(Kind::Int64);
    let valid = ids.ge(0).logical_and(&ids.lt(cardinality));
    ids.where_self(&valid, &ids.zeros_like())
}

/// Category embeddings beside the numeric values and their missing indicators, then
/// linear layers with ReLU and dropout: one vector per row.
#[derive(Debug)]
pub struct TabularMlp {
    slots: Vec<Slot>,
    embeddings: Vec<Option<nn::Embedding>>,
    layers: Vec<nn::Linear>,
    width: i64,
    dropout: f64,
}

impl TabularMlp {
    /// An MLP over fitted `columns` under `p`: each categorical column embedded in
    /// `embedding_dim` values, then layers of the sizes in `hidden`.
    pub fn new(p: &nn::Path, columns: &[Column], embedding_dim: i64, hidden: &[i64], dropout: f64) -> Result<Self> {
        let slots = slots(columns)?;
        if hidden.is_empty() || hidden.iter().chain([&embedding_dim]).any(|&h| h < 1) {
            return Err(Error::Columns(format!(
                "tabular MLP: sizes {hidden:?} and embedding size {embedding_dim} must be positive"
            )));
        }
        let mut input = 0;
        let embeddings = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| match *slot {
                Slot::Numeric { .. } => {
                    input += 2;
                    None
                }
                Slot::Categorical { cardinality, .. } => {
                    input += embedding_dim;
                    Some(nn::embedding(
                        p / format!("embedding_{i}"),
                        cardinality,
                        embedding_dim,
                        Default::default(),
                    ))
                }
            })
            .collect();
        let mut layers = Vec::with_capacity(hidden.len());
        for (i, &size) in hidden.iter().enumerate() {
            layers.push(fusion_nn::linear(p / format!("layer_{i}"), input, size));
            input = size;
        }
        Ok(Self {
            width: crate::row_width(columns) as i64,
            slots,
            embeddings,
            layers,
            dropout,
        })
    }
}

impl Encoder for TabularMlp {
    fn output_dim(&self) -> i64 {
        self.layers.last().map_or(0, |l| l.ws.size()[0])
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), InputMismatch> {
        check_rows(features, self.width)
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let x = &input.features;
        let parts: Vec<Tensor> = self
            .slots
            .iter()
            .zip(&self.embeddings)
            .map(|(slot, embedding)| match (*slot, embedding) {
                (Slot::Categorical { offset, cardinality }, Some(embedding)) => {
                    embedding.forward(&ids(x, offset, cardinality))
                }
                (Slot::Numeric { offset }, _) | (Slot::Categorical { offset, .. }, None) => x.narrow(1, offset, 2),
            })
            .collect();
        self.layers.iter().fold(Tensor::cat(&parts, 1), |h, layer| {
            layer.forward(&h).relu().dropout(self.dropout, train)
        })
    }
}

/// FT-Transformer's feature tokenizer (Gorishniy et al. 2021): one `dim`-wide token per
/// column, `x·w_j + b_j` for a number (a learned `m_j` added when the cell is missing)
/// and `E_j[id] + b_j` for a category, so that attention-based fusion attends over the
/// columns; `[B, columns, dim]`.
#[derive(Debug)]
pub struct FeatureTokenizer {
    slots: Vec<Slot>,
    weights: Tensor,
    biases: Tensor,
    missing: Tensor,
    embeddings: Vec<Option<nn::Embedding>>,
    width: i64,
    dim: i64,
}

impl FeatureTokenizer {
    /// Tokens of `dim` values for fitted `columns` under `p`, initialised as in the
    /// paper's code (uniform in `±1/√dim`).
    pub fn new(p: &nn::Path, columns: &[Column], dim: i64) -> Result<Self> {
        let slots = slots(columns)?;
        if dim < 1 {
            return Err(Error::Columns(format!(
                "feature tokenizer: width {dim} is not positive"
            )));
        }
        let count = slots.len() as i64;
        let bound = 1.0 / (dim as f64).sqrt();
        let uniform = nn::Init::Uniform { lo: -bound, up: bound };
        let embeddings = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| match *slot {
                Slot::Numeric { .. } => None,
                Slot::Categorical { cardinality, .. } => Some(nn::embedding(
                    p / format!("embedding_{i}"),
                    cardinality,
                    dim,
                    nn::EmbeddingConfig {
                        ws_init: uniform,
                        ..Default::default()
                    },
                )),
            })
            .collect();
        Ok(Self {
            weights: p.var("weight", &[count, dim], uniform),
            biases: p.var("bias", &[count, dim], uniform),
            missing: p.var("missing", &[count, dim], uniform),
            width: crate::row_width(columns) as i64,
            slots,
            embeddings,
            dim,
        })
    }
}

impl Encoder for FeatureTokenizer {
    fn output_dim(&self) -> i64 {
        self.dim
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), InputMismatch> {
        check_rows(features, self.width)
    }

    fn forward(&self, input: &ModalityInput, _train: bool) -> Tensor {
        let x = &input.features;
        let tokens: Vec<Tensor> = self
            .slots
            .iter()
            .zip(&self.embeddings)
            .enumerate()
            .map(|(j, (slot, embedding))| {
                let j = j as i64;
                let bias = self.biases.get(j);
                match (*slot, embedding) {
                    (Slot::Categorical { offset, cardinality }, Some(embedding)) => {
                        embedding.forward(&ids(x, offset, cardinality)) + bias
                    }
                    (Slot::Numeric { offset }, _) | (Slot::Categorical { offset, .. }, None) => {
                        let value = x.select(1, offset).unsqueeze(1);
                        let missing = x.select(1, offset + 1).unsqueeze(1);
                        value * self.weights.get(j) + missing * self.missing.get(j) + bias
                    }
                }
            })
            .collect();
        Tensor::stack(&tokens, 1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn fitted() -> Vec<Column> {
        vec![
            Column::Numeric {
                name: "x".into(),
                mean: Some(0.0),
                std: Some(1.0),
            },
            Column::Categorical {
                name: "c".into(),
                categories: Some(vec!["a".into(), "b".into()]),
            },
        ]
    }

    fn batch(rows: &[[(&str, &str); 2]]) -> Tensor {
        let columns = fitted();
        let values: Vec<f32> = rows
            .iter()
            .flat_map(|row| {
                let cells: BTreeMap<String, String> = row.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                crate::encode_row(&columns, &cells).unwrap_or_default()
            })
            .collect();
        Tensor::from_slice(&values).view([rows.len() as i64, 3])
    }

    #[test]
    fn tokens_are_the_formula_of_each_column() -> Result<()> {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let tokenizer = FeatureTokenizer::new(&vs.root(), &fitted(), 4)?;
        let x = batch(&[[("x", "2"), ("c", "b")], [("x", ""), ("c", "zzz")]]);
        tokenizer.check_input(&x).map_err(|e| Error::Columns(e.to_string()))?;
        let tokens = tokenizer.forward(&ModalityInput::dense(x), true);
        assert_eq!(tokens.size(), [2, 2, 4]);
        let (w, b, m) = (&tokenizer.weights, &tokenizer.biases, &tokenizer.missing);
        let table = tokenizer.embeddings[1].as_ref().map(|e| e.ws.shallow_clone());
        let table = table.ok_or_else(|| Error::Columns("no embedding".into()))?;
        let expected = [
            (tokens.get(0).get(0), w.get(0) * 2.0 + b.get(0)),
            (tokens.get(1).get(0), m.get(0) + b.get(0)),
            (tokens.get(0).get(1), table.get(2) + b.get(1)),
            (tokens.get(1).get(1), table.get(0) + b.get(1)),
        ];
        for (got, want) in expected {
            assert!(got.allclose(&want, 1e-6, 1e-6, false), "{got} vs {want}");
        }
        // Every parameter is reached by the gradient.
        tokens.sum(Kind::Float).backward();
        for (name, variable) in vs.variables() {
            assert!(
                f64::try_from(variable.grad().abs().sum(Kind::Float)).unwrap_or(0.0) > 0.0,
                "{name}"
            );
        }
        Ok(())
    }

    #[test]
    fn mlp_embeds_categories_and_trains_every_parameter() -> Result<()> {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mlp = TabularMlp::new(&vs.root(), &fitted(), 3, &[5, 2], 0.0)?;
        let x = batch(&[
            [("x", "1"), ("c", "a")],
            [("x", "-1"), ("c", "b")],
            [("x", ""), ("c", "")],
        ]);
        let out = mlp.forward(&ModalityInput::dense(x.shallow_clone()), true);
        assert_eq!((out.size(), mlp.output_dim()), (vec![3, 2], 2));
        out.square().sum(Kind::Float).backward();
        for (name, variable) in vs.variables() {
            assert!(
                f64::try_from(variable.grad().abs().sum(Kind::Float)).unwrap_or(0.0) > 0.0,
                "{name}"
            );
        }
        assert!(mlp.check_input(&x.narrow(1, 0, 2)).is_err());
        let unfitted = [Column::categorical("c")];
        assert!(TabularMlp::new(&vs.root(), &unfitted, 3, &[4], 0.0).is_err());
        Ok(())
    }
}
