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
    /// Run the main job on the built-in dataset (for now: a fusion smoke run on the device).
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { json } => info(cli.device, json),
        Command::Demo => demo(cli.device),
    }
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
