//! Images/s for decode + resize (shorter side 256, bilinear) + centre crop 224 +
//! normalise, over every image in a folder.
//!
//! ```sh
//! cargo run --release -p fusion-image --example bench_image -- DIR [--threads N] [--repeat 3]
//! ```
//! `benchmarks/image.sh` runs it beside a torchvision/PIL pipeline on the same files.

use std::{path::PathBuf, time::Instant};

use fusion_image::Pipeline;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: bench_image DIR [--threads N] [--repeat R]")?);
    let (mut threads, mut repeat) = (None, 3usize);
    while let Some(flag) = args.next() {
        let value: usize = args.next().ok_or(format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--threads" => threads = Some(value),
            "--repeat" => repeat = value.max(1),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let pipeline = Pipeline::imagenet(256, 224);
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let started = Instant::now();
        let results = pipeline.load_batch(&files, 0);
        best = best.min(started.elapsed().as_secs_f64());
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            return Err(format!("{e}").into());
        }
    }
    println!(
        "fusion-image: {} images, {} threads: {:.0} images/s",
        files.len(),
        rayon::current_num_threads(),
        files.len() as f64 / best
    );
    Ok(())
}
