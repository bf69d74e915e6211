use tch::{Kind, Tensor};

use crate::{Error, ModalityInput, Result};

/// Checks that all inputs agree on the batch size and returns it.
pub(crate) fn common_batch_size(inputs: &[ModalityInput], names: &[String]) -> Result<i64> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Shape("no modality inputs".into()))?;
    let batch = first.batch_size();
    for (input, name) in inputs.iter().zip(names) {
        if input.batch_size() != batch || input.present.size() != [batch] {
            return Err(Error::Shape(format!(
                "modality `{name}`: features {:?} and presence {:?} do not match batch size {batch}",
                input.features.size(),
                input.present.size()
            )));
        }
        if let Some(mask) = &input.padding_mask {
            let features = input.features.size();
            // Masks the first two dimensions: tokens of a sequence, or token ids [B, T].
            if features.len() < 2 || mask.size() != features[..2] {
                return Err(Error::Shape(format!(
                    "modality `{name}`: padding mask {:?} does not fit features {features:?}",
                    mask.size()
                )));
            }
        }
    }
    Ok(batch)
}

/// Stacks presence masks into `[B, M]` floats.
pub(crate) fn presence_matrix(inputs: &[ModalityInput]) -> Tensor {
    let columns: Vec<Tensor> = inputs.iter().map(|i| i.present.to_kind(Kind::Float)).collect();
    Tensor::stack(&columns, 1)
}

/// Mean over real tokens of a `[B, T, D]` sequence (zeros where a row has none);
/// embeddings `[B, D]` pass through.
pub(crate) fn pool(features: &Tensor, padding_mask: Option<&Tensor>) -> Tensor {
    if features.dim() == 2 {
        return features.shallow_clone();
    }
    match padding_mask {
        None => features.mean_dim(1, false, Kind::Float),
        Some(mask) => {
            let weights = mask.to_kind(Kind::Float).unsqueeze(-1);
            let total = (features * &weights).sum_dim_intlist(1, false, Kind::Float);
            total / weights.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
        }
    }
}

/// Randomly hides modalities during training (each sample, each modality, with
/// probability `p`) while keeping at least one of the modalities the sample had.
pub fn modality_dropout(present: &[Tensor], p: f64) -> Vec<Tensor> {
    if p <= 0.0 || present.len() < 2 {
        return present.iter().map(Tensor::shallow_clone).collect();
    }
    let original = Tensor::stack(present, 1);
    let keep = original.to_kind(Kind::Float).rand_like().ge(p).logical_and(&original);
    // A row that lost everything it had gets one of its modalities back, chosen at
    // random, so dropout never empties a sample (and never revives all of them).
    let emptied = keep.any_dim(1, true).logical_not();
    let scores = original.to_kind(Kind::Float).rand_like() + original.to_kind(Kind::Float);
    let rescued = scores.argmax(1, true);
    let rescue = original
        .zeros_like()
        .scatter_value(1, &rescued, 1)
        .logical_and(&original);
    let kept = keep.logical_or(&rescue.logical_and(&emptied));
    (0..present.len() as i64).map(|m| kept.select(1, m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_ignores_padding() {
        let x = Tensor::from_slice(&[1.0f32, 3.0, 100.0, 2.0, 4.0, 6.0]).view([2, 3, 1]);
        let mask = Tensor::from_slice(&[true, true, false, true, true, true]).view([2, 3]);
        let pooled = Vec::<f32>::try_from(pool(&x, Some(&mask)).view([-1])).unwrap_or_default();
        assert_eq!(pooled, [2.0, 4.0]);
    }

    #[test]
    fn modality_dropout_keeps_one_present_modality() {
        tch::manual_seed(0);
        let a = Tensor::from_slice(&[true, true, false, true]).repeat([250]);
        let b = Tensor::from_slice(&[true, false, true, true]).repeat([250]);
        let dropped = modality_dropout(&[a.shallow_clone(), b.shallow_clone()], 0.9);
        let any = dropped[0].logical_or(&dropped[1]);
        assert!(
            bool::try_from(any.all()).unwrap_or(false),
            "every sample keeps a modality"
        );
        // Never invents a modality the sample lacked.
        assert!(!bool::try_from(dropped[0].logical_and(&a.logical_not()).any()).unwrap_or(true));
        assert!(!bool::try_from(dropped[1].logical_and(&b.logical_not()).any()).unwrap_or(true));
        // With p = 0.9 most of the both-present samples lose one modality.
        let both = a.logical_and(&b);
        let still_both = dropped[0].logical_and(&dropped[1]).logical_and(&both);
        let ratio = f64::try_from(still_both.sum(Kind::Float) / both.sum(Kind::Float)).unwrap_or(1.0);
        assert!(ratio < 0.1, "{ratio}");
    }
}
