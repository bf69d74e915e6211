use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How one modality enters the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityConfig {
    /// Name used in reports and errors (`image`, `audio`…).
    pub name: String,
    /// Size of the last dimension of this modality's input features (for the built-in
    /// encoders; an encoder given to [`crate::FusionModel::with_encoders`] checks its own input).
    pub input_dim: i64,
    /// The encoder that turns features into an embedding.
    #[serde(default, deserialize_with = "deserialize_strict")]
    pub encoder: EncoderConfig,
}

/// Built-in encoders over feature vectors, or an encoder built elsewhere. Modality crates
/// bring their own encoders (CNNs, text transformers) through the [`crate::Encoder`] trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    /// Features are used as they are.
    Identity,
    /// Linear layers with ReLU (and dropout) between them; applied per token on sequences.
    Mlp {
        /// Output size of each layer; the last is the embedding size.
        hidden: Vec<i64>,
    },
    /// An encoder built by another crate and handed to
    /// [`crate::FusionModel::with_encoders`]; `description` is that crate's own
    /// configuration of it (so a saved `model.json` says what was trained), and
    /// [`crate::FusionModel::new`] refuses it.
    Custom {
        /// The building crate's configuration of the encoder.
        description: serde_json::Value,
        /// Size of the last dimension of its output.
        output_dim: i64,
    },
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self::Mlp { hidden: vec![64] }
    }
}

/// Early (feature-level) fusion methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum EarlyMethod {
    /// Concatenated embeddings.
    Concat,
    /// Sum of per-modality projections to `hidden_dim`.
    Sum,
    /// Element-wise product of per-modality projections to `hidden_dim`.
    Product,
    /// Outer product of every `[x; 1]` (Zadeh et al. 2017).
    Tensor,
    /// Low-rank tensor fusion with `rank` modality-specific factors (Liu et al. 2018).
    LowRank {
        /// Number of rank-one terms.
        rank: i64,
    },
    /// Multiplicative interactions (Jayakumar et al. 2020): the first modality is
    /// transformed by weights generated from the others.
    Gating {
        /// Whether the generated weights are a full matrix, a vector or a scalar.
        form: GatingForm,
    },
    /// A small transformer over modality tokens; missing modalities and padding are
    /// masked out of the keys.
    Attention {
        /// Attention heads (must divide `hidden_dim`).
        heads: i64,
        /// Transformer layers.
        layers: usize,
    },
    /// Pairwise cross-modal attention (MulT, Tsai et al. 2019): for every ordered pair
    /// (target, source) of modalities, `layers` pre-norm cross-attention blocks in which the
    /// target's tokens query the source's tokens (source padding and absent sources masked
    /// out of the keys). Each block: layer norms on the query and on the key/value input,
    /// multi-head attention and a residual, then a layer norm, a feed-forward layer
    /// (`2 * hidden_dim`, ReLU) and a residual. Modalities are first projected to
    /// `hidden_dim` plus a learned modality-type embedding. Per target, its pairs' outputs
    /// are concatenated, projected to `hidden_dim` and mean-pooled over its real tokens (an
    /// absent target gives zeros); the fused features are all targets' side by side
    /// (`M * hidden_dim`). Gives no modality weights. Needs at least two modalities.
    CrossModal {
        /// Attention heads (must divide `hidden_dim`).
        heads: i64,
        /// Cross-attention blocks per pair of modalities.
        layers: usize,
    },
}

/// Form of the generated weights in [`EarlyMethod::Gating`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatingForm {
    /// `W(z) x + b(z)` with a full matrix `W(z)`.
    Matrix,
    /// `(W x) ⊙ g(z) + b(z)`: a diagonal matrix.
    Vector,
    /// `(W x) · s(z) + b(z)`: one scalar gate.
    Scalar,
}

/// Late (decision-level) combination of per-modality predictions. Every combiner
/// renormalises over the modalities a sample has; a sample with none gets the uniform
/// distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "combiner", rename_all = "snake_case", deny_unknown_fields)]
pub enum LateCombiner {
    /// Mean of probabilities.
    Mean,
    /// Weighted mean of probabilities with fixed weights (one per branch).
    Fixed {
        /// Non-negative weight per branch.
        weights: Vec<f64>,
    },
    /// Weighted mean with weights from each branch's own confidence.
    Confidence {
        /// Which confidence measure.
        measure: ConfidenceMeasure,
    },
    /// Weighted mean with trained weights (softmax over present branches).
    Learned,
    /// Class-wise maximum of probabilities, renormalised.
    Max,
    /// Majority vote of the branches' argmax (ties broken by mean probability).
    MajorityVote,
    /// Product of experts: sum of log-probabilities, renormalised.
    ProductOfExperts,
    /// A small classifier over the branches' probabilities and presence.
    Stacking,
}

