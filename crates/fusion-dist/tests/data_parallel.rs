//! Two processes on this machine train one model data-parallel through c10d's Gloo: after
//! every step both hold the same weights, bit for bit, and those are the weights one
//! process reaches on the same global batches. Each rank is this test binary started
//! again, running the ignored test `rank_process`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use fusion_core::{
    EarlyMethod, FusionConfig, FusionModel, GroupDro, Learner, ModalityConfig, ModelConfig, Objective, OptimizerConfig,
    ProcessGroup, Progress, RunFolder, Strategy, Task, TensorDataset, TrainConfig, testing::complementary_task,
};
use fusion_dist::{GlooGroup, Master, SECRET_ENV, SharedSecret};
use tch::{Device, Tensor, nn::VarStore};

const RANK: &str = "FUSION_DIST_TEST_RANK";
const WORLD: &str = "FUSION_DIST_TEST_WORLD";
const MASTER: &str = "FUSION_DIST_TEST_MASTER";
const RUN: &str = "FUSION_DIST_TEST_RUN";
const EPOCHS: &str = "FUSION_DIST_TEST_EPOCHS";
const OUT: &str = "FUSION_DIST_TEST_OUT";
/// Training samples of a rank (default 100): a rank with fewer must be refused.
const SAMPLES: &str = "FUSION_DIST_TEST_SAMPLES";
/// What the ranks train: `plain`, `robust` or `contrastive` ([`Mode`]).
const MODE: &str = "FUSION_DIST_TEST_MODE";

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A classification.
    Plain,
    /// The training records have weights and groups, and the objective is group DRO.
    Robust,
    /// The two modalities aligned by the symmetric InfoNCE loss, embeddings gathered.
    Contrastive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Robust => "robust",
            Self::Contrastive => "contrastive",
        }
    }

    fn from_env() -> Self {
        match std::env::var(MODE).as_deref() {
            Ok("robust") => Self::Robust,
            Ok("contrastive") => Self::Contrastive,
            _ => Self::Plain,
        }
    }
}

fn datasets(samples: i64, mode: Mode) -> (TensorDataset, TensorDataset) {
    let data = |samples, seed| complementary_task(samples, 3, 6, seed).unwrap_or_else(|e| panic!("{e}"));
    let mut train_set = data(samples, 7);
    if mode == Mode::Robust {
        train_set.groups = Some((0..samples).map(|i| format!("g{}", i % 3)).collect());
        let weights: Vec<f32> = (0..samples).map(|i| 0.5 + (i % 4) as f32 * 0.5).collect();
        train_set.weights = Some(Tensor::from_slice(&weights));
    }
    (train_set, data(40, 8))
}

/// An early-fusion MLP (or, contrastive, two projections) without dropout (dropout masks
/// are drawn per rank), its weights drawn from `init_seed`.
fn model(init_seed: i64, mode: Mode) -> (FusionModel, VarStore) {
    let modality = |name: &str| ModalityConfig {
        name: name.into(),
        input_dim: 6,
        encoder: Default::default(),
    };
    let config = ModelConfig {
        modalities: vec![modality("a"), modality("b")],
        num_classes: 3,
        task: if mode == Mode::Contrastive {
            Task::Contrastive
        } else {
            Task::Classification
        },
        hidden_dim: 16,
        dropout: 0.0,
        fusion: FusionConfig::Early {
            method: EarlyMethod::Concat,
        },
    };
    tch::manual_seed(init_seed);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &config).unwrap_or_else(|e| panic!("{e}"));
    (model, vs)
}

/// Batches of 25 split 12 + 13 between two ranks: the shares' weights matter.
fn training(epochs: usize, mode: Mode) -> TrainConfig {
    let robust = mode == Mode::Robust;
    TrainConfig {
        epochs,
        grad_clip: Some(1.0),
        optimizer: OptimizerConfig::adam(1e-2),
        objective: if robust { Objective::GroupDro } else { Objective::Erm },
        group_dro: robust.then_some(GroupDro {
            step_size: 0.5,
            adjustment: 1.0,
        }),
        ..TrainConfig::new(25)
    }
}

