//! The `fusion` command-line program.

mod commands;
mod glyphs;
mod parallel;
mod plots;
mod report;
mod ui;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use fusion_core::DeviceChoice;
use fusion_data::{Shard, Split};
use ui::Ui;

#[derive(Parser)]
#[command(name = "fusion", version, about = "Multi-modal fusion: train, evaluate, explain")]
struct Cli {
    /// Where to run: cpu, cuda, cuda:N or auto.
    #[arg(long, global = true, default_value = "auto")]
    device: DeviceChoice,
    /// Print nothing but errors (no progress bars).
    #[arg(long, global = true)]
    quiet: bool,
    /// Print the result as one JSON value (no text, no progress bars).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the libtorch runtime this binary uses and whether CUDA is usable.
    Info,
    /// Check every record of a manifest (JSONL or CSV): files exist, are regular files,
    /// decode, and are within limits. Bad records are listed with the reason; the exit
    /// status is 0 unless the manifest itself cannot be read (1), or, with `--strict`, 2 when
    /// any record, line or field is bad.
    Validate {
        /// The manifest.
        manifest: std::path::PathBuf,
        /// Also write the full report here (JSON).
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Exit with status 2 when any record is bad, any line unreadable or any field unknown.
        #[arg(long)]
        strict: bool,
        /// Largest decoded image, in pixels.
        #[arg(long, default_value_t = fusion_data::Limits::default().image_pixels)]
        max_image_pixels: u64,
        /// Longest audio clip, in seconds (read from the header).
        #[arg(long, default_value_t = fusion_data::Limits::default().audio_seconds)]
        max_audio_seconds: f64,
        /// Longest video, in seconds.
        #[arg(long, default_value_t = fusion_data::Limits::default().video_seconds)]
        max_video_seconds: f64,
        /// Largest text file, in bytes.
        #[arg(long, default_value_t = fusion_data::Limits::default().text_bytes)]
        max_text_bytes: u64,
        /// Largest image, audio or video file, in bytes.
        #[arg(long, default_value_t = fusion_data::Limits::default().file_bytes)]
        max_file_bytes: u64,
        /// Most audio channels.
        #[arg(long, default_value_t = fusion_data::Limits::default().audio_channels)]
        max_audio_channels: u16,
        /// Read files outside the manifest's folder too (by default such a record is bad).
        #[arg(long)]
        allow_paths_outside_manifest: bool,
    },
    /// Extract a configuration's features into the feature cache (all records, or one
    /// shard of them so that several processes or machines share the work).
    Extract {
        /// Run configuration (JSON).
        #[arg(long)]
        config: PathBuf,
        /// Only records whose index modulo n is i.
        #[arg(long)]
        shard: Option<Shard>,
        /// Also write every split's model inputs and labels to this safetensors file
        /// (`{split}.{modality}`, `{split}.{modality}.present`, `{split}.labels`).
        #[arg(long, conflicts_with = "shard")]
        export: Option<PathBuf>,
    },
    /// Train the configuration's fusion model into a run folder (resumes when the folder
    /// holds a checkpoint of the same configuration), then evaluate it on test. Without a
    /// configuration, `--manifest TABLE --label COLUMN` infers each column's kind, prints
    /// them, and writes the preset's configuration to RUN/config.json before training.
    Train {
        /// Run configuration (JSON).
        #[arg(long, required_unless_present = "manifest", conflicts_with_all = ["manifest", "label"])]
        config: Option<PathBuf>,
        /// A table (CSV with a header row, or JSON Lines) to train on without a configuration.
        #[arg(long, requires = "label")]
        manifest: Option<PathBuf>,
        /// The column to predict (with --manifest).
        #[arg(long, requires = "manifest")]
        label: Option<String>,
        /// With --manifest: `fast` (frozen pretrained encoders, small pictures through a
        /// LeNet, a head per modality fused late) or `best` (classification: `fast`'s
        /// encoders under late, early and hybrid fusion, then a greedy ensemble of them;
        /// otherwise fine-tuned encoders and a fusion transformer).
        #[arg(long, default_value = "fast", requires = "manifest")]
        preset: fusion_run::Preset,
        /// With `--preset best`: seconds the portfolio may take; a member that would end
        /// past them is not started (the first always is).
        #[arg(long, requires = "manifest")]
        time_limit: Option<f64>,
        /// With `--preset best`: folds each member is bagged over (1: no bagging); by
        /// default 5 when the val split holds fewer than 500 records, else 1
        #[arg(long, requires = "manifest")]
        folds: Option<usize>,
        /// With --manifest: kinds of some columns instead of the inferred ones, as
        /// `name=kind,...` (id, split, group, image, audio, video, text, numeric,
        /// categorical, ignore).
        #[arg(long, requires = "manifest", value_parser = parse_column_types)]
        column_types: Option<std::collections::BTreeMap<String, fusion_data::ColumnKind>>,
        /// With --manifest: `classification`, `multi_label` (`;`-separated tags) or
        /// `regression` instead of the task the label column suggests.
        #[arg(long, requires = "manifest")]
        task: Option<fusion_data::LabelKind>,
        /// With --manifest: read files outside the table's folder too.
        #[arg(long, requires = "manifest")]
        allow_paths_outside_manifest: bool,
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Override the configuration's epoch count (e.g. to continue a finished run).
        #[arg(long)]
        epochs: Option<usize>,
        #[command(flatten)]
        parallel: parallel::ParallelArgs,
    },
    /// Evaluate a trained run on a split of its manifest (or of another manifest); a
    /// contrastive run's retrieval in every direction, or with --classes / --shots its
    /// zero-shot classification.
    Eval(EvalArgs),
    /// Write each record's embedding per modality (a contrastive run): safetensors at
    /// --out, the ids, labels and modalities as JSON beside it (an index for `search`); or,
    /// for data tools, one Arrow IPC file when --out ends in `.arrow`/`.feather`/`.ipc`.
    Embed {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Manifest (default: the run's).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Only this split's records (default: every record).
        #[arg(long)]
        split: Option<Split>,
        /// Output file (`.safetensors`, or `.arrow`/`.feather`/`.ipc`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Search an index written by `fusion embed` with a text, a picture or a recording
    /// (exact: one matrix product per block of the index).
    Search {
        /// Run folder (the contrastive run that wrote the index).
        #[arg(long)]
        run: PathBuf,
        /// The `.safetensors` file `fusion embed` wrote.
        #[arg(long)]
        index: PathBuf,
        /// Text to search with.
        #[arg(long, required_unless_present_any = ["image", "audio"], conflicts_with_all = ["image", "audio"])]
        query: Option<String>,
        /// A picture to search with.
        #[arg(long, conflicts_with = "audio")]
        image: Option<PathBuf>,
        /// A recording to search with.
        #[arg(long)]
        audio: Option<PathBuf>,
        /// The modality searched (default: the index's first other than the query's).
        #[arg(long)]
        among: Option<String>,
        /// Records returned.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Above this many indexed vectors, search through an HNSW graph built for the call
        /// (approximate; its recall@k against exact search on 100 of the vectors is printed).
        /// Exact search otherwise: on this project's measurements the graph only pays off
        /// far beyond 100,000 vectors.
        #[arg(long)]
        approximate_above: Option<usize>,
    },
    /// Predict every usable record of a manifest: JSON lines with probabilities; records
    /// that cannot be read are written as `{"id", "error"}` lines.
    Predict {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Manifest (default: the run's).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Output file (default: RUN/predictions.jsonl).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Add to each line a conformal prediction `set` holding the label with this
        /// probability (e.g. 0.9); needs `fusion calibrate` first.
        #[arg(long)]
        coverage: Option<f64>,
    },
    /// Serve a trained run (or ensemble) over HTTP with dynamic batching: `POST
    /// /v1/predict`, `POST /v1/search` (with --index), `GET /v1/signature`, `/healthz`,
    /// `/readyz`, `/metrics` and a page to try the model at `/`. Stops on SIGTERM or Ctrl-C after answering what it admitted.
    Serve {
        /// Run or ensemble folder.
        #[arg(long)]
        run: PathBuf,
        /// Address to listen on (loopback unless told otherwise; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Most records in one pass through the model.
        #[arg(long, default_value_t = 32)]
        max_batch: usize,
        /// Longest a request waits for others to join its batch, in milliseconds.
        #[arg(long, default_value_t = 5)]
        max_delay_ms: u64,
        /// Most records admitted at once; a request beyond is answered 429 at once.
        #[arg(long, default_value_t = 256)]
        queue: usize,
        /// Most records in one request.
        #[arg(long, default_value_t = 64)]
        max_records: usize,
        /// Longest a request may take, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
        /// Requests decoded at once (default: the cores).
        #[arg(long)]
        decode_threads: Option<usize>,
        /// Largest request body, in MiB.
        #[arg(long, default_value_t = 64)]
        max_body_mb: usize,
        /// Most MiB of request bodies held at once; a body beyond is answered 429 before it
        /// is read.
        #[arg(long, default_value_t = 256)]
        bodies_mb: usize,
        /// Longest a request body may take to arrive, in milliseconds (408 beyond).
        #[arg(long, default_value_t = 30_000)]
        body_timeout_ms: u64,
        /// A file holding the bearer token `/v1/*` and `/metrics` require.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The one folder whose files a request may name by path (none otherwise).
        #[arg(long)]
        files: Option<PathBuf>,
        /// Where uploads are written while decoded (default: /dev/shm when it is not small,
        /// else the system's temporary folder).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// An index of a contrastive run (`fusion embed`) for `POST /v1/search`.
        #[arg(long)]
        index: Option<PathBuf>,
        /// Search each of the index's modalities holding more than this many vectors through
        /// an HNSW graph (approximate; its recall against exact search is printed).
        #[arg(long, requires = "index")]
        approximate_above: Option<usize>,
    },
    /// Fit a run's (or ensemble's) calibration on its val split: a temperature for its
    /// class probabilities and the scores of conformal prediction sets, stored with it and
    /// applied by `eval` and `predict` from then on.
    Calibrate {
        /// Run or ensemble folder.
        #[arg(long)]
        run: PathBuf,
        /// Manifest (default: the run's).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Per-modality Shapley values of a trained run, with a plot.
    Explain(RunArgs),
    /// Accuracy of a trained run with modalities missing and under growing noise, with plots.
    Robustness {
        #[command(flatten)]
        run: RunArgs,
        /// Only the missing-modality subsets, no noise curves (a fraction of the time).
        #[arg(long)]
        no_noise: bool,
    },
    /// Export a trained run as TorchScript.
    Export {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Output file (default: RUN/model.pt).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Train several fusion methods (the configuration's `compare` list, or a default set)
    /// and each modality alone with the same features and seed; one table and one plot.
    Compare {
        /// Run configuration (JSON).
        #[arg(long)]
        config: PathBuf,
        /// Output folder (one run folder per method, report.md).
        #[arg(long)]
        out: PathBuf,
    },
    /// Ensemble of trained runs (decision-level fusion of whole models): greedy ensemble
    /// selection (Caruana et al. 2004) of weights on their val predictions, evaluated on
    /// test; the folder is then evaluated and predicted like a run (`eval`, `predict`).
    Ensemble {
        /// The member runs (sharing their classes and dataset ids).
        #[arg(long, num_args = 1.., required = true)]
        runs: Vec<PathBuf>,
        /// The ensemble folder.
        #[arg(long)]
        out: PathBuf,
        /// Selection rounds (each adds one member, with replacement).
        #[arg(long, default_value_t = 25)]
        rounds: usize,
    },
    /// Build datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// The main job on the built-in dataset: early, late and hybrid fusion against the
    /// unimodal baselines on the committed AV-MNIST sample, then explanations and
    /// robustness of the best method.
    Demo {
        /// The demo dataset folder (holds config.json and manifest.jsonl).
        #[arg(long, default_value_os_t = default_demo_data())]
        data: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
    },
}

/// Arguments of the commands that read a trained run.
#[derive(clap::Args)]
struct RunArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Manifest (default: the run's).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Split to use.
    #[arg(long, default_value = "test")]
    split: Split,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Zero-shot (a contrastive run): classify the split's --modality records among these
    /// classes (comma-separated), each described by the prompts of --template.
    #[arg(long, value_delimiter = ',', requires = "modality")]
    classes: Vec<String>,
    /// A prompt template, `{}` standing for the class name (repeatable; default `{}`).
    #[arg(long, requires = "classes")]
    template: Vec<String>,
    /// Zero-shot from prototypes instead: the mean embedding of this many train records
    /// per class.
    #[arg(long, conflicts_with = "classes", requires = "modality")]
    shots: Option<usize>,
    /// The modality whose records zero-shot classification classifies.
    #[arg(long)]
    modality: Option<String>,
}

/// `name=kind,name=kind`.
fn parse_column_types(
    text: &str,
) -> std::result::Result<std::collections::BTreeMap<String, fusion_data::ColumnKind>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, kind) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=kind"))?;
            let kind = kind
                .trim()
                .parse()
                .map_err(|e: fusion_data::UnknownName| fusion_core::with_suggestion(&e.to_string()))?;
            Ok((name.trim().to_string(), kind))
        })
        .collect()
}

fn default_demo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/demo")
}

#[derive(Subcommand)]
enum DataCommand {
    /// AV-MNIST: MNIST images paired with FSDD recordings of the same digit (see
    /// fusion_data::build_avmnist for the protocol).
    Avmnist(AvmnistArgs),
}

/// `fusion data avmnist`.
#[derive(clap::Args)]
struct AvmnistArgs {
    /// Folder with MNIST's four `*-ubyte.gz` files (`cargo xtask data mnist`).
    #[arg(long)]
    mnist: PathBuf,
    /// FSDD's `recordings` folder (`cargo xtask data fsdd`).
    #[arg(long)]
    fsdd: PathBuf,
    /// Output folder (images, audio, manifest.jsonl).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the shuffles and pairings.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training samples.
    #[arg(long, default_value_t = 55_000)]
    train: usize,
    /// Validation samples.
    #[arg(long, default_value_t = 5_000)]
    val: usize,
    /// Test samples.
    #[arg(long, default_value_t = 10_000)]
    test: usize,
    /// Hold these speakers out for test (comma-separated); default: FSDD's split.
    #[arg(long, value_delimiter = ',')]
    test_speakers: Option<Vec<String>>,
    /// MultiBench's image degradation: keep this fraction of the variance (0.25).
    #[arg(long)]
    pca_energy: Option<f64>,
    /// Mix white noise into the audio at an SNR drawn from LOW,HIGH dB.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    noise_snr_db: Option<Vec<f64>>,
}

impl AvmnistArgs {
    /// The builder's options; the builder itself checks the values.
    fn options(&self) -> Result<fusion_data::AvMnistOptions> {
        let noise_snr_db = match self.noise_snr_db.as_deref() {
            None => None,
            Some(&[low, high]) => Some((low, high)),
            Some(other) => anyhow::bail!("--noise-snr-db: need LOW,HIGH, got {other:?}"),
        };
        Ok(fusion_data::AvMnistOptions {
            seed: self.seed,
            train: self.train,
            val: self.val,
            test: self.test,
            test_speakers: self.test_speakers.clone(),
            pca_energy: self.pca_energy,
            noise_snr_db,
        })
    }
}

/// Keeps freed tensor buffers in the heap instead of returning them to the system: by
/// default glibc maps every buffer above 128 KiB afresh and trims the heap on free, so
/// each training step page-faults its activations in again (about 10 % of a LeNet epoch
/// on CPU, measured by `benchmarks/peer_avmnist.py`). Costs some resident memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_buffers() {
    for (parameter, value) in [
        (libc::M_MMAP_THRESHOLD, 32 << 20),
        (libc::M_TRIM_THRESHOLD, 512 << 20),
        (libc::M_TOP_PAD, 64 << 20),
    ] {
        // SAFETY: mallopt only sets allocator parameters; it is called before any other
        // thread exists, and a refused value (returns 0) leaves the default in place.
        unsafe {
            libc::mallopt(parameter, value);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

/// A file-size limit (`ulimit -f`) reached while writing kills the process with SIGXFSZ
/// by default, silently and mid-write; ignored, the write fails with EFBIG instead, which
/// reaches the user as an error naming the file (and the atomic writer removes its
/// temporary).
#[allow(unsafe_code)]
fn file_size_limit_is_an_error() {
    // SAFETY: sets one signal's disposition to "ignore" before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn main() -> Result<()> {
    commands::started();
    keep_freed_buffers();
    file_size_limit_is_an_error();
    let cli = Cli::parse();
    let ui = Ui {
        quiet: cli.quiet,
        json: cli.json,
        epochs: true,
    };
    let device = || cli.device.resolve();
    match cli.command {
        Command::Info => commands::info::info(cli.device, cli.json),
        Command::Validate {
            manifest,
            report,
            strict,
            max_image_pixels,
            max_audio_seconds,
            max_video_seconds,
            max_text_bytes,
            max_file_bytes,
            max_audio_channels,
            allow_paths_outside_manifest,
        } => {
            let limits = fusion_data::Limits {
                image_pixels: max_image_pixels,
                audio_seconds: max_audio_seconds,
                audio_channels: max_audio_channels,
                video_seconds: max_video_seconds,
                text_bytes: max_text_bytes,
                file_bytes: max_file_bytes,
            };
            let scope = if allow_paths_outside_manifest {
                fusion_data::PathScope::Anywhere
            } else {
                fusion_data::PathScope::ManifestFolder
            };
            let clean = commands::validate::validate(&manifest, scope, report.as_deref(), &limits, ui)?;
            if strict && !clean {
                // The report is out already; the status tells a script (1 is an error).
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Extract { config, shard, export } => {
            // A compare configuration's rows read their features from the same cache.
            let compared = fusion_run::CompareConfig::load(&config)?;
            compared.validate()?;
            let (compared, loaded) = fusion_run::load_compared(&compared, shard, &ui::Shown::new(ui))?;
            let config = compared.run;
            let classes = match &export {
                Some(path) => Some(fusion_run::export_features(
                    &config,
                    &loaded.extraction,
                    &loaded.specs,
                    path,
                )?),
                None => None,
            };
            ui.result(&serde_json::json!({
                "export": export,
                "classes": classes,
                "usable": loaded.extraction.records.len(),
                "cached": loaded.extraction.cached,
                "computed": loaded.extraction.computed,
                "skipped": loaded.extraction.problems,
                "unusable": loaded.extraction.absent,
                "cache": config.cache_folder(),
                "cache_errors": loaded.extraction.cache_errors,
            }))?;
            // Filling the cache is this command's whole purpose.
            if let Some(error) = loaded.extraction.cache_errors.first() {
                anyhow::bail!("the features were computed but not cached: {error}");
            }
            Ok(())
        }
        Command::Train {
            config,
            manifest,
            label,
            preset,
            time_limit,
            folds,
            column_types,
            task,
            allow_paths_outside_manifest,
            run,
            epochs,
            parallel,
        } => {
            if let Some(limit) = time_limit
                && (preset != fusion_run::Preset::Best || limit.is_nan() || limit <= 0.0)
            {
                anyhow::bail!("--time-limit {limit}: a positive number of seconds, with --preset best");
            }
            if let Some(folds) = folds
                && (preset != fusion_run::Preset::Best || !(1..=fusion_run::MAX_FOLDS).contains(&folds))
            {
                anyhow::bail!(
                    "--folds {folds}: 1 to {} folds, with --preset best",
                    fusion_run::MAX_FOLDS
                );
            }
            if parallel.rank.is_some() && config.is_none() {
                // Every rank must train the same configuration: write it once, then share it.
                anyhow::bail!(
                    "--rank needs --config (`fusion train --manifest … --world-size N` writes one and starts the ranks)"
                );
            }
            let config = match (config, manifest, label) {
                (Some(config), _, _) => config,
                (None, Some(manifest), Some(label)) => {
                    let table = commands::train::Table {
                        path: &manifest,
                        label: &label,
                        preset,
                        column_types: &column_types.unwrap_or_default(),
                        task,
                        anywhere: allow_paths_outside_manifest,
                    };
                    let config = commands::train::zero_config(&table, &run, ui)?;
                    let classification =
                        fusion_run::RunConfig::load(&config)?.task == fusion_core::Task::Classification;
                    if preset == fusion_run::Preset::Best && classification && !parallel.launches() {
                        return commands::train::portfolio(&config, &run, epochs, time_limit, folds, ui, device()?);
                    }
                    if time_limit.is_some() {
                        anyhow::bail!(
                            "--time-limit applies to `--preset best` on a classification table, in one process"
                        );
                    }
                    config
                }
                _ => anyhow::bail!("give --config, or --manifest and --label"),
            };
            if parallel.launches() {
                return parallel::launch(&parallel, &config, &run, epochs, cli.device, cli.json);
            }
            let group = parallel.join()?;
            let strategy =
                fusion_core::Strategy::from_group(group.as_ref().map(|g| g as &dyn fusion_core::ProcessGroup));
            commands::train::train(&config, &run, epochs, ui, device()?, strategy)
        }
        Command::Eval(a) => {
            let zero_shot = commands::retrieval::ZeroShotArgs {
                classes: a.classes,
                templates: a.template,
                shots: a.shots,
                modality: a.modality,
            };
            let run = a.run;
            if zero_shot.modality.is_some() && !zero_shot.asked() {
                anyhow::bail!("--modality is for zero-shot classification: give --classes or --shots too");
            }
            match zero_shot.asked() {
                true => commands::retrieval::zero_shot(
                    &run.run,
                    run.manifest.as_deref(),
                    run.split,
                    zero_shot,
                    ui,
                    device()?,
                ),
                false => commands::eval::eval(&run.run, run.manifest.as_deref(), run.split, ui, device()?),
            }
        }
        Command::Embed {
            run,
            manifest,
            split,
            out,
        } => commands::retrieval::embed(&run, manifest.as_deref(), split, &out, ui, device()?),
        Command::Search {
            run,
            index,
            query,
            image,
            audio,
            among,
            k,
            approximate_above,
        } => commands::retrieval::search(
            &run,
            &index,
            commands::retrieval::Query {
                text: query,
                image,
                audio,
            },
            among.as_deref(),
            (k, approximate_above),
            ui,
            device()?,
        ),
        Command::Predict {
            run,
            manifest,
            out,
            coverage,
        } => commands::predict::predict(&run, manifest.as_deref(), out.as_deref(), coverage, ui, device()?),
        Command::Serve {
            run,
            addr,
            max_batch,
            max_delay_ms,
            queue,
            max_records,
            deadline_ms,
            decode_threads,
            max_body_mb,
            bodies_mb,
            body_timeout_ms,
            token_file,
            files,
            scratch,
            index,
            approximate_above,
        } => {
            let mut batch = fusion_serve::BatchOptions {
                max_batch,
                max_delay: std::time::Duration::from_millis(max_delay_ms),
                queue,
                max_records,
                deadline: std::time::Duration::from_millis(deadline_ms),
                ..Default::default()
            };
            if let Some(threads) = decode_threads {
                batch.decode_threads = threads;
            }
            let options = commands::serve::Options {
                addr,
                batch,
                bodies: fusion_serve::Bodies {
                    max_bytes: max_body_mb << 20,
                    total_bytes: bodies_mb << 20,
                    timeout: std::time::Duration::from_millis(body_timeout_ms),
                },
                token_file,
                files,
                scratch,
                index: index.map(|path| (path, approximate_above)),
            };
            commands::serve::serve(&run, options, ui, device()?)
        }
        Command::Calibrate { run, manifest } => {
            commands::calibrate::calibrate(&run, manifest.as_deref(), ui, device()?)
        }
        Command::Explain(a) => {
            commands::ensemble::refuse(&a.run, "explain")?;
            commands::explain::explain(&a.run, a.manifest.as_deref(), a.split, ui, device()?)
        }
        Command::Robustness { run: a, no_noise } => {
            commands::ensemble::refuse(&a.run, "robustness")?;
            commands::explain::robustness(&a.run, a.manifest.as_deref(), a.split, !no_noise, ui, device()?)
        }
        Command::Export { run, out } => {
            commands::ensemble::refuse(&run, "export")?;
            commands::export::export(&run, out.as_deref(), ui, device()?)
        }
        Command::Ensemble { runs, out, rounds } => commands::ensemble::build(&runs, &out, rounds, ui, device()?),
        Command::Compare { config, out } => commands::compare::compare(&config, &out, ui, device()?).map(drop),
        Command::Data(DataCommand::Avmnist(args)) => {
            let summary = fusion_data::build_avmnist(&args.mnist, &args.fsdd, &args.out, &args.options()?)?;
            ui.say(format!(
                "AV-MNIST: {} train, {} val, {} test samples; {} training and {} test recordings; {}",
                summary.counts[0],
                summary.counts[1],
                summary.counts[2],
                summary.recordings[0],
                summary.recordings[1],
                summary.manifest.display()
            ));
            ui.say(format!("manifest sha256 {}", summary.manifest_sha256));
            ui.result(&serde_json::json!({
                "manifest": summary.manifest,
                "counts": summary.counts,
                "recordings": summary.recordings,
                "manifest_sha256": summary.manifest_sha256,
            }))
        }
        Command::Demo { data, out } => commands::demo::demo(&data, &out, ui, device()?),
    }
}
