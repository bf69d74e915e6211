//! Search over N random unit vectors of 64 values: exact (one matrix product per block of
//! the index, libtorch) and approximate (an HNSW graph, fusion-ann), single queries and a
//! batch of 1,000; build time, queries per second, resident memory, the graph's recall@10.
//!
//!     cargo run --release -p fusion-core --example search_bench -- 10000 100000 1000000
//!
//! `--exact-only N` skips the graph from N vectors up. One thread for single queries
//! (`tch::set_num_threads(1)` and one search at a time), every core for the batch.

use std::time::Instant;

use fusion_core::search::VectorIndex;
use tch::{Device, Kind, Tensor};

const DIM: i64 = 64;
const K: usize = 10;

fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / (1 << 20) as f64)
}

fn per_second(count: usize, started: Instant) -> f64 {
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() -> fusion_core::Result<()> {
    let mut sizes = Vec::new();
    let mut exact_only = usize::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact-only" => exact_only = args.next().and_then(|n| n.parse().ok()).unwrap_or(usize::MAX),
            n => sizes.push(
                n.parse::<usize>()
                    .map_err(|e| fusion_core::Error::Config(format!("{n}: {e}")))?,
            ),
        }
    }
    let threads = tch::get_num_threads();
    println!("| vectors | index | build s | memory MB | single queries/s | batch of 1,000 queries/s | recall@10 |");
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        tch::manual_seed(n as i64);
        let before = resident_mb();
        let vectors = Tensor::randn([n as i64, DIM], (Kind::Float, Device::Cpu));
        let queries = Tensor::randn([1000, DIM], (Kind::Float, Device::Cpu));
        let started = Instant::now();
        let exact = VectorIndex::exact(&vectors)?;
        let built = started.elapsed().as_secs_f64();
        let memory = resident_mb() - before;
        tch::set_num_threads(1);
        let started = Instant::now();
        for q in 0..200 {
            exact.search(&queries.narrow(0, q, 1), K)?;
        }
        let single = per_second(200, started);
        tch::set_num_threads(threads);
        let started = Instant::now();
        exact.search(&queries, K)?;
        let batch = per_second(1000, started);
        println!("| {n} | exact | {built:.2} | {memory:.0} | {single:.0} | {batch:.0} | 1 |");
        if n >= exact_only {
            continue;
        }
        let before = resident_mb();
        let started = Instant::now();
        let graph = VectorIndex::approximate(&vectors, &fusion_ann::HnswParams::default())?;
        let built = started.elapsed().as_secs_f64();
        let memory = resident_mb() - before;
        let started = Instant::now();
        for q in 0..1000 {
            graph.search(&queries.narrow(0, q, 1), K)?;
        }
        let single = per_second(1000, started);
        let started = Instant::now();
        graph.search(&queries, K)?;
        let batch = per_second(1000, started);
        let recall = graph.recall_against_exact(&queries.narrow(0, 0, 200), K)?;
        println!("| {n} | HNSW (ef 64 / 128) | {built:.1} | {memory:.0} | {single:.0} | {batch:.0} | {recall:.3} |");
    }
    Ok(())
}
