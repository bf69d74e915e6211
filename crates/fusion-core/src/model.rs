//! `FusionModel` = one encoder per modality + fusion + classifier, built from a
//! [`ModelConfig`].

use tch::{Kind, Tensor, nn, nn::Module};

use crate::{
    Error, Result,
    config::{EarlyMethod, EncoderConfig, FusionConfig, ModelConfig},
    early::EarlyFusion,
    input::{ModalityInput, common_batch_size, pool, presence_matrix},
    late::LateFusion,
};

/// Turns one modality's input into an embedding `[B, D]` or a sequence `[B, T, D]`.
/// Modality crates implement it for their encoders (CNNs, text transformers); the input
/// may be anything batch-first (token ids, images, spectrograms).
pub trait Encoder: std::fmt::Debug {
    /// Size of the last dimension of the output.
    fn output_dim(&self) -> i64;
    /// Checks a batch's features before encoding; the error says what was expected.
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), String>;
    /// Encodes `input` (its padding mask, when there is one, marks real tokens); `train`
    /// enables dropout and other training-only behaviour. A sequence output keeps the
    /// input's token positions, so the input's padding mask still applies to it.
    fn encode(&self, input: &ModalityInput, train: bool) -> Tensor;
}

/// Accepts float features `[B, input_dim]` or `[B, T, input_dim]`.
fn check_feature_vectors(features: &Tensor, input_dim: i64) -> std::result::Result<(), String> {
    let size = features.size();
    if (2..=3).contains(&size.len()) && size.last() == Some(&input_dim) && features.is_floating_point() {
        Ok(())
    } else {
        Err(format!(
            "expected float [B, {input_dim}] or [B, T, {input_dim}] features, got {:?} {size:?}",
            features.kind()
        ))
    }
}

/// Passes features through unchanged.
#[derive(Debug)]
pub struct IdentityEncoder {
    dim: i64,
}

impl IdentityEncoder {
    /// Features of `dim` values.
    pub fn new(dim: i64) -> Self {
        Self { dim }
    }
}

impl Encoder for IdentityEncoder {
    fn output_dim(&self) -> i64 {
        self.dim
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), String> {
        check_feature_vectors(features, self.dim)
    }

    fn encode(&self, input: &ModalityInput, _train: bool) -> Tensor {
        input.features.shallow_clone()
    }
}

/// Linear layers with ReLU and dropout between them, applied to the last dimension.
#[derive(Debug)]
pub struct MlpEncoder {
    layers: Vec<nn::Linear>,
    input_dim: i64,
    dropout: f64,
}

impl MlpEncoder {
    /// Layers `input_dim → hidden[0] → … → hidden[n-1]` under `p`.
    pub fn new(p: &nn::Path, input_dim: i64, hidden: &[i64], dropout: f64) -> Self {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut previous = input_dim;
        for (i, &size) in hidden.iter().enumerate() {
            layers.push(crate::linear(p / format!("layer_{i}"), previous, size));
            previous = size;
        }
        Self {
            layers,
            input_dim,
            dropout,
        }
    }
}

impl Encoder for MlpEncoder {
    fn output_dim(&self) -> i64 {
        self.layers.last().map_or(0, |l| l.ws.size()[0])
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), String> {
        check_feature_vectors(features, self.input_dim)
    }

    fn encode(&self, input: &ModalityInput, train: bool) -> Tensor {
        let start = input.features.shallow_clone();
        self.layers
            .iter()
            .fold(start, |x, layer| layer.forward(&x).relu().dropout(self.dropout, train))
    }
}

/// Hidden layer, ReLU, dropout, output layer.
#[derive(Debug)]
struct Classifier {
    hidden: nn::Linear,
    out: nn::Linear,
    dropout: f64,
}

