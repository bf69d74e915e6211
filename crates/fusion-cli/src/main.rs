//! The `fusion` command-line program.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fusion_core::{DeviceChoice, cuda_available, cuda_device_count, tensor_fusion};
use tch::{Kind, Tensor};

#[derive(Parser)]
#[command(name = "fusion", version, about = "Multi-modal fusion: train, evaluate, explain")]
struct Cli {
    /// Where to run: cpu, cuda, cuda:N or auto.
    #[arg(long, global = true, default_value = "auto")]
    device: DeviceChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the libtorch runtime this binary uses and whether CUDA is usable.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every record of a manifest (JSONL or CSV): files exist, decode, within limits.
    /// Bad records are listed with the reason; the exit status is 0 unless the manifest
    /// itself cannot be read.
    Validate {
        /// The manifest.
        manifest: std::path::PathBuf,
        /// Also write the full report here (JSON).
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Largest decoded image, in pixels.
        #[arg(long, default_value_t = fusion_data::Limits::default().image_pixels)]
        max_image_pixels: u64,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Run the main job on the built-in dataset (for now: a fusion smoke run on the device).
    Demo,
}

#[derive(Subcommand)]
enum DataCommand {
    /// AV-MNIST: MNIST images paired with FSDD recordings of the same digit (see
    /// fusion_data::build_avmnist for the protocol).
    Avmnist {
        /// Folder with MNIST's four `*-ubyte.gz` files (`cargo xtask data mnist`).
        #[arg(long)]
        mnist: std::path::PathBuf,
        /// FSDD's `recordings` folder (`cargo xtask data fsdd`).
        #[arg(long)]
        fsdd: std::path::PathBuf,
        /// Output folder (images, audio, manifest.jsonl).
        #[arg(long)]
        out: std::path::PathBuf,
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
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { json } => info(cli.device, json),
        Command::Validate {
            manifest,
            report,
            max_image_pixels,
            json,
        } => validate(&manifest, report.as_deref(), max_image_pixels, json),
        Command::Data(DataCommand::Avmnist {
            mnist,
            fsdd,
            out,
            seed,
            train,
            val,
            test,
            test_speakers,
        }) => {
            let options = fusion_data::AvMnistOptions {
                seed,
                train,
                val,
                test,
                test_speakers,
            };
            let summary = fusion_data::build_avmnist(&mnist, &fsdd, &out, &options)?;
            println!(
                "AV-MNIST: {} train, {} val, {} test samples; {} training and {} test recordings; {}",
                summary.counts[0],
                summary.counts[1],
                summary.counts[2],
                summary.recordings[0],
                summary.recordings[1],
                summary.manifest.display()
            );
            println!("manifest sha256 {}", summary.manifest_sha256);
            Ok(())
        }
        Command::Demo => demo(cli.device),
    }
}

fn validate(
    path: &std::path::Path,
    report_path: Option<&std::path::Path>,
    max_image_pixels: u64,
    json: bool,
) -> Result<()> {
    let manifest = fusion_data::Manifest::load(path)?;
    let limits = fusion_data::Limits {
        image_pixels: max_image_pixels,
        ..Default::default()
    };
    let report = fusion_data::validate(&manifest, &limits);
    if let Some(out) = report_path {
        report
            .write_json(out)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for line in &report.rejected_lines {
        println!("rejected {}: {line}", path.display());
    }
    for problem in &report.problems {
        let modality = problem.modality.as_deref().unwrap_or("record");
        println!("bad {} ({modality}): {}", problem.id, problem.reason);
    }
    println!(
        "{} records checked: {} valid, {} with problems, {} unreadable lines",
        report.checked,
        report.valid.len(),
        report.checked - report.valid.len(),
        report.rejected_lines.len()
    );
    Ok(())
}

fn info(choice: DeviceChoice, json: bool) -> Result<()> {
    let device = choice.resolve()?;
    let report = serde_json::json!({
        "cuda_available": cuda_available(),
        "cuda_devices": cuda_device_count(),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
    });
    if json {
        println!("{report}");
    } else {
        println!("CUDA available: {}", cuda_available());
        println!("CUDA devices:   {}", cuda_device_count());
        println!("device:         {device:?}");
        println!("CPU threads:    {}", tch::get_num_threads());
    }
    Ok(())
}

fn demo(choice: DeviceChoice) -> Result<()> {
    let device = choice.resolve()?;
    tch::manual_seed(0);
    let image = Tensor::randn([8, 16], (Kind::Float, device));
    let audio = Tensor::randn([8, 4], (Kind::Float, device));
    let fused = tensor_fusion(&[&image, &audio])?;
    println!(
        "tensor fusion of image [8, 16] and audio [8, 4] on {device:?}: {:?}",
        fused.size()
    );
    println!("The full demo (AV-MNIST: early, late and hybrid fusion vs unimodal baselines) is not built yet.");
    Ok(())
}
