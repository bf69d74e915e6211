//! The approximate index against the exact search on 100,000 random 32-d vectors (the
//! hardest case for a graph index: no cluster structure to follow).

use fusion_ann::{HnswIndex, HnswParams, exact_top_k, recall};

/// Uniform values in [-0.5, 0.5) from a seeded xorshift.
fn random(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

#[test]
fn recall_at_10_is_at_least_95_percent_of_exact_on_100k_random_vectors() {
    let dim = 32;
    let rows = random(100_000 * dim, 7);
    let index = HnswIndex::build(&rows, dim, &HnswParams::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.len(), 100_000);
    let queries = random(100 * dim, 8);
    let (mut found, mut exact) = (Vec::new(), Vec::new());
    for query in queries.chunks(dim) {
        let approximate = index.search(query, 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(approximate.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        found.push(approximate.into_iter().map(|(row, _)| row).collect());
        let reference = exact_top_k(&rows, dim, query, 10).unwrap_or_else(|e| panic!("{e}"));
        exact.push(reference.into_iter().map(|(row, _)| row).collect());
    }
    let recall = recall(&found, &exact);
    assert!(recall >= 0.95, "recall@10 {recall}");
}
