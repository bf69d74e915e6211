//! Cross-modal alignment as CLIP does it (Radford et al. 2021): each modality's embedding
//! projected into one L2-normalised space, the symmetric InfoNCE loss over in-batch
//! negatives with a learned temperature, and the retrieval metrics (recall@K, median rank,
//! mean reciprocal rank) with duplicates handled; search over an index is in
//! [`crate::search`].

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::{Error, Result};

/// CLIP's starting temperature, 0.07: a logit scale of 1/0.07.
pub const INITIAL_TEMPERATURE: f64 = 0.07;

/// CLIP's largest logit scale: similarities are multiplied by at most 100.
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// The learned temperature as CLIP keeps it: a variable `t`, the logit scale `exp(t)`
/// clamped to at most [`MAX_LOGIT_SCALE`] (above the clamp the gradient is zero, so the
/// variable stops there).
#[derive(Debug)]
pub struct LogitScale {
    log_scale: Tensor,
}

impl LogitScale {
    /// The variable `logit_scale` under `p`, starting at `ln(1 / 0.07)`.
    pub fn new(p: &nn::Path) -> Self {
        let log_scale = p.var("logit_scale", &[], nn::Init::Const((1.0 / INITIAL_TEMPERATURE).ln()));
        Self { log_scale }
    }

    /// The scale `exp(min(t, ln 100))` (a scalar tensor).
    pub fn scale(&self) -> Tensor {
        self.log_scale.clamp_max(MAX_LOGIT_SCALE.ln()).exp()
    }

    pub(crate) fn shallow_clone(&self) -> Self {
        Self {
            log_scale: self.log_scale.shallow_clone(),
        }
    }
}

/// The rows of `x` `[B, D]` scaled to unit length (a zero row stays zero).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12)
}

/// The symmetric InfoNCE loss of paired rows: `a` and `b` are `[B, D]` unit vectors, row
/// `i` of each a positive pair and every other row a negative; with `S = scale · a bᵀ`,
/// the mean of the cross-entropy of `S`'s rows and of its columns against the diagonal.
pub fn clip_loss(a: &Tensor, b: &Tensor, scale: &Tensor) -> Tensor {
    let logits = a.matmul(&b.transpose(0, 1)) * scale;
    let targets = Tensor::arange(logits.size()[0], (Kind::Int64, logits.device()));
    let rows = logits.cross_entropy_for_logits(&targets);
    let columns = logits.transpose(0, 1).cross_entropy_for_logits(&targets);
    (rows + columns) / 2.0
}

/// [`clip_loss`] averaged over every pair of modalities: for modalities `m < n`, the
/// records whose `present[m]` and `present[n]` both hold are the batch (a pair with fewer
/// than two such records has no negative and is left out). `embeddings[m]` is `[B, D]`,
/// unit rows; `None` when no pair has two records.
pub fn pairwise_clip_loss(embeddings: &[Tensor], present: &[Tensor], scale: &Tensor) -> Option<Tensor> {
    let mut losses = Vec::new();
    for m in 0..embeddings.len() {
        for n in m + 1..embeddings.len() {
            let both = present[m].logical_and(&present[n]).nonzero().squeeze_dim(1);
            if both.size()[0] < 2 {
                continue;
            }
            let a = embeddings[m].index_select(0, &both);
            let b = embeddings[n].index_select(0, &both);
            losses.push(clip_loss(&a, &b, scale));
        }
    }
    (!losses.is_empty()).then(|| Tensor::stack(&losses, 0).mean(Kind::Float))
}

/// Which records have each modality in stacked embeddings `[B, M, D]` (an absent one's
/// row is zeros, a present one's has unit length): `[B, M]` booleans.
pub fn presence_of(stacked: &Tensor) -> Tensor {
    stacked
        .detach()
        .to_kind(Kind::Float)
        .norm_scalaropt_dim(2.0, [-1], false)
        .gt(0.5)
}

