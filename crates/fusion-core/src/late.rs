//! Late (decision-level) fusion: combining the class distributions of several branches.

use tch::{Kind, Tensor, nn, nn::Module};

use crate::config::{ConfidenceMeasure, LateCombiner};

/// Smallest probability taken to the log, so an impossible class stays finite.
const FLOOR: f64 = 1e-12;

/// Combines per-branch logits `[B, C]` with a presence matrix `[B, K]`.
///
/// Missing branches: every combiner renormalises over the branches a sample has (an absent
/// branch's logits have no influence at all), and a sample with none gets the uniform
/// distribution.
#[derive(Debug)]
pub struct LateFusion {
    combiner: LateCombiner,
    fixed: Option<Tensor>,
    learned: Option<Tensor>,
    stacking: Option<(nn::Linear, nn::Linear)>,
}

impl LateFusion {
    /// `branches` decisions of `classes` classes; parameters (learned weights, the
    /// stacking classifier) live under `p`.
    pub fn new(p: &nn::Path, combiner: &LateCombiner, branches: i64, classes: i64, hidden: i64) -> Self {
        let fixed = match combiner {
            LateCombiner::Fixed { weights } => {
                Some(Tensor::from_slice(weights).to_kind(Kind::Float).to_device(p.device()))
            }
            _ => None,
        };
        let learned = matches!(combiner, LateCombiner::Learned).then(|| p.zeros("branch_logit_weights", &[branches]));
        let stacking = matches!(combiner, LateCombiner::Stacking).then(|| {
            let inputs = branches * (classes + 1);
            (
                crate::linear(p / "stack_hidden", inputs, hidden),
                crate::linear(p / "stack_out", hidden, classes),
            )
        });
        Self {
            combiner: combiner.clone(),
            fixed,
            learned,
            stacking,
        }
    }

    /// Returns log-probabilities `[B, C]` and, for weighted combiners, each branch's
    /// normalised weight `[B, K]`.
    pub fn combine(&self, logits: &[Tensor], presence: &Tensor) -> (Tensor, Option<Tensor>) {
        let log_probs = Tensor::stack(logits, 1).log_softmax(-1, Kind::Float); // [B, K, C]
        let probs = log_probs.exp();
        let classes = probs.size()[2];
        let present = presence.unsqueeze(-1); // [B, K, 1]
        let weighted = |raw: Tensor| -> (Tensor, Tensor) {
            let weights = &raw * presence;
            let weights = &weights / weights.sum_dim_intlist(1, true, Kind::Float).clamp_min(FLOOR);
            let mixed = (weights.unsqueeze(-1) * &probs).sum_dim_intlist(1, false, Kind::Float);
            (mixed.clamp_min(FLOOR).log(), weights)
        };
        let renormalised_log = |scores: Tensor| -> Tensor {
            let total = scores.sum_dim_intlist(1, true, Kind::Float).clamp_min(FLOOR);
            (scores / total).clamp_min(FLOOR).log()
        };
        let (out, weights) = match &self.combiner {
            LateCombiner::Mean => {
                let (out, w) = weighted(presence.ones_like());
                (out, Some(w))
            }
            LateCombiner::Fixed { .. } | LateCombiner::Learned => {
                let (out, w) = weighted(self.raw_weights(presence));
                (out, Some(w))
            }
            LateCombiner::Confidence { measure } => {
                // Confidence is a decision rule, not a training signal: no gradient through it.
                let confidence = match measure {
                    ConfidenceMeasure::Entropy => {
                        let entropy = -(&probs * &log_probs).sum_dim_intlist(-1, false, Kind::Float);
                        1.0 - entropy / (classes as f64).ln()
                    }
                    ConfidenceMeasure::MaxProb => probs.amax(-1, false),
                };
                let (out, w) = weighted(confidence.detach() + 1e-6);
                (out, Some(w))
            }
            LateCombiner::Max => (renormalised_log((&probs * &present).amax(1, false)), None),
            LateCombiner::MajorityVote => {
                let votes = log_probs.argmax(-1, false).one_hot(classes).to_kind(Kind::Float) * &present;
                let (mean_log, _) = weighted(presence.ones_like());
                // Half a vote of mean probability breaks ties and never overturns a majority.
                let scores = votes.sum_dim_intlist(1, false, Kind::Float) + mean_log.exp() * 0.5;
                (renormalised_log(scores), None)
            }
            LateCombiner::ProductOfExperts => (
                (&log_probs * &present)
                    .sum_dim_intlist(1, false, Kind::Float)
                    .log_softmax(-1, Kind::Float),
                None,
            ),
            LateCombiner::Stacking => {
                let features = Tensor::cat(&[(&probs * &present).flatten(1, 2), presence.shallow_clone()], 1);
                let out = match &self.stacking {
                    Some((hidden, output)) => output.forward(&hidden.forward(&features).relu()),
                    None => features.zeros_like(),
                };
                (out.log_softmax(-1, Kind::Float), None)
            }
        };
        let any = presence.sum_dim_intlist(1, true, Kind::Float).gt(0.0);
        let uniform = out.full_like(-(classes as f64).ln());
        (out.where_self(&any, &uniform), weights)
    }
}

