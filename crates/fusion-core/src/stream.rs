//! Training data larger than memory: model inputs in safetensors shards on disk, an index
//! from record to (shard, row), positional reads of the rows a batch needs, and batches
//! assembled on a background thread into a bounded queue, in the same seeded order as the
//! in-memory path, so a run gives the same numbers whichever path fed it.
//!
//! A folder holds `index.json` (the columns and the shards, in record order) and the shards
//! `NNNNN.safetensors`, each with `features.{m}`, `present.{m}` and, for padded sequences,
//! `padding.{m}` per modality `m`, `labels`, and `row_crc`: a CRC-32 of each row's bytes
//! across those tensors. Every row read is checked against it, so a shard changed or cut
//! short while training reads it is an error naming the file (a memory map would have
//! died of SIGBUS, or trained on whatever was written). The shards' pages stay in the page
//! cache, not in the process.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{Receiver, sync_channel},
    },
    thread::JoinHandle,
};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, ModalityInput, Result, TensorDataset, write_checked_safetensors, write_file_atomic};

/// What training reads: the labels (small, in memory) and batches of inputs by index.
pub trait TrainingData {
    /// Number of samples.
    fn len(&self) -> i64;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every sample's target (see [`TensorDataset::labels`]).
    fn labels(&self) -> &Tensor;
    /// Checks that the parts agree on the sample count.
    fn check(&self) -> Result<()>;
    /// Every sample's weight in the loss (see [`TensorDataset::weights`]); `None`: all 1.
    fn weights(&self) -> Option<&Tensor> {
        None
    }
    /// Every sample's group (group-robust objectives); `None`: no groups.
    fn groups(&self) -> Option<&[String]> {
        None
    }
    /// The batches at `batches` (int64 index tensors), in that order, on `device`.
    fn assemble<'a>(&'a self, batches: Vec<Tensor>, device: Device) -> Batches<'a>;
}

/// One batch: the inputs of each modality and the targets.
pub type Batch = (Vec<ModalityInput>, Tensor);

/// Batches in order; an error ends them.
pub type Batches<'a> = Box<dyn Iterator<Item = Result<Batch>> + 'a>;

impl TrainingData for TensorDataset {
    fn len(&self) -> i64 {
        TensorDataset::len(self)
    }

    fn labels(&self) -> &Tensor {
        &self.labels
    }

    fn check(&self) -> Result<()> {
        TensorDataset::check(self)
    }

    fn weights(&self) -> Option<&Tensor> {
        self.weights.as_ref()
    }

    fn groups(&self) -> Option<&[String]> {
        self.groups.as_deref()
    }

    fn assemble<'a>(&'a self, batches: Vec<Tensor>, device: Device) -> Batches<'a> {
        Box::new(batches.into_iter().map(move |b| Ok(self.batch(&b, device))))
    }
}

/// Version of the folder layout (2: a CRC-32 per row).
const LAYOUT_VERSION: u32 = 2;

/// The tensor of a shard holding each row's CRC-32.
const ROW_CRC: &str = "row_crc";

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    version: u32,
    /// Per modality: its features' element type and shape of one sample.
    modalities: Vec<Column>,
    labels: Column,
    /// In record order.
    shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Column {
    /// safetensors dtype: F32, F64, I64, I32, U8 or BOOL.
    dtype: String,
    /// Shape of one sample (`[D]`, `[T, D]`, `[T]`, `[]`).
    shape: Vec<i64>,
    /// Whether it has a `[T]` padding mask per sample.
    #[serde(default)]
    padded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardEntry {
    file: String,
    rows: u64,
}

fn dtype_of(kind: Kind) -> Result<&'static str> {
    Ok(match kind {
        Kind::Float => "F32",
        Kind::Double => "F64",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        Kind::Uint8 => "U8",
        Kind::Bool => "BOOL",
        other => {
            return Err(Error::Config(format!(
                "sharded dataset: {other:?} tensors are not stored"
            )));
        }
    })
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F32" => Kind::Float,
        "F64" => Kind::Double,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

impl Column {
    fn of(tensor: &Tensor, padded: bool) -> Result<Self> {
        Ok(Self {
            dtype: dtype_of(tensor.kind())?.into(),
            shape: tensor.size()[1..].to_vec(),
            padded,
        })
    }

    fn kind(&self) -> Kind {
        kind_of(&self.dtype).unwrap_or(Kind::Float)
    }

    /// Bytes of one sample (`None` when the shape's product overflows).
    fn row_bytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.kind().elt_size_in_bytes(), |bytes, &d| {
                bytes.checked_mul(usize::try_from(d).ok()?)
            })
    }

    /// Why an index's column cannot be read, if it cannot.
    fn problem(&self) -> Option<String> {
        if kind_of(&self.dtype).is_none() {
            return Some(format!("unknown element type {}", self.dtype));
        }
        if self.padded && self.shape.is_empty() {
            return Some("a padded column needs a sequence dimension".into());
        }
        match self.row_bytes() {
            None => Some(format!("shape {:?} is negative or too large", self.shape)),
            Some(0) => Some(format!("shape {:?} holds nothing", self.shape)),
            Some(_) => None,
        }
    }
}

