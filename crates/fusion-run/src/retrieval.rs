//! What a contrastive run does besides its training: each record's embedding per modality
//! (written for search and for data tools), exact search over them, and zero-shot
//! classification from class descriptions or from a few examples per class.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use fusion_core::{Metrics, Task, search::VectorIndex};
use fusion_data::{Problem, Record, Split};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{EVAL_BATCH, Error, Observer, Predictor, Result, evaluation::Loaded};

/// Largest index description (`.json` beside the vectors) read back.
const MAX_INDEX_JSON_BYTES: u64 = 1 << 30;

/// Each record's embedding per modality of a contrastive run.
#[derive(Debug)]
pub struct Embeddings {
    /// Record ids, in row order.
    pub ids: Vec<String>,
    /// Each record's label as the manifest gives it (empty without one).
    pub labels: Vec<String>,
    /// Modality names, in column order.
    pub modalities: Vec<String>,
    /// `[N, M, D]` float unit rows on the CPU; zeros where a record lacks the modality.
    pub vectors: Tensor,
    /// `[N, M]` booleans: which record has which modality.
    pub present: Tensor,
    /// Records that could not be embedded (no usable modality), with the reason.
    pub problems: Vec<Problem>,
    /// Checksum of the trained weights of the run that embedded them: an index is searched
    /// with the run that made it.
    pub run_weights: i64,
}

/// What the `.json` beside an index's vectors holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexDescription {
    ids: Vec<String>,
    labels: Vec<String>,
    modalities: Vec<String>,
    /// [`fusion_core::checksum`] of the vectors file's tensors: the two files belong together.
    vectors_checksum: i64,
    run_weights: i64,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The record found.
    pub id: String,
    /// Its label (empty without one).
    pub label: String,
    /// Cosine similarity to the query.
    pub score: f32,
}

impl Embeddings {
    /// The description file written beside `path`'s vectors (`index.safetensors` →
    /// `index.ids.json`: never a run's own `NAME.json`).
    pub fn description_path(path: &Path) -> PathBuf {
        path.with_extension("ids.json")
    }

