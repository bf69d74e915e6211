//! Data parallelism: several processes train one model, each on its share of every batch,
//! and sum their gradients before each step (as PyTorch's DistributedDataParallel does).
//! The engine behind [`ProcessGroup`] is not here: `fusion-dist` reaches PyTorch's own
//! (c10d with Gloo).

use tch::{Kind, Tensor, nn::VarStore};

use crate::Result;

/// The processes that train one model together. Every rank calls the same collectives in
/// the same order; each call returns once all ranks have made it.
pub trait ProcessGroup {
    /// This process's index, `0..world_size()`; rank 0 writes the run folder.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn world_size(&self) -> usize;
    /// Sums `tensor` over every rank, in place (a dense, contiguous tensor).
    fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<()>;
    /// Replaces every rank's `tensor` with rank `root`'s, in place.
    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)))
    }
}

/// How a training is spread over processes: the one place that says which process writes
/// the run folder.
#[derive(Clone, Copy, Default)]
pub enum Strategy<'a> {
    /// This process alone trains (and writes).
    #[default]
    SingleProcess,
    /// This process is one rank of a data-parallel `group`; rank 0 alone writes.
    DataParallel(&'a dyn ProcessGroup),
}

impl<'a> Strategy<'a> {
    /// Alone without a group, one rank of it with one.
    pub fn from_group(group: Option<&'a dyn ProcessGroup>) -> Self {
        group.map_or(Self::SingleProcess, Self::DataParallel)
    }

    /// The group this process trains in, if any.
    pub fn group(&self) -> Option<&'a dyn ProcessGroup> {
        match *self {
            Self::SingleProcess => None,
            Self::DataParallel(group) => Some(group),
        }
    }

    /// Whether this process writes the run folder: alone, or as rank 0.
    pub fn writes(&self) -> bool {
        self.group().is_none_or(|group| group.rank() == 0)
    }
}

impl std::fmt::Debug for Strategy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.group() {
            None => f.write_str("SingleProcess"),
            Some(group) => write!(f, "DataParallel(rank {} of {})", group.rank(), group.world_size()),
        }
    }
}

/// The rows of a global batch that `rank` of `world` trains on: a contiguous share, sizes
/// differing by at most one, so every rank's share is known without communication. A
/// rank outside `0..world` gets no rows.
pub fn shard(batch: &Tensor, rank: usize, world: usize) -> Tensor {
    let len = batch.size()[0] as usize;
    if rank >= world {
        return batch.narrow(0, 0, 0);
    }
    let start = len * rank / world;
    let end = len * (rank + 1) / world;
    batch.narrow(0, start as i64, (end - start) as i64)
}

/// Sums the gradients of `params` over the group in one flat buffer (one collective per
/// step rather than one per tensor). Every parameter must have a gradient.
pub(crate) fn all_reduce_gradients(group: &dyn ProcessGroup, params: &[Tensor]) -> Result<()> {
    let grads = params.iter().map(Tensor::grad).collect();
    through_one_buffer(grads, |flat| group.all_reduce_sum(flat))
}

/// Gives every rank rank 0's copy of `tensors` (variables, buffers, optimizer state), in
/// one flat buffer per kind of element.
pub(crate) fn broadcast_from_rank0(group: &dyn ProcessGroup, tensors: &[Tensor]) -> Result<()> {
    let mut kinds: Vec<Kind> = Vec::new();
    for tensor in tensors {
        if !kinds.contains(&tensor.kind()) {
            kinds.push(tensor.kind());
        }
    }
    for kind in kinds {
        let same = tensors
            .iter()
            .filter(|t| t.kind() == kind)
            .map(Tensor::shallow_clone)
            .collect();
        through_one_buffer(same, |flat| group.broadcast(flat, 0))?;
    }
    Ok(())
}

/// Runs `collective` on `targets` laid end to end in one flat buffer (one call rather than
/// one per tensor), then copies its pieces back into them, in order.
fn through_one_buffer(targets: Vec<Tensor>, collective: impl FnOnce(&mut Tensor) -> Result<()>) -> Result<()> {
    let mut flat = Tensor::cat(&targets.iter().map(|t| t.detach().reshape([-1])).collect::<Vec<_>>(), 0);
    collective(&mut flat)?;
    tch::no_grad(|| {
        let mut offset = 0;
        for mut target in targets {
            let numel = target.numel() as i64;
            target.f_copy_(&flat.narrow(0, offset, numel).view_as(&target))?;
            offset += numel;
        }
        Ok(())
    })
}

/// Every variable of `vs` (trainable and buffers), in name order: the same on every rank.
pub(crate) fn variables_in_order(vs: &VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_batch_once_in_order_with_sizes_within_one() {
        let batch = Tensor::arange(7, (Kind::Int64, tch::Device::Cpu));
        let shards: Vec<Vec<i64>> = (0..3)
            .map(|rank| Vec::<i64>::try_from(&shard(&batch, rank, 3)).unwrap_or_default())
            .collect();
        assert_eq!(shards, vec![vec![0, 1], vec![2, 3], vec![4, 5, 6]]);
        let tiny = Tensor::arange(1, (Kind::Int64, tch::Device::Cpu));
        assert_eq!(shard(&tiny, 0, 2).size(), [0]);
        assert_eq!(shard(&tiny, 1, 2).size(), [1]);
        assert_eq!(shard(&batch, 0, 0).size(), [0], "no world: no rows, no panic");
        assert_eq!(shard(&batch, 3, 3).size(), [0]);
    }

    /// A group of one rank that is never asked for a collective.
    struct Rank(usize);

    impl ProcessGroup for Rank {
        fn rank(&self) -> usize {
            self.0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum(&self, _: &mut Tensor) -> Result<()> {
            unreachable!("no collective here")
        }
        fn broadcast(&self, _: &mut Tensor, _: usize) -> Result<()> {
            unreachable!("no collective here")
        }
    }

    #[test]
    fn only_a_process_alone_or_rank_0_writes() {
        let (first, second) = (Rank(0), Rank(1));
        assert!(Strategy::SingleProcess.writes());
        assert!(Strategy::DataParallel(&first).writes());
        assert!(!Strategy::DataParallel(&second).writes());
        assert!(Strategy::from_group(None).group().is_none());
        assert_eq!(Strategy::from_group(Some(&second)).group().map(|g| g.rank()), Some(1));
        assert_eq!(
            format!("{:?}", Strategy::DataParallel(&second)),
            "DataParallel(rank 1 of 2)"
        );
    }
}