/// Writes a sharded dataset one chunk (one shard) at a time, so that no more than a chunk
/// is ever in memory. Nothing is readable until [`ShardWriter::finish`] writes the index.
#[derive(Debug)]
pub struct ShardWriter {
    folder: PathBuf,
    index: Option<Index>,
}

impl ShardWriter {
    /// A writer into `folder` (created; a dataset already there is replaced at `finish`).
    pub fn create(folder: impl Into<PathBuf>) -> Result<Self> {
        let folder = folder.into();
        let io = |source| Error::Io {
            path: folder.clone(),
            source,
        };
        std::fs::create_dir_all(&folder).map_err(io)?;
        // Unreadable until finished: a reader never sees old and new shards mixed.
        match std::fs::remove_file(folder.join(INDEX_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        Ok(Self { folder, index: None })
    }

    /// Appends `chunk`'s samples as the next shard. Every chunk must have the first's
    /// modalities, element types and sample shapes.
    pub fn append(&mut self, chunk: &TensorDataset) -> Result<()> {
        chunk.check()?;
        let modalities = chunk
            .features
            .iter()
            .zip(&chunk.padding)
            .map(|(f, p)| Column::of(f, p.is_some()))
            .collect::<Result<Vec<_>>>()?;
        let labels = Column::of(&chunk.labels, false)?;
        let index = self.index.get_or_insert_with(|| Index {
            version: LAYOUT_VERSION,
            modalities: modalities.clone(),
            labels: labels.clone(),
            shards: Vec::new(),
        });
        if index.modalities != modalities || index.labels != labels {
            return Err(Error::Shape(format!(
                "sharded dataset {}: chunk {} has modalities {modalities:?} and labels {labels:?}, the first had {:?} and {:?}",
                self.folder.display(),
                index.shards.len() + 1,
                index.modalities,
                index.labels
            )));
        }
        let file = format!("{:05}.safetensors", index.shards.len());
        // In the order of `Shard::row_spans`: the row checksums cover them so.
        let cpu = |t: &Tensor| t.to_device(Device::Cpu).contiguous();
        let mut named = Vec::new();
        for (m, ((features, present), padding)) in chunk
            .features
            .iter()
            .zip(&chunk.present)
            .zip(&chunk.padding)
            .enumerate()
        {
            named.push((format!("features.{m}"), cpu(features)));
            named.push((format!("present.{m}"), cpu(&present.to_kind(Kind::Bool))));
            if let Some(mask) = padding {
                named.push((format!("padding.{m}"), cpu(&mask.to_kind(Kind::Bool))));
            }
        }
        named.push(("labels".to_string(), cpu(&chunk.labels)));
        let row_crc = row_checksums(&named, chunk.len() as usize)?;
        named.push((ROW_CRC.to_string(), Tensor::from_slice(&row_crc)));
        write_checked_safetensors(&named, &self.folder.join(&file))?;
        index.shards.push(ShardEntry {
            file,
            rows: chunk.len() as u64,
        });
        Ok(())
    }

    /// Writes the index (atomically) and opens the dataset.
    pub fn finish(self) -> Result<ShardedDataset> {
        let index = self.index.ok_or_else(|| {
            Error::Config(format!(
                "sharded dataset {}: no chunk was appended",
                self.folder.display()
            ))
        })?;
        let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Config(e.to_string()))?;
        write_file_atomic(&self.folder.join(INDEX_FILE), text)?;
        ShardedDataset::open(&self.folder)
    }
}

const INDEX_FILE: &str = "index.json";

/// Largest safetensors header read, in bytes (a shard's header names a handful of tensors).
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Batches assembled ahead of the one training uses.
pub const PREFETCH_BATCHES: usize = 4;

/// Where one tensor of a shard lies in its file.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    row_bytes: usize,
}