    /// Writes the vectors (`embeddings` `[N, M, D]`, `present` `[N, M]`) as safetensors at
    /// `path` and the ids, labels and modality names as JSON beside it, each atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        if path.extension().is_some_and(|e| e == "json") {
            return Err(Error::Config(format!(
                "{}: the vectors go to a `.safetensors` file (their description goes beside it, as `.json`)",
                path.display()
            )));
        }
        let tensors = [
            ("embeddings".to_string(), self.vectors.shallow_clone()),
            ("present".to_string(), self.present.to_kind(Kind::Uint8)),
        ];
        fusion_core::write_checked_safetensors(&tensors, path)?;
        let description = IndexDescription {
            ids: self.ids.clone(),
            labels: self.labels.clone(),
            modalities: self.modalities.clone(),
            vectors_checksum: fusion_core::checksum(&tensors)?,
            run_weights: self.run_weights,
        };
        let text = serde_json::to_string(&description).map_err(|e| Error::Config(e.to_string()))?;
        Ok(fusion_core::write_file_atomic(&Self::description_path(path), text)?)
    }

    /// Writes the embeddings as an Arrow IPC file (Feather v2: pandas, Polars, DuckDB and
    /// PyArrow read it), atomically: one row per record with `id`, `label` and a
    /// `FixedSizeList<Float32>` column per modality, null where the record lacks it; the
    /// run's weights checksum and the vectors' size in the schema's metadata.
    pub fn write_arrow(&self, path: &Path) -> Result<()> {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
        use arrow_schema::{DataType, Field, Schema};

        let arrow = |e: arrow_schema::ArrowError| Error::Config(format!("{}: {e}", path.display()));
        let size = self.vectors.size();
        let dim = size.get(2).copied().unwrap_or(0) as i32;
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let mut fields = vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.ids.clone())),
            Arc::new(StringArray::from(self.labels.clone())),
        ];
        for (m, name) in self.modalities.iter().enumerate() {
            let values = Vec::<f32>::try_from(self.vectors.select(1, m as i64).reshape([-1]))?;
            let present = Vec::<bool>::try_from(self.present.select(1, m as i64))?;
            let column = FixedSizeListArray::try_new(
                item.clone(),
                dim,
                Arc::new(Float32Array::from(values)),
                Some(present.into()),
            )
            .map_err(arrow)?;
            fields.push(Field::new(name, DataType::FixedSizeList(item.clone(), dim), true));
            columns.push(Arc::new(column));
        }
        let metadata = std::collections::HashMap::from([
            ("fusion.run_weights".to_string(), self.run_weights.to_string()),
            ("fusion.dim".to_string(), dim.to_string()),
        ]);
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow)?;
        let mut writer = arrow_ipc::writer::FileWriter::try_new(Vec::new(), &schema).map_err(arrow)?;
        writer.write(&batch).map_err(arrow)?;
        writer.finish().map_err(arrow)?;
        let bytes = writer.into_inner().map_err(arrow)?;
        Ok(fusion_core::write_file_atomic(path, bytes)?)
    }

    /// Whether `path` names an Arrow IPC file (`.arrow`, `.feather`, `.ipc`): where
    /// `fusion embed` writes [`Embeddings::write_arrow`] instead of an index.
    pub fn is_arrow_path(path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["arrow", "feather", "ipc"].contains(&e.to_ascii_lowercase().as_str()))
    }

    /// Reads what [`Embeddings::write`] wrote; a file that does not fit its description
    /// (shapes, counts, a checksum) is an error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let description_path = Self::description_path(path);
        let bytes = fusion_data::read_bounded(&description_path, MAX_INDEX_JSON_BYTES)
            .map_err(|reason| Error::Config(format!("{}: {reason}", description_path.display())))?;
        let description: IndexDescription = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", description_path.display())))?;
        let mut tensors = fusion_core::read_checked_safetensors(path)?;
        let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
        let named: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        if fusion_core::checksum(&named)? != description.vectors_checksum {
            return Err(bad(format!(
                "these vectors are not the ones {} describes (written apart?)",
                description_path.display()
            )));
        }
        let vectors = tensors
            .remove("embeddings")
            .ok_or_else(|| bad("no `embeddings` tensor".into()))?;
        let present = tensors
            .remove("present")
            .ok_or_else(|| bad("no `present` tensor".into()))?;
        let (n, m) = (description.ids.len() as i64, description.modalities.len() as i64);
        let size = vectors.size();
        if size.len() != 3 || size[0] != n || size[1] != m || present.size() != [n, m] {
            return Err(bad(format!(
                "embeddings {size:?} and presence {:?} do not fit {n} records of {m} modalities",
                present.size()
            )));
        }
        if description.labels.len() != description.ids.len() {
            return Err(bad("as many labels as ids are needed".into()));
        }
        Ok(Self {
            ids: description.ids,
            labels: description.labels,
            modalities: description.modalities,
            vectors: vectors.to_kind(Kind::Float),
            present: present.to_kind(Kind::Bool),
            problems: Vec::new(),
            run_weights: description.run_weights,
        })
    }

    /// The column of modality `name`; the error lists the modalities there are.
    pub fn modality(&self, name: &str) -> Result<usize> {
        self.modalities.iter().position(|m| m == name).ok_or_else(|| {
            Error::Config(format!(
                "no modality `{name}` among the embeddings' {}",
                self.modalities.join(", ")
            ))
        })
    }

    /// The records having modality column `m` and their `[n, D]` vectors in it.
    fn having(&self, m: usize) -> (Vec<usize>, Tensor) {
        let rows = self.present.select(1, m as i64).nonzero().squeeze_dim(1);
        let records = Vec::<i64>::try_from(&rows)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r as usize)
            .collect();
        (records, self.vectors.select(1, m as i64).index_select(0, &rows))
    }

    /// The `k` records whose `key` modality is most similar to each row of `queries`
    /// `[Q, D]` (one matrix product per block of the index: exact).
    pub fn search(&self, key: &str, queries: &Tensor, k: usize) -> Result<Vec<Vec<SearchHit>>> {
        self.index(key, None)?.search(self, queries, k)
    }

    /// The records having modality `key`, indexed for search: exactly, or through an HNSW
    /// graph built with `approximate`.
    pub fn index(&self, key: &str, approximate: Option<&fusion_ann::HnswParams>) -> Result<KeyIndex> {
        let (records, vectors) = self.having(self.modality(key)?);
        if records.is_empty() {
            return Err(Error::Config(format!("no indexed record has a `{key}` embedding")));
        }
        let index = match approximate {
            Some(params) => VectorIndex::approximate(&vectors, params)?,
            None => VectorIndex::exact(&vectors)?,
        };
        Ok(KeyIndex { index, records })
    }

    /// Row `record`'s vector in each modality it has, by name (a query for
    /// [`Searcher::search`]).
    pub fn record_vectors(&self, record: usize) -> Result<BTreeMap<String, Vec<f32>>> {
        let mut vectors = BTreeMap::new();
        for (m, name) in self.modalities.iter().enumerate() {
            if let Some(vector) = self.vector(record, m) {
                vectors.insert(name.clone(), Vec::<f32>::try_from(vector)?);
            }
        }
        Ok(vectors)
    }

    /// Row `record`'s vector in modality column `m`, if it has one.
    pub fn vector(&self, record: usize, m: usize) -> Option<Tensor> {
        bool::try_from(self.present.get(record as i64).get(m as i64))
            .unwrap_or(false)
            .then(|| self.vectors.get(record as i64).get(m as i64))
    }
}

/// One modality's vectors of an [`Embeddings`], searchable.
#[derive(Debug)]
pub struct KeyIndex {
    index: VectorIndex,
    /// The embeddings' row of each indexed vector.
    records: Vec<usize>,
}

