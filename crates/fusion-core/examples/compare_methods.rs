//! Trains every fusion method on the synthetic complementary task (each modality carries
//! the label for half of the samples) and prints accuracy, macro-F1, calibration, size
//! and speed as a Markdown table.
//!
//! ```sh
//! cargo run --release -p fusion-core --example compare_methods -- [--epochs 15] [--threads 2] [--save-data DIR]
//! ```
//! `--save-data DIR` also writes the train and test sets as safetensors for the PyTorch
//! peer in `benchmarks/peer_fusion.py`.

use std::{path::PathBuf, time::Instant};

use fusion_core::{
    ConfidenceMeasure, EarlyMethod, EncoderConfig, FusionConfig, FusionModel, GatingForm, LateCombiner, Learner,
    ModalityConfig, ModelConfig, OptimizerConfig, Result, RunFolder, TensorDataset, TrainConfig, complexity, evaluate,
    testing::complementary_task,
};
use tch::{Device, nn::VarStore};

const CLASSES: i64 = 4;
const DIM: i64 = 8;

struct Options {
    epochs: usize,
    threads: Option<i32>,
    save_data: Option<PathBuf>,
}

fn options() -> std::result::Result<Options, String> {
    let mut options = Options {
        epochs: 15,
        threads: None,
        save_data: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--epochs" => options.epochs = value()?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--threads" => options.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?),
            "--save-data" => options.save_data = Some(value()?.into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

fn methods() -> Vec<(String, Vec<usize>, FusionConfig)> {
    let early = |method: EarlyMethod| FusionConfig::Early { method };
    let late = |combiner: LateCombiner| FusionConfig::Late { combiner };
    let mut all = vec![
        ("modality a alone".to_string(), vec![0], early(EarlyMethod::Concat)),
        ("modality b alone".to_string(), vec![1], early(EarlyMethod::Concat)),
    ];
    let both = [
        ("early: concat", early(EarlyMethod::Concat)),
        ("early: sum", early(EarlyMethod::Sum)),
        ("early: product", early(EarlyMethod::Product)),
        ("early: tensor", early(EarlyMethod::Tensor)),
        ("early: low-rank (4)", early(EarlyMethod::LowRank { rank: 4 })),
        (
            "early: gating (matrix)",
            early(EarlyMethod::Gating {
                form: GatingForm::Matrix,
            }),
        ),
        (
            "early: gating (vector)",
            early(EarlyMethod::Gating {
                form: GatingForm::Vector,
            }),
        ),
        (
            "early: gating (scalar)",
            early(EarlyMethod::Gating {
                form: GatingForm::Scalar,
            }),
        ),
        (
            "early: attention",
            early(EarlyMethod::Attention { heads: 2, layers: 1 }),
        ),
        ("late: mean", late(LateCombiner::Mean)),
        (
            "late: fixed 1:1",
            late(LateCombiner::Fixed {
                weights: vec![1.0, 1.0],
            }),
        ),
        (
            "late: confidence (entropy)",
            late(LateCombiner::Confidence {
                measure: ConfidenceMeasure::Entropy,
            }),
        ),
        (
            "late: confidence (max-prob)",
            late(LateCombiner::Confidence {
                measure: ConfidenceMeasure::MaxProb,
            }),
        ),
        ("late: learned", late(LateCombiner::Learned)),
        ("late: max", late(LateCombiner::Max)),
        ("late: majority vote", late(LateCombiner::MajorityVote)),
        ("late: product of experts", late(LateCombiner::ProductOfExperts)),
        ("late: stacking", late(LateCombiner::Stacking)),
        (
            "hybrid: concat + mean",
            FusionConfig::Hybrid {
                early: EarlyMethod::Concat,
                combiner: LateCombiner::Mean,
            },
        ),
        (
            "hybrid: concat + learned",
            FusionConfig::Hybrid {
                early: EarlyMethod::Concat,
                combiner: LateCombiner::Learned,
            },
        ),
        ("CentralNet (depth 2)", FusionConfig::CentralNet { depth: 2 }),
    ];
    all.extend(
        both.into_iter()
            .map(|(name, fusion)| (name.to_string(), vec![0, 1], fusion)),
    );
    all
}

fn subset(data: &TensorDataset, modalities: &[usize]) -> Result<TensorDataset> {
    let features = modalities.iter().map(|&m| data.features[m].shallow_clone()).collect();
    TensorDataset::dense(features, data.labels.shallow_clone())
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    if let Some(threads) = options.threads {
        tch::set_num_threads(threads);
    }
    let train_set = complementary_task(4000, CLASSES, DIM, 1)?;
    let test_set = complementary_task(2000, CLASSES, DIM, 2)?;
    if let Some(dir) = &options.save_data {
        std::fs::create_dir_all(dir)?;
        for (name, data) in [("train", &train_set), ("test", &test_set)] {
            let tensors = [
                ("a", &data.features[0]),
                ("b", &data.features[1]),
                ("labels", &data.labels),
            ];
            tch::Tensor::write_safetensors(&tensors, dir.join(format!("{name}.safetensors")))?;
        }
    }
    let training = TrainConfig {
        epochs: options.epochs,
        optimizer: OptimizerConfig::adam(5e-3),
        branch_loss_weight: 0.5,
        seed: 7,
        ..TrainConfig::new(64)
    };
    let runs = std::env::temp_dir().join(format!("fusion-compare-{}", std::process::id()));
    println!(
        "{} train / {} test samples, {} epochs, batch 64, AdamW 5e-3, {} threads\n",
        train_set.len(),
        test_set.len(),
        options.epochs,
        tch::get_num_threads()
    );
    println!(
        "| method | test accuracy | macro-F1 | ECE | parameters | train step (ms) | inference (ms) | training (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, (name, modalities, fusion)) in methods().into_iter().enumerate() {
        let config = ModelConfig {
            modalities: modalities
                .iter()
                .map(|m| ModalityConfig {
                    name: ["a", "b"][*m].into(),
                    input_dim: DIM,
                    encoder: EncoderConfig::Mlp { hidden: vec![16] },
                })
                .collect(),
            num_classes: CLASSES,
            task: Default::default(),
            hidden_dim: 16,
            dropout: 0.0,
            fusion,
        };
        let (train_part, test_part) = (subset(&train_set, &modalities)?, subset(&test_set, &modalities)?);
        tch::manual_seed(7);
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), &config)?;
        let started = Instant::now();
        Learner::new(&model, &vs, &training).fit(
            &train_part,
            None,
            &RunFolder::new(runs.join(i.to_string())),
            &mut |_| {},
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let metrics = evaluate(&model, &test_part, 512)?.metrics;
        let size = complexity(&model, &vs, &test_part, 64, 50)?;
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {seconds:.1} |",
            metrics.accuracy,
            metrics.macro_f1,
            metrics.ece,
            size.parameters,
            size.train_step_seconds * 1e3,
            size.inference_seconds * 1e3,
        );
    }
    let _ = std::fs::remove_dir_all(&runs);
    Ok(())
}
