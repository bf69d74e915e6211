//! Training from a sharded dataset on disk: the same batches as in memory, hence the same
//! run, bit for bit; a process whose data memory is limited to a third of the dataset's
//! size trains on it; damaged folders are errors naming the file.
// The limit is set with setrlimit, in a child process.
#![allow(unsafe_code)]

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use fusion_core::{
    EarlyMethod, Error, FusionConfig, FusionModel, Learner, ModalityConfig, ModelConfig, OptimizerConfig, RunFolder,
    ShardWriter, ShardedDataset, TensorDataset, TrainConfig, TrainingData, seeded_batches,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

/// Chunk `index` of a task whose class is the largest of the first four features.
fn chunk(index: i64, rows: i64, dim: i64) -> TensorDataset {
    tch::manual_seed(1000 + index);
    let features = Tensor::randn([rows, dim], (Kind::Float, Device::Cpu));
    let labels = features.narrow(1, 0, 4).argmax(1, false);
    TensorDataset::dense(vec![features], labels).unwrap_or_else(|e| panic!("{e}"))
}

fn model(dim: i64) -> (FusionModel, VarStore) {
    let config = ModelConfig {
        modalities: vec![ModalityConfig {
            name: "x".into(),
            input_dim: dim,
            encoder: Default::default(),
        }],
        num_classes: 4,
        task: Default::default(),
        hidden_dim: 16,
        dropout: 0.1,
        fusion: FusionConfig::Early {
            method: EarlyMethod::Concat,
        },
    };
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &config).unwrap_or_else(|e| panic!("{e}"));
    (model, vs)
}

fn training() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        optimizer: OptimizerConfig::adam(3e-3),
        ..TrainConfig::new(512)
    }
}