/// One shard, open for positional reads.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    file: File,
    features: Vec<Span>,
    present: Vec<Span>,
    padding: Vec<Option<Span>>,
    labels: Span,
    /// Each row's CRC-32 over its bytes in `row_spans` order.
    row_crc: Vec<u32>,
}

impl Shard {
    /// The spans a row's checksum covers, in the order the writer hashed them.
    fn row_spans(&self) -> impl Iterator<Item = Span> + '_ {
        (0..self.features.len())
            .flat_map(|m| [Some(self.features[m]), Some(self.present[m]), self.padding[m]])
            .flatten()
            .chain([self.labels])
    }

    /// Row `row` of `span`, read from the file into `into`.
    fn read_row(&self, span: Span, row: u32, into: &mut Vec<u8>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let start = into.len();
        into.resize(start + span.row_bytes, 0);
        let offset = span.offset + u64::from(row) * span.row_bytes as u64;
        self.file
            .read_exact_at(&mut into[start..], offset)
            .map_err(|e| Error::Checkpoint {
                path: self.path.clone(),
                reason: format!(
                    "row {row} cannot be read ({e}): the shard was cut short or replaced while training read it"
                ),
            })
    }
}

/// CRC-32 of each of `rows` rows over the tensors in order (each split into `rows` equal rows).
fn row_checksums(tensors: &[(String, Tensor)], rows: usize) -> Result<Vec<i64>> {
    let bytes = tensors
        .iter()
        .map(|(_, t)| {
            let numel = t.numel();
            let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
            t.f_copy_data_u8(&mut bytes, numel)?;
            Ok(bytes)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((0..rows)
        .map(|r| {
            let mut hasher = crc32fast::Hasher::new();
            for tensor in &bytes {
                let row_bytes = tensor.len() / rows.max(1);
                hasher.update(&tensor[r * row_bytes..(r + 1) * row_bytes]);
            }
            i64::from(hasher.finalize())
        })
        .collect())
}

#[derive(Debug)]
struct Inner {
    modalities: Vec<Column>,
    shards: Vec<Shard>,
    /// Record → (shard, row within it).
    rows: Vec<(u32, u32)>,
}

/// A dataset read from its shards batch by batch (see the module documentation).
#[derive(Debug)]
pub struct ShardedDataset {
    folder: PathBuf,
    inner: Arc<Inner>,
    labels: Tensor,
    bytes: u64,
    weights: Option<Tensor>,
    groups: Option<Vec<String>>,
}

impl ShardedDataset {
    /// Opens the dataset in `folder`: reads the index and each shard's header, checks
    /// every tensor against the index (element type, shape, extent within the file), and
    /// reads the labels and row checksums. A damaged folder is an error naming the file.
    pub fn open(folder: impl AsRef<Path>) -> Result<Self> {
        let folder = folder.as_ref().to_path_buf();
        let index_path = folder.join(INDEX_FILE);
        let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
            path: index_path.clone(),
            source,
        })?;
        let index: Index = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: index_path.clone(),
            reason: e.to_string(),
        })?;
        if index.version != LAYOUT_VERSION {
            return Err(Error::Checkpoint {
                path: index_path,
                reason: format!("layout version {}, this build reads {LAYOUT_VERSION}", index.version),
            });
        }
        for column in index.modalities.iter().chain([&index.labels]) {
            if let Some(problem) = column.problem() {
                return Err(Error::Checkpoint {
                    path: index_path,
                    reason: format!("column {column:?}: {problem}"),
                });
            }
        }
        if let Some(entry) = index
            .shards
            .iter()
            .find(|e| Path::new(&e.file).file_name() != Some(e.file.as_ref()) || u32::try_from(e.rows).is_err())
        {
            return Err(Error::Checkpoint {
                path: index_path,
                reason: format!(
                    "shard `{}` of {} rows: a shard is a file of this folder with fewer than 2^32 rows",
                    entry.file, entry.rows
                ),
            });
        }
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut rows = Vec::new();
        let mut labels = Vec::with_capacity(index.shards.len());
        let mut bytes = 0u64;
        for (s, entry) in index.shards.iter().enumerate() {
            let path = folder.join(&entry.file);
            let (shard, shard_labels, length) = open_shard(&path, &index, entry.rows)?;
            bytes += length;
            // Below 2^32 (checked above), and each row takes bytes of the file.
            rows.extend((0..entry.rows as u32).map(|r| (s as u32, r)));
            labels.push(shard_labels);
            shards.push(shard);
        }
        let labels = match labels.is_empty() {
            true => Tensor::zeros([0], (index.labels.kind(), Device::Cpu)),
            false => Tensor::cat(&labels, 0),
        };
        Ok(Self {
            folder,
            inner: Arc::new(Inner {
                modalities: index.modalities,
                shards,
                rows,
            }),
            labels,
            bytes,
            weights: None,
            groups: None,
        })
    }

    /// Writes `data` into `folder` as shards of about `shard_bytes` each and opens them.
    pub fn write(data: &TensorDataset, folder: impl Into<PathBuf>, shard_bytes: u64) -> Result<Self> {
        let rows = data.len();
        let per_row = (data.bytes() / rows.max(1) as u64).max(1);
        let chunk = (shard_bytes / per_row).clamp(1, rows.max(1) as u64) as i64;
        let mut writer = ShardWriter::create(folder)?;
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            writer.append(&data.rows(start, len)?)?;
            start += len;
        }
        writer
            .finish()?
            .with_weights_and_groups(data.weights.as_ref().map(Tensor::shallow_clone), data.groups.clone())
    }

    /// The same samples with these weights and groups (held in memory, as the labels
    /// are; see [`TensorDataset::weights`] and [`TensorDataset::groups`]).
    pub fn with_weights_and_groups(mut self, weights: Option<Tensor>, groups: Option<Vec<String>>) -> Result<Self> {
        let n = self.len();
        if weights.as_ref().is_some_and(|w| w.size().first() != Some(&n))
            || groups.as_ref().is_some_and(|g| g.len() as i64 != n)
        {
            return Err(Error::Shape(format!(
                "{}: {n} samples but a different number of weights or groups",
                self.folder.display()
            )));
        }
        self.weights = weights;
        self.groups = groups;
        Ok(self)
    }

    /// The folder read.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Bytes of the shards on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The samples at `indices`, read from the shards (on the CPU).
    pub fn batch(&self, indices: &Tensor) -> Result<(Vec<ModalityInput>, Tensor)> {
        let inputs = self.inner.inputs(indices)?;
        Ok((inputs, self.labels.index_select(0, indices)))
    }
}