/// Confidence of one branch's prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceMeasure {
    /// `1 - H(p) / log C`.
    Entropy,
    /// `max_c p_c`.
    MaxProb,
}

/// The fusion family and its method. Deserialised by hand: serde's `flatten` would
/// accept any unknown field beside `method` or `combiner`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum FusionConfig {
    /// Early (feature-level) fusion after the unimodal encoders, then one classifier.
    Early {
        /// How features are combined.
        #[serde(flatten)]
        method: EarlyMethod,
    },
    /// Late (decision-level) fusion: one classifier per modality, decisions combined.
    Late {
        /// How decisions are combined.
        #[serde(flatten)]
        combiner: LateCombiner,
    },
    /// An early-fused branch plus per-modality branches, combined at the decision level
    /// and trained jointly with per-branch losses. Branch order: modalities, then early.
    Hybrid {
        /// The early branch's method.
        early: EarlyMethod,
        /// How the branches' decisions are combined.
        combiner: LateCombiner,
    },
    /// CentralNet (Vielzeuf et al. 2018): a central branch mixing the unimodal hidden
    /// layers at every depth with learned weights; unimodal heads add their own losses.
    CentralNet {
        /// Hidden layers per branch.
        depth: usize,
    },
}

/// The wire form of [`FusionConfig`]: early and late keep the rest of the object, which
/// must then be exactly one method or combiner.
#[derive(Deserialize)]
#[serde(tag = "family", rename_all = "snake_case", deny_unknown_fields)]
enum FusionWire {
    Early(serde_json::Map<String, serde_json::Value>),
    Late(serde_json::Map<String, serde_json::Value>),
    Hybrid {
        early: serde_json::Value,
        combiner: serde_json::Value,
    },
    CentralNet {
        depth: usize,
    },
}

impl<'de> Deserialize<'de> for FusionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let within = |field: &'static str| move |e: String| D::Error::custom(format!("{field}{e}"));
        Ok(match FusionWire::deserialize(deserializer)? {
            FusionWire::Early(map) => Self::Early {
                method: strict_from_value(serde_json::Value::Object(map)).map_err(within(""))?,
            },
            FusionWire::Late(map) => Self::Late {
                combiner: strict_from_value(serde_json::Value::Object(map)).map_err(within(""))?,
            },
            FusionWire::Hybrid { early, combiner } => Self::Hybrid {
                early: strict_from_value(early).map_err(within("early: "))?,
                combiner: strict_from_value(combiner).map_err(within("combiner: "))?,
            },
            FusionWire::CentralNet { depth } => Self::CentralNet { depth },
        })
    }
}

/// Deserialises an internally tagged enum and refuses fields beside the tag of a unit
/// variant (`{"kind": "constant", "every": 3}`), which serde's `deny_unknown_fields`
/// lets through; for `#[serde(deserialize_with)]`.
pub fn deserialize_strict<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Serialize,
{
    use serde::de::Error as _;
    strict_from_value(serde_json::Value::deserialize(deserializer)?).map_err(D::Error::custom)
}

fn strict_from_value<T: serde::de::DeserializeOwned + Serialize>(
    value: serde_json::Value,
) -> std::result::Result<T, String> {
    let parsed = T::deserialize(&value).map_err(|e| e.to_string())?;
    // A unit variant writes back its tag alone: any other given field was ignored.
    if let (serde_json::Value::Object(given), Ok(serde_json::Value::Object(written))) =
        (&value, serde_json::to_value(&parsed))
        && let Some((tag, variant)) = written.iter().next().filter(|_| written.len() == 1)
        && let Some(extra) = given.keys().find(|k| !written.contains_key(*k))
    {
        return Err(format!("unknown field `{extra}`: `{tag}: {variant}` takes no settings"));
    }
    Ok(parsed)
}

