//! Throughput of tokenization and of MiniLM sentence embeddings on CPU.
//!
//! ```sh
//! cargo run --release -p fusion-text --features torch --example bench_text -- \
//!     --sentences FILE [--model DIR] [--batch 32] [--threads 2] [--repeat 3]
//! ```
//! `benchmarks/text.sh` runs it beside sentence-transformers and `tokenizers` on the same
//! sentences and thread count.

use std::{path::PathBuf, time::Instant};

use fusion_text::SentenceEncoder;

struct Options {
    sentences: PathBuf,
    model: PathBuf,
    batch: usize,
    threads: Option<i32>,
    repeat: usize,
}

fn options() -> Result<Options, String> {
    let models = std::env::var_os("FUSION_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut options = Options {
        sentences: PathBuf::new(),
        model: models.join("all-MiniLM-L6-v2"),
        batch: 32,
        threads: None,
        repeat: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--sentences" => options.sentences = value.into(),
            "--model" => options.model = value.into(),
            "--batch" => options.batch = number(&value)?,
            "--threads" => options.threads = Some(number(&value)? as i32),
            "--repeat" => options.repeat = number(&value)?.max(1),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if options.sentences.as_os_str().is_empty() {
        return Err("--sentences FILE is required (one sentence per line)".into());
    }
    Ok(options)
}

/// Best of `repeat` runs, in sentences per second.
fn best_rate(
    count: usize,
    repeat: usize,
    mut run: impl FnMut() -> Result<(), fusion_text::Error>,
) -> Result<f64, fusion_text::Error> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let started = Instant::now();
        run()?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(count as f64 / best)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    if let Some(threads) = options.threads {
        // Tokenization threads follow RAYON_NUM_THREADS (set by benchmarks/text.sh).
        tch::set_num_threads(threads);
    }
    let text = fusion_text::read_text(&options.sentences)?;
    let sentences: Vec<&str> = text.lines().collect();
    let model = SentenceEncoder::from_dir(&options.model, tch::Device::Cpu)?;
    let n = sentences.len();
    let tokenize = best_rate(n, options.repeat, || {
        for chunk in sentences.chunks(options.batch) {
            model.tokenizer.encode_batch(chunk)?;
        }
        Ok(())
    })?;
    let _warm_up = model.encode(&sentences[..options.batch.min(n)], options.batch)?;
    let embed = best_rate(n, options.repeat, || {
        model.encode(&sentences, options.batch).map(|_| ())
    })?;
    println!(
        "fusion-text: {n} sentences, batch {}, {} threads: tokenize {tokenize:.0} sentences/s, embed {embed:.1} sentences/s",
        options.batch,
        tch::get_num_threads()
    );
    Ok(())
}