/// Each record's share of [`pairwise_clip_loss`] over stacked embeddings `[B, M, D]`
/// (absent modalities' rows zero): `[B]`, whose mean is that loss. A record's share in a
/// pair is the mean of its row's and its column's cross-entropy, scaled by `B / n` for the
/// pair's `n` records, and pairs count alike; zeros (still in the graph) without a pair.
/// Records lacking either modality of a pair are masked out of its similarity matrix rather
/// than gathered, so nothing waits for the device; the similarities are computed in float32
/// even under autocast (at a logit scale of 100, bfloat16's rounding moves a logit by ~0.4).
// Sums stay out of place (`a = a + b`): tch's `+=` writes into a tensor of the graph.
#[allow(clippy::assign_op_pattern)]
pub fn pairwise_sample_losses(stacked: &Tensor, scale: &Tensor) -> Tensor {
    crate::precision::full_precision(stacked.device(), || {
        let stacked = stacked.to_kind(Kind::Float);
        let scale = scale.to_kind(Kind::Float);
        let size = stacked.size();
        let (batch, modalities) = (size[0], size[1]);
        let device = stacked.device();
        let present = presence_of(&stacked);
        let zeros = Tensor::zeros([batch], (Kind::Float, device));
        let mut total = stacked.sum(Kind::Float) * 0.0 + &zeros;
        let mut pairs = Tensor::zeros([], (Kind::Float, device));
        for m in 0..modalities {
            for n in m + 1..modalities {
                let both = present.select(1, m).logical_and(&present.select(1, n));
                let count = both.to_kind(Kind::Float).sum(Kind::Float);
                // A pair of fewer than two records has no negative: it counts for nothing.
                let counted = count.ge(2.0).to_kind(Kind::Float);
                let logits = stacked.select(1, m).matmul(&stacked.select(1, n).transpose(0, 1)) * &scale;
                // A finite fill: a row with nothing left stays finite (then discarded).
                let rows = logits
                    .masked_fill(&both.logical_not().unsqueeze(0), MASKED)
                    .log_softmax(1, Kind::Float)
                    .diagonal(0, 0, 1);
                let columns = logits
                    .masked_fill(&both.logical_not().unsqueeze(1), MASKED)
                    .log_softmax(0, Kind::Float)
                    .diagonal(0, 0, 1);
                let shares = -(rows + columns) / 2.0 * (batch as f64 / count.clamp_min(1.0)) * &counted;
                total = total + shares.where_self(&both, &zeros);
                pairs = pairs + counted;
            }
        }
        total / pairs.clamp_min(1.0)
    })
}

/// The logit of a record masked out of a pair's similarities.
const MASKED: f64 = -1e9;

/// Retrieval from one modality's embeddings to another's on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRetrieval {
    /// The queries' modality.
    pub query: String,
    /// The keys' modality.
    pub key: String,
    /// Ranks of each query's pair among the keys of every record with both modalities.
    pub metrics: RetrievalMetrics,
}

/// For each record, the records sharing its content on either side (`queries[i]` and
/// `keys[i]`: a digest of record `i`'s input in each modality), itself included.
fn same_content(queries: &[u64], keys: &[u64]) -> Vec<Vec<usize>> {
    let mut relevant: Vec<Vec<usize>> = (0..queries.len()).map(|i| vec![i]).collect();
    for side in [queries, keys] {
        let mut alike: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
        for (i, digest) in side.iter().enumerate() {
            alike.entry(*digest).or_default().push(i);
        }
        for group in alike.values().filter(|g| g.len() > 1) {
            for &i in group {
                relevant[i].extend(group.iter().filter(|&&j| j != i));
            }
        }
    }
    for r in &mut relevant {
        r.sort_unstable();
        r.dedup();
    }
    relevant
}

/// Queries ranked at once by [`retrieval_between`]: memory stays `O(block · N)`.
const RANK_BLOCK: i64 = 256;