/// Every variable after each step, one row per step.
fn train_recording(group: Option<&GlooGroup>, init_seed: i64, run: &Path, epochs: usize, mode: Mode) -> Tensor {
    let samples = std::env::var(SAMPLES).ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let (train_set, val_set) = datasets(samples, mode);
    let (model, vs) = model(init_seed, mode);
    let mut steps = Vec::new();
    let mut record = |progress: Progress<'_>| {
        if let Progress::Step { .. } = progress {
            let mut named = vs.variables().into_iter().collect::<Vec<_>>();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            let flat: Vec<Tensor> = named.iter().map(|(_, t)| t.detach().reshape([-1])).collect();
            steps.push(Tensor::cat(&flat, 0));
        }
    };
    let config = training(epochs, mode);
    let folder = RunFolder::new(run);
    let strategy = Strategy::from_group(group.map(|g| g as &dyn ProcessGroup));
    Learner::new(&model, &vs, &config)
        .with_strategy(strategy)
        .fit(&train_set, Some(&val_set), &folder, &mut record)
        .unwrap_or_else(|e| panic!("{e}"));
    Tensor::stack(&steps, 0)
}

#[test]
#[ignore = "one rank of `two_processes_train_as_one_on_the_same_global_batches`, started by it"]
fn rank_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let rank: usize = var(RANK).parse().unwrap_or_else(|e| panic!("{e}"));
    let world: usize = var(WORLD).parse().unwrap_or_else(|e| panic!("{e}"));
    let master: Master = var(MASTER).parse().unwrap_or_else(|e| panic!("{e}"));
    let epochs: usize = var(EPOCHS).parse().unwrap_or_else(|e| panic!("{e}"));
    let group = GlooGroup::join(&master, rank, world, Duration::from_secs(60), None).unwrap_or_else(|e| panic!("{e}"));
    // Each rank starts from other weights: the first broadcast must make them rank 0's.
    let steps = train_recording(
        Some(&group),
        rank as i64,
        Path::new(&var(RUN)),
        epochs,
        Mode::from_env(),
    );
    Tensor::write_safetensors(&[("steps", steps)], var(OUT)).unwrap_or_else(|e| panic!("{e}"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Starts `world` ranks on `run`, rank r with `samples[r]` training samples (100 when
/// absent), and returns them with the files their steps go to.
fn start_ranks(
    world: usize,
    run: &Path,
    epochs: usize,
    out: &Path,
    samples: &[usize],
    mode: Mode,
) -> (Vec<Child>, Vec<PathBuf>) {
    let master = format!("127.0.0.1:{}", free_port());
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let outputs: Vec<PathBuf> = (0..world)
        .map(|r| out.join(format!("rank{r}-{epochs}.safetensors")))
        .collect();
    let children: Vec<Child> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .env(MODE, mode.name())
                .args(["--ignored", "--exact", "rank_process", "--test-threads", "1"])
                .env(RANK, rank.to_string())
                .env(WORLD, world.to_string())
                .env(MASTER, &master)
                .env(RUN, run)
                .env(EPOCHS, epochs.to_string())
                .env(OUT, &outputs[rank])
                .env(SAMPLES, samples.get(rank).unwrap_or(&100).to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start rank {rank}: {e}"))
        })
        .collect();
    (children, outputs)
}

/// Runs `world` ranks on `run` and returns each one's steps.
fn data_parallel(world: usize, run: &Path, epochs: usize, out: &Path, mode: Mode) -> Vec<Tensor> {
    let (mut children, outputs) = start_ranks(world, run, epochs, out, &[], mode);
    let deadline = Instant::now() + Duration::from_secs(180);
    for (rank, child) in children.iter_mut().enumerate() {
        loop {
            if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                assert!(status.success(), "rank {rank} failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rank {rank} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    outputs
        .iter()
        .map(|path| {
            let mut named = Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            named
                .pop()
                .map(|(_, t)| t)
                .unwrap_or_else(|| panic!("{} is empty", path.display()))
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap_or(f64::NAN)
}

#[test]
fn two_processes_train_as_one_on_the_same_global_batches() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shared_run = dir.path().join("run");
    let ranks = data_parallel(2, &shared_run, 2, dir.path(), Mode::Plain);
    let (rank0, rank1) = (&ranks[0], &ranks[1]);
    // 100 samples in batches of 25, two epochs.
    assert_eq!(rank0.size()[0], 8);
    assert!(
        rank0.equal(rank1),
        "ranks differ after a step by {}",
        max_abs_diff(rank0, rank1)
    );

    let single = train_recording(None, 0, &dir.path().join("single"), 2, Mode::Plain);
    let moved = max_abs_diff(&single.get(7), &single.get(0));
    assert!(moved > 2e-2, "training barely moved the weights ({moved})");
    let gap = max_abs_diff(rank0, &single);
    assert!(gap < 1e-5, "data-parallel steps differ from one process's by {gap}");

    // Rank 0 alone wrote the shared run folder; it equals the one process's run.
    let metrics = |run: &Path| std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    assert_eq!(metrics(&shared_run).lines().count(), 2);
    let val_loss = |run: &Path| -> Vec<f64> {
        metrics(run)
            .lines()
            .filter_map(|l| l.split("\"val_loss\":").nth(1)?.split(',').next()?.parse().ok())
            .collect()
    };
    let (parallel_loss, single_loss) = (val_loss(&shared_run), val_loss(&dir.path().join("single")));
    assert_eq!(parallel_loss.len(), 2);
    for (p, s) in parallel_loss.iter().zip(&single_loss) {
        assert!((p - s).abs() < 1e-5, "validation loss {p} vs {s}");
    }

    // Stopped after one epoch and resumed: the same weights as the uninterrupted run.
    let resumed_run = dir.path().join("resumed");
    let first = data_parallel(2, &resumed_run, 1, dir.path(), Mode::Plain);
    assert_eq!(first[0].size()[0], 4);
    let second = data_parallel(2, &resumed_run, 2, dir.path(), Mode::Plain);
    assert_eq!(second[0].size()[0], 4, "the resumed run trains the second epoch only");
    assert!(second[0].equal(&second[1]));
    assert!(
        second[0].get(3).equal(&rank0.get(7)),
        "resumed weights differ from the uninterrupted run's by {}",
        max_abs_diff(&second[0].get(3), &rank0.get(7))
    );
}

#[test]
fn weighted_group_dro_trains_as_one_process_across_two_ranks() {
    // Sample weights and group DRO's weights (whose batch losses are summed over the
    // ranks before each step) give the steps one process takes on the whole batches.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ranks = data_parallel(2, &dir.path().join("run"), 2, dir.path(), Mode::Robust);
    assert!(
        ranks[0].equal(&ranks[1]),
        "ranks differ by {}",
        max_abs_diff(&ranks[0], &ranks[1])
    );
    let single = train_recording(None, 0, &dir.path().join("single"), 2, Mode::Robust);
    let plain = train_recording(None, 0, &dir.path().join("plain"), 2, Mode::Plain);
    assert!(max_abs_diff(&single, &plain) > 1e-4, "the objective changed nothing");
    let gap = max_abs_diff(&ranks[0], &single);
    assert!(
        gap < 1e-5,
        "data-parallel group DRO differs from one process's by {gap}"
    );
}

#[test]
fn contrastive_training_gathers_embeddings_and_trains_as_one_process() {
    // Each rank's loss is over the whole batch's gathered embeddings (CLIP's gather): the
    // summed gradients, and so the steps, are one process's on the whole batches.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ranks = data_parallel(2, &dir.path().join("run"), 2, dir.path(), Mode::Contrastive);
    assert!(
        ranks[0].equal(&ranks[1]),
        "ranks differ by {}",
        max_abs_diff(&ranks[0], &ranks[1])
    );
    let single = train_recording(None, 0, &dir.path().join("single"), 2, Mode::Contrastive);
    let moved = max_abs_diff(&single.get(7), &single.get(0));
    assert!(moved > 2e-2, "training barely moved the weights ({moved})");
    let gap = max_abs_diff(&ranks[0], &single);
    assert!(
        gap < 1e-5,
        "data-parallel contrastive steps differ from one process's by {gap}"
    );
}

#[test]
fn ranks_holding_different_data_all_fail_with_the_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (children, _) = start_ranks(2, &dir.path().join("run"), 1, dir.path(), &[100, 99], Mode::Plain);
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        // libtest prints a failed test's panic on stdout.
        let printed = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        assert!(!out.status.success(), "rank {rank} trained on mismatched data");
        assert!(printed.contains("differ from rank 0"), "rank {rank}: {printed}");
    }
}

#[test]
#[ignore = "one rank of `a_rank_joins_only_with_the_groups_secret`, started by it"]
fn secret_rank_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let rank: usize = var(RANK).parse().unwrap_or_else(|e| panic!("{e}"));
    let master: Master = var(MASTER).parse().unwrap_or_else(|e| panic!("{e}"));
    let secret = SharedSecret::from_env().unwrap_or_else(|e| panic!("{e}"));
    GlooGroup::join(&master, rank, 2, Duration::from_secs(60), secret.as_ref()).unwrap_or_else(|e| panic!("{e}"));
}

/// Two ranks, rank r with `secrets[r]` in FUSION_DIST_SECRET (unset for `None`): what each
/// printed when it failed, `None` when it joined.
fn join_pair(secrets: [Option<&str>; 2]) -> [Option<String>; 2] {
    let master = format!("127.0.0.1:{}", free_port());
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let children: Vec<Child> = secrets
        .iter()
        .enumerate()
        .map(|(rank, secret)| {
            let mut command = Command::new(&exe);
            command
                .args(["--ignored", "--exact", "secret_rank_process", "--test-threads", "1"])
                .env(RANK, rank.to_string())
                .env(MASTER, &master)
                .env_remove(SECRET_ENV)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            if let Some(secret) = secret {
                command.env(SECRET_ENV, secret);
            }
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start rank {rank}: {e}"))
        })
        .collect();
    let mut results = children.into_iter().map(|child| {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        (!out.status.success()).then(|| String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned())
    });
    [results.next().flatten(), results.next().flatten()]
}

/// Ranks with the same secret form a group; a rank with another secret or none is refused
/// by both ranks, naming why. Breaking the proof (any proof accepted) fails the second case.
#[test]
fn a_rank_joins_only_with_the_groups_secret() {
    let secret = "the group's secret, 16 bytes or more";
    assert_eq!(join_pair([Some(secret), Some(secret)]), [None, None]);
    assert_eq!(join_pair([None, None]), [None, None]);
    for (rank, error) in join_pair([Some(secret), Some("another secret of enough length")])
        .into_iter()
        .enumerate()
    {
        let error = error.unwrap_or_else(|| panic!("rank {rank} joined with another secret"));
        assert!(
            error.contains("did not prove the shared secret"),
            "rank {rank}: {error}"
        );
    }
    let [zero, one] = join_pair([Some(secret), None]);
    assert!(
        zero.as_deref()
            .is_some_and(|e| e.contains("rank 1 holds no shared secret")),
        "{zero:?}"
    );
    assert!(
        one.as_deref()
            .is_some_and(|e| e.contains("rank 0 holds a shared secret")),
        "{one:?}"
    );
}
