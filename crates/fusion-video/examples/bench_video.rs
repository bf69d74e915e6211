//! Video decoding throughput: every frame decoded and scaled to 224×224 RGB, and 16
//! uniformly sampled frames against decoding them all.
//!
//! ```sh
//! cargo run --release -p fusion-video --example bench_video -- FILE [--repeat 3]
//! ```
//! `benchmarks/video.sh` runs it beside the ffmpeg CLI and PyAV on the same file.

use std::time::Instant;

use fusion_video::{Fit, FrameSize, Sampling, read_frames};

fn best_of<T>(repeat: usize, mut run: impl FnMut() -> fusion_video::Result<T>) -> fusion_video::Result<(f64, T)> {
    let mut best = (f64::INFINITY, None);
    for _ in 0..repeat {
        let started = Instant::now();
        let out = run()?;
        let seconds = started.elapsed().as_secs_f64();
        if seconds < best.0 {
            best = (seconds, Some(out));
        }
    }
    Ok((
        best.0,
        best.1
            .ok_or_else(|| fusion_video::Error::InvalidSetting("repeat 0".into()))?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: bench_video FILE [--repeat R]")?;
    let repeat = match (args.next().as_deref(), args.next()) {
        (Some("--repeat"), Some(n)) => n.parse::<usize>()?.max(1),
        _ => 3,
    };
    let size = Some(FrameSize {
        width: 224,
        height: 224,
        fit: Fit::Stretch,
    });
    let (all_seconds, all) = best_of(repeat, || read_frames(&file, Sampling::All, size))?;
    println!(
        "fusion-video: {} frames decoded + scaled to 224x224 RGB in {all_seconds:.3} s: {:.0} frames/s",
        all.len(),
        all.len() as f64 / all_seconds
    );
    let (sparse_seconds, sparse) = best_of(repeat, || read_frames(&file, Sampling::Uniform(16), size))?;
    println!(
        "fusion-video: 16 uniform frames in {sparse_seconds:.3} s ({} decoded): {:.1}x faster than all frames",
        sparse.decoded_frames,
        all_seconds / sparse_seconds
    );
    Ok(())
}