/// Retrieval in both directions between every pair of modalities of stacked embeddings
/// `[N, M, D]` (absent rows zero): for modalities `m → n`, each record with both is a query
/// by its `m` embedding among the `n` embeddings of those records. Duplicates count as
/// hits: a key whose record has the same input as the query's own record in either modality
/// (two records with the same text: either picture is right for it). `content[m][i]` is a
/// digest of record `i`'s input in modality `m` ([`content_digests`]).
pub fn retrieval_between(stacked: &Tensor, names: &[String], content: &[Vec<u64>]) -> Result<Vec<PairRetrieval>> {
    let stacked = stacked.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let records = stacked.size()[0] as usize;
    if content.len() != names.len() || content.iter().any(|c| c.len() != records) {
        return Err(Error::Shape(format!(
            "content digests for {} modalities of {records} records",
            names.len()
        )));
    }
    let present = presence_of(&stacked);
    let mut out = Vec::new();
    for m in 0..names.len() {
        for n in 0..names.len() {
            if m == n {
                continue;
            }
            let both = present
                .select(1, m as i64)
                .logical_and(&present.select(1, n as i64))
                .nonzero()
                .squeeze_dim(1);
            let rows: Vec<usize> = Vec::<i64>::try_from(&both)?.into_iter().map(|r| r as usize).collect();
            if rows.len() < 2 {
                continue;
            }
            let queries = stacked.select(1, m as i64).index_select(0, &both);
            let keys = stacked.select(1, n as i64).index_select(0, &both).transpose(0, 1);
            let digests = |side: usize| -> Vec<u64> { rows.iter().map(|&r| content[side][r]).collect() };
            let relevant = same_content(&digests(m), &digests(n));
            let mut ranks = Vec::with_capacity(rows.len());
            let mut start = 0;
            while start < rows.len() as i64 {
                let len = RANK_BLOCK.min(rows.len() as i64 - start);
                let block = queries.narrow(0, start, len).matmul(&keys);
                let (from, to) = (start as usize, (start + len) as usize);
                ranks.extend(first_relevant_ranks(&block, &relevant[from..to])?);
                start += len;
            }
            out.push(PairRetrieval {
                query: names[m].clone(),
                key: names[n].clone(),
                metrics: RetrievalMetrics::of(&ranks),
            });
        }
    }
    Ok(out)
}

/// A digest of each record's input in each modality of `data` (`[m][i]`): records with the
/// same input (the same text, the same picture) get the same digest. An absent input's
/// digest is its record's own (it is never compared).
pub fn content_digests(data: &crate::TensorDataset) -> Result<Vec<Vec<u64>>> {
    data.features
        .iter()
        .zip(&data.padding)
        .map(|(features, padding)| {
            let rows = features.size()[0];
            let flat = Vec::<f32>::try_from(
                features
                    .reshape([rows, -1])
                    .to_kind(Kind::Float)
                    .to_device(tch::Device::Cpu)
                    .flatten(0, -1),
            )?;
            let width = flat.len() / rows.max(1) as usize;
            let mask = padding
                .as_ref()
                .map(|p| Vec::<bool>::try_from(p.reshape([-1]).to_device(tch::Device::Cpu)))
                .transpose()?;
            Ok((0..rows as usize)
                .map(|i| {
                    // FNV-1a over the values' bits: fast (this runs every validation epoch),
                    // and equal inputs are all it has to find.
                    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
                    let mut mix = |word: u64| digest = (digest ^ word).wrapping_mul(0x0000_0100_0000_01b3);
                    for (t, v) in flat[i * width..(i + 1) * width].iter().enumerate() {
                        // Padding is not content: a text is the same whatever the batch's longest.
                        if mask
                            .as_ref()
                            .is_none_or(|m| m.get(i * width + t).copied().unwrap_or(true))
                        {
                            mix(u64::from(v.to_bits()));
                        }
                    }
                    if width == 0 {
                        mix(i as u64);
                    }
                    digest
                })
                .collect())
        })
        .collect()
}

