//! `FusionModel` = one encoder per modality + fusion + classifier, built from a
//! [`ModelConfig`].

use tch::{Kind, Tensor, nn, nn::Module};

use crate::{
    Encoder, Error, IdentityEncoder, MlpEncoder, ModalityInput, Result,
    config::{EarlyMethod, EncoderConfig, FusionConfig, ModelConfig, Task},
    contrastive::{LogitScale, l2_normalize},
    early::EarlyFusion,
    input::{common_batch_size, pool, presence_matrix},
    late::LateFusion,
};

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
    /// The fused prediction: class log-probabilities `[B, C]` (classification), each
    /// label's log-probabilities of off and on `[B, L, 2]` (multi-label), or the predicted
    /// number `[B]` in the target's units (regression).
    pub prediction: Tensor,
    /// Per-branch predictions that carry their own loss (late, hybrid, CentralNet).
    pub branches: Vec<BranchOutput>,
    /// How much each modality (or branch) counted `[B, K]`: late-fusion weights or
    /// cross-modal attention, where the method has them.
    pub modality_weights: Option<Tensor>,
    objective: Objective,
}

impl FusionOutput {
    /// The task's loss of the fused prediction (cross-entropy, binary cross-entropy per
    /// label, or squared error of the standardised target) plus `branch_weight` times the
    /// mean loss of each branch over the samples where it had input. `labels`: class
    /// indices `[B]`, 0/1 per label `[B, L]`, or numbers `[B]`.
    pub fn loss(&self, labels: &Tensor, branch_weight: f64) -> Tensor {
        let fused = self
            .objective
            .per_sample_loss(&self.prediction, labels)
            .mean(Kind::Float);
        if branch_weight == 0.0 {
            return fused;
        }
        match self.branch_loss(labels, None) {
            Some(branches) => fused + branches * branch_weight,
            None => fused,
        }
    }

    /// Per-sample losses `[B]` of the fused prediction times `weights`: `[B]`, one per
    /// sample, or `[B, L]`, one per label of a multi-label task (weighted before the mean
    /// over labels). Without weights, [`per_sample_loss`](Self::per_sample_loss).
    pub fn weighted_sample_losses(&self, labels: &Tensor, weights: Option<&Tensor>) -> Tensor {
        self.objective.weighted_loss(&self.prediction, labels, weights)
    }

    /// The mean over branches of each branch's weighted mean loss over the samples where
    /// it had input (`weights` as in [`weighted_sample_losses`](Self::weighted_sample_losses));
    /// `None` without branches.
    pub fn branch_loss(&self, labels: &Tensor, weights: Option<&Tensor>) -> Option<Tensor> {
        if self.branches.is_empty() {
            return None;
        }
        let mass = weights.map(sample_mass);
        let branch_losses: Vec<Tensor> = self
            .branches
            .iter()
            .map(|b| {
                let per_sample = self
                    .objective
                    .weighted_loss(&self.objective.prediction(&b.logits), labels, weights);
                let total = (per_sample * &b.present).sum(Kind::Float);
                match &mass {
                    // Nothing present: a zero loss over no weight.
                    Some(mass) => total / (&b.present * mass).sum(Kind::Float).clamp_min(1e-12),
                    None => total / b.present.sum(Kind::Float).clamp_min(1.0),
                }
            })
            .collect();
        Some(Tensor::stack(&branch_losses, 0).mean(Kind::Float))
    }

    /// The prediction as a person reads it, `[B, outputs]`: class probabilities, each
    /// label's probability, or the number (one column).
    pub fn scores(&self) -> Tensor {
        match self.objective {
            Objective::Classification => self.prediction.exp(),
            Objective::MultiLabel => self.prediction.select(-1, 1).exp(),
            Objective::Regression { .. } => self.prediction.unsqueeze(-1),
            Objective::Contrastive(_) => self.prediction.flatten(1, -1),
        }
    }

    /// A contrastive model's embeddings `[B, M, D]`: unit rows, zeros where a modality is
    /// absent; `None` for other tasks.
    pub fn embeddings(&self) -> Option<&Tensor> {
        matches!(self.objective, Objective::Contrastive(_)).then_some(&self.prediction)
    }

    /// Per-sample loss `[B]` of the fused prediction (what `loss` averages).
    pub fn per_sample_loss(&self, labels: &Tensor) -> Tensor {
        self.objective.per_sample_loss(&self.prediction, labels)
    }
}

