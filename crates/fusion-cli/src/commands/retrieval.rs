//! `fusion embed`, `fusion search` and `fusion eval`'s zero-shot classification: what a
//! contrastive run does besides its retrieval metrics.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use fusion_data::{Record, Split};
use fusion_run::{
    ClassDescriptions, Embeddings, Predictor, Run, SearchAnswer, Searcher, ZeroShotRecord, prompts_from_templates,
};
use tch::Device;

use crate::ui::{Shown, Ui, print_line};

/// `fusion embed`: every usable record's embedding per modality, as safetensors at `out`
/// and its ids, labels and modalities as JSON beside it (an index to search), or as an
/// Arrow IPC file when `out` ends in `.arrow`, `.feather` or `.ipc` (for data tools).
pub fn embed(
    folder: &Path,
    manifest: Option<&Path>,
    split: Option<Split>,
    out: &Path,
    ui: Ui,
    device: Device,
) -> Result<()> {
    let predictor = Predictor::load(folder, device)?;
    let embeddings = predictor.embed_manifest(manifest, split, &Shown::new(ui))?;
    if embeddings.ids.is_empty() {
        bail!("no record could be embedded ({} unreadable)", embeddings.problems.len());
    }
    let arrow = Embeddings::is_arrow_path(out);
    match arrow {
        true => embeddings.write_arrow(out)?,
        false => embeddings.write(out)?,
    }
    for problem in &embeddings.problems {
        ui.warn(format!("not embedded: {}", fusion_run::describe(problem)));
    }
    let size = embeddings.vectors.size();
    let written = match arrow {
        true => format!("{} (Arrow IPC)", out.display()),
        false => format!(
            "{} (ids in {})",
            out.display(),
            Embeddings::description_path(out).display()
        ),
    };
    ui.say(format!(
        "{} records × {} modalities ({}) × {} values → {written}",
        size[0],
        size[1],
        embeddings.modalities.join(", "),
        size[2],
    ));
    ui.result(&serde_json::json!({
        "records": size[0],
        "modalities": embeddings.modalities,
        "dim": size[2],
        "out": out,
        "not_embedded": embeddings.problems.len(),
    }))
}

/// Records in the similarity plot of a contrastive run's evaluation.
const SIMILARITY_SAMPLE: usize = 12;

/// `plots/similarity.png/.svg`: the cosine similarities between the first two modalities of
/// the first records of `split` that have both (the diagonal holds each record's own pair).
pub fn plot_similarity(
    folder: &Path,
    predictor: &Predictor,
    manifest: Option<&Path>,
    split: Split,
    ui: Ui,
) -> Result<()> {
    let embeddings = predictor.embed_manifest(manifest, Some(split), &Shown::new(ui))?;
    let [first, second] = [0, 1].map(|m| embeddings.modalities.get(m).cloned().unwrap_or_default());
    let rows: Vec<usize> = (0..embeddings.ids.len())
        .filter(|&r| embeddings.vector(r, 0).is_some() && embeddings.vector(r, 1).is_some())
        .take(SIMILARITY_SAMPLE)
        .collect();
    if rows.len() < 2 {
        return Ok(());
    }
    let stack = |m: usize| {
        let vectors: Vec<tch::Tensor> = rows.iter().filter_map(|&r| embeddings.vector(r, m)).collect();
        tch::Tensor::stack(&vectors, 0)
    };
    let matrix = Vec::<Vec<f32>>::try_from(stack(0).matmul(&stack(1).transpose(0, 1)))?;
    let ids: Vec<String> = rows.iter().map(|&r| embeddings.ids[r].clone()).collect();
    crate::plots::similarity(
        &super::plot_path(&Run::new(folder), "similarity")?,
        &format!(
            "Cosine similarity of {first} and {second} embeddings ({}, {} records)",
            split.name(),
            rows.len()
        ),
        (&ids, &ids),
        &matrix,
        (&format!("{first} ↓"), &format!("{second} →")),
    )?;
    Ok(())
}

/// What `fusion search` looks for.
pub struct Query {
    /// Text, embedded by the modality that reads a record's text.
    pub text: Option<String>,
    /// A picture file.
    pub image: Option<PathBuf>,
    /// A recording.
    pub audio: Option<PathBuf>,
}