/// Stacked embeddings `[b, M, D]` of one data-parallel rank laid into the whole batch's
/// `[Σ b_r, M, D]` (ranks in order, `sizes[r]` rows each) as CLIP gathers them: the other
/// ranks' rows are constants, this rank's keep their gradient.
pub fn gather_embeddings(
    local: &Tensor,
    sizes: &[i64],
    rank: usize,
    group: &dyn crate::parallel::ProcessGroup,
) -> Result<Tensor> {
    let size = local.size();
    let total: i64 = sizes.iter().sum();
    let before: i64 = sizes[..rank].iter().sum();
    let mut all = Tensor::zeros([total, size[1], size[2]], (Kind::Float, local.device()));
    if size[0] > 0 {
        all.narrow(0, before, size[0])
            .copy_(&local.detach().to_kind(Kind::Float));
    }
    group.all_reduce_sum(&mut all)?;
    let after = total - before - size[0];
    Ok(Tensor::cat(
        &[
            all.narrow(0, 0, before),
            local.to_kind(Kind::Float),
            all.narrow(0, before + size[0], after),
        ],
        0,
    ))
}

/// How well queries find their keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Queries ranked.
    pub queries: usize,
    /// Share of queries with a relevant key among the first K, for K = 1, 5, 10.
    pub recall_at: Vec<(usize, f64)>,
    /// Median over queries of the first relevant key's rank (1 = first).
    pub median_rank: f64,
    /// Mean over queries of 1 / that rank.
    pub mean_reciprocal_rank: f64,
}

/// Ranks of recall reported.
pub const RECALL_AT: [usize; 3] = [1, 5, 10];

/// Recall@`k` averaged over every direction of `pairs` (0 without one): a contrastive
/// run's accuracy at `k` = 1.
pub fn mean_recall_at(pairs: &[PairRetrieval], k: usize) -> f64 {
    let recalls: Vec<f64> = pairs
        .iter()
        .filter_map(|p| p.metrics.recall_at.iter().find(|(at, _)| *at == k).map(|(_, r)| *r))
        .collect();
    recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
}

/// The 1-based rank of the best-ranked relevant key of each query: `similarity` is
/// `[Q, K]`, `relevant[q]` the keys that count as a hit for query `q` (its pair, and any key
/// with the same content: two records with the same text are both right). A tie counts
/// against the query (a relevant key ranks after every irrelevant one with its score).
pub fn first_relevant_ranks(similarity: &Tensor, relevant: &[Vec<usize>]) -> Result<Vec<usize>> {
    let size = similarity.size();
    if size.len() != 2 || size[0] as usize != relevant.len() {
        return Err(Error::Shape(format!(
            "similarity {size:?} for {} queries",
            relevant.len()
        )));
    }
    let rows = Vec::<Vec<f32>>::try_from(similarity.to_kind(Kind::Float).to_device(tch::Device::Cpu))?;
    rows.iter()
        .zip(relevant)
        .enumerate()
        .map(|(q, (row, hits))| {
            let best = hits
                .iter()
                .filter_map(|&k| row.get(k).copied())
                .fold(None, |acc: Option<f32>, s| Some(acc.map_or(s, |a| a.max(s))))
                .ok_or_else(|| Error::Shape(format!("query {q} has no relevant key among {}", row.len())))?;
            let ahead = row
                .iter()
                .enumerate()
                .filter(|(k, s)| **s >= best && !hits.contains(k))
                .count();
            Ok(ahead + 1)
        })
        .collect()
}