impl TrainingData for ShardedDataset {
    fn len(&self) -> i64 {
        self.inner.rows.len() as i64
    }

    fn labels(&self) -> &Tensor {
        &self.labels
    }

    fn check(&self) -> Result<()> {
        if self.labels.size()[0] == self.len() {
            Ok(())
        } else {
            Err(Error::Shape(format!(
                "{}: {} labels for {} samples",
                self.folder.display(),
                self.labels.size()[0],
                self.len()
            )))
        }
    }

    fn weights(&self) -> Option<&Tensor> {
        self.weights.as_ref()
    }

    fn groups(&self) -> Option<&[String]> {
        self.groups.as_deref()
    }

    fn assemble<'a>(&'a self, batches: Vec<Tensor>, device: Device) -> Batches<'a> {
        let (sender, receiver) = sync_channel(PREFETCH_BATCHES);
        let inner = Arc::clone(&self.inner);
        let pin = device.is_cuda();
        let worker = std::thread::spawn(move || {
            yield_to_compute();
            // Its own libtorch calls (a new tensor is zero-filled in parallel) run on this
            // thread alone: a second OpenMP team, spinning beside the training's, made epochs
            // 2.5× slower on 2 cores. libtorch keeps the count for threads started later
            // too: it is put back at the end.
            let threads = tch::get_num_threads();
            tch::set_num_threads(1);
            for indices in batches {
                let inputs = inner.inputs(&indices).map(|inputs| {
                    if pin {
                        // Page-locked: the copy to the GPU runs without a staging buffer and
                        // does not make the host wait.
                        inputs
                            .into_iter()
                            .map(|i| map_input(i, |t| t.pin_memory(device)))
                            .collect()
                    } else {
                        inputs
                    }
                });
                // The receiver is gone when training stopped early: nothing left to do.
                if sender.send(inputs.map(|i| (i, indices))).is_err() {
                    break;
                }
            }
            tch::set_num_threads(threads);
        });
        Box::new(Prefetched {
            receiver: Some(receiver),
            worker: Some(worker),
            labels: self.labels.shallow_clone(),
            device,
        })
    }
}

