//! In-memory datasets of encoded features and seeded batching.

use tch::{Device, Kind, Tensor};

use crate::{Error, ModalityInput, Result};

/// Features of every sample, per modality, with presence masks and labels.
#[derive(Debug)]
pub struct TensorDataset {
    /// Per modality: `[N, D]` or `[N, T, D]`.
    pub features: Vec<Tensor>,
    /// Per modality: `[N, T]` padding masks for sequences.
    pub padding: Vec<Option<Tensor>>,
    /// Per modality: `[N]` bool presence.
    pub present: Vec<Tensor>,
    /// Targets: `[N]` int64 class indices, `[N, L]` 0/1 floats (multi-label), or `[N]`
    /// float numbers (regression).
    pub labels: Tensor,
    /// Group of each sample, for per-group metrics and group-robust training.
    pub groups: Option<Vec<String>>,
    /// Each sample's weight in the training loss: `[N]`, or `[N, L]` per label of a
    /// multi-label task; `None`: every sample weighs 1.
    pub weights: Option<Tensor>,
}

impl TensorDataset {
    /// A dataset where every sample has every modality.
    pub fn dense(features: Vec<Tensor>, labels: Tensor) -> Result<Self> {
        let present = features
            .iter()
            .map(|f| Tensor::ones([f.size()[0]], (Kind::Bool, f.device())))
            .collect();
        let padding = features.iter().map(|_| None).collect();
        let dataset = Self {
            features,
            padding,
            present,
            labels,
            groups: None,
            weights: None,
        };
        dataset.check()?;
        Ok(dataset)
    }

    /// Checks that every tensor agrees on the number of samples.
    pub fn check(&self) -> Result<()> {
        let n = self.len();
        let bad = self
            .features
            .iter()
            .chain(&self.present)
            .chain(self.padding.iter().flatten())
            .any(|t| t.size()[0] != n);
        if bad || self.features.len() != self.present.len() || self.features.len() != self.padding.len() {
            return Err(Error::Shape(format!(
                "dataset tensors disagree on the sample count {n}"
            )));
        }
        if self.groups.as_ref().is_some_and(|g| g.len() as i64 != n) {
            return Err(Error::Shape(format!(
                "{n} samples but a different number of group labels"
            )));
        }
        if self.weights.as_ref().is_some_and(|w| w.size().first() != Some(&n)) {
            return Err(Error::Shape(format!("{n} samples but a different number of weights")));
        }
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `len` samples from `start` on (views, no copy); a range past the end is an error.
    pub fn rows(&self, start: i64, len: i64) -> Result<Self> {
        if start < 0 || len < 0 || start.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(Error::Shape(format!(
                "samples {start}..{start}+{len} of a dataset of {}",
                self.len()
            )));
        }
        let cut = |t: &Tensor| t.narrow(0, start, len);
        Ok(Self {
            features: self.features.iter().map(cut).collect(),
            padding: self.padding.iter().map(|p| p.as_ref().map(cut)).collect(),
            present: self.present.iter().map(cut).collect(),
            labels: cut(&self.labels),
            groups: self
                .groups
                .as_ref()
                .map(|g| g[start as usize..(start + len) as usize].to_vec()),
            weights: self.weights.as_ref().map(cut),
        })
    }

    /// Bytes of the inputs and labels.
    pub fn bytes(&self) -> u64 {
        let size = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
        self.features
            .iter()
            .chain(&self.present)
            .chain(self.padding.iter().flatten())
            .chain([&self.labels])
            .map(size)
            .sum()
    }

    /// The samples at `indices` (int64 `[b]`), moved to `device`. A padded modality is cut
    /// to the longest sequence of the batch, so short batches do not carry the dataset's
    /// longest padding.
    pub fn batch(&self, indices: &Tensor, device: Device) -> (Vec<ModalityInput>, Tensor) {
        // Indices come from the host; the samples may live on a GPU.
        let indices = &indices.to_device(self.labels.device());
        let inputs = self
            .features
            .iter()
            .zip(&self.padding)
            .zip(&self.present)
            .map(|((features, padding), present)| {
                let mut features = features.index_select(0, indices);
                let padding = padding.as_ref().map(|p| {
                    let (cut, mask) = cut_to_longest(features.shallow_clone(), &p.index_select(0, indices));
                    features = cut;
                    mask.to_device(device)
                });
                ModalityInput {
                    features: features.to_device(device),
                    padding_mask: padding,
                    present: present.index_select(0, indices).to_device(device),
                }
            })
            .collect();
        (inputs, self.labels.index_select(0, indices).to_device(device))
    }

    /// Index batches of at most `batch_size`, shuffled by `seed` when given. The order
    /// depends only on the seed (not on libtorch's generator), so runs and resumed runs
    /// see the same batches.
    pub fn batches(&self, batch_size: usize, seed: Option<u64>) -> Vec<Tensor> {
        seeded_batches(self.len(), batch_size, seed)
    }
}