/// Trains on `data` into `run` and returns the flat weights.
fn train_on(data: &dyn TrainingData, val: &TensorDataset, dim: i64, run: &Path) -> Tensor {
    let (model, vs) = model(dim);
    Learner::new(&model, &vs, &training())
        .fit(data, Some(val), &RunFolder::new(run), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::cat(
        &named.iter().map(|(_, t)| t.detach().reshape([-1])).collect::<Vec<_>>(),
        0,
    )
}

fn metrics(run: &Path) -> String {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default()
}

/// Drops the `seconds` field: everything else of an epoch record must match.
fn without_time(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .map(|l| l.split(",\"seconds\"").next().unwrap_or(l).to_string())
        .collect()
}

const LIMIT_ENV: &str = "FUSION_STREAM_TEST_LIMIT";
const DATA_ENV: &str = "FUSION_STREAM_TEST_DATA";
const RUN_ENV: &str = "FUSION_STREAM_TEST_RUN";
const DIM: i64 = 512;
/// The data memory (RLIMIT_DATA: heap and private writable mappings) of the limited process.
const LIMIT_BYTES: u64 = 160 << 20;
const ROWS_PER_CHUNK: i64 = 40_000;
const CHUNKS: i64 = 7;

fn val_set() -> TensorDataset {
    chunk(-1, 2_000, DIM)
}

#[test]
#[ignore = "the limited process of `a_process_limited_to_a_third_of_the_data_trains_on_it_as_in_memory`"]
fn limited_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let limit: u64 = var(LIMIT_ENV).parse().unwrap_or_else(|e| panic!("{e}"));
    let val = val_set();
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit only reads the struct.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_DATA, &rlimit) },
        0,
        "setrlimit failed"
    );
    let data = ShardedDataset::open(var(DATA_ENV)).unwrap_or_else(|e| panic!("{e}"));
    // The limit is real: the dataset cannot be held in this process's memory.
    assert!(
        Vec::<u8>::new().try_reserve_exact(data.bytes() as usize).is_err(),
        "{} bytes could be allocated under a limit of {limit}",
        data.bytes()
    );
    let weights = train_on(&data, &val, DIM, Path::new(&var(RUN_ENV)));
    Tensor::write_safetensors(
        &[("weights", weights)],
        Path::new(&var(RUN_ENV)).join("weights.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_process_limited_to_a_third_of_the_data_trains_on_it_as_in_memory() {
    // libtorch's generator is global: tests running beside this one would draw from it.
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let folder = dir.path().join("data");
    let mut writer = ShardWriter::create(&folder).unwrap_or_else(|e| panic!("{e}"));
    for c in 0..CHUNKS {
        writer
            .append(&chunk(c, ROWS_PER_CHUNK, DIM))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let data = writer.finish().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        data.bytes() >= 3 * LIMIT_BYTES,
        "{} bytes of data for a limit of {LIMIT_BYTES}",
        data.bytes()
    );
    drop(data);

    let limited_run = dir.path().join("limited");
    let started = Instant::now();
    let status = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
        .args(["--ignored", "--exact", "limited_process", "--test-threads", "1"])
        .env(LIMIT_ENV, LIMIT_BYTES.to_string())
        .env(DATA_ENV, &folder)
        .env(RUN_ENV, &limited_run)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "the limited process failed: {status}");
    let streamed_seconds = started.elapsed();

    // The same run in memory: every chunk concatenated.
    let chunks: Vec<TensorDataset> = (0..CHUNKS).map(|c| chunk(c, ROWS_PER_CHUNK, DIM)).collect();
    let features = Tensor::cat(
        &chunks.iter().map(|c| c.features[0].shallow_clone()).collect::<Vec<_>>(),
        0,
    );
    let labels = Tensor::cat(&chunks.iter().map(|c| c.labels.shallow_clone()).collect::<Vec<_>>(), 0);
    drop(chunks);
    let in_memory = TensorDataset::dense(vec![features], labels).unwrap_or_else(|e| panic!("{e}"));
    let memory_run = dir.path().join("memory");
    let weights = train_on(&in_memory, &val_set(), DIM, &memory_run);

    let streamed = Tensor::read_safetensors(limited_run.join("weights.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"))
        .pop()
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no weights"));
    assert!(streamed.equal(&weights), "streamed and in-memory weights differ");
    let (a, b) = (
        without_time(&metrics(&limited_run)),
        without_time(&metrics(&memory_run)),
    );
    assert_eq!(a.len(), 1);
    assert_eq!(a, b, "epoch metrics differ");
    assert!(a[0].contains("\"val_accuracy\""), "{a:?}");
    assert!(streamed_seconds < Duration::from_secs(600));
}