/// `fusion search`: the `k` indexed records most similar to the query, in the modality
/// `among` (default: the first of the index's other than the query's); through an HNSW
/// graph when more than `approximate_above` vectors are indexed.
pub fn search(
    folder: &Path,
    index: &Path,
    query: Query,
    among: Option<&str>,
    (k, approximate_above): (usize, Option<usize>),
    ui: Ui,
    device: Device,
) -> Result<()> {
    let predictor = Predictor::load(folder, device)?;
    let mut searcher = Searcher::open(&predictor, index)?;
    let record = Record {
        id: "query".into(),
        text: query.text,
        image: query.image,
        audio: query.audio,
        ..Record::default()
    };
    let query = predictor.embed_records(&[record])?.record_vectors(0)?;
    if let (Some(above), Some(from)) = (approximate_above, query.keys().next().filter(|_| query.len() == 1)) {
        let key = searcher.key_for(from, among)?;
        for graph in searcher.approximate_above(above, Some(&key), k)? {
            ui.say(format!("approximate search over {graph}"));
        }
    }
    let answer = searcher.search(&query, among, k)?;
    if ui.json {
        return ui.result(&answer);
    }
    let SearchAnswer {
        query_modality: from_name,
        among: key,
        hits,
        ..
    } = answer;
    let indexed = searcher.embeddings();
    let mut out = std::io::stdout().lock();
    print_line(
        &mut out,
        &format!("{from_name} → {key}, {} of {} records:", hits.len(), indexed.ids.len()),
    );
    for (rank, hit) in hits.iter().enumerate() {
        let label = if hit.label.is_empty() {
            String::new()
        } else {
            format!("  ({})", hit.label)
        };
        print_line(
            &mut out,
            &format!("{:>3}. {:.4}  {}{label}", rank + 1, hit.score, hit.id),
        );
    }
    Ok(())
}

/// How `fusion eval` was asked for zero-shot classification.
pub struct ZeroShotArgs {
    /// Class names, each described by the prompts of `templates`.
    pub classes: Vec<String>,
    /// Prompt templates (`{}`: the class name).
    pub templates: Vec<String>,
    /// Prototypes of this many train records per class instead of prompts.
    pub shots: Option<usize>,
    /// The modality classified.
    pub modality: Option<String>,
}

impl ZeroShotArgs {
    /// Whether any zero-shot option was given.
    pub fn asked(&self) -> bool {
        !self.classes.is_empty() || self.shots.is_some()
    }
}

/// `fusion eval` with zero-shot options: the split's records classified by their similarity
/// to class descriptions, reported like a classifier, and `zero_shot.json` in the run.
pub fn zero_shot(
    folder: &Path,
    manifest: Option<&Path>,
    split: Split,
    args: ZeroShotArgs,
    ui: Ui,
    device: Device,
) -> Result<()> {
    let Some(modality) = args.modality.as_deref() else {
        bail!("zero-shot classification needs --modality: which modality's records to classify");
    };
    let descriptions = match args.shots {
        Some(0) => bail!("--shots: at least one example per class"),
        Some(shots) => ClassDescriptions::Prototypes {
            split: Split::Train,
            shots,
        },
        None => ClassDescriptions::Prompts(prompts_from_templates(&args.classes, &args.templates)),
    };
    let predictor = Predictor::load(folder, device)?;
    let record: ZeroShotRecord = predictor.zero_shot(manifest, split, modality, &descriptions, &Shown::new(ui))?;
    Run::new(folder).write_json("zero_shot.json", &record)?;
    let m = &record.metrics;
    ui.say(format!(
        "zero-shot ({}) on {}, {}: accuracy {:.4}, macro-F1 {:.4}, ECE {:.4} on {} records of {} classes (majority class {:.4}; chance {:.4}); {} left out",
        record.method,
        record.split,
        record.modality,
        m.accuracy,
        m.macro_f1,
        m.ece,
        m.count,
        record.classes.len(),
        record.majority,
        1.0 / record.classes.len() as f64,
        record.left_out
    ));
    ui.result(&record)
}