/// Index batches of at most `batch_size` over `len` samples, shuffled by `seed` when
/// given (see [`TensorDataset::batches`]): the same for every kind of dataset.
pub fn seeded_batches(len: i64, batch_size: usize, seed: Option<u64>) -> Vec<Tensor> {
    let mut order: Vec<i64> = (0..len).collect();
    if let Some(seed) = seed {
        let mut rng = SplitMix64(seed);
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    order.chunks(batch_size.max(1)).map(Tensor::from_slice).collect()
}

/// A padded batch cut after its last column holding a real token in any row: those
/// columns are padding everywhere, wherever else padding lies.
pub(crate) fn cut_to_longest(features: Tensor, mask: &Tensor) -> (Tensor, Tensor) {
    let used = mask.any_dim(0, false).nonzero();
    let last = (used.numel() > 0).then(|| i64::try_from(used.max()).unwrap_or(0));
    let keep = last.map_or(1, |l| l + 1).min(mask.size()[1]);
    (
        features.narrow(1, 0, keep).contiguous(),
        mask.narrow(1, 0, keep).contiguous(),
    )
}

/// A small, well-mixed generator for shuffling (Steele et al. 2014).
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_batches_cover_every_sample_once() -> Result<()> {
        let features = Tensor::arange(10, (Kind::Float, Device::Cpu)).view([10, 1]);
        let data = TensorDataset::dense(vec![features], Tensor::zeros([10], (Kind::Int64, Device::Cpu)))?;
        let order = |seed| -> Vec<i64> {
            data.batches(3, seed)
                .iter()
                .flat_map(|b| Vec::<i64>::try_from(b).unwrap_or_default())
                .collect()
        };
        let shuffled = order(Some(7));
        assert_eq!(shuffled, order(Some(7)), "same seed, same order");
        assert_ne!(shuffled, order(Some(8)));
        let mut sorted = shuffled.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(data.batches(3, None).len(), 4);
        Ok(())
    }

    #[test]
    fn padded_batches_are_cut_to_their_longest_sequence() -> Result<()> {
        let features = Tensor::arange(12, (Kind::Int64, Device::Cpu)).view([3, 4]);
        // Real lengths 1, 2 and 4; padding at the end of each row.
        let mask = Tensor::from_slice(&[
            true, false, false, false, true, true, false, false, true, true, true, true,
        ])
        .view([3, 4]);
        let mut data = TensorDataset::dense(vec![features], Tensor::zeros([3], (Kind::Int64, Device::Cpu)))?;
        data.padding[0] = Some(mask);
        let (inputs, _) = data.batch(&Tensor::from_slice(&[1i64, 0]), Device::Cpu);
        assert_eq!(inputs[0].features.size(), [2, 2]);
        assert_eq!(Vec::<i64>::try_from(inputs[0].features.view([-1]))?, [4, 5, 0, 1]);
        let mask = inputs[0].padding_mask.as_ref().map(|m| m.view([-1]));
        assert_eq!(
            mask.map(Vec::<bool>::try_from).transpose()?,
            Some(vec![true, true, true, false])
        );
        let (inputs, _) = data.batch(&Tensor::from_slice(&[2i64]), Device::Cpu);
        assert_eq!(inputs[0].features.size(), [1, 4]);
        // Padding inside a row: only the columns after the last real token go.
        data.padding[0] = Some(Tensor::from_slice(&[true, false, true, false]).repeat([3]).view([3, 4]));
        let (inputs, _) = data.batch(&Tensor::from_slice(&[0i64]), Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(inputs[0].features.view([-1]))?, [0, 1, 2]);
        Ok(())
    }

    #[test]
    fn rows_are_views_of_a_range_and_a_range_past_the_end_is_an_error() -> Result<()> {
        let features = Tensor::arange(10, (Kind::Float, Device::Cpu)).view([5, 2]);
        let data = TensorDataset::dense(vec![features], Tensor::arange(5, (Kind::Int64, Device::Cpu)))?;
        let middle = data.rows(1, 3)?;
        assert_eq!(Vec::<i64>::try_from(&middle.labels)?, [1, 2, 3]);
        assert_eq!(
            Vec::<f32>::try_from(middle.features[0].view([-1]))?,
            [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        for (start, len) in [(4, 2), (-1, 1), (0, -1), (i64::MAX, 1)] {
            assert!(matches!(data.rows(start, len), Err(Error::Shape(_))), "{start}+{len}");
        }
        Ok(())
    }

    #[test]
    fn mismatched_sample_counts_are_rejected() {
        let a = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        let labels = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
        assert!(matches!(TensorDataset::dense(vec![a, b], labels), Err(Error::Shape(_))));
    }
}