/// Lets this thread run only on a core nobody else wants (Linux's SCHED_IDLE): where
/// libtorch's threads fill every core, an assembly thread that preempted one of them would
/// stall its parallel region for a time slice. Elsewhere, or when refused, the thread
/// keeps its normal priority.
fn yield_to_compute() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's (tid 0) policy from a valid parameter.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

fn map_input(input: ModalityInput, f: impl Fn(&Tensor) -> Tensor) -> ModalityInput {
    ModalityInput {
        features: f(&input.features),
        padding_mask: input.padding_mask.as_ref().map(&f),
        present: f(&input.present),
    }
}

/// Batches from the background thread, moved to the device.
struct Prefetched {
    receiver: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    labels: Tensor,
    device: Device,
}

impl Iterator for Prefetched {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.receiver.as_ref()?.recv() {
            Ok(Ok((inputs, indices))) => {
                let non_blocking = self.device.is_cuda();
                let moved = |t: &Tensor| t.to_device_(self.device, t.kind(), non_blocking, false);
                let inputs = inputs.into_iter().map(|i| map_input(i, moved)).collect();
                Some(Ok((
                    inputs,
                    self.labels.index_select(0, &indices).to_device(self.device),
                )))
            }
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => {
                // Every batch was sent, or the thread died: a panic is an error, not silence.
                self.receiver = None;
                let panicked = self.worker.take().is_some_and(|w| w.join().is_err());
                panicked.then(|| Err(Error::Config("the batch assembly thread panicked".into())))
            }
        }
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        // Closing the queue first ends the thread at its next send.
        self.receiver = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Inner {
    fn inputs(&self, indices: &Tensor) -> Result<Vec<ModalityInput>> {
        let indices = Vec::<i64>::try_from(indices)?;
        let located = indices
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.rows.get(i))
                    .copied()
                    .ok_or_else(|| Error::Shape(format!("sample {i} of a dataset of {}", self.rows.len())))
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = located.len() as i64;
        // Each row's bytes, column by column in `row_spans` order, checked against the
        // row's checksum; the labels are read for the check only (they are in memory).
        let columns = self.shards.first().map_or(0, |s| s.row_spans().count());
        let mut read: Vec<Vec<u8>> = vec![Vec::new(); columns];
        for &(s, r) in &located {
            let shard = &self.shards[s as usize];
            let mut hasher = crc32fast::Hasher::new();
            for (column, span) in read.iter_mut().zip(shard.row_spans()) {
                let start = column.len();
                shard.read_row(span, r, column)?;
                hasher.update(&column[start..]);
            }
            let (actual, stored) = (hasher.finalize(), shard.row_crc[r as usize]);
            if actual != stored {
                return Err(Error::Checkpoint {
                    path: shard.path.clone(),
                    reason: format!(
                        "row {r} changed since it was written (checksum {actual:08x}, stored {stored:08x}): the shard was overwritten while training read it"
                    ),
                });
            }
        }
        let mut read = read.into_iter();
        let mut tensor = |shape: &[i64], kind: Kind| -> Result<Tensor> {
            let bytes = read.next().unwrap_or_default();
            let size: Vec<i64> = std::iter::once(batch).chain(shape.iter().copied()).collect();
            Ok(Tensor::f_from_data_size(&bytes, &size, kind)?)
        };
        self.modalities
            .iter()
            .map(|column| {
                let features = tensor(&column.shape, column.kind())?;
                let present = tensor(&[], Kind::Bool)?;
                let padding_mask = match column.padded {
                    true => Some(tensor(&column.shape[..1], Kind::Bool)?),
                    false => None,
                };
                let (features, padding_mask) = match padding_mask {
                    Some(mask) => {
                        let (features, mask) = crate::dataset::cut_to_longest(features, &mask);
                        (features, Some(mask))
                    }
                    None => (features, None),
                };
                Ok(ModalityInput {
                    features,
                    padding_mask,
                    present,
                })
            })
            .collect()
    }
}