impl Classifier {
    fn new(p: &nn::Path, input: i64, hidden: i64, classes: i64, dropout: f64) -> Self {
        Self {
            hidden: crate::linear(p / "hidden", input, hidden),
            out: crate::linear(p / "out", hidden, classes),
            dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.out
            .forward(&self.hidden.forward(x).relu().dropout(self.dropout, train))
    }
}

/// One branch's own prediction (a modality's head, the early branch of a hybrid).
#[derive(Debug)]
pub struct BranchOutput {
    /// Branch name: a modality name, or `early`.
    pub name: String,
    /// Logits `[B, C]`.
    pub logits: Tensor,
    /// `[B]` floats, 1 where the branch had input.
    pub present: Tensor,
}

/// What a forward pass produces.
#[derive(Debug)]
pub struct FusionOutput {
    /// Log-probabilities of the fused prediction `[B, C]`.
    pub log_probs: Tensor,
    /// Per-branch predictions that carry their own loss (late, hybrid, CentralNet).
    pub branches: Vec<BranchOutput>,
    /// How much each modality (or branch) counted `[B, K]`: late-fusion weights or
    /// cross-modal attention, where the method has them.
    pub modality_weights: Option<Tensor>,
}

impl FusionOutput {
    /// Negative log-likelihood of the fused prediction plus `branch_weight` times the mean
    /// cross-entropy of each branch over the samples where it had input.
    pub fn loss(&self, labels: &Tensor, branch_weight: f64) -> Tensor {
        let fused = self.log_probs.nll_loss(labels);
        if self.branches.is_empty() || branch_weight == 0.0 {
            return fused;
        }
        let branch_losses: Vec<Tensor> = self
            .branches
            .iter()
            .map(|b| {
                let per_sample = b.logits.log_softmax(-1, Kind::Float).nll_loss_nd::<Tensor>(
                    labels,
                    None,
                    tch::Reduction::None,
                    -100,
                );
                (per_sample * &b.present).sum(Kind::Float) / b.present.sum(Kind::Float).clamp_min(1.0)
            })
            .collect();
        fused + Tensor::stack(&branch_losses, 0).mean(Kind::Float) * branch_weight
    }
}

#[derive(Debug)]
enum Head {
    Early {
        fusion: EarlyFusion,
        classifier: Classifier,
    },
    Late {
        heads: Vec<Classifier>,
        late: LateFusion,
    },
    Hybrid {
        fusion: EarlyFusion,
        classifier: Classifier,
        heads: Vec<Classifier>,
        late: LateFusion,
    },
    CentralNet(CentralNet),
}

/// Encoders (one per modality) + fusion + classifier.
#[derive(Debug)]
pub struct FusionModel {
    config: ModelConfig,
    device: tch::Device,
    names: Vec<String>,
    encoders: Vec<Box<dyn Encoder>>,
    head: Head,
}

impl FusionModel {
    /// Builds the model of `config` with its built-in encoders; parameters live under `p`
    /// (`encoder.<modality>`, `fusion`, `classifier`, `heads.<modality>`).
    pub fn new(p: &nn::Path, config: &ModelConfig) -> Result<Self> {
        config.validate()?;
        let encoders = config
            .modalities
            .iter()
            .enumerate()
            .map(|(i, m)| -> Result<Box<dyn Encoder>> {
                Ok(match &m.encoder {
                    EncoderConfig::Identity => Box::new(IdentityEncoder::new(m.input_dim)),
                    EncoderConfig::Mlp { hidden } => Box::new(MlpEncoder::new(
                        &(p / "encoder" / &m.name),
                        m.input_dim,
                        hidden,
                        config.dropout,
                    )),
                    EncoderConfig::Custom { .. } => {
                        return Err(Error::Config(format!(
                            "modalities[{i}].encoder: a `custom` encoder is built by the crate that describes it \
                             (fusion-run loads such runs), then given to FusionModel::with_encoders"
                        )));
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::with_encoders(p, config, encoders)
    }

    /// Builds the model with encoders supplied by the caller (e.g. a CNN from
    /// fusion-image); a `custom` encoder in `config` must agree with its output size, the
    /// built-in kinds there are not checked.
    pub fn with_encoders(p: &nn::Path, config: &ModelConfig, encoders: Vec<Box<dyn Encoder>>) -> Result<Self> {
        config.validate()?;
        if encoders.len() != config.modalities.len() {
            return Err(Error::Config(format!(
                "modalities: {} encoders for {} modalities",
                encoders.len(),
                config.modalities.len()
            )));
        }
        let dims: Vec<i64> = encoders.iter().map(|e| e.output_dim()).collect();
        for (i, (m, &dim)) in config.modalities.iter().zip(&dims).enumerate() {
            if let EncoderConfig::Custom { output_dim, .. } = &m.encoder
                && *output_dim != dim
            {
                return Err(Error::Config(format!(
                    "modalities[{i}].encoder.output_dim: {output_dim}, but the encoder given yields {dim}"
                )));
            }
        }
        let (hidden, classes, dropout) = (config.hidden_dim, config.num_classes, config.dropout);
        let branches = |p: &nn::Path| -> Vec<Classifier> {
            config
                .modalities
                .iter()
                .zip(&dims)
                .map(|(m, &d)| Classifier::new(&(p / "heads" / &m.name), d, hidden, classes, dropout))
                .collect()
        };
        let early = |method: &EarlyMethod| -> (EarlyFusion, Classifier) {
            let fusion = EarlyFusion::new(&(p / "fusion"), method, &dims, hidden);
            let classifier = Classifier::new(&(p / "classifier"), fusion.out_dim(), hidden, classes, dropout);
            (fusion, classifier)
        };
        let count = dims.len() as i64;
        let head = match &config.fusion {
            FusionConfig::Early { method } => {
                let (fusion, classifier) = early(method);
                Head::Early { fusion, classifier }
            }
            FusionConfig::Late { combiner } => Head::Late {
                heads: branches(p),
                late: LateFusion::new(&(p / "late"), combiner, count, classes, hidden),
            },
            FusionConfig::Hybrid {
                early: method,
                combiner,
            } => {
                let (fusion, classifier) = early(method);
                Head::Hybrid {
                    fusion,
                    classifier,
                    heads: branches(p),
                    late: LateFusion::new(&(p / "late"), combiner, count + 1, classes, hidden),
                }
            }
            FusionConfig::CentralNet { depth } => Head::CentralNet(CentralNet::new(
                &(p / "centralnet"),
                &dims,
                hidden,
                classes,
                *depth,
                dropout,
            )),
        };
        Ok(Self {
            config: config.clone(),
            device: p.device(),
            names: config.modality_names(),
            encoders,
            head,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Where the model's parameters live.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// Modality names in input order.
    pub fn modality_names(&self) -> &[String] {
        &self.names
    }

    /// Runs the model on one batch; `inputs[m]` is modality `m` of the config.
    pub fn forward_t(&self, inputs: &[ModalityInput], train: bool) -> Result<FusionOutput> {
        if inputs.len() != self.names.len() {
            return Err(Error::Shape(format!(
                "{} modality inputs for a model of {} modalities ({})",
                inputs.len(),
                self.names.len(),
                self.names.join(", ")
            )));
        }
        common_batch_size(inputs, &self.names)?;
        for ((input, encoder), name) in inputs.iter().zip(&self.encoders).zip(&self.names) {
            encoder
                .check_input(&input.features)
                .map_err(|why| Error::Shape(format!("modality `{name}`: {why}")))?;
        }
        let presence = presence_matrix(inputs);
        let sequences: Vec<(Tensor, Option<Tensor>)> = inputs
            .iter()
            .zip(&self.encoders)
            .map(|(input, encoder)| {
                (
                    encoder.encode(input, train),
                    input.padding_mask.as_ref().map(Tensor::shallow_clone),
                )
            })
            .collect();
        let pooled: Vec<Tensor> = sequences.iter().map(|(x, mask)| pool(x, mask.as_ref())).collect();
        let branch = |heads: &[Classifier], extra: Option<(&str, Tensor, Tensor)>| -> Vec<BranchOutput> {
            let mut out: Vec<BranchOutput> = heads
                .iter()
                .zip(&pooled)
                .zip(&self.names)
                .enumerate()
                .map(|(m, ((head, x), name))| BranchOutput {
                    name: name.clone(),
                    logits: head.forward_t(x, train),
                    present: presence.select(1, m as i64),
                })
                .collect();
            if let Some((name, logits, present)) = extra {
                out.push(BranchOutput {
                    name: name.to_string(),
                    logits,
                    present,
                });
            }
            out
        };
        let combine = |late: &LateFusion, branches: Vec<BranchOutput>| -> FusionOutput {
            let logits: Vec<Tensor> = branches.iter().map(|b| b.logits.shallow_clone()).collect();
            let present = Tensor::stack(
                &branches.iter().map(|b| b.present.shallow_clone()).collect::<Vec<_>>(),
                1,
            );
            let (log_probs, modality_weights) = late.combine(&logits, &present);
            FusionOutput {
                log_probs,
                branches,
                modality_weights,
            }
        };
        Ok(match &self.head {
            Head::Early { fusion, classifier } => {
                let (fused, modality_weights) = fusion.forward(&pooled, &sequences, &presence);
                let log_probs = classifier.forward_t(&fused, train).log_softmax(-1, Kind::Float);
                FusionOutput {
                    log_probs,
                    branches: Vec::new(),
                    modality_weights,
                }
            }
            Head::Late { heads, late } => combine(late, branch(heads, None)),
            Head::Hybrid {
                fusion,
                classifier,
                heads,
                late,
            } => {
                let (fused, _) = fusion.forward(&pooled, &sequences, &presence);
                let any = presence.amax(1, false);
                combine(
                    late,
                    branch(heads, Some(("early", classifier.forward_t(&fused, train), any))),
                )
            }
            Head::CentralNet(net) => net.forward(&pooled, &presence, &self.names, train),
        })
    }
}

/// CentralNet (Vielzeuf et al. 2018): unimodal MLP branches and a central branch that at
/// every depth takes a learned weighted sum of its own state and the unimodal hidden
/// states. Missing modalities contribute zeros to the central sums.
#[derive(Debug)]
struct CentralNet {
    branch_layers: Vec<Vec<nn::Linear>>,
    central_layers: Vec<nn::Linear>,
    modality_alpha: Tensor,
    central_alpha: Option<Tensor>,
    heads: Vec<nn::Linear>,
    central_head: nn::Linear,
    dropout: f64,
}

impl CentralNet {
    fn new(p: &nn::Path, dims: &[i64], hidden: i64, classes: i64, depth: usize, dropout: f64) -> Self {
        let branch_layers = dims
            .iter()
            .enumerate()
            .map(|(m, &d)| {
                (0..depth)
                    .map(|l| {
                        let input = if l == 0 { d } else { hidden };
                        crate::linear(p / format!("branch_{m}") / format!("layer_{l}"), input, hidden)
                    })
                    .collect()
            })
            .collect();
        let central_layers = (0..depth)
            .map(|l| crate::linear(p / "central" / format!("layer_{l}"), hidden, hidden))
            .collect();
        Self {
            branch_layers,
            central_layers,
            modality_alpha: p.ones("modality_alpha", &[depth as i64, dims.len() as i64]),
            central_alpha: (depth > 1).then(|| p.ones("central_alpha", &[depth as i64 - 1])),
            heads: (0..dims.len())
                .map(|m| crate::linear(p / format!("head_{m}"), hidden, classes))
                .collect(),
            central_head: crate::linear(p / "central_head", hidden, classes),
            dropout,
        }
    }

    fn forward(&self, pooled: &[Tensor], presence: &Tensor, names: &[String], train: bool) -> FusionOutput {
        let mut states: Vec<Tensor> = pooled.iter().map(Tensor::shallow_clone).collect();
        let mut central: Option<Tensor> = None;
        for (l, central_layer) in self.central_layers.iter().enumerate() {
            let mut mix: Option<Tensor> = None;
            for (m, state) in states.iter_mut().enumerate() {
                let here = presence.select(1, m as i64).unsqueeze(1);
                *state = self.branch_layers[m][l]
                    .forward(state)
                    .relu()
                    .dropout(self.dropout, train)
                    * &here;
                let term = &*state * self.modality_alpha.get(l as i64).get(m as i64);
                mix = Some(match mix {
                    Some(total) => total + term,
                    None => term,
                });
            }
            let mut mix = mix.unwrap_or_default();
            if let (Some(previous), Some(alpha)) = (&central, &self.central_alpha) {
                mix = mix.g_add(&(previous * alpha.get(l as i64 - 1)));
            }
            central = Some(central_layer.forward(&mix).relu().dropout(self.dropout, train));
        }
        let branches = states
            .iter()
            .zip(&self.heads)
            .zip(names)
            .enumerate()
            .map(|(m, ((state, head), name))| BranchOutput {
                name: name.clone(),
                logits: head.forward(state),
                present: presence.select(1, m as i64),
            })
            .collect();
        let log_probs = self
            .central_head
            .forward(&central.unwrap_or_default())
            .log_softmax(-1, Kind::Float);
        FusionOutput {
            log_probs,
            branches,
            modality_weights: None,
        }
    }
}

/// A linear layer initialised as PyTorch's `nn.Linear`: weights and bias uniform in
/// `±1/√in` (tch's default is He initialisation, √6 times wider, which trained the same
/// models measurably worse than their PyTorch peers).
pub fn linear(p: nn::Path<'_>, input: i64, output: i64) -> nn::Linear {
    let bound = 1.0 / (input.max(1) as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform { lo: -bound, up: bound },
        bs_init: Some(nn::Init::Uniform { lo: -bound, up: bound }),
        bias: true,
    };
    nn::linear(p, input, output, config)
}