impl KeyIndex {
    /// Vectors indexed.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether searches are approximate.
    pub fn is_approximate(&self) -> bool {
        self.index.is_approximate()
    }

    /// The `k` records most similar to each row of `queries` `[Q, D]` (`of`: the
    /// embeddings this index was made from).
    pub fn search(&self, of: &Embeddings, queries: &Tensor, k: usize) -> Result<Vec<Vec<SearchHit>>> {
        Ok(self
            .index
            .search(queries, k)?
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(row, score)| SearchHit {
                        id: of.ids[self.records[row]].clone(),
                        label: of.labels[self.records[row]].clone(),
                        score,
                    })
                    .collect()
            })
            .collect())
    }

    /// Recall@`k` of this index's search against the exact one, with up to `samples` of the
    /// indexed vectors (evenly spread) as queries.
    pub fn recall_at(&self, k: usize, samples: usize) -> Result<f64> {
        let step = (self.len() / samples.max(1)).max(1) as i64;
        let rows = Tensor::arange_start_step(0, self.len() as i64, step, (Kind::Int64, Device::Cpu));
        Ok(self
            .index
            .recall_against_exact(&self.index.vectors().index_select(0, &rows), k)?)
    }
}

/// Indexed vectors sampled as queries to measure a graph's recall against exact search.
pub const RECALL_SAMPLES: usize = 100;

/// An index read for searching with the run that wrote it: exactly over each modality,
/// and through HNSW graphs where [`Searcher::approximate_above`] built them.
#[derive(Debug)]
pub struct Searcher {
    embeddings: Embeddings,
    /// The modalities some record has, in the index's column order.
    indexed: Vec<String>,
    /// Each indexed modality's index: exact, or a graph with its recall@k.
    keys: BTreeMap<String, (KeyIndex, Option<(f64, usize)>)>,
}

/// An HNSW graph that [`Searcher::approximate_above`] built.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphBuilt {
    /// The modality indexed.
    pub modality: String,
    /// Vectors in the graph.
    pub vectors: usize,
    /// Recall@k of the graph's search against the exact one.
    pub recall: f64,
    /// The k of that recall.
    pub k: usize,
    /// Seconds to build the graph and measure its recall.
    pub seconds: f64,
}

impl std::fmt::Display for GraphBuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: an HNSW graph over {} vectors built in {:.1} s, recall@{} against exact search {:.3} ({RECALL_SAMPLES} of the vectors as queries)",
            self.modality, self.vectors, self.seconds, self.k, self.recall
        )
    }
}

/// The answer to one query of a [`Searcher`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchAnswer {
    /// The modality the query gave.
    pub query_modality: String,
    /// The indexed modality searched.
    pub among: String,
    /// Whether an HNSW graph answered (else one exact matrix product per block).
    pub approximate: bool,
    /// The graph's recall@[`SearchAnswer::recall_k`] against exact search, measured when
    /// it was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_against_exact: Option<f64>,
    /// The k of that recall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_k: Option<usize>,
    /// Most similar first.
    pub hits: Vec<SearchHit>,
}

impl Searcher {
    /// Reads the index at `path` (see [`Embeddings::write`]) and refuses it unless
    /// `predictor`'s run wrote it.
    pub fn open(predictor: &Predictor, path: &Path) -> Result<Self> {
        if Embeddings::is_arrow_path(path) {
            return Err(Error::Config(format!(
                "{}: an Arrow export is for data tools; search an index `fusion embed` wrote as `.safetensors`",
                path.display()
            )));
        }
        let embeddings = Embeddings::read(path)?;
        predictor.check_index(&embeddings, path)?;
        Self::of(embeddings)
    }

    /// Searches `embeddings` held in memory.
    pub fn of(embeddings: Embeddings) -> Result<Self> {
        let mut indexed = Vec::new();
        let mut keys = BTreeMap::new();
        for (m, name) in embeddings.modalities.iter().enumerate() {
            if bool::try_from(embeddings.present.select(1, m as i64).any())? {
                indexed.push(name.clone());
                keys.insert(name.clone(), (embeddings.index(name, None)?, None));
            }
        }
        Ok(Self {
            embeddings,
            indexed,
            keys,
        })
    }

    /// The modalities some indexed record has (those a search may be among), in the
    /// index's column order.
    pub fn indexed(&self) -> &[String] {
        &self.indexed
    }

    /// The records indexed, with their vectors.
    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    /// Replaces the exact index of each indexed modality (or only `only`) holding more than
    /// `above` vectors by an HNSW graph (default parameters), its recall@`k` against exact
    /// search measured with [`RECALL_SAMPLES`] of its vectors as queries.
    pub fn approximate_above(&mut self, above: usize, only: Option<&str>, k: usize) -> Result<Vec<GraphBuilt>> {
        let mut built = Vec::new();
        for (name, (index, recall)) in &mut self.keys {
            if index.len() <= above || only.is_some_and(|only| only != name) || recall.is_some() {
                continue;
            }
            let started = std::time::Instant::now();
            let graph = self.embeddings.index(name, Some(&fusion_ann::HnswParams::default()))?;
            let measured = graph.recall_at(k, RECALL_SAMPLES)?;
            built.push(GraphBuilt {
                modality: name.clone(),
                vectors: graph.len(),
                recall: measured,
                k,
                seconds: started.elapsed().as_secs_f64(),
            });
            (*index, *recall) = (graph, Some((measured, k)));
        }
        Ok(built)
    }