/// How much each sample weighs `[B]`: its weight, or the mean of its labels' weights.
pub fn sample_mass(weights: &Tensor) -> Tensor {
    if weights.dim() == 2 {
        weights.mean_dim(-1, false, Kind::Float)
    } else {
        weights.to_kind(Kind::Float)
    }
}

/// How a task turns logits into predictions and predictions into a loss.
#[derive(Debug)]
enum Objective {
    Classification,
    MultiLabel,
    /// The training target's mean and standard deviation (`[1]` each).
    Regression {
        mean: Tensor,
        std: Tensor,
    },
    /// Embeddings `[B, M, D]` aligned by the symmetric InfoNCE loss at this scale.
    Contrastive(LogitScale),
}

impl Objective {
    fn prediction(&self, logits: &Tensor) -> Tensor {
        match self {
            Self::Classification => logits.log_softmax(-1, Kind::Float),
            Self::MultiLabel => label_log_probs(logits),
            Self::Regression { mean, std } => logits.squeeze_dim(-1) * std + mean,
            Self::Contrastive(_) => logits.shallow_clone(),
        }
    }

    /// [`per_sample_loss`](Self::per_sample_loss) times per-sample `[B]` or, for a
    /// multi-label task, per-label `[B, L]` weights.
    fn weighted_loss(&self, prediction: &Tensor, labels: &Tensor, weights: Option<&Tensor>) -> Tensor {
        match (self, weights) {
            (_, None) => self.per_sample_loss(prediction, labels),
            (Self::MultiLabel, Some(weights)) if weights.dim() == 2 => {
                (self.per_label_loss(prediction, labels) * weights).mean_dim(-1, false, Kind::Float)
            }
            (_, Some(weights)) => self.per_sample_loss(prediction, labels) * weights,
        }
    }

    /// Each label's binary cross-entropy `[B, L]` (multi-label predictions).
    fn per_label_loss(&self, prediction: &Tensor, labels: &Tensor) -> Tensor {
        let size = prediction.size();
        prediction
            .reshape([-1, 2])
            .nll_loss_nd::<Tensor>(
                &labels.to_kind(Kind::Int64).reshape([-1]),
                None,
                tch::Reduction::None,
                -100,
            )
            .view([size[0], size[1]])
    }

    fn per_sample_loss(&self, prediction: &Tensor, labels: &Tensor) -> Tensor {
        match self {
            Self::Classification => prediction.nll_loss_nd::<Tensor>(labels, None, tch::Reduction::None, -100),
            Self::MultiLabel => self.per_label_loss(prediction, labels).mean_dim(-1, false, Kind::Float),
            Self::Regression { std, .. } => ((prediction - labels.to_kind(Kind::Float)) / std).square(),
            // Labels play no part: each record's pair is its own other modalities.
            Self::Contrastive(scale) => crate::contrastive::pairwise_sample_losses(prediction, &scale.scale()),
        }
    }

    fn shallow_clone(&self) -> Self {
        match self {
            Self::Classification => Self::Classification,
            Self::MultiLabel => Self::MultiLabel,
            Self::Regression { mean, std } => Self::Regression {
                mean: mean.shallow_clone(),
                std: std.shallow_clone(),
            },
            Self::Contrastive(scale) => Self::Contrastive(scale.shallow_clone()),
        }
    }
}

/// Per-label logits `[B, L]` as two-class logits `(0, z)` `[B, L, 2]`: their softmax is
/// `(1 − σ(z), σ(z))`, so a label is a two-class decision.
fn label_pairs(logits: &Tensor) -> Tensor {
    Tensor::stack(&[logits.zeros_like(), logits.shallow_clone()], -1)
}

/// Per-label logits `[B, L]` as log-probabilities of off and on `[B, L, 2]`.
fn label_log_probs(logits: &Tensor) -> Tensor {
    label_pairs(logits).log_softmax(-1, Kind::Float)
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
    /// One projection per modality into the shared space (no fusion, no classifier).
    Contrastive {
        projections: Vec<nn::Linear>,
    },
}