impl RetrievalMetrics {
    /// The metrics of `ranks` ([`first_relevant_ranks`]).
    pub fn of(ranks: &[usize]) -> Self {
        let n = ranks.len().max(1) as f64;
        let mut sorted = ranks.to_vec();
        sorted.sort_unstable();
        let median = match sorted.len() {
            0 => 0.0,
            len if len % 2 == 1 => sorted[len / 2] as f64,
            len => (sorted[len / 2 - 1] + sorted[len / 2]) as f64 / 2.0,
        };
        Self {
            queries: ranks.len(),
            recall_at: RECALL_AT
                .iter()
                .map(|&k| (k, ranks.iter().filter(|&&r| r <= k).count() as f64 / n))
                .collect(),
            median_rank: median,
            mean_reciprocal_rank: ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_loss_equals_a_hand_computation_on_three_pairs() -> Result<()> {
        // Unit rows: a·bᵀ = [[1, 0.8, 0], [0, 0.6, 1], [0.6, 0.96, 0.8]].
        let a = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8]).view([3, 2]);
        let b = Tensor::from_slice(&[1.0f32, 0.0, 0.8, 0.6, 0.0, 1.0]).view([3, 2]);
        let scale = 2.0;
        let s: [[f64; 3]; 3] = [[1.0, 0.8, 0.0], [0.0, 0.6, 1.0], [0.6, 0.96, 0.8]];
        let s = s.map(|row| row.map(|v| v * scale));
        let row_loss = |i: usize| -> f64 {
            let z: f64 = (0..3).map(|j| s[i][j].exp()).sum();
            z.ln() - s[i][i]
        };
        let column_loss = |j: usize| -> f64 {
            let z: f64 = (0..3).map(|i| s[i][j].exp()).sum();
            z.ln() - s[j][j]
        };
        let expected = ((0..3).map(row_loss).sum::<f64>() / 3.0 + (0..3).map(column_loss).sum::<f64>() / 3.0) / 2.0;
        let got = f64::try_from(clip_loss(&a, &b, &Tensor::from(scale as f32)))?;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        Ok(())
    }

    #[test]
    fn pairs_drop_out_with_their_missing_modalities() -> Result<()> {
        let a = l2_normalize(&Tensor::from_slice(&[1.0f32, 0.1, 0.2, 1.0, 0.5, 0.5]).view([3, 2]));
        let b = l2_normalize(&Tensor::from_slice(&[0.9f32, 0.0, 0.1, 1.0, 1.0, 0.0]).view([3, 2]));
        let scale = Tensor::from(5.0f32);
        // Record 2 lacks b: the a–b pair is the first two records alone.
        let present = [
            Tensor::from_slice(&[true, true, true]),
            Tensor::from_slice(&[true, true, false]),
        ];
        let got = pairwise_clip_loss(&[a.shallow_clone(), b.shallow_clone()], &present, &scale)
            .map(f64::try_from)
            .transpose()?;
        let expected = f64::try_from(clip_loss(&a.narrow(0, 0, 2), &b.narrow(0, 0, 2), &scale))?;
        assert!(got.is_some_and(|g| (g - expected).abs() < 1e-6));
        let alone = [
            Tensor::from_slice(&[true, false, false]),
            Tensor::from_slice(&[true, false, false]),
        ];
        assert!(
            pairwise_clip_loss(&[a, b], &alone, &scale).is_none(),
            "one pair has no negative"
        );
        Ok(())
    }

    #[test]
    fn per_record_shares_average_to_the_pairwise_loss() -> Result<()> {
        tch::manual_seed(5);
        let f = (Kind::Float, tch::Device::Cpu);
        let rows: Vec<Tensor> = (0..3).map(|_| l2_normalize(&Tensor::randn([6, 4], f))).collect();
        let present = [
            Tensor::from_slice(&[true, true, true, true, false, true]),
            Tensor::from_slice(&[true, false, true, true, true, true]),
            Tensor::from_slice(&[true, true, false, true, true, false]),
        ];
        let stacked = Tensor::stack(
            &rows
                .iter()
                .zip(&present)
                .map(|(r, p)| r * p.to_kind(Kind::Float).unsqueeze(-1))
                .collect::<Vec<_>>(),
            1,
        );
        let scale = Tensor::from(3.0f32);
        let shares = pairwise_sample_losses(&stacked, &scale);
        let expected = f64::try_from(pairwise_clip_loss(&rows, &present, &scale).unwrap_or_default())?;
        assert!((f64::try_from(shares.mean(Kind::Double))? - expected).abs() < 1e-5);
        // And their gradient is the loss's.
        let leaf = stacked.detach().set_requires_grad(true);
        pairwise_sample_losses(&leaf, &scale).mean(Kind::Float).backward();
        let got = leaf.grad().copy();
        let leaf2 = stacked.detach().set_requires_grad(true);
        let split: Vec<Tensor> = (0..3).map(|m| leaf2.select(1, m)).collect();
        pairwise_clip_loss(&split, &present, &scale)
            .unwrap_or_default()
            .backward();
        let gap = f64::try_from((&got - leaf2.grad()).abs().max())?;
        assert!(gap < 1e-5, "gradients differ by {gap}");
        assert_eq!(
            Vec::<bool>::try_from(presence_of(&stacked).select(1, 2))?,
            Vec::<bool>::try_from(&present[2])?
        );
        Ok(())
    }