    /// The indexed modality a query of modality `from` searches: `among`, or the first
    /// indexed one other than `from` in the index's column order. A query that cannot
    /// search (nothing else indexed, `among` not indexed) is an [`Error::Record`].
    pub fn key_for(&self, from: &str, among: Option<&str>) -> Result<String> {
        let key = match among {
            Some(name) => name.to_string(),
            None => self.indexed.iter().find(|m| *m != from).cloned().ok_or_else(|| {
                Error::Record(format!(
                    "the index holds no modality other than the query's `{from}`: name one to search among"
                ))
            })?,
        };
        match self.keys.contains_key(&key) {
            true => Ok(key),
            false => Err(Error::Record(format!(
                "no indexed record has a `{key}` embedding (indexed: {})",
                self.indexed.join(", ")
            ))),
        }
    }

    /// The `k` indexed records most similar, in modality `among` (see
    /// [`Searcher::key_for`]), to a query's embeddings (a [`crate::Prediction`]'s
    /// `embeddings`), which must give exactly one modality.
    pub fn search(&self, query: &BTreeMap<String, Vec<f32>>, among: Option<&str>, k: usize) -> Result<SearchAnswer> {
        let mut given = query.iter();
        let (Some((from, vector)), None) = (given.next(), given.next()) else {
            return Err(Error::Record(format!(
                "a query gives an input to exactly one modality of the run; this one gave {}: {}",
                query.len(),
                query.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        if k == 0 {
            return Err(Error::Config("k: at least one hit is asked for".into()));
        }
        let key = self.key_for(from, among)?;
        let (index, recall) = &self.keys[&key];
        let hits = index
            .search(&self.embeddings, &Tensor::from_slice(vector).unsqueeze(0), k)?
            .remove(0);
        Ok(SearchAnswer {
            query_modality: from.clone(),
            among: key,
            approximate: index.is_approximate(),
            recall_against_exact: recall.map(|(r, _)| r),
            recall_k: recall.map(|(_, k)| k),
            hits,
        })
    }
}

/// How zero-shot classification describes each class.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassDescriptions {
    /// Each class's prompts (text, embedded by the modality that reads a record's `text`),
    /// averaged: CLIP's prompt ensembles.
    Prompts(BTreeMap<String, Vec<String>>),
    /// The mean query-modality embedding of the first `shots` records of each class in
    /// `split` (prototypes).
    Prototypes {
        /// Where the examples come from.
        split: Split,
        /// Examples per class.
        shots: usize,
    },
}

/// A zero-shot classification of a split, reported like a classifier's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotRecord {
    /// The split classified.
    pub split: String,
    /// `prompts` or `prototypes`.
    pub method: String,
    /// The modality of the records classified.
    pub modality: String,
    /// The classes, in index order.
    pub classes: Vec<String>,
    /// Accuracy, macro-F1, ECE, confusion matrix (scores: the softmax of the model's logit
    /// scale times the cosine similarities).
    pub metrics: Metrics,
    /// Accuracy of always answering the most frequent class.
    pub majority: f64,
    /// Records of the split left out (no such modality, or a label not among the classes).
    pub left_out: usize,
}

/// Every class's prompts from `templates` (`{}` stands for the class name; a template
/// without it is followed by the name).
pub fn prompts_from_templates(classes: &[String], templates: &[String]) -> BTreeMap<String, Vec<String>> {
    let templates: Vec<&str> = if templates.is_empty() {
        vec!["{}"]
    } else {
        templates.iter().map(String::as_str).collect()
    };
    classes
        .iter()
        .map(|class| {
            let prompts = templates
                .iter()
                .map(|t| match t.contains("{}") {
                    true => t.replace("{}", class),
                    false => format!("{t} {class}"),
                })
                .collect();
            (class.clone(), prompts)
        })
        .collect()
}

impl Predictor {
    fn contrastive(&self) -> Result<&crate::predictor::LoadedRun> {
        match (self.task(), self.members()) {
            (Task::Contrastive, [run]) => Ok(run),
            (task, _) => Err(Error::Config(format!(
                "{}: embeddings come from a contrastive run, this is a {} {}",
                self.root().display(),
                task.name(),
                if self.ensemble().is_some() { "ensemble" } else { "run" }
            ))),
        }
    }

    /// [`fusion_core::checksum`] of the run's trained weights (what an index records).
    pub fn weights_checksum(&self) -> Result<i64> {
        let run = self.contrastive()?;
        let mut named: Vec<(String, Tensor)> = run.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(fusion_core::checksum(&named)?)
    }

    /// Refuses `index` unless this run wrote it (the same trained weights).
    pub fn check_index(&self, index: &Embeddings, path: &Path) -> Result<()> {
        if index.run_weights != self.weights_checksum()? {
            return Err(Error::Config(format!(
                "{}: written by another run (or by {} before it trained again): embed again",
                path.display(),
                self.root().display()
            )));
        }
        Ok(())
    }

    fn embed_loaded(&self, loaded: &Loaded, indices: &[usize]) -> Result<Embeddings> {
        let run = self.contrastive()?;
        let extraction = &loaded.extraction;
        let data = crate::prediction_dataset(
            &run.config,
            extraction,
            &loaded.specs,
            indices,
            &run.classes,
            run.model.device(),
        )?;
        let vectors = fusion_core::embed(&run.model, &data.data, EVAL_BATCH)?;
        let present = fusion_core::contrastive::presence_of(&vectors);
        let kept: std::collections::HashSet<&str> =
            indices.iter().map(|&i| extraction.records[i].id.as_str()).collect();
        Ok(Embeddings {
            ids: data.records.iter().map(|&i| extraction.records[i].id.clone()).collect(),
            labels: data
                .records
                .iter()
                .map(|&i| extraction.records[i].label.clone())
                .collect(),
            modalities: run.model.modality_names().to_vec(),
            vectors,
            present,
            problems: extraction
                .problems
                .iter()
                .filter(|p| kept.contains(p.id.as_str()))
                .cloned()
                .collect(),
            run_weights: self.weights_checksum()?,
        })
    }

    /// The embeddings of every usable record of `manifest` (default: the run's), or of
    /// its `split`, read through the feature cache as training read them.
    pub fn embed_manifest(
        &self,
        manifest: Option<&Path>,
        split: Option<Split>,
        observer: &dyn Observer,
    ) -> Result<Embeddings> {
        let run = self.contrastive()?;
        let (_, loaded) = crate::load(&run.config, manifest, None, observer)?;
        let indices: Vec<usize> = match split {
            Some(split) => loaded.extraction.split_indices(split),
            None => (0..loaded.extraction.records.len()).collect(),
        };
        self.embed_loaded(&loaded, &indices)
    }

    /// The embeddings of `records` from their files or inline text (queries); a record
    /// whose file cannot be used is an error naming it.
    pub fn embed_records(&self, records: &[Record]) -> Result<Embeddings> {
        self.contrastive()?;
        let prepared = self.preparer()?.prepare(records)?;
        if let Some(problem) = prepared.problems().first() {
            return Err(Error::Record(crate::describe(problem)));
        }
        let loaded = &prepared.members[0];
        let all: Vec<usize> = (0..loaded.extraction.records.len()).collect();
        self.embed_loaded(loaded, &all)
    }

    /// Classifies the records of `split` of `manifest` (default: the run's) that have
    /// modality `modality` and a label among the described classes, by the class whose
    /// description is most similar; `eval`'s classification metrics on them.
    pub fn zero_shot(
        &self,
        manifest: Option<&Path>,
        split: Split,
        modality: &str,
        descriptions: &ClassDescriptions,
        observer: &dyn Observer,
    ) -> Result<ZeroShotRecord> {
        let run = self.contrastive()?;
        let (_, loaded) = crate::load(&run.config, manifest, None, observer)?;
        let all: Vec<usize> = (0..loaded.extraction.records.len()).collect();
        let everything = self.embed_loaded(&loaded, &all)?;
        let m = everything.modality(modality)?;
        let (classes, class_vectors, method) = match descriptions {
            ClassDescriptions::Prompts(prompts) => {
                let (classes, vectors) = self.prompt_vectors(prompts, modality)?;
                (classes, vectors, "prompts")
            }
            ClassDescriptions::Prototypes { split: from, shots } => {
                let in_support = ids_in(&loaded, *from);
                let mut examples: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
                for (row, id) in everything.ids.iter().enumerate() {
                    let label = &everything.labels[row];
                    if label.is_empty() || !in_support.contains(id.as_str()) {
                        continue;
                    }
                    // Only records that have the modality give a class its examples.
                    if let Some(v) = everything.vector(row, m) {
                        let entry = examples.entry(label.clone()).or_default();
                        if entry.len() < *shots {
                            entry.push(v);
                        }
                    }
                }
                if examples.len() < 2 {
                    return Err(Error::Config(format!(
                        "prototypes need `{modality}` examples of two classes or more in `{}`, found {}",
                        from.name(),
                        examples.len()
                    )));
                }
                let classes: Vec<String> = examples.keys().cloned().collect();
                let vectors: Vec<Tensor> = examples.values().map(|v| mean_of(v)).collect();
                (classes, Tensor::stack(&vectors, 0), "prototypes")
            }
        };
        let class_vectors = fusion_core::contrastive::l2_normalize(&class_vectors);
        let in_split = ids_in(&loaded, split);
        let split_rows: Vec<usize> = (0..everything.ids.len())
            .filter(|&r| in_split.contains(everything.ids[r].as_str()))
            .collect();
        let mut queries = Vec::new();
        let mut labels = Vec::new();
        for &row in &split_rows {
            let class = classes.iter().position(|c| *c == everything.labels[row]);
            if let (Some(class), Some(v)) = (class, everything.vector(row, m)) {
                queries.push(v);
                labels.push(class);
            }
        }
        if queries.is_empty() {
            return Err(Error::Config(format!(
                "no `{}` record has a `{modality}` embedding and one of the classes {}",
                split.name(),
                classes.join(", ")
            )));
        }
        let scale = run.model.contrastive_scale()?.detach().to_device(Device::Cpu);
        let probabilities =
            (Tensor::stack(&queries, 0).matmul(&class_vectors.transpose(0, 1)) * scale).softmax(-1, Kind::Float);
        let probabilities = Vec::<Vec<f32>>::try_from(probabilities).map_err(fusion_core::Error::from)?;
        let (_, metrics, _, _) = fusion_core::probability_metrics(&probabilities, &labels, None, classes.len());
        let mut counts = vec![0usize; classes.len()];
        labels.iter().for_each(|&l| counts[l] += 1);
        Ok(ZeroShotRecord {
            split: split.name().into(),
            method: method.into(),
            modality: modality.into(),
            majority: counts.iter().copied().max().unwrap_or(0) as f64 / labels.len() as f64,
            left_out: in_split.len() - labels.len(),
            classes,
            metrics,
        })
    }

    /// Each class's prompts embedded (by whichever modality reads a record's text) and
    /// averaged, in class order; the prompts' modality must differ from `query_modality`.
    fn prompt_vectors(
        &self,
        prompts: &BTreeMap<String, Vec<String>>,
        query_modality: &str,
    ) -> Result<(Vec<String>, Tensor)> {
        if prompts.len() < 2 || prompts.values().any(Vec::is_empty) {
            return Err(Error::Config(
                "zero-shot classification needs two classes or more, each with a prompt".into(),
            ));
        }
        let mut records = Vec::new();
        let mut owner = Vec::new();
        for (c, texts) in prompts.values().enumerate() {
            for (t, text) in texts.iter().enumerate() {
                records.push(Record {
                    id: format!("prompt-{c}-{t}"),
                    text: Some(text.clone()),
                    ..Record::default()
                });
                owner.push(c);
            }
        }
        let embedded = self.embed_records(&records)?;
        let reads_text = (0..embedded.modalities.len())
            .find(|&m| embedded.modalities[m] != query_modality && embedded.vector(0, m).is_some())
            .ok_or_else(|| {
                Error::Config(format!(
                    "no modality of the run other than `{query_modality}` reads a record's text: prompts cannot be embedded"
                ))
            })?;
        // Every prompt is a text: each class has its prompts' (unit) embeddings.
        let mut embeddings: Vec<Vec<Tensor>> = (0..prompts.len()).map(|_| Vec::new()).collect();
        for (row, &c) in owner.iter().enumerate() {
            if let Some(v) = embedded.vector(row, reads_text) {
                embeddings[c].push(v);
            }
        }
        let vectors: Vec<Tensor> = embeddings.iter().map(|v| mean_of(v)).collect();
        Ok((prompts.keys().cloned().collect(), Tensor::stack(&vectors, 0)))
    }
}

/// The ids of `loaded`'s records in `split`.
fn ids_in(loaded: &Loaded, split: Split) -> std::collections::HashSet<&str> {
    loaded
        .extraction
        .split_indices(split)
        .into_iter()
        .map(|i| loaded.extraction.records[i].id.as_str())
        .collect()
}

/// The mean of vectors `[D]` (a class's prompts or examples).
fn mean_of(vectors: &[Tensor]) -> Tensor {
    Tensor::stack(vectors, 0).mean_dim(0, false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    fn contrastive(extra: &str, modalities: usize) -> Result<RunConfig> {
        let modality = |name: &str, kind: &str| {
            format!(r#"{{"name": "{name}", "features": {kind}, "encoder": {{"kind": "mlp", "hidden": [4]}}}}"#)
        };
        let listed: Vec<String> = [
            ("text", r#"{"kind": "hashed_words", "dim": 8}"#),
            ("image", r#"{"kind": "pixels", "size": 4}"#),
        ][..modalities]
            .iter()
            .map(|(n, k)| modality(n, k))
            .collect();
        let text = format!(
            r#"{{"manifest": "m.jsonl", "task": "contrastive", "modalities": [{}], "train": {{"epochs": 1, "batch_size": 8}}{extra}}}"#,
            listed.join(", ")
        );
        let config = RunConfig::parse(text.as_bytes(), Path::new("/tmp/c.json"))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn contrastive_configs_refuse_what_they_cannot_use() {
        if let Err(e) = contrastive("", 2) {
            panic!("{e}");
        }
        let refused = |extra: &str, modalities: usize, why: &str| {
            let message = contrastive(extra, modalities)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(message.contains(why), "{extra}: {message}");
        };
        refused("", 1, "two or more modalities");
        refused(
            r#", "fusion": {"family": "late", "combiner": "mean"}"#,
            2,
            "has no fusion",
        );
        refused(r#", "class_weights": "balanced""#, 2, "class_weights");
        refused(r#", "interactions_fallback": true"#, 2, "interactions_fallback");
        refused(
            r#", "compare": [{"name": "r", "fusion": {"family": "late", "combiner": "mean"}}]"#,
            2,
            "`compare[0].fusion`: a contrastive task has no fusion",
        );
        // Set by a program rather than read from a file: refused when validated.
        let fused_row = contrastive("", 2).map(|run| {
            crate::CompareConfig {
                run,
                rows: vec![crate::NamedFusion {
                    name: "r".into(),
                    fusion: fusion_core::FusionConfig::Late {
                        combiner: fusion_core::LateCombiner::Mean,
                    },
                    modalities: Vec::new(),
                }],
            }
            .validate()
        });
        assert!(fused_row.is_ok_and(|v| v.is_err_and(|e| e.to_string().contains("`compare[0].fusion`"))));
        // A prediction task's row names its fusion.
        let classification = RunConfig::parse(
            br#"{"manifest": "m.jsonl", "modalities": [{"name": "text", "features": {"kind": "hashed_words", "dim": 8}, "encoder": {"kind": "mlp", "hidden": [4]}}],
                 "fusion": {"family": "late", "combiner": "mean"}, "compare": [{"name": "r"}], "train": {"epochs": 1, "batch_size": 8}}"#,
            Path::new("/tmp/c.json"),
        );
        let message = classification.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("`compare[0].fusion`: missing"), "{message}");
        let tiny = contrastive("", 2).map(|mut c| {
            c.train.batch_size = 1;
            c.validate()
        });
        assert!(tiny.is_ok_and(|v| v.is_err_and(|e| e.to_string().contains("two records or more"))));
    }

    #[test]
    fn an_index_whose_files_do_not_belong_together_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let index = |seed: i64| {
            tch::manual_seed(seed);
            Embeddings {
                ids: vec!["x".into(), "y".into()],
                labels: vec![String::new(); 2],
                modalities: vec!["a".into(), "b".into()],
                vectors: Tensor::randn([2, 2, 3], (Kind::Float, Device::Cpu)),
                present: Tensor::ones([2, 2], (Kind::Bool, Device::Cpu)),
                problems: Vec::new(),
                run_weights: 7,
            }
        };
        let (first, second) = (dir.path().join("one.safetensors"), dir.path().join("two.safetensors"));
        index(1).write(&first)?;
        index(2).write(&second)?;
        assert_eq!(Embeddings::description_path(&first), dir.path().join("one.ids.json"));
        let read = Embeddings::read(&first)?;
        assert_eq!((read.ids.len(), read.run_weights), (2, 7));
        assert!(read.vectors.equal(&index(1).vectors));
        // The first file's description beside the second's vectors.
        std::fs::copy(dir.path().join("one.ids.json"), dir.path().join("two.ids.json"))
            .map_err(|e| Error::Config(e.to_string()))?;
        let message = Embeddings::read(&second)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("not the ones"), "{message}");
        assert!(
            index(1).write(&dir.path().join("run.json")).is_err(),
            "vectors into a .json"
        );
        Ok(())
    }

    #[test]
    fn a_searcher_answers_one_modality_among_another() -> Result<()> {
        // Columns a, c, b: a query of `a` searches `c` (the index's order), not `b` (the
        // names' order). Record z lacks `c`; its `a` is the query's own direction but must
        // not be found among `c`.
        let unit = |v: [f32; 2]| Tensor::from_slice(&v);
        let vectors = Tensor::stack(
            &[
                Tensor::stack(&[unit([1.0, 0.0]), unit([0.0, 1.0]), unit([1.0, 0.0])], 0),
                Tensor::stack(&[unit([0.0, 1.0]), unit([0.6, 0.8]), unit([1.0, 0.0])], 0),
                Tensor::stack(&[unit([1.0, 0.0]), unit([0.0, 0.0]), unit([1.0, 0.0])], 0),
            ],
            0,
        );
        let present = Tensor::from_slice(&[true, true, true, true, true, true, true, false, true]).reshape([3, 3]);
        let mut searcher = Searcher::of(Embeddings {
            ids: vec!["x".into(), "y".into(), "z".into()],
            labels: vec!["cat".into(), "dog".into(), String::new()],
            modalities: vec!["a".into(), "c".into(), "b".into()],
            vectors,
            present,
            problems: Vec::new(),
            run_weights: 7,
        })?;
        assert_eq!(searcher.indexed(), ["a", "c", "b"]);
        let query = BTreeMap::from([("a".to_string(), vec![1.0f32, 0.0])]);
        let answer = searcher.search(&query, None, 5)?;
        assert_eq!((answer.among.as_str(), answer.approximate), ("c", false));
        let found: Vec<(&str, f32)> = answer.hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
        assert_eq!(found.len(), 2, "z has no `c`: {found:?}");
        assert_eq!((found[0].0, found[1].0), ("y", "x"));
        assert!((found[0].1 - 0.6).abs() < 1e-6 && found[1].1.abs() < 1e-6, "{found:?}");
        assert_eq!(answer.hits[0].label, "dog");
        // Among the query's own modality, when asked.
        let own = searcher.search(&query, Some("a"), 1)?;
        assert!(["x", "z"].contains(&own.hits[0].id.as_str()));
        let refused = |query: &BTreeMap<String, Vec<f32>>, among: Option<&str>, k: usize| match searcher
            .search(query, among, k)
        {
            Ok(_) => String::new(),
            Err(e @ Error::Record(_)) => format!("record: {e}"),
            Err(e) => e.to_string(),
        };
        let both = BTreeMap::from([("a".to_string(), vec![1.0f32, 0.0]), ("c".to_string(), vec![0.0, 1.0])]);
        assert!(refused(&both, None, 1).contains("record: a query gives an input to exactly one modality"));
        assert!(refused(&both, None, 1).contains("gave 2: a, c"));
        assert!(refused(&BTreeMap::new(), None, 1).contains("gave 0"));
        assert!(refused(&query, Some("d"), 1).contains("record: no indexed record has a `d`"));
        assert!(refused(&query, None, 0).contains("k:"));
        // A graph over `c` only (2 vectors > 1), replacing its exact index, its recall measured.
        let built = searcher.approximate_above(1, Some("c"), 1)?;
        assert_eq!(built.len(), 1);
        assert_eq!((built[0].modality.as_str(), built[0].vectors), ("c", 2));
        assert!((built[0].recall - 1.0).abs() < 1e-9);
        assert!(built[0].to_string().starts_with("c: an HNSW graph over 2 vectors"));
        let approximate = searcher.search(&query, None, 2)?;
        assert!(approximate.approximate && approximate.recall_against_exact == Some(1.0));
        assert_eq!(approximate.recall_k, Some(1));
        assert_eq!(approximate.hits, answer.hits);
        assert!(!searcher.search(&query, Some("a"), 1)?.approximate);
        assert!(searcher.approximate_above(1, Some("c"), 1)?.is_empty(), "built once");
        Ok(())
    }

    #[test]
    fn embeddings_are_written_as_an_arrow_file_with_nulls_where_a_modality_is_absent() -> Result<()> {
        use arrow_array::{Array, FixedSizeListArray, Float32Array, StringArray};

        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let vectors = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([2, 2, 3]);
        let embeddings = Embeddings {
            ids: vec!["x".into(), "y".into()],
            labels: vec!["cat".into(), String::new()],
            modalities: vec!["text".into(), "image".into()],
            vectors,
            present: Tensor::from_slice(&[true, true, false, true]).reshape([2, 2]),
            problems: Vec::new(),
            run_weights: -42,
        };
        let path = dir.path().join("e.arrow");
        assert!(Embeddings::is_arrow_path(&path) && !Embeddings::is_arrow_path(&dir.path().join("e.safetensors")));
        embeddings.write_arrow(&path)?;
        let file = std::fs::File::open(&path).map_err(|e| Error::Config(e.to_string()))?;
        let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| Error::Config(e.to_string()))?;
        assert_eq!(reader.schema().metadata()["fusion.run_weights"], "-42");
        let batches: Vec<_> = reader
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Config(e.to_string()))?;
        let batch = &batches[0];
        let names: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "label", "text", "image"]);
        let strings = |c: usize| -> Vec<String> {
            let column = batch.column(c).as_any().downcast_ref::<StringArray>();
            column
                .map(|a| a.iter().map(|v| v.unwrap_or("?").to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(strings(0), ["x", "y"]);
        assert_eq!(strings(1), ["cat", ""]);
        let lists = |c: usize| batch.column(c).as_any().downcast_ref::<FixedSizeListArray>().cloned();
        let text = lists(2).ok_or_else(|| Error::Config("text is no list".into()))?;
        let image = lists(3).ok_or_else(|| Error::Config("image is no list".into()))?;
        // y has no text: null; x's image is vectors[0, 1] = 3, 4, 5.
        assert_eq!((text.is_null(0), text.is_null(1), image.null_count()), (false, true, 0));
        let row = |list: &FixedSizeListArray, r: usize| -> Vec<f32> {
            let values = list.value(r);
            values
                .as_any()
                .downcast_ref::<Float32Array>()
                .map(|a| a.values().to_vec())
                .unwrap_or_default()
        };
        assert_eq!(row(&image, 0), [3.0, 4.0, 5.0]);
        assert_eq!(row(&image, 1), [9.0, 10.0, 11.0]);
        assert_eq!(row(&text, 0), [0.0, 1.0, 2.0]);
        Ok(())
    }
}