/// Encoders (one per modality) + fusion + classifier.
#[derive(Debug)]
pub struct FusionModel {
    config: ModelConfig,
    device: tch::Device,
    names: Vec<String>,
    encoders: Vec<Box<dyn Encoder>>,
    head: Head,
    objective: Objective,
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
        // Late fusion mixes each label's two outcomes, or one number per branch.
        let late_classes = match config.task {
            Task::Classification => classes,
            Task::MultiLabel => 2,
            Task::Regression | Task::Contrastive => 1,
        };
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
            _ if config.task == Task::Contrastive => Head::Contrastive {
                projections: config
                    .modalities
                    .iter()
                    .zip(&dims)
                    .map(|(m, &d)| crate::linear(p / "projection" / &m.name, d, hidden))
                    .collect(),
            },
            FusionConfig::Early { method } => {
                let (fusion, classifier) = early(method);
                Head::Early { fusion, classifier }
            }
            FusionConfig::Late { combiner } => Head::Late {
                heads: branches(p),
                late: LateFusion::new(&(p / "late"), combiner, count, late_classes, hidden),
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
                    late: LateFusion::new(&(p / "late"), combiner, count + 1, late_classes, hidden),
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
        let objective = match config.task {
            Task::Classification => Objective::Classification,
            Task::MultiLabel => Objective::MultiLabel,
            Task::Regression => {
                let target = p / "target";
                Objective::Regression {
                    mean: target.zeros_no_train("mean", &[1]),
                    std: target.ones_no_train("std", &[1]),
                }
            }
            Task::Contrastive => Objective::Contrastive(LogitScale::new(&(p / "contrastive"))),
        };
        Ok(Self {
            config: config.clone(),
            device: p.device(),
            names: config.modality_names(),
            encoders,
            head,
            objective,
        })
    }

    /// What the model predicts.
    pub fn task(&self) -> Task {
        self.config.task
    }

    /// A contrastive model's logit scale (a scalar tensor, clamped); `None` for other tasks.
    pub fn logit_scale(&self) -> Option<Tensor> {
        match &self.objective {
            Objective::Contrastive(scale) => Some(scale.scale()),
            _ => None,
        }
    }

    /// [`FusionModel::logit_scale`], or an error naming the task for another model.
    pub fn contrastive_scale(&self) -> crate::Result<Tensor> {
        self.logit_scale().ok_or_else(|| {
            Error::Config(format!(
                "a logit scale belongs to a contrastive model, not a {} one",
                self.task().name()
            ))
        })
    }

    /// Fits a regression's target standardisation (saved with the weights) to the
    /// training targets `[N]`; other tasks have nothing to fit. A constant target keeps a
    /// deviation of 1.
    pub fn fit_target(&self, targets: &Tensor) {
        if let Objective::Regression { mean, std } = &self.objective {
            let targets = targets.to_kind(Kind::Double);
            let (m, s) = if targets.numel() == 0 {
                (0.0, 1.0)
            } else {
                let m = f64::try_from(targets.mean(Kind::Double)).unwrap_or(0.0);
                let s = f64::try_from((&targets - m).square().mean(Kind::Double).sqrt()).unwrap_or(1.0);
                (m, if s.is_finite() && s > 1e-12 { s } else { 1.0 })
            };
            tch::no_grad(|| {
                let _ = mean.shallow_clone().fill_(m);
                let _ = std.shallow_clone().fill_(s);
            });
        }
    }

    /// The regression target's fitted mean and deviation, `None` for other tasks.
    pub fn target_scale(&self) -> Option<(f64, f64)> {
        match &self.objective {
            Objective::Regression { mean, std } => {
                Some((f64::try_from(mean).unwrap_or(0.0), f64::try_from(std).unwrap_or(1.0)))
            }
            _ => None,
        }
    }