    #[test]
    fn records_with_the_same_content_are_hits_for_each_other() -> Result<()> {
        // Records 0 and 2 share their text (modality 1); records 1 and 3 their picture.
        let picture = [[1.0f32, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 1.0]];
        let text = [[1.0f32, 0.0], [0.8, 0.6], [1.0, 0.0], [0.0, 1.0]];
        let rows: Vec<f32> = (0..4).flat_map(|i| [picture[i], text[i]].concat()).collect();
        let stacked = Tensor::from_slice(&rows).view([4, 2, 2]);
        let names = ["picture".to_string(), "text".to_string()];
        let content = vec![vec![10, 11, 12, 11], vec![20, 21, 20, 23]];
        assert_eq!(
            same_content(&content[0], &content[1]),
            vec![vec![0, 2], vec![1, 3], vec![0, 2], vec![1, 3]]
        );
        let pairs = retrieval_between(&stacked, &names, &content)?;
        assert_eq!(pairs.len(), 2);
        // picture → text: picture 2 is nearest text 1 (0.96) before its own text (0.6), and
        // picture 0's text is also record 2's, so every query but 2 ranks a hit first.
        let to_text = &pairs[0];
        assert_eq!((to_text.query.as_str(), to_text.key.as_str()), ("picture", "text"));
        assert_eq!(to_text.metrics.recall_at[0].1, 0.75, "{to_text:?}");
        // Equal embeddings of different inputs (a collapsed model) are no hits.
        let collapsed = Tensor::ones([4, 2, 2], (Kind::Float, tch::Device::Cpu)) / 2f64.sqrt();
        let distinct = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
        let pairs = retrieval_between(&collapsed, &names, &distinct)?;
        assert_eq!(pairs[0].metrics.recall_at[0].1, 0.0, "ties count against the query");
        assert!(retrieval_between(&stacked, &names, &content[..1]).is_err());
        Ok(())
    }

    #[test]
    fn ranks_and_metrics_match_a_brute_force_reference() -> Result<()> {
        // A seeded similarity matrix with duplicates: keys 2k and 2k+1 hold the same content,
        // so both are right for queries 2k and 2k+1.
        tch::manual_seed(11);
        let (q, k) = (40usize, 40usize);
        let similarity = Tensor::randn([q as i64, k as i64], (Kind::Float, tch::Device::Cpu));
        let relevant: Vec<Vec<usize>> = (0..q).map(|i| vec![i / 2 * 2, i / 2 * 2 + 1]).collect();
        let ranks = first_relevant_ranks(&similarity, &relevant)?;
        let rows = Vec::<Vec<f32>>::try_from(&similarity)?;
        for (i, row) in rows.iter().enumerate() {
            // Brute force: sort every key by score, the first relevant one's position.
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
            let position = order.iter().position(|j| relevant[i].contains(j)).map(|p| p + 1);
            assert_eq!(Some(ranks[i]), position, "query {i}");
        }
        let metrics = RetrievalMetrics::of(&ranks);
        let mut sorted = ranks.clone();
        sorted.sort_unstable();
        assert_eq!(metrics.median_rank, (sorted[19] + sorted[20]) as f64 / 2.0);
        for (at, recall) in &metrics.recall_at {
            let hits = ranks.iter().filter(|&&r| r <= *at).count();
            assert_eq!(*recall, hits as f64 / q as f64);
        }
        let mrr: f64 = ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / q as f64;
        assert!((metrics.mean_reciprocal_rank - mrr).abs() < 1e-12);
        // A tie counts against the query.
        let tied = Tensor::from_slice(&[0.5f32, 0.5, 0.1]).view([1, 3]);
        assert_eq!(first_relevant_ranks(&tied, &[vec![1]])?, [2]);
        Ok(())
    }
}
