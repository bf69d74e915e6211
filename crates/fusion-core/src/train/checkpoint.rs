//! A checkpoint's trainer state: how far training got, its best epoch, the float16 loss
//! scale and group DRO's weights, as typed values, stored as scalar entries beside the
//! weights and the optimiser state.

use super::*;

const EPOCH_KEY: &str = "__trainer__.epoch";
const BEST_EPOCH_KEY: &str = "__trainer__.best_epoch";
const BEST_SCORE_KEY: &str = "__trainer__.best_score";
/// Keys of a float16 run's loss scale.
const SCALE_KEY: &str = "__scaler__.scale";
const GOOD_STEPS_KEY: &str = "__scaler__.good_steps";
/// Group DRO's group weights.
pub(super) const GROUP_WEIGHTS_KEY: &str = "__trainer__.group_weights";
/// Key prefix of the best weights inside a checkpoint.
pub(super) const BEST_PREFIX: &str = "__best__.";

/// The trainer's progress saved in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TrainerState {
    /// Epochs finished (≥ 1).
    pub epoch: usize,
    /// The best epoch so far (`1..=epoch`) and its score; `None` before one is kept.
    pub best: Option<(usize, f64)>,
    /// A float16 run's loss scale and its count of good steps since the last change.
    pub loss_scale: Option<(f64, u32)>,
    /// Group DRO's weight per group.
    pub group_weights: Option<Vec<f64>>,
}

impl TrainerState {
    /// The entries a checkpoint stores.
    pub fn entries(&self) -> Vec<(String, Tensor)> {
        let (best_epoch, best_score) = self.best.unwrap_or((0, 0.0));
        let mut named = vec![
            (EPOCH_KEY.to_string(), Tensor::from(self.epoch as i64)),
            (BEST_EPOCH_KEY.to_string(), Tensor::from(best_epoch as i64)),
            (BEST_SCORE_KEY.to_string(), Tensor::from(best_score)),
        ];
        if let Some((scale, good_steps)) = self.loss_scale {
            named.push((SCALE_KEY.into(), Tensor::from(scale)));
            named.push((GOOD_STEPS_KEY.into(), Tensor::from(i64::from(good_steps))));
        }
        if let Some(weights) = &self.group_weights {
            named.push((GROUP_WEIGHTS_KEY.into(), Tensor::from_slice(weights)));
        }
        named
    }

    /// The state in `saved`, the entries of the checkpoint at `path`: a missing entry or an
    /// impossible epoch (none finished, a best epoch after it) is an [`Error::Checkpoint`]
    /// naming the file.
    pub fn read(saved: &HashMap<String, Tensor>, path: &Path) -> Result<Self> {
        let damaged = |reason: String| Error::Checkpoint {
            path: path.into(),
            reason,
        };
        let scalar = |key: &str| -> Result<f64> {
            let value = saved.get(key).ok_or_else(|| damaged(format!("`{key}` missing")))?;
            Ok(f64::try_from(value)?)
        };
        let (epoch, best_epoch) = (scalar(EPOCH_KEY)?, scalar(BEST_EPOCH_KEY)?);
        if !(epoch >= 1.0 && epoch.fract() == 0.0 && (0.0..=epoch).contains(&best_epoch) && best_epoch.fract() == 0.0) {
            return Err(damaged(format!(
                "impossible trainer state: epoch {epoch}, best epoch {best_epoch}"
            )));
        }
        let best = match best_epoch as usize {
            0 => None,
            best_epoch => Some((best_epoch, scalar(BEST_SCORE_KEY)?)),
        };
        let loss_scale = match (saved.get(SCALE_KEY), saved.get(GOOD_STEPS_KEY)) {
            (Some(scale), Some(good)) => {
                Some((f64::try_from(scale)?, u32::try_from(i64::try_from(good)?).unwrap_or(0)))
            }
            _ => None,
        };
        // Checked against the run's groups by the trainer, which knows how many there are.
        let group_weights = saved
            .get(GROUP_WEIGHTS_KEY)
            .map(|weights| Vec::<f64>::try_from(weights.to_kind(Kind::Double)))
            .transpose()?;
        Ok(Self {
            epoch: epoch as usize,
            best,
            loss_scale,
            group_weights,
        })
    }
}

/// Writes the last checkpoint: every variable, the optimiser's state, the best weights so
/// far (behind [`BEST_PREFIX`]) and the trainer's `state`.
pub(super) fn save_checkpoint(
    vs: &VarStore,
    optimizer: &Optimizer,
    state: &TrainerState,
    best_weights: Option<&[(String, Tensor)]>,
    run: &RunFolder,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.extend(optimizer.state());
    for (name, tensor) in best_weights.into_iter().flatten() {
        named.push((format!("{BEST_PREFIX}{name}"), tensor.shallow_clone()));
    }
    named.extend(state.entries());
    write_checked_safetensors(&named, &run.last_checkpoint())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(named: Vec<(String, Tensor)>) -> Result<TrainerState> {
        TrainerState::read(&named.into_iter().collect(), Path::new("last.safetensors"))
    }

    #[test]
    fn the_trainer_state_reads_back_as_written_and_an_impossible_one_names_the_file() -> Result<()> {
        let full = TrainerState {
            epoch: 7,
            best: Some((5, 0.875)),
            loss_scale: Some((1024.0, 3)),
            group_weights: Some(vec![0.25, 0.75]),
        };
        assert_eq!(read(full.entries())?, full);
        let plain = TrainerState {
            epoch: 2,
            best: None,
            loss_scale: None,
            group_weights: None,
        };
        assert_eq!(read(plain.entries())?, plain);

        let refused = |state: TrainerState| match read(state.entries()) {
            Err(Error::Checkpoint { path, reason }) => {
                assert_eq!(path, Path::new("last.safetensors"));
                reason
            }
            other => panic!("{other:?}"),
        };
        let after = refused(TrainerState {
            best: Some((8, 0.9)),
            ..full.clone()
        });
        assert!(
            after.contains("impossible trainer state: epoch 7, best epoch 8"),
            "{after}"
        );
        let none = refused(TrainerState {
            epoch: 0,
            best: None,
            ..full.clone()
        });
        assert!(none.contains("impossible trainer state"), "{none}");
        let mut missing = full.entries();
        missing.retain(|(key, _)| key != BEST_SCORE_KEY);
        assert!(matches!(read(missing), Err(Error::Checkpoint { reason, .. }) if reason.contains(BEST_SCORE_KEY)));
        Ok(())
    }
}
