//! Log-mel throughput: read every WAV in a folder and compute its log-mel spectrogram.
//!
//! ```sh
//! cargo run --release -p fusion-audio --example bench_audio -- DIR [--threads N] [--repeat 3]
//! ```
//! `benchmarks/audio.sh` runs it beside librosa and torchaudio on the same files.

use std::{path::PathBuf, time::Instant};

use fusion_audio::{DbConfig, MelConfig, MelExtractor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: bench_audio DIR [--threads N] [--repeat R]")?);
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
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    files.sort();
    // FSDD is 8 kHz: 64 mel bands, 32 ms windows, 8 ms hop.
    let extractor = MelExtractor::new(MelConfig {
        n_fft: 256,
        hop_length: 64,
        n_mels: 64,
        ..MelConfig::new(8000)
    })?;
    let mut best = f64::INFINITY;
    let mut frames = 0;
    for _ in 0..repeat {
        let started = Instant::now();
        let results = extractor.log_mel_files(&files, &DbConfig::default());
        best = best.min(started.elapsed().as_secs_f64());
        frames = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|s| s.frames)
            .sum::<usize>();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            return Err(format!("{e}").into());
        }
    }
    println!(
        "fusion-audio: {} clips ({frames} frames), {} threads: {:.0} clips/s",
        files.len(),
        rayon::current_num_threads(),
        files.len() as f64 / best
    );
    Ok(())
}
