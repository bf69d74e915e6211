use tch::Tensor;

use crate::{Error, Result};

/// Tensor fusion (early, feature-level; Zadeh et al. 2017): the outer product of every
/// modality's `[x; 1]`, flattened. The appended 1 keeps unimodal and lower-order terms.
///
/// Inputs are `[B, D_m]` embeddings; the output is `[B, Π (D_m + 1)]`.
pub fn tensor_fusion(embeddings: &[&Tensor]) -> Result<Tensor> {
    let (first, rest) = embeddings
        .split_first()
        .ok_or_else(|| Error::Shape("tensor fusion needs at least one modality".into()))?;
    let batch = batch_size(first)?;
    let mut fused = with_ones(first)?;
    for x in rest {
        if batch_size(x)? != batch {
            return Err(Error::Shape(format!(
                "batch sizes differ: {:?} and {:?}",
                first.size(),
                x.size()
            )));
        }
        let x1 = with_ones(x)?;
        // [B, P, 1] * [B, 1, D+1] -> [B, P, D+1] -> [B, P * (D+1)]
        fused = fused.unsqueeze(2).f_mul(&x1.unsqueeze(1))?.flatten(1, 2);
    }
    Ok(fused)
}

fn batch_size(x: &Tensor) -> Result<i64> {
    match x.size().as_slice() {
        [batch, _] => Ok(*batch),
        other => Err(Error::Shape(format!("expected an embedding [B, D], got {other:?}"))),
    }
}

fn with_ones(x: &Tensor) -> Result<Tensor> {
    // Derived from `x` so that a traced model keeps a free batch size.
    let ones = x.narrow(1, 0, 1).ones_like();
    Ok(Tensor::f_cat(&[x, &ones], 1)?)
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    fn row(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).view([1, -1])
    }

    #[test]
    fn tensor_fusion_is_outer_product_with_appended_one() -> Result<()> {
        let fused = tensor_fusion(&[&row(&[1.0, 2.0]), &row(&[3.0])])?;
        // [1, 2, 1] ⊗ [3, 1] = [[3, 1], [6, 2], [3, 1]]
        let values = Vec::<f32>::try_from(fused.view([-1]))?;
        assert_eq!(values, [3.0, 1.0, 6.0, 2.0, 3.0, 1.0]);
        Ok(())
    }

    #[test]
    fn tensor_fusion_of_three_modalities_has_product_size() -> Result<()> {
        let a = Tensor::ones([4, 2], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::ones([4, 3], (Kind::Float, tch::Device::Cpu));
        let c = Tensor::ones([4, 1], (Kind::Float, tch::Device::Cpu));
        assert_eq!(tensor_fusion(&[&a, &b, &c])?.size(), [4, 3 * 4 * 2]);
        Ok(())
    }

    #[test]
    fn tensor_fusion_rejects_bad_shapes() {
        assert!(matches!(tensor_fusion(&[]), Err(Error::Shape(_))));
        let a = Tensor::ones([4, 2], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::ones([3, 2], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(tensor_fusion(&[&a, &b]), Err(Error::Shape(_))));
        let seq = Tensor::ones([4, 2, 2], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(tensor_fusion(&[&seq]), Err(Error::Shape(_))));
    }
}