/// Everything needed to rebuild a model: saved beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Modalities in input order.
    pub modalities: Vec<ModalityConfig>,
    /// Number of classes (of labels, for a multi-label task; 1 for regression).
    pub num_classes: i64,
    /// What is predicted: one class, a set of labels, or a number.
    #[serde(default)]
    pub task: Task,
    /// Common size for projections, fusion outputs and classifier hidden layers.
    #[serde(default = "default_hidden_dim")]
    pub hidden_dim: i64,
    /// Dropout in encoders and classifiers.
    #[serde(default)]
    pub dropout: f64,
    /// Fusion family and method.
    pub fusion: FusionConfig,
}

/// What a model predicts, which decides its outputs, loss and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One of `num_classes` classes (binary when there are two): softmax, cross-entropy.
    #[default]
    Classification,
    /// Any subset of `num_classes` labels: one sigmoid per label, binary cross-entropy.
    MultiLabel,
    /// One number: mean squared error on the target standardised by the training set's
    /// mean and deviation (kept with the weights), predictions in the target's units.
    Regression,
    /// Cross-modal alignment (CLIP): each modality's encoder, then a projection to
    /// `hidden_dim` L2-normalised; the symmetric InfoNCE loss over in-batch negatives for
    /// every pair of modalities a record has, with a learned temperature. No fusion and no
    /// labels: a label, where there is one, only names the record's class for zero-shot
    /// evaluation.
    Contrastive,
}

impl Task {
    /// The task's name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::MultiLabel => "multi_label",
            Self::Regression => "regression",
            Self::Contrastive => "contrastive",
        }
    }
}

fn default_hidden_dim() -> i64 {
    64
}

/// Largest fused feature count tensor fusion may produce.
pub const MAX_TENSOR_FUSION_FEATURES: i64 = 1 << 20;