impl LateFusion {
    /// Unnormalised branch weights `[B, K]` of the mean, fixed and learned combiners.
    fn raw_weights(&self, presence: &Tensor) -> Tensor {
        let weights = match (&self.combiner, &self.fixed, &self.learned) {
            (LateCombiner::Fixed { .. }, Some(fixed), _) => fixed.unsqueeze(0),
            (LateCombiner::Learned, _, Some(learned)) => learned.exp().unsqueeze(0),
            _ => presence.ones_like(),
        };
        weights.expand_as(presence)
    }

    /// Combines per-branch numbers (`[B, 1]` each) into `[B]`: the weighted mean over the
    /// branches a sample has (mean, fixed, learned; other combiners average too), or the
    /// stacking network's output; 0 where a sample has no branch. Also returns the
    /// branches' normalised weights for the weighted combiners.
    pub fn combine_values(&self, values: &[Tensor], presence: &Tensor) -> (Tensor, Option<Tensor>) {
        let values = Tensor::cat(values, 1); // [B, K]
        let any = presence.sum_dim_intlist(1, false, Kind::Float).gt(0.0);
        let (out, weights) = match &self.stacking {
            Some((hidden, output)) => {
                let features = Tensor::cat(&[&values * presence, presence.shallow_clone()], 1);
                (output.forward(&hidden.forward(&features).relu()).squeeze_dim(-1), None)
            }
            None => {
                let weights = self.raw_weights(presence) * presence;
                let weights = &weights / weights.sum_dim_intlist(1, true, Kind::Float).clamp_min(FLOOR);
                (
                    (&weights * &values).sum_dim_intlist(1, false, Kind::Float),
                    Some(weights),
                )
            }
        };
        (out.where_self(&any, &out.zeros_like()), weights)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, nn::VarStore};

    use super::*;
    use crate::config::LateCombiner as C;

    fn all_combiners() -> Vec<LateCombiner> {
        vec![
            C::Mean,
            C::Fixed {
                weights: vec![1.0, 3.0, 2.0],
            },
            C::Confidence {
                measure: ConfidenceMeasure::Entropy,
            },
            C::Confidence {
                measure: ConfidenceMeasure::MaxProb,
            },
            C::Learned,
            C::Max,
            C::MajorityVote,
            C::ProductOfExperts,
            C::Stacking,
        ]
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap_or_default()
    }

    fn close(a: &Tensor, b: &Tensor) -> bool {
        values(a).iter().zip(values(b)).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn numbers_are_weighted_means_over_present_branches() {
        let vs = VarStore::new(Device::Cpu);
        let fixed = C::Fixed {
            weights: vec![1.0, 3.0, 2.0],
        };
        let late = LateFusion::new(&vs.root(), &fixed, 3, 1, 4);
        let column = |v: [f32; 3]| Tensor::from_slice(&v).view([3, 1]);
        let inputs = [
            column([1.0, 2.0, 5.0]),
            column([3.0, -1.0, 5.0]),
            column([2.0, 4.0, 5.0]),
        ];
        // Sample 1 lacks branch 1, sample 2 has none.
        let presence = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]).view([3, 3]);
        let (out, weights) = late.combine_values(&inputs, &presence);
        // (1·1 + 3·3 + 2·2)/6 = 14/6; (1·2 + 2·4)/3 = 10/3; nothing present → 0.
        let out = values(&out);
        for (got, want) in out.iter().zip([14.0 / 6.0, 10.0 / 3.0, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{out:?}");
        }
        assert_eq!(
            weights.map(|w| values(&w)[3..6].to_vec()),
            Some(vec![1.0 / 3.0, 0.0, 2.0 / 3.0])
        );
        // Stacking reads the present values only: a missing branch's value changes nothing.
        let stacking = LateFusion::new(&vs.root(), &C::Stacking, 3, 1, 4);
        let (a, _) = stacking.combine_values(&inputs, &presence);
        let edited = [
            inputs[0].shallow_clone(),
            column([3.0, 99.0, 5.0]),
            inputs[2].shallow_clone(),
        ];
        let (b, _) = stacking.combine_values(&edited, &presence);
        assert_eq!(a.size(), [3]);
        assert!(close(&a, &b));
    }

