//! The optimiser over a model's parameter groups, and gradient checks.

use super::*;

/// Whether `tensor` received a gradient with a non-zero entry in the last backward pass.
pub fn has_gradient(tensor: &Tensor) -> bool {
    let grad = tensor.grad();
    grad.defined()
        && grad
            .f_abs()
            .and_then(|a| a.f_sum(Kind::Double))
            .ok()
            .and_then(|s| f64::try_from(s).ok())
            .is_some_and(|s| s > 0.0)
}

/// Names of the trainable variables of `vs` that received no gradient (or an all-zero one)
/// in the last backward pass, sorted: the parts of a model that would not learn.
pub fn parameters_without_gradient(vs: &VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad() && !has_gradient(v))
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// AdamW or SGD over a var store's trainable variables, with state that checkpoints hold,
/// so a resumed run continues exactly.
#[derive(Debug)]
pub struct Optimizer {
    pub(super) config: OptimizerConfig,
    pub(super) params: Vec<(String, Tensor)>,
    /// Per parameter: its learning rate as a multiple of the base rate.
    pub(super) lr_scale: Vec<f64>,
    pub(super) first: Vec<Tensor>,
    pub(super) second: Vec<Tensor>,
    pub(super) steps: i64,
}

impl Optimizer {
    /// Tracks every variable of `vs` that requires a gradient (frozen ones are left out),
    /// in name order.
    pub fn new(vs: &VarStore, config: &OptimizerConfig) -> Self {
        Self::with_groups(vs, config, &[])
    }

    /// As [`Optimizer::new`], with the learning rates of `groups`.
    pub fn with_groups(vs: &VarStore, config: &OptimizerConfig, groups: &[ParamGroup]) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let lr_scale = params
            .iter()
            .map(|(name, _)| {
                groups
                    .iter()
                    .filter(|g| name.starts_with(&g.prefix))
                    .max_by_key(|g| g.prefix.len())
                    .map_or(1.0, |g| g.lr / config.lr())
            })
            .collect();
        let zeros = |params: &[(String, Tensor)]| params.iter().map(|(_, t)| t.zeros_like()).collect::<Vec<_>>();
        Self {
            config: config.clone(),
            first: zeros(&params),
            second: zeros(&params),
            lr_scale,
            params,
            steps: 0,
        }
    }

    /// Zero that depends on every tracked parameter: added to a loss, it gives each one a
    /// gradient (zero where the loss does not reach it).
    pub(super) fn zero_term(&self) -> Tensor {
        self.params
            .iter()
            .map(|(_, p)| p.sum(p.kind()) * 0.0)
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::from(0.0f32))
    }

    /// Sums the gradients over `group` (see [`train_data_parallel`]).
    pub(super) fn all_reduce_gradients(&self, group: &dyn ProcessGroup) -> Result<()> {
        let params: Vec<Tensor> = self.params.iter().map(|(_, p)| p.shallow_clone()).collect();
        all_reduce_gradients(group, &params)
    }

    /// The defined gradients of the tracked parameters.
    pub(super) fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping as a 0-dimensional tensor on the gradients' device (nothing is read
    /// back to the host, so a GPU is never waited for).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let grads = self.grads();
        let Some(first) = grads.first() else {
            return Tensor::from(0.0f64);
        };
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Double)).collect();
        let total = Tensor::stack(&norms, 0).to_device(first.device()).norm();
        let scale = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        tch::no_grad(|| {
            for mut g in grads {
                let factor = scale.to_kind(g.kind());
                let _ = g.g_mul_(&factor);
            }
        });
        total
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * self.lr_scale[i];
                match self.config {
                    OptimizerConfig::AdamW {
                        weight_decay,
                        beta1,
                        beta2,
                        eps,
                        ..
                    } => {
                        let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                        let m = &mut self.first[i];
                        let _ = m.g_mul_scalar_(beta1).g_add_(&(&grad * (1.0 - beta1)));
                        let v = &mut self.second[i];
                        let _ = v.g_mul_scalar_(beta2).g_add_(&(grad.square() * (1.0 - beta2)));
                        let m_hat = &*m / (1.0 - beta1.powf(t));
                        let v_hat = &*v / (1.0 - beta2.powf(t));
                        let _ = p.g_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
                    }
                    OptimizerConfig::Sgd {
                        momentum, weight_decay, ..
                    } => {
                        let grad = grad + &*p * weight_decay;
                        let direction = if momentum > 0.0 {
                            let buffer = &mut self.first[i];
                            let _ = buffer.g_mul_scalar_(momentum).g_add_(&grad);
                            buffer.shallow_clone()
                        } else {
                            grad
                        };
                        let _ = p.g_sub_(&(direction * lr));
                    }
                }
            }
        });
    }

    pub(super) fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("__optimizer__.steps".to_string(), Tensor::from(self.steps))];
        for (i, (name, _)) in self.params.iter().enumerate() {
            state.push((format!("__optimizer__.first.{name}"), self.first[i].shallow_clone()));
            state.push((format!("__optimizer__.second.{name}"), self.second[i].shallow_clone()));
        }
        state
    }

    pub(super) fn load_state(&mut self, saved: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
        let get = |key: &str| {
            saved.get(key).ok_or_else(|| Error::Checkpoint {
                path: path.into(),
                reason: format!("`{key}` missing"),
            })
        };
        self.steps = i64::try_from(get("__optimizer__.steps")?)?;
        tch::no_grad(|| -> Result<()> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                self.first[i].f_copy_(get(&format!("__optimizer__.first.{name}"))?)?;
                self.second[i].f_copy_(get(&format!("__optimizer__.second.{name}"))?)?;
            }
            Ok(())
        })
    }
}
