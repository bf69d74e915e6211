//! One modality of a batch, with the mask of the samples that have it.

use tch::{Device, Kind, Tensor};

/// One modality of a batch as fusion sees it.
///
/// `features` is an embedding `[B, D]` or a sequence `[B, T, D]` (or whatever its encoder
/// takes, e.g. token ids `[B, T]`); a sequence may carry a `padding_mask` `[B, T]` (true for
/// real tokens). `present` `[B]` (bool) says which
/// samples have this modality at all: a missing modality is a normal case, not an error.
#[derive(Debug)]
pub struct ModalityInput {
    /// `[B, D]` or `[B, T, D]`.
    pub features: Tensor,
    /// `[B, T]` bool, true for real tokens; `None` means no padding.
    pub padding_mask: Option<Tensor>,
    /// `[B]` bool, true where the sample has this modality.
    pub present: Tensor,
}

impl ModalityInput {
    /// Every sample has this modality and no padding.
    pub fn dense(features: Tensor) -> Self {
        let batch = features.size()[0];
        let present = Tensor::ones([batch], (Kind::Bool, features.device()));
        Self {
            features,
            padding_mask: None,
            present,
        }
    }

    /// With an explicit presence mask.
    pub fn with_presence(features: Tensor, present: Tensor) -> Self {
        Self {
            features,
            padding_mask: None,
            present: present.to_kind(Kind::Bool),
        }
    }

    /// Batch size.
    pub fn batch_size(&self) -> i64 {
        self.features.size()[0]
    }

    /// The same presence and padding with other features (what a wrapping encoder hands
    /// the encoder it wraps).
    pub fn with_features(&self, features: Tensor) -> Self {
        Self {
            features,
            padding_mask: self.padding_mask.as_ref().map(Tensor::shallow_clone),
            present: self.present.shallow_clone(),
        }
    }

    /// A shallow copy with another presence mask (used to evaluate modality subsets).
    pub fn with_present(&self, present: Tensor) -> Self {
        Self {
            features: self.features.shallow_clone(),
            padding_mask: self.padding_mask.as_ref().map(Tensor::shallow_clone),
            present,
        }
    }

    /// A shallow copy that keeps this modality when `keep`, and otherwise marks it missing
    /// for every sample (how explanation and robustness evaluate modality subsets).
    pub fn hidden_unless(&self, keep: bool) -> Self {
        self.with_present(if keep {
            self.present.shallow_clone()
        } else {
            self.present.zeros_like()
        })
    }

    /// Moves every tensor to `device`.
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            features: self.features.to_device(device),
            padding_mask: self.padding_mask.as_ref().map(|m| m.to_device(device)),
            present: self.present.to_device(device),
        }
    }
}