    /// Checks that `labels` suit the task: int64 class indices `[N]` below `num_classes`,
    /// 0/1 values `[N, L]`, or finite numbers `[N]`.
    pub fn check_labels(&self, labels: &Tensor) -> Result<()> {
        let size = labels.size();
        let classes = self.config.num_classes;
        let why = match self.config.task {
            Task::Classification if size.len() != 1 || labels.kind() != Kind::Int64 => Some(format!(
                "expected int64 class indices [N], got {:?} {size:?}",
                labels.kind()
            )),
            Task::Classification
                if labels.numel() > 0
                    && (labels.min().int64_value(&[]) < 0 || labels.max().int64_value(&[]) >= classes) =>
            {
                Some(format!("class indices must lie in 0..{classes}"))
            }
            Task::MultiLabel if size.len() != 2 || size[1] != classes => {
                Some(format!("expected 0/1 labels [N, {classes}], got {size:?}"))
            }
            Task::MultiLabel
                if labels.numel() > 0
                    && !bool::try_from(
                        labels
                            .to_kind(Kind::Double)
                            .eq(0.0)
                            .logical_or(&labels.to_kind(Kind::Double).eq(1.0))
                            .all(),
                    )
                    .unwrap_or(false) =>
            {
                Some("multi-label targets must be 0 or 1".into())
            }
            Task::Regression if size.len() != 1 || !labels.is_floating_point() => {
                Some(format!("expected float targets [N], got {:?} {size:?}", labels.kind()))
            }
            Task::Regression if labels.numel() > 0 && !bool::try_from(labels.isfinite().all()).unwrap_or(false) => {
                Some("regression targets must be finite".into())
            }
            Task::Contrastive if size.len() != 1 || labels.kind() != Kind::Int64 => Some(format!(
                "expected int64 class indices [N] (-1 where a record has none), got {:?} {size:?}",
                labels.kind()
            )),
            Task::Contrastive
                if labels.numel() > 0
                    && (labels.min().int64_value(&[]) < -1 || labels.max().int64_value(&[]) >= classes) =>
            {
                Some(format!("class indices must lie in -1..{classes}"))
            }
            _ => None,
        };
        match why {
            Some(why) => Err(Error::Shape(format!("{} labels: {why}", self.config.task.name()))),
            None => Ok(()),
        }
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
            encoder.check_input(&input.features).map_err(|mismatch| Error::Input {
                modality: name.clone(),
                mismatch,
            })?;
        }
        let presence = presence_matrix(inputs);
        let sequences: Vec<(Tensor, Option<Tensor>)> = inputs
            .iter()
            .zip(&self.encoders)
            .map(|(input, encoder)| {
                (
                    encoder.forward(input, train),
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
            let (prediction, modality_weights) = self.combine_decisions(late, &logits, &present);
            FusionOutput {
                prediction,
                branches,
                modality_weights,
                objective: self.objective.shallow_clone(),
            }
        };
        Ok(match &self.head {
            Head::Early { fusion, classifier } => {
                let (fused, modality_weights) = fusion.forward(&pooled, &sequences, &presence);
                FusionOutput {
                    prediction: self.objective.prediction(&classifier.forward_t(&fused, train)),
                    branches: Vec::new(),
                    modality_weights,
                    objective: self.objective.shallow_clone(),
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
            Head::CentralNet(net) => {
                let (central, branches) = net.forward(&pooled, &presence, &self.names, train);
                FusionOutput {
                    prediction: self.objective.prediction(&central),
                    branches,
                    modality_weights: None,
                    objective: self.objective.shallow_clone(),
                }
            }
            Head::Contrastive { projections } => {
                let embedded: Vec<Tensor> = projections
                    .iter()
                    .zip(&pooled)
                    .enumerate()
                    .map(|(m, (projection, x))| {
                        // An absent modality's embedding is zeros: it pairs with nothing.
                        l2_normalize(&projection.forward(x)) * presence.select(1, m as i64).unsqueeze(-1)
                    })
                    .collect();
                FusionOutput {
                    prediction: Tensor::stack(&embedded, 1),
                    branches: Vec::new(),
                    modality_weights: None,
                    objective: self.objective.shallow_clone(),
                }
            }
        })
    }

    /// Late fusion of branch logits for the task: class distributions; each label's
    /// two-outcome distribution (labels folded into the batch); or numbers averaged in the
    /// standardised target's units.
    fn combine_decisions(&self, late: &LateFusion, logits: &[Tensor], present: &Tensor) -> (Tensor, Option<Tensor>) {
        match &self.objective {
            Objective::Classification => late.combine(logits, present),
            Objective::MultiLabel => {
                let (batch, labels) = (present.size()[0], self.config.num_classes);
                let branches = present.size()[1];
                let pairs: Vec<Tensor> = logits.iter().map(|z| label_pairs(z).view([-1, 2])).collect();
                let per_label = present
                    .unsqueeze(1)
                    .expand([batch, labels, branches], false)
                    .reshape([-1, branches]);
                let (out, weights) = late.combine(&pairs, &per_label);
                (
                    out.view([batch, labels, 2]),
                    weights.map(|w| w.view([batch, labels, branches]).mean_dim(1, false, Kind::Float)),
                )
            }
            Objective::Regression { mean, std } => {
                let (value, weights) = late.combine_values(logits, present);
                (value * std + mean, weights)
            }
            // A contrastive model has no late fusion (its head is its projections).
            Objective::Contrastive(_) => late.combine_values(logits, present),
        }
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

    /// The central head's logits and each branch's output.
    fn forward(
        &self,
        pooled: &[Tensor],
        presence: &Tensor,
        names: &[String],
        train: bool,
    ) -> (Tensor, Vec<BranchOutput>) {
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
        (self.central_head.forward(&central.unwrap_or_default()), branches)
    }
}