impl ModelConfig {
    /// Checks values that would otherwise fail deep inside libtorch, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        if self.modalities.is_empty() {
            return bad("modalities", "at least one modality is needed".into());
        }
        for (i, m) in self.modalities.iter().enumerate() {
            if m.input_dim < 1 {
                return bad(
                    &format!("modalities[{i}].input_dim"),
                    format!("{} is not positive", m.input_dim),
                );
            }
            if let EncoderConfig::Mlp { hidden } = &m.encoder
                && (hidden.is_empty() || hidden.iter().any(|&h| h < 1))
            {
                return bad(
                    &format!("modalities[{i}].encoder.hidden"),
                    format!("{hidden:?} needs positive sizes"),
                );
            }
            if let EncoderConfig::Custom { output_dim, .. } = &m.encoder
                && *output_dim < 1
            {
                return bad(
                    &format!("modalities[{i}].encoder.output_dim"),
                    format!("{output_dim} is not positive"),
                );
            }
            if self.modalities[..i].iter().any(|o| o.name == m.name) {
                return bad(&format!("modalities[{i}].name"), format!("`{}` appears twice", m.name));
            }
        }
        match self.task {
            Task::Classification if self.num_classes < 2 => {
                return bad("num_classes", format!("{} (need at least 2)", self.num_classes));
            }
            Task::MultiLabel if self.num_classes < 1 => {
                return bad("num_classes", format!("{} (need at least 1 label)", self.num_classes));
            }
            Task::Regression if self.num_classes != 1 => {
                return bad(
                    "num_classes",
                    format!("{} (a regression predicts one number: 1)", self.num_classes),
                );
            }
            Task::Contrastive if self.modalities.len() < 2 => {
                return bad(
                    "modalities",
                    format!(
                        "a contrastive task aligns two or more modalities, {} given",
                        self.modalities.len()
                    ),
                );
            }
            Task::Contrastive if self.num_classes < 1 => {
                return bad("num_classes", format!("{} (need at least 1)", self.num_classes));
            }
            _ => {}
        }
        if self.hidden_dim < 1 {
            return bad("hidden_dim", format!("{} is not positive", self.hidden_dim));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is outside [0, 1)", self.dropout));
        }
        let branches = self.modalities.len() + usize::from(matches!(self.fusion, FusionConfig::Hybrid { .. }));
        match &self.fusion {
            FusionConfig::Early { method } => self.validate_early(method, "fusion"),
            FusionConfig::Late { combiner } => validate_combiner(combiner, branches, self.task, "fusion"),
            FusionConfig::Hybrid { early, combiner } => {
                self.validate_early(early, "fusion.early")?;
                validate_combiner(combiner, branches, self.task, "fusion.combiner")
            }
            FusionConfig::CentralNet { depth } if *depth < 1 => bad("fusion.depth", "must be at least 1".into()),
            FusionConfig::CentralNet { .. } => Ok(()),
        }
    }

    fn validate_early(&self, method: &EarlyMethod, field: &str) -> Result<()> {
        match method {
            EarlyMethod::Tensor => {
                let size = self
                    .embedding_dims()
                    .iter()
                    .try_fold(1i64, |acc, d| acc.checked_mul(d + 1));
                match size {
                    Some(n) if n <= MAX_TENSOR_FUSION_FEATURES => Ok(()),
                    _ => Err(Error::Config(format!(
                        "{field}: tensor fusion of {:?} would exceed {MAX_TENSOR_FUSION_FEATURES} features; use low_rank",
                        self.embedding_dims()
                    ))),
                }
            }
            EarlyMethod::LowRank { rank } if *rank < 1 => {
                Err(Error::Config(format!("{field}.rank: must be at least 1")))
            }
            EarlyMethod::Gating { .. } if self.modalities.len() < 2 => {
                Err(Error::Config(format!("{field}: gating needs at least two modalities")))
            }
            EarlyMethod::CrossModal { .. } if self.modalities.len() < 2 => Err(Error::Config(format!(
                "{field}: cross-modal attention needs at least two modalities"
            ))),
            EarlyMethod::Attention { heads, layers } | EarlyMethod::CrossModal { heads, layers } => {
                if *heads < 1 || self.hidden_dim % heads != 0 {
                    Err(Error::Config(format!(
                        "{field}.heads: {heads} must divide hidden_dim {}",
                        self.hidden_dim
                    )))
                } else if *layers < 1 {
                    Err(Error::Config(format!("{field}.layers: must be at least 1")))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Embedding size of each modality after its encoder.
    pub fn embedding_dims(&self) -> Vec<i64> {
        self.modalities
            .iter()
            .map(|m| match &m.encoder {
                EncoderConfig::Identity => m.input_dim,
                EncoderConfig::Mlp { hidden } => hidden.last().copied().unwrap_or(m.input_dim),
                EncoderConfig::Custom { output_dim, .. } => *output_dim,
            })
            .collect()
    }

    /// Names of the modalities, in input order.
    pub fn modality_names(&self) -> Vec<String> {
        self.modalities.iter().map(|m| m.name.clone()).collect()
    }
}

fn validate_combiner(combiner: &LateCombiner, branches: usize, task: Task, field: &str) -> Result<()> {
    // Votes, maxima, confidences and products are of probabilities; numbers only average.
    let averages = matches!(
        combiner,
        LateCombiner::Mean | LateCombiner::Fixed { .. } | LateCombiner::Learned | LateCombiner::Stacking
    );
    if task == Task::Regression && !averages {
        return Err(Error::Config(format!(
            "{field}: a regression combines numbers: mean, fixed, learned or stacking, not {combiner:?}"
        )));
    }
    if let LateCombiner::Fixed { weights } = combiner {
        if weights.len() != branches {
            return Err(Error::Config(format!(
                "{field}.weights: {} weights for {branches} branches",
                weights.len()
            )));
        }
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().all(|w| *w == 0.0) {
            return Err(Error::Config(format!(
                "{field}.weights: {weights:?} must be non-negative, not all 0"
            )));
        }
    }
    Ok(())
}

/// `message` from serde, with "did you mean `x`?" added when it names an unknown field or
/// variant that is a small edit away from one of those it lists as expected.
pub fn with_suggestion(message: &str) -> String {
    let unknown = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.split_once(p).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once('`'));
    let Some((typed, rest)) = unknown else {
        return message.to_string();
    };
    let expected = rest.split_once("expected").map_or("", |(_, e)| e);
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(typed, candidate), candidate))
        .min();
    match closest {
        // Close relative to both names: `x` is not a typo of `id`.
        Some((distance, candidate))
            if distance <= (typed.chars().count() / 3).max(2)
                && distance < typed.chars().count()
                && distance <= candidate.chars().count() / 2 =>
        {
            format!("{message} (did you mean `{candidate}`?)")
        }
        _ => message.to_string(),
    }
}

