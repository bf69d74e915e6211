//! The optimiser over a model's parameter groups.

use super::*;

// The C++ shim (csrc/shim.cpp): libtorch's fused AdamW, which tch does not wrap.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn fusion_fused_adamw(
        params: *const *const std::ffi::c_void,
        grads: *const *const std::ffi::c_void,
        exp_avgs: *const *const std::ffi::c_void,
        exp_avg_sqs: *const *const std::ffi::c_void,
        steps: *const *const std::ffi::c_void,
        count: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> std::ffi::c_int;
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

    /// Sums the gradients over `group` (see [`Learner`](crate::Learner)).
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
        let fused = match self.config {
            OptimizerConfig::AdamW { .. } => self.fused_adamw_step(lr),
            OptimizerConfig::Sgd { .. } => Vec::new(),
        };
        self.step_each(lr, &fused);
    }

    /// AdamW through libtorch's fused kernel, one call per learning rate of the parameter
    /// groups; the parameters it updated (the others — none where the kernel refuses their
    /// device or type — are stepped one by one).
    fn fused_adamw_step(&mut self, lr: f64) -> Vec<bool> {
        let OptimizerConfig::AdamW {
            weight_decay,
            beta1,
            beta2,
            eps,
            ..
        } = self.config
        else {
            return Vec::new();
        };
        let mut done = vec![false; self.params.len()];
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        let mut scales: Vec<f64> = self.lr_scale.clone();
        scales.sort_by(f64::total_cmp);
        scales.dedup();
        for scale in scales {
            let members: Vec<usize> = (0..self.params.len())
                .filter(|&i| self.lr_scale[i] == scale && grads[i].defined())
                .filter(|&i| grads[i].kind() == self.params[i].1.kind() && !grads[i].is_sparse())
                .collect();
            let Some(&first) = members.first() else { continue };
            // The kernel reads the step count from a tensor beside each parameter.
            let step = Tensor::from(self.steps as f32).to_device(self.params[first].1.device());
            let steps: Vec<Tensor> = members.iter().map(|_| step.shallow_clone()).collect();
            let pointers = |tensors: Vec<&Tensor>| -> Vec<*const std::ffi::c_void> {
                tensors.into_iter().map(|t| t.as_ptr().cast()).collect()
            };
            let params = pointers(members.iter().map(|&i| &self.params[i].1).collect());
            let gradients = pointers(members.iter().map(|&i| &grads[i]).collect());
            let first_moments = pointers(members.iter().map(|&i| &self.first[i]).collect());
            let second_moments = pointers(members.iter().map(|&i| &self.second[i]).collect());
            let step_counts = pointers(steps.iter().collect());
            // SAFETY: each pointer is a live tch tensor (an `at::Tensor*`) held above for the
            // whole call; the kernel updates the parameters and moments in place, with no
            // gradient recorded.
            #[allow(unsafe_code)]
            let status = tch::no_grad(|| unsafe {
                fusion_fused_adamw(
                    params.as_ptr(),
                    gradients.as_ptr(),
                    first_moments.as_ptr(),
                    second_moments.as_ptr(),
                    step_counts.as_ptr(),
                    members.len() as i64,
                    lr * scale,
                    beta1,
                    beta2,
                    weight_decay,
                    eps,
                )
            });
            if status == 0 {
                for i in members {
                    done[i] = true;
                }
            }
        }
        done
    }

    /// The update written out parameter by parameter, for those `fused` did not update.
    fn step_each(&mut self, lr: f64, fused: &[bool]) {
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let grad = p.grad();
                if !grad.defined() || fused.get(i).copied().unwrap_or(false) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two parameters at the base rate, one in a group at a tenth of it, one without a
    /// gradient, and the same gradients in both stores.
    fn store(seed: i64) -> VarStore {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        for (path, name, shape) in [
            (&root / "a", "w", vec![5, 3]),
            (&root / "a", "b", vec![3]),
            (&root / "slow", "w", vec![4, 4]),
            (root.clone(), "idle", vec![2]),
        ] {
            let _ = path.randn(name, &shape, 0.0, 1.0);
        }
        vs
    }

    fn backward(vs: &VarStore, step: i64) {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let loss = variables
            .iter()
            .filter(|(name, _)| name != "idle")
            .map(|(_, v)| (v * (step as f64 + 1.0)).sin().sum(Kind::Float) + v.square().sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::from(0.0f32));
        loss.backward();
    }

    #[test]
    fn the_fused_adamw_step_equals_the_step_written_out() {
        let config = OptimizerConfig::AdamW {
            lr: 0.05,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
        };
        let groups = [ParamGroup {
            prefix: "slow".into(),
            lr: 0.005,
        }];
        let (fused_vs, plain_vs) = (store(7), store(7));
        let mut fused = Optimizer::with_groups(&fused_vs, &config, &groups);
        let mut plain = Optimizer::with_groups(&plain_vs, &config, &groups);
        for step in 0..4 {
            for (vs, optimizer) in [(&fused_vs, &mut fused), (&plain_vs, &mut plain)] {
                optimizer.zero_grad();
                backward(vs, step);
            }
            // What `step` does, the fused part checked.
            fused.steps += 1;
            let done = fused.fused_adamw_step(0.05);
            assert_eq!(done, [true, true, false, true], "a.b, a.w, idle, slow.w");
            fused.step_each(0.05, &done);
            plain.steps += 1;
            plain.step_each(0.05, &[]);
        }
        let values = |vs: &VarStore| {
            let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
        };
        for ((name, a), (_, b)) in values(&fused_vs).iter().zip(values(&plain_vs)) {
            let gap = f64::try_from((a - &b).abs().max()).unwrap_or(f64::NAN);
            assert!(gap < 1e-6, "{name}: {gap}");
        }
        for (a, b) in fused.second.iter().zip(&plain.second) {
            assert!(a.allclose(b, 1e-6, 1e-9, false));
        }
        // Four steps moved the parameters (the comparison is not of untouched values).
        let moved = values(&fused_vs)
            .iter()
            .zip(values(&store(7)))
            .filter(|((_, a), (_, b))| !a.allclose(b, 1e-4, 1e-4, false))
            .count();
        assert_eq!(moved, 3, "every parameter with a gradient moved, `idle` did not");
    }
}
