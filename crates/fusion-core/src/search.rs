//! Search over embeddings by cosine similarity: exactly, one matrix product per block of
//! the index, so memory stays bounded whatever its size; or through an HNSW graph
//! (fusion-ann) for very large ones, with its recall against the exact search.

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Rows of the index read per matrix product by exact search.
pub const EXACT_BLOCK: i64 = 16_384;

/// The `k` rows of `index` `[N, D]` most similar to each row of `queries` `[Q, D]` by
/// inner product (cosine for unit rows), most similar first: scores and indices, `[Q, k']`
/// with `k' = min(k, N)`. The index is read `block` rows at a time, so memory stays
/// `O(Q · (block + k))` whatever `N`; the result is the exact top-k.
pub fn top_k(queries: &Tensor, index: &Tensor, k: usize, block: i64) -> Result<(Tensor, Tensor)> {
    let (q, n) = (queries.size(), index.size());
    if q.len() != 2 || n.len() != 2 || q[1] != n[1] {
        return Err(Error::Shape(format!(
            "top_k: queries {q:?} and index {n:?} must be [Q, D] and [N, D]"
        )));
    }
    let k = (k as i64).min(n[0]);
    let block = block.max(1);
    let device = queries.device();
    let queries = queries.to_kind(Kind::Float);
    let mut best_scores = Tensor::empty([q[0], 0], (Kind::Float, device));
    let mut best_indices = Tensor::empty([q[0], 0], (Kind::Int64, device));
    let mut start = 0;
    while start < n[0] {
        let len = block.min(n[0] - start);
        let part = index.narrow(0, start, len).to_kind(Kind::Float).to_device(device);
        // The block's own best k first: only 2k candidates per query are merged.
        let (top, at) = queries.matmul(&part.transpose(0, 1)).topk(k.min(len), 1, true, true);
        let scores = Tensor::cat(&[best_scores, top], 1);
        let indices = Tensor::cat(&[best_indices, at + start], 1);
        let (top, at) = scores.topk(k.min(scores.size()[1]), 1, true, true);
        best_indices = indices.gather(1, &at, false);
        best_scores = top;
        start += len;
    }
    Ok((best_scores, best_indices))
}

/// One hit: the index row and its cosine similarity to the query.
pub type Hit = (usize, f32);

/// A searchable set of embeddings (rows scaled to unit length when the index is built).
#[derive(Debug)]
pub struct VectorIndex {
    vectors: Tensor,
    /// The approximate graph, when the index was built with one.
    graph: Option<fusion_ann::HnswIndex>,
}

impl VectorIndex {
    /// An index of `vectors` `[N, D]`, searched exactly ([`top_k`] in blocks of
    /// [`EXACT_BLOCK`]).
    pub fn exact(vectors: &Tensor) -> Result<Self> {
        Ok(Self {
            vectors: unit_rows(vectors)?,
            graph: None,
        })
    }

    /// An index of `vectors` `[N, D]` searched through an HNSW graph (approximate; see
    /// [`VectorIndex::recall_against_exact`]).
    pub fn approximate(vectors: &Tensor, params: &fusion_ann::HnswParams) -> Result<Self> {
        let vectors = unit_rows(vectors)?;
        let dim = vectors.size()[1] as usize;
        let flat = Vec::<f32>::try_from(vectors.reshape([-1]))?;
        let graph = fusion_ann::HnswIndex::build(&flat, dim, params).map_err(|e| Error::Shape(e.to_string()))?;
        Ok(Self {
            vectors,
            graph: Some(graph),
        })
    }

    /// Whether searches go through the approximate graph.
    pub fn is_approximate(&self) -> bool {
        self.graph.is_some()
    }

    /// The share of the exact search's `k` best rows that this index's search finds for
    /// `queries` `[Q, D]` (1 for an exact index).
    pub fn recall_against_exact(&self, queries: &Tensor, k: usize) -> Result<f64> {
        let rows = |hits: Vec<Vec<Hit>>| -> Vec<Vec<usize>> {
            hits.into_iter()
                .map(|h| h.into_iter().map(|(row, _)| row).collect())
                .collect()
        };
        let found = rows(self.search(queries, k)?);
        let exact = rows(Self::exact_search(&self.vectors, &unit_rows(queries)?, k)?);
        Ok(fusion_ann::recall(&found, &exact))
    }

    /// The rows indexed, scaled to unit length, `[N, D]` on the CPU.
    pub fn vectors(&self) -> &Tensor {
        &self.vectors
    }