/// Levenshtein distance, counting an adjacent swap as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows: Vec<Vec<usize>> = (0..=a.len()).map(|i| vec![i; b.len() + 1]).collect();
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = rows[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(rows[i - 1][j] + 1).min(rows[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fusion(json: &str) -> std::result::Result<FusionConfig, String> {
        serde_json::from_str(json).map_err(|e| with_suggestion(&e.to_string()))
    }

    #[test]
    fn fusion_configs_read_as_before_and_round_trip() {
        let cases = [
            (
                r#"{"family": "early", "method": "concat"}"#,
                FusionConfig::Early {
                    method: EarlyMethod::Concat,
                },
            ),
            (
                r#"{"family": "early", "method": "low_rank", "rank": 4}"#,
                FusionConfig::Early {
                    method: EarlyMethod::LowRank { rank: 4 },
                },
            ),
            (
                r#"{"family": "late", "combiner": "confidence", "measure": "entropy"}"#,
                FusionConfig::Late {
                    combiner: LateCombiner::Confidence {
                        measure: ConfidenceMeasure::Entropy,
                    },
                },
            ),
            (
                r#"{"family": "hybrid", "early": {"method": "tensor"}, "combiner": {"combiner": "mean"}}"#,
                FusionConfig::Hybrid {
                    early: EarlyMethod::Tensor,
                    combiner: LateCombiner::Mean,
                },
            ),
            (
                r#"{"family": "central_net", "depth": 2}"#,
                FusionConfig::CentralNet { depth: 2 },
            ),
        ];
        for (json, expected) in cases {
            let parsed = fusion(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(parsed, expected);
            let written = serde_json::to_string(&parsed).unwrap_or_default();
            assert_eq!(fusion(&written).ok(), Some(expected), "{written}");
        }
    }

    #[test]
    fn unknown_fields_anywhere_in_a_fusion_are_refused_with_a_suggestion() {
        let cases = [
            (
                r#"{"family": "early", "method": "low_rank", "rnak": 4}"#,
                "did you mean `rank`?",
            ),
            (
                r#"{"family": "early", "method": "concat", "rank": 4}"#,
                "unknown field `rank`",
            ),
            (
                r#"{"family": "late", "combiner": "mean", "weights": [1]}"#,
                "unknown field `weights`",
            ),
            (r#"{"family": "early", "method": "cocnat"}"#, "did you mean `concat`?"),
            (r#"{"family": "erly", "method": "concat"}"#, "did you mean `early`?"),
            (
                r#"{"family": "central_net", "depth": 2, "width": 3}"#,
                "unknown field `width`",
            ),
            (
                r#"{"family": "hybrid", "early": {"method": "tensor", "x": 1}, "combiner": {"combiner": "mean"}}"#,
                "unknown field `x`",
            ),
        ];
        for (json, expected) in cases {
            let error = fusion(json).err().unwrap_or_default();
            assert!(error.contains(expected), "{json}: `{error}` lacks `{expected}`");
        }
        let config = r#"{"modalities": [{"name": "a", "input_dim": 3, "encoder": {"kind": "mlp", "hiden": [4]}}],
            "num_classes": 2, "fusion": {"family": "early", "method": "concat"}}"#;
        let error = serde_json::from_str::<ModelConfig>(config)
            .err()
            .map(|e| with_suggestion(&e.to_string()));
        assert!(error.is_some_and(|e| e.contains("did you mean `hidden`?")));
        let identity = config.replace(r#""kind": "mlp", "hiden": [4]"#, r#""kind": "identity", "hidden": [4]"#);
        let error = serde_json::from_str::<ModelConfig>(&identity)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("`kind: \"identity\"` takes no settings")));
    }

    #[test]
    fn suggestions_only_for_close_matches() {
        let far = "unknown field `zzzzzz`, expected one of `epochs`, `batch_size`";
        assert_eq!(with_suggestion(far), far);
        assert_eq!(
            with_suggestion("unknown field `modality_dropuot`, expected one of `seed`, `modality_dropout`"),
            "unknown field `modality_dropuot`, expected one of `seed`, `modality_dropout` (did you mean `modality_dropout`?)"
        );
        assert_eq!(with_suggestion("missing field `lr`"), "missing field `lr`");
        let short = "unknown field `x`, expected one of `id`, `label`";
        assert_eq!(with_suggestion(short), short, "one letter is no typo of `id`");
        assert_eq!(edit_distance("weight_decy", "weight_decay"), 1);
        assert_eq!(edit_distance("imgae", "image"), 1, "a swap is one edit");
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
