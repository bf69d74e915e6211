#![doc = include_str!("../README.md")]

use instant_distance::{Builder, HnswMap, Point, Search};

/// What can go wrong building or searching an index.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnnError {
    /// Rows and dimension do not fit together, or a vector is empty or not finite.
    #[error("{0}")]
    Shape(String),
}

/// A unit vector; its distance to another is `1 − cosine`.
#[derive(Debug, Clone)]
struct Unit(Box<[f32]>);

impl Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Lanes summed apart in [`dot`].
const LANES: usize = 8;

/// The dot product, summed in [`LANES`] independent partial sums: a single running sum
/// fixes the order of additions and keeps the compiler from using vector instructions,
/// and distances are most of an HNSW graph's build and search time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `row` scaled to unit length (a zero row stays zero).
fn unit(row: &[f32]) -> Unit {
    let norm = dot(row, row).sqrt().max(1e-12);
    Unit(row.iter().map(|v| v / norm).collect())
}

/// How the graph is built and searched (larger: better recall, slower).
#[derive(Debug, Clone, PartialEq)]
pub struct HnswParams {
    /// Candidates kept while inserting each vector.
    pub ef_construction: usize,
    /// Candidates kept while searching.
    pub ef_search: usize,
    /// Seed of the layer assignment (the same seed and rows give the same graph).
    pub seed: u64,
}

impl Default for HnswParams {
    /// 64 and 128: recall@10 ≥ 0.95 on 100k random 32-d vectors (this crate's test).
    fn default() -> Self {
        Self {
            ef_construction: 64,
            ef_search: 128,
            seed: 1,
        }
    }
}

/// An HNSW graph over the rows of a matrix, searched by cosine similarity.
pub struct HnswIndex {
    map: HnswMap<Unit, usize>,
    dim: usize,
    len: usize,
    ef_search: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("len", &self.len)
            .finish()
    }
}

/// Splits `rows` (row-major, `dim` values each) into rows, checking them.
fn rows_of(rows: &[f32], dim: usize) -> Result<std::slice::Chunks<'_, f32>, AnnError> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(AnnError::Shape(format!(
            "{} values are no whole number of rows of {dim}",
            rows.len()
        )));
    }
    if let Some(at) = rows.iter().position(|v| !v.is_finite()) {
        return Err(AnnError::Shape(format!(
            "row {} holds a value that is not finite",
            at / dim
        )));
    }
    Ok(rows.chunks(dim))
}

fn checked_query(query: &[f32], dim: usize) -> Result<(), AnnError> {
    if query.len() != dim || query.iter().any(|v| !v.is_finite()) {
        return Err(AnnError::Shape(format!(
            "a query of {} values (finite ones needed) for vectors of {dim}",
            query.len()
        )));
    }
    Ok(())
}

impl HnswIndex {
    /// Builds the graph over `rows` (row-major, `dim` values each), in parallel.
    pub fn build(rows: &[f32], dim: usize, params: &HnswParams) -> Result<Self, AnnError> {
        let points: Vec<Unit> = rows_of(rows, dim)?.map(unit).collect();
        let len = points.len();
        let map = Builder::default()
            .ef_construction(params.ef_construction)
            .ef_search(params.ef_search)
            .seed(params.seed)
            .build(points, (0..len).collect());
        Ok(Self {
            map,
            dim,
            len,
            ef_search: params.ef_search,
        })
    }

    /// Vectors indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The (at most) `k` rows most similar to `query` as `(row, cosine)`, best first; `k`
    /// at most the search's candidates (`ef_search`).
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>, AnnError> {
        checked_query(query, self.dim)?;
        if k > self.ef_search {
            return Err(AnnError::Shape(format!(
                "{k} results asked of a graph searched with {} candidates: build it with ef_search ≥ k",
                self.ef_search
            )));
        }
        let query = unit(query);
        let mut search = Search::default();
        Ok(self
            .map
            .search(&query, &mut search)
            .take(k)
            .map(|item| (*item.value, 1.0 - item.distance))
            .collect())
    }
}

/// The `k` rows most similar to `query` by cosine, best first, by comparing every row.
pub fn exact_top_k(rows: &[f32], dim: usize, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>, AnnError> {
    checked_query(query, dim)?;
    let query = unit(query);
    let mut scored: Vec<(usize, f32)> = rows_of(rows, dim)?
        .enumerate()
        .map(|(i, row)| (i, dot(&unit(row).0, &query.0)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    Ok(scored)
}

/// Share of the exact results' rows that the approximate results found, over every query
/// (recall@k when each list holds k rows).
pub fn recall(approximate: &[Vec<usize>], exact: &[Vec<usize>]) -> f64 {
    let (found, wanted) = approximate
        .iter()
        .zip(exact)
        .fold((0usize, 0usize), |(found, wanted), (a, e)| {
            (found + e.iter().filter(|row| a.contains(row)).count(), wanted + e.len())
        });
    if wanted == 0 { 1.0 } else { found as f64 / wanted as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dot_product_in_lanes_equals_the_plain_sum() {
        for len in [0, 1, 7, 8, 9, 64, 67] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!(
                (f64::from(dot(&a, &b)) - plain).abs() < 1e-5,
                "{len}: {} vs {plain}",
                dot(&a, &b)
            );
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let rows = [1.0f32, 0.0, 0.0, 1.0, 0.5];
        assert!(HnswIndex::build(&rows, 2, &HnswParams::default()).is_err());
        assert!(HnswIndex::build(&[f32::NAN, 1.0], 2, &HnswParams::default()).is_err());
        let index = HnswIndex::build(&rows[..4], 2, &HnswParams::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(index.search(&[1.0], 1).is_err());
        assert!(index.search(&[1.0, 0.0], 129).is_err(), "more results than candidates");
        let hits = index.search(&[2.0, 0.1], 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1]);
        assert!((hits[0].1 - 2.0 / (4.01f32).sqrt()).abs() < 1e-5, "{hits:?}");
    }

    #[test]
    fn recall_counts_the_exact_rows_found() {
        // Two of the five exact rows.
        assert_eq!(recall(&[vec![1, 2, 3], vec![4, 5]], &[vec![3, 2, 9], vec![6, 7]]), 0.4);
        assert_eq!(recall(&[], &[]), 1.0);
    }
}