/// Opens one shard, checks its tensors against the index, and reads its labels and row
/// checksums. Returns the shard, its labels and its length in bytes.
fn open_shard(path: &Path, index: &Index, rows: u64) -> Result<(Shard, Tensor, u64)> {
    use std::os::unix::fs::FileExt;
    let damaged = |reason: String| Error::Checkpoint {
        path: path.into(),
        reason,
    };
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(damaged("not a regular file".into()));
    }
    let length = metadata.len();
    let header = read_header(&file, length).map_err(damaged)?;
    let span = |name: &str, column: &Column| -> Result<Span> {
        let info = header
            .tensors
            .get(name)
            .ok_or_else(|| damaged(format!("`{name}` missing")))?;
        let mut expected = vec![rows as i64];
        expected.extend(&column.shape);
        let row_bytes = column.row_bytes().unwrap_or(usize::MAX);
        let bytes = (rows as usize).checked_mul(row_bytes);
        let (start, end) = info.data_offsets;
        if info.dtype != column.dtype
            || info.shape != expected
            || bytes.is_none()
            || end.checked_sub(start) != bytes
            || header.data_start.checked_add(end as u64).is_none_or(|e| e > length)
        {
            return Err(damaged(format!(
                "`{name}` is {} {:?} at bytes {start}..{end}; the index says {} {expected:?} ({bytes:?} bytes)",
                info.dtype, info.shape, column.dtype
            )));
        }
        Ok(Span {
            offset: header.data_start + start as u64,
            row_bytes,
        })
    };
    let mask = |shape: Vec<i64>| Column {
        dtype: "BOOL".into(),
        shape,
        padded: false,
    };
    let (mut features, mut present, mut padding) = (Vec::new(), Vec::new(), Vec::new());
    for (m, column) in index.modalities.iter().enumerate() {
        features.push(span(&format!("features.{m}"), column)?);
        present.push(span(&format!("present.{m}"), &mask(Vec::new()))?);
        padding.push(match column.padded {
            true => Some(span(&format!("padding.{m}"), &mask(column.shape[..1].to_vec()))?),
            false => None,
        });
    }
    // Both below the file's length (checked by `span`), so they fit in memory's addresses.
    let whole = |span: Span| -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; rows as usize * span.row_bytes];
        file.read_exact_at(&mut bytes, span.offset).map_err(io)?;
        Ok(bytes)
    };
    let labels_span = span("labels", &index.labels)?;
    let crc_span = span(
        ROW_CRC,
        &Column {
            dtype: "I64".into(),
            shape: Vec::new(),
            padded: false,
        },
    )?;
    let mut size = vec![rows as i64];
    size.extend(&index.labels.shape);
    let labels = Tensor::f_from_data_size(&whole(labels_span)?, &size, index.labels.kind())?;
    let row_crc = whole(crc_span)?
        .chunks_exact(8)
        .map(|b| {
            let value = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            u32::try_from(value).map_err(|_| damaged(format!("row checksum {value} is not a CRC-32")))
        })
        .collect::<Result<Vec<_>>>()?;
    let shard = Shard {
        path: path.into(),
        file,
        features,
        present,
        padding,
        labels: labels_span,
        row_crc,
    };
    Ok((shard, labels, length))
}

struct Header {
    tensors: HashMap<String, TensorInfo>,
    /// File offset of the data area.
    data_start: u64,
}

#[derive(Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: (usize, usize),
}

/// The safetensors header of a file of `length` bytes: an 8-byte little-endian length,
/// then that much JSON.
fn read_header(file: &File, length: u64) -> std::result::Result<Header, String> {
    use std::os::unix::fs::FileExt;
    let mut prefix = [0u8; 8];
    file.read_exact_at(&mut prefix, 0)
        .map_err(|_| "shorter than a safetensors header".to_string())?;
    let header_length = u64::from_le_bytes(prefix);
    if header_length > MAX_HEADER_BYTES || 8 + header_length > length {
        return Err(format!("header of {header_length} bytes in a file of {length}"));
    }
    let mut json = vec![0u8; header_length as usize];
    file.read_exact_at(&mut json, 8).map_err(|e| format!("header: {e}"))?;
    let mut entries: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| format!("header: {e}"))?;
    entries.remove("__metadata__");
    let tensors = entries
        .into_iter()
        .map(|(name, value)| {
            serde_json::from_value(value)
                .map(|info| (name.clone(), info))
                .map_err(|e| format!("`{name}`: {e}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(Header {
        tensors,
        data_start: 8 + header_length,
    })
}