    #[test]
    fn mean_of_probabilities_by_hand() {
        let vs = VarStore::new(Device::Cpu);
        let late = LateFusion::new(&vs.root(), &C::Mean, 2, 2, 4);
        // softmax([0, ln 4]) = [0.2, 0.8]; softmax([ln 1.5, 0]) = [0.6, 0.4]; mean = [0.4, 0.6].
        let a = Tensor::from_slice(&[0.0f32, 4f32.ln()]).view([1, 2]);
        let b = Tensor::from_slice(&[1.5f32.ln(), 0.0]).view([1, 2]);
        let (out, weights) = late.combine(&[a, b], &Tensor::ones([1, 2], (Kind::Float, Device::Cpu)));
        let probs = values(&out.exp());
        assert!(
            (probs[0] - 0.4).abs() < 1e-6 && (probs[1] - 0.6).abs() < 1e-6,
            "{probs:?}"
        );
        assert_eq!(weights.map(|w| values(&w)), Some(vec![0.5, 0.5]));
    }

    #[test]
    fn product_of_experts_and_vote_by_hand() {
        let vs = VarStore::new(Device::Cpu);
        let ones = Tensor::ones([1, 3], (Kind::Float, Device::Cpu));
        let a = Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2]);
        let b = Tensor::from_slice(&[0.5f32, 0.0]).view([1, 2]);
        let c = Tensor::from_slice(&[0.0f32, 2.0]).view([1, 2]);
        let logits = [a.shallow_clone(), b.shallow_clone(), c.shallow_clone()];
        // Sum of log-softmaxes renormalised = softmax of the summed logits: [0.5, 3].
        let poe = LateFusion::new(&vs.root(), &C::ProductOfExperts, 3, 2, 4)
            .combine(&logits, &ones)
            .0;
        let expected = Tensor::from_slice(&[0.5f32, 3.0])
            .view([1, 2])
            .log_softmax(-1, Kind::Float);
        assert!(close(&poe, &expected));
        // Two of three branches say class 1.
        let vote = LateFusion::new(&vs.root(), &C::MajorityVote, 3, 2, 4)
            .combine(&logits, &ones)
            .0;
        assert_eq!(i64::try_from(vote.argmax(-1, false)).unwrap_or(-1), 1);
    }

    #[test]
    fn absent_branch_has_no_influence_and_none_present_is_uniform() {
        tch::manual_seed(1);
        for combiner in all_combiners() {
            let vs = VarStore::new(Device::Cpu);
            let late = LateFusion::new(&vs.root(), &combiner, 3, 4, 8);
            let logits: Vec<Tensor> = (0..3)
                .map(|_| Tensor::randn([5, 4], (Kind::Float, Device::Cpu)))
                .collect();
            let presence = Tensor::from_slice(&[1.0f32, 1.0, 0.0]).view([1, 3]).repeat([5, 1]);
            let (base, _) = late.combine(&logits, &presence);
            let mut changed: Vec<Tensor> = logits.iter().map(Tensor::shallow_clone).collect();
            changed[2] = Tensor::randn([5, 4], (Kind::Float, Device::Cpu)) * 10.0;
            let (other, _) = late.combine(&changed, &presence);
            assert!(
                close(&base, &other),
                "{combiner:?}: an absent branch changed the output"
            );
            let sums = values(&base.exp().sum_dim_intlist(-1, false, Kind::Float));
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "{combiner:?}: {sums:?}");

            let (none, _) = late.combine(&logits, &presence.zeros_like());
            let uniform = none.full_like(-(4f64).ln());
            assert!(close(&none, &uniform), "{combiner:?}: no branch must give uniform");
        }
    }

    #[test]
    fn renormalises_over_present_branches() {
        let vs = VarStore::new(Device::Cpu);
        tch::manual_seed(2);
        let logits: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn([4, 3], (Kind::Float, Device::Cpu)))
            .collect();
        let fixed = C::Fixed {
            weights: vec![1.0, 3.0, 2.0],
        };
        let three = LateFusion::new(&vs.root(), &fixed, 3, 3, 4);
        let presence = Tensor::from_slice(&[1.0f32, 1.0, 0.0]).view([1, 3]).repeat([4, 1]);
        let (with_absent, weights) = three.combine(&logits, &presence);
        // Same as two branches weighted 1:3.
        let two = LateFusion::new(
            &vs.root(),
            &C::Fixed {
                weights: vec![1.0, 3.0],
            },
            2,
            3,
            4,
        );
        let (only_two, _) = two.combine(&logits[..2], &presence.narrow(1, 0, 2));
        assert!(close(&with_absent, &only_two));
        assert_eq!(weights.map(|w| values(&w.get(0))), Some(vec![0.25, 0.75, 0.0]));
    }
}