    /// Rows indexed.
    pub fn len(&self) -> usize {
        self.vectors.size()[0] as usize
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` indexed rows most similar to each query row of `queries` `[Q, D]`, most
    /// similar first.
    pub fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let queries = unit_rows(queries)?;
        let dim = self.vectors.size()[1];
        if queries.size()[1] != dim {
            return Err(Error::Shape(format!(
                "queries of {} values for an index of {dim}",
                queries.size()[1]
            )));
        }
        if let Some(graph) = &self.graph {
            return Vec::<Vec<f32>>::try_from(&queries)?
                .iter()
                .map(|query| graph.search(query, k).map_err(|e| Error::Shape(e.to_string())))
                .collect();
        }
        Self::exact_search(&self.vectors, &queries, k)
    }

    fn exact_search(vectors: &Tensor, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let (scores, indices) = top_k(queries, vectors, k, EXACT_BLOCK)?;
        let scores = Vec::<Vec<f32>>::try_from(&scores)?;
        let indices = Vec::<Vec<i64>>::try_from(&indices)?;
        Ok(indices
            .into_iter()
            .zip(scores)
            .map(|(at, score)| at.into_iter().map(|i| i as usize).zip(score).collect())
            .collect())
    }
}

/// The rows of a `[N, D]` tensor scaled to unit length, as float on the CPU.
fn unit_rows(vectors: &Tensor) -> Result<Tensor> {
    if vectors.dim() != 2 {
        return Err(Error::Shape(format!(
            "embeddings of shape {:?}: expected [N, D]",
            vectors.size()
        )));
    }
    Ok(crate::contrastive::l2_normalize(
        &vectors.to_kind(Kind::Float).to_device(tch::Device::Cpu),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approximate_index_finds_what_the_exact_one_finds() -> Result<()> {
        tch::manual_seed(9);
        let vectors = Tensor::randn([3000, 16], (Kind::Float, tch::Device::Cpu));
        let queries = Tensor::randn([50, 16], (Kind::Float, tch::Device::Cpu));
        let exact = VectorIndex::exact(&vectors)?;
        assert_eq!(exact.recall_against_exact(&queries, 10)?, 1.0);
        let graph = VectorIndex::approximate(&vectors, &fusion_ann::HnswParams::default())?;
        assert!(graph.is_approximate() && !exact.is_approximate());
        let recall = graph.recall_against_exact(&queries, 10)?;
        assert!(recall >= 0.95, "{recall}");
        // Scores are cosines either way.
        let (a, b) = (&exact.search(&queries, 1)?[0][0], &graph.search(&queries, 1)?[0][0]);
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-4, "{a:?} {b:?}");
        Ok(())
    }

    #[test]
    fn blocked_top_k_is_the_exact_top_k() -> Result<()> {
        tch::manual_seed(4);
        let queries = Tensor::randn([7, 5], (Kind::Float, tch::Device::Cpu));
        let index = Tensor::randn([103, 5], (Kind::Float, tch::Device::Cpu));
        let (full_scores, full_indices) = queries.matmul(&index.transpose(0, 1)).topk(10, 1, true, true);
        for block in [1, 8, 10, 64, 1000] {
            let (scores, indices) = top_k(&queries, &index, 10, block)?;
            assert!(
                f64::try_from((&scores - &full_scores).abs().max())? < 1e-5,
                "block {block}"
            );
            assert!(indices.equal(&full_indices), "block {block}");
        }
        let (scores, _) = top_k(&queries, &index.narrow(0, 0, 3), 10, 2)?;
        assert_eq!(scores.size(), [7, 3], "k is at most the index size");
        assert!(top_k(&queries, &index.narrow(1, 0, 4), 3, 8).is_err());
        Ok(())
    }

    #[test]
    fn an_index_returns_the_most_similar_rows_first_by_cosine() -> Result<()> {
        // Rows of different lengths: cosine, not the inner product, ranks them.
        let index = Tensor::from_slice(&[10.0f32, 0.0, 1.0, 0.2, 0.0, 0.5, -3.0, 0.0]).view([4, 2]);
        let hits = VectorIndex::exact(&index)?.search(&Tensor::from_slice(&[1.0f32, 0.2]).view([1, 2]), 3)?;
        let order: Vec<usize> = hits[0].iter().map(|h| h.0).collect();
        // Row 1 points where the query does (cosine 1); row 0 is longer but off by 11°.
        assert_eq!(order, [1, 0, 2]);
        assert!(
            (hits[0][0].1 - 1.0).abs() < 1e-5 && (hits[0][1].1 - 1.0 / 1.04f32.sqrt()).abs() < 1e-5,
            "{hits:?}"
        );
        assert!(
            VectorIndex::exact(&index)?
                .search(&Tensor::ones([1, 3], (Kind::Float, tch::Device::Cpu)), 1)
                .is_err()
        );
        Ok(())
    }
}