/// Two modalities (a padded token sequence, absent for some samples) and multi-label
/// targets, in three chunks of uneven size.
fn mixed_chunks() -> Vec<TensorDataset> {
    [5i64, 7, 4]
        .iter()
        .enumerate()
        .map(|(c, &rows)| {
            tch::manual_seed(c as i64);
            let dense = Tensor::randn([rows, 3], (Kind::Float, Device::Cpu));
            let tokens = Tensor::randint(50, [rows, 6], (Kind::Int64, Device::Cpu));
            let lengths = Tensor::randint_low(1, 7, [rows, 1], (Kind::Int64, Device::Cpu));
            let padding = Tensor::arange(6, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .lt_tensor(&lengths);
            let labels = Tensor::randint(2, [rows, 3], (Kind::Float, Device::Cpu));
            let mut data = TensorDataset::dense(vec![dense, tokens], labels).unwrap_or_else(|e| panic!("{e}"));
            data.padding[1] = Some(padding);
            data.present[1] = Tensor::randint(2, [rows], (Kind::Int64, Device::Cpu)).to_kind(Kind::Bool);
            data
        })
        .collect()
}

fn concatenated(chunks: &[TensorDataset]) -> TensorDataset {
    let cat = |f: &dyn Fn(&TensorDataset) -> Tensor| Tensor::cat(&chunks.iter().map(f).collect::<Vec<_>>(), 0);
    let mut data = TensorDataset::dense(
        vec![
            cat(&|c| c.features[0].shallow_clone()),
            cat(&|c| c.features[1].shallow_clone()),
        ],
        cat(&|c| c.labels.shallow_clone()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    data.padding[1] = Some(cat(&|c| {
        c.padding[1]
            .as_ref()
            .map_or_else(|| panic!("no mask"), Tensor::shallow_clone)
    }));
    data.present[1] = cat(&|c| c.present[1].shallow_clone());
    data
}

#[test]
fn streamed_batches_are_the_in_memory_batches() {
    // libtorch's generator is global: tests running beside this one would draw from it.
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let chunks = mixed_chunks();
    let mut writer = ShardWriter::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    for c in &chunks {
        writer.append(c).unwrap_or_else(|e| panic!("{e}"));
    }
    let streamed = writer.finish().unwrap_or_else(|e| panic!("{e}"));
    let memory = concatenated(&chunks);
    assert_eq!(TrainingData::len(&streamed), 16);
    assert!(streamed.labels().equal(&memory.labels));
    let order = seeded_batches(16, 5, Some(9));
    let a: Vec<_> = streamed.assemble(seeded_batches(16, 5, Some(9)), Device::Cpu).collect();
    let b: Vec<_> = memory.assemble(order, Device::Cpu).collect();
    assert_eq!(a.len(), 4);
    for (a, b) in a.into_iter().zip(b) {
        let ((a_inputs, a_labels), (b_inputs, b_labels)) =
            (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
        assert!(a_labels.equal(&b_labels));
        for (x, y) in a_inputs.iter().zip(&b_inputs) {
            assert!(
                x.features.equal(&y.features),
                "{:?} vs {:?}",
                x.features.size(),
                y.features.size()
            );
            assert!(x.present.equal(&y.present));
            assert_eq!(x.padding_mask.is_some(), y.padding_mask.is_some());
            if let (Some(p), Some(q)) = (&x.padding_mask, &y.padding_mask) {
                assert!(p.equal(q));
            }
        }
    }
    // An index past the end is an error, not a crash.
    let mut past = streamed.assemble(vec![Tensor::from_slice(&[3i64, 16])], Device::Cpu);
    assert!(matches!(past.next(), Some(Err(Error::Shape(_)))));

    // A dataset in memory written whole, in shards of about 400 bytes: 5 samples of 80
    // (features 12, tokens 48, padding 6, two presence flags, labels 12).
    let rewritten = ShardedDataset::write(&memory, dir.path().join("whole"), 400).unwrap_or_else(|e| panic!("{e}"));
    let shards = std::fs::read_dir(rewritten.folder())
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(shards, 4, "16 samples in shards of 5");
    let every = Tensor::arange(16, (Kind::Int64, Device::Cpu));
    let (a, b) = (
        rewritten.batch(&every).unwrap_or_else(|e| panic!("{e}")),
        memory.batch(&every, Device::Cpu),
    );
    assert!(a.1.equal(&b.1) && a.0[1].features.equal(&b.0[1].features));
}

#[test]
fn damaged_folders_and_mismatched_chunks_are_errors_naming_the_file() {
    // libtorch's generator is global: tests running beside this one would draw from it.
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let chunks = mixed_chunks();
    let mut writer = ShardWriter::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    writer.append(&chunks[0]).unwrap_or_else(|e| panic!("{e}"));
    let other = chunk(0, 4, 5);
    assert!(matches!(writer.append(&other), Err(Error::Shape(_))));
    writer.append(&chunks[1]).unwrap_or_else(|e| panic!("{e}"));
    writer.finish().unwrap_or_else(|e| panic!("{e}"));

    let shard = dir.path().join("00001.safetensors");
    let whole = std::fs::read(&shard).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&shard, &whole[..whole.len() - 9]).unwrap_or_else(|e| panic!("{e}"));
    let error = ShardedDataset::open(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("00001.safetensors") && error.contains("the index says"),
        "{error}"
    );
    std::fs::write(&shard, &whole).unwrap_or_else(|e| panic!("{e}"));
    assert!(ShardedDataset::open(dir.path()).is_ok());

    let index = dir.path().join("index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_default();
    std::fs::write(
        &index,
        text.replacen("\"version\"", "\"shard_size\": 3, \"version\"", 1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = ShardedDataset::open(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("index.json") && error.contains("shard_size"), "{error}");

    // Hostile indexes: refused before any shard is mapped or any row counted.
    let good: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let hostile_edits: [(&str, serde_json::Value, &str); 4] = [
        (
            "/shards/0/file",
            serde_json::json!("../../etc/passwd"),
            "a file of this folder",
        ),
        ("/shards/0/rows", serde_json::json!(1u64 << 40), "fewer than 2^32 rows"),
        (
            "/modalities/0/padded",
            serde_json::json!(true),
            "needs a sequence dimension",
        ),
        (
            "/labels/shape",
            serde_json::json!([1u64 << 62, 1u64 << 62]),
            "too large",
        ),
    ];
    for (pointer, value, reason) in hostile_edits {
        let mut hostile = good.clone();
        if pointer == "/modalities/0/padded" {
            hostile["modalities"][0]["shape"] = serde_json::json!([]);
        }
        *hostile.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}")) = value;
        std::fs::write(&index, hostile.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let error = ShardedDataset::open(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("index.json") && error.contains(reason),
            "{pointer}: {error}"
        );
    }
}

/// A shard overwritten in place or cut short while a run reads it: the batch that reads a
/// changed row is an error naming the shard (a memory map once died of SIGBUS on the cut,
/// and trained on the overwritten bytes); rows nobody touched still read.
#[test]
fn shards_changed_while_training_reads_them_are_errors_naming_the_file() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = chunk(0, 40, 6);
    let streamed = ShardedDataset::write(&data, dir.path(), 500).unwrap_or_else(|e| panic!("{e}"));
    let shard = dir.path().join("00000.safetensors");
    let rows_in_first = 500 / (6 * 4 + 1 + 8);
    let whole = std::fs::read(&shard).unwrap_or_else(|e| panic!("{e}"));
    let read = |rows: &[i64]| {
        streamed
            .batch(&Tensor::from_slice(rows))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(read(&[0, 1, 39]), "");

    // One byte of row 1's features flipped in place (same inode, same length).
    let header = u64::from_le_bytes(whole[..8].try_into().unwrap_or_default()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&whole[8..8 + header]).unwrap_or_default();
    let start = meta["features.0"]["data_offsets"][0].as_u64().unwrap_or(0) as usize;
    let mut changed = whole.clone();
    changed[8 + header + start + 6 * 4 + 2] ^= 0x40;
    {
        use std::io::{Seek, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap_or_else(|e| panic!("{e}"));
        file.seek(std::io::SeekFrom::Start(0)).unwrap_or_else(|e| panic!("{e}"));
        file.write_all(&changed).unwrap_or_else(|e| panic!("{e}"));
    }
    let error = read(&[0, 1]);
    assert!(
        error.contains("00000.safetensors") && error.contains("row 1 changed"),
        "{error}"
    );
    assert_eq!(read(&[0, 2]), "", "untouched rows still read");
    assert!(rows_in_first > 2);

    // Cut to its header: every row is gone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .and_then(|f| f.set_len(8 + header as u64))
        .unwrap_or_else(|e| panic!("{e}"));
    let error = read(&[2]);
    assert!(
        error.contains("00000.safetensors") && error.contains("cut short"),
        "{error}"
    );
    // Training on it ends with the same error, not a signal.
    let mut batches = streamed.assemble(vec![Tensor::from_slice(&[0i64, 3])], Device::Cpu);
    let error = batches
        .next()
        .and_then(|b| b.err())
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("00000.safetensors"), "{error}");
}
