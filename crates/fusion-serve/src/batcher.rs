//! Dynamic batching without HTTP: requests are decoded on blocking threads, wait in a
//! bounded queue, and are grouped up to `max_batch` records or `max_delay`, whichever comes
//! first, into one pass through the model on the one thread that owns it.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use fusion_core::ShapleyReport;
use fusion_data::Record;
use fusion_run::{Predictions, Predictor, Prepared, Preparer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{Metrics, ServeError, Signature};

/// Longest `deadline` or `max_delay` (an hour: beyond, `Instant` arithmetic could
/// overflow and no client waits that long).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How requests are grouped and bounded.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Most records in one pass through the model (a single larger request is a pass of
    /// its own).
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch (only while other admitted
    /// requests are being decoded or queued; a lone request goes at once).
    pub max_delay: Duration,
    /// Most records admitted at once (decoding, queued or being predicted); a request
    /// beyond is refused at once ([`ServeError::Busy`]).
    pub queue: usize,
    /// Requests decoded at the same time (each on a blocking thread).
    pub decode_threads: usize,
    /// Longest a request may take from admission to its answer.
    pub deadline: Duration,
    /// Most records in one request.
    pub max_records: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_delay: Duration::from_millis(5),
            queue: 256,
            decode_threads: std::thread::available_parallelism().map_or(2, usize::from),
            deadline: Duration::from_secs(30),
            max_records: 64,
        }
    }
}

impl BatchOptions {
    /// Checks that every bound is positive and that a request fits the queue.
    pub fn validate(&self) -> Result<(), ServeError> {
        let positive = [
            ("max_batch", self.max_batch),
            ("queue", self.queue),
            ("decode_threads", self.decode_threads),
            ("max_records", self.max_records),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ServeError::Options(format!("{name} must be at least 1")));
        }
        if self.deadline.is_zero() || self.deadline > MAX_WAIT {
            return Err(ServeError::Options(format!(
                "deadline must be positive and at most {} s",
                MAX_WAIT.as_secs()
            )));
        }
        if self.max_delay > MAX_WAIT {
            return Err(ServeError::Options(format!(
                "max_delay must be at most {} s",
                MAX_WAIT.as_secs()
            )));
        }
        if self.max_records > self.queue {
            return Err(ServeError::Options(format!(
                "max_records {} is larger than the queue {}: such a request could never be admitted",
                self.max_records, self.queue
            )));
        }
        Ok(())
    }
}

/// One request's answer.
#[derive(Debug)]
pub struct Answer {
    /// The request's predictions and the records that could not be predicted.
    pub predictions: Predictions,
    /// Per-modality Shapley values of the predicted records, when asked for.
    pub explanation: Option<ShapleyReport>,
}

/// A request in the queue.
struct Job {
    prepared: Prepared,
    explain: bool,
    deadline: Instant,
    reply: oneshot::Sender<Result<Answer, ServeError>>,
    /// The request's records' places in the queue, given back when the job is done (not
    /// when its caller stops waiting).
    _admitted: OwnedSemaphorePermit,
}

/// The handle to a model behind a batching queue: clone it into as many tasks as needed
/// and `predict` from each; the model's thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    preparer: Preparer,
    signature: Signature,
    options: BatchOptions,
    metrics: Arc<Metrics>,
    admission: Arc<Semaphore>,
    decoding: Arc<Semaphore>,
    jobs: mpsc::SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    closing: AtomicBool,
    /// Whether the model's thread still runs.
    alive: Arc<AtomicBool>,
}

impl Batcher {
    /// Moves `predictor` onto a thread of its own and returns the handle to its queue.
    pub fn start(predictor: Predictor, options: BatchOptions, metrics: Arc<Metrics>) -> Result<Self, ServeError> {
        options.validate()?;
        let preparer = predictor
            .preparer()
            .map_err(|e| ServeError::Options(format!("cannot prepare the model's features: {e}")))?;
        let signature = Signature::of(&predictor, &preparer);
        // Jobs hold their admission until answered, so the channel (one place per record
        // admitted) never fills; it is still only ever tried, never waited on.
        let (jobs, incoming) = mpsc::sync_channel(options.queue);
        let queued = Arc::new(AtomicUsize::new(0));
        let admission = Arc::new(Semaphore::new(options.queue));
        let alive = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            alive: alive.clone(),
            predictor,
            admission: admission.clone(),
            queue: options.queue,
            incoming,
            max_batch: options.max_batch,
            max_delay: options.max_delay,
            metrics: metrics.clone(),
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name("fusion-model".into())
            .spawn(move || worker.run())
            .map_err(|e| ServeError::Options(format!("cannot start the model's thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                preparer,
                signature,
                metrics,
                admission,
                decoding: Arc::new(Semaphore::new(options.decode_threads)),
                alive,
                options,
                jobs,
                queued,
                closing: AtomicBool::new(false),
            }),
        })
    }

    /// Predicts `records` (their files read and decoded within the run's limits), batched
    /// with whatever else is waiting; with `explain`, also each modality's Shapley value.
    pub async fn predict(&self, records: Vec<Record>, explain: bool) -> Result<Answer, ServeError> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::SeqCst) {
            return Err(ServeError::ShuttingDown);
        }
        let count = records.len();
        if count == 0 {
            return Err(ServeError::BadRequest("no records to predict".into()));
        }
        if count > inner.options.max_records {
            return Err(ServeError::TooLarge(format!(
                "{count} records in one request; at most {}",
                inner.options.max_records
            )));
        }
        if explain && !inner.signature.explainable {
            return Err(ServeError::BadRequest(
                "this folder is an ensemble: explanations are of one run's modalities".into(),
            ));
        }
        let deadline = Instant::now() + inner.options.deadline;
        let Ok(admitted) = inner.admission.clone().try_acquire_many_owned(count as u32) else {
            inner.metrics.rejected();
            return Err(ServeError::Busy);
        };
        let answer = async {
            let decoding = inner
                .decoding
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ServeError::ShuttingDown)?;
            let preparer = inner.preparer.clone();
            // Both permits go with the work: a caller that stops waiting (deadline, closed
            // connection) frees nothing while its records are still decoded or queued.
            let (admitted, prepared) = tokio::task::spawn_blocking(move || {
                let _decoding = decoding;
                (admitted, preparer.prepare(&records))
            })
            .await
            .map_err(|e| ServeError::Internal(format!("decoding stopped: {e}")))?;
            let prepared = prepared.map_err(|e| ServeError::BadRequest(e.to_string()))?;
            for problem in prepared.problems() {
                inner
                    .metrics
                    .decode_failure(problem.modality.as_deref().unwrap_or("record"));
            }
            let (reply, answer) = oneshot::channel();
            inner.queued.fetch_add(1, Ordering::SeqCst);
            let job = Job {
                prepared,
                explain,
                deadline,
                reply,
                _admitted: admitted,
            };
            if let Err(e) = inner.jobs.try_send(job) {
                inner.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(match e {
                    mpsc::TrySendError::Full(_) => ServeError::Busy,
                    mpsc::TrySendError::Disconnected(_) => {
                        ServeError::Internal("the model's thread has stopped".into())
                    }
                });
            }
            answer
                .await
                .map_err(|_| ServeError::Internal("the model's thread has stopped".into()))?
        };
        tokio::time::timeout_at(deadline.into(), answer)
            .await
            .map_err(|_| ServeError::Deadline(inner.options.deadline))?
    }

    /// Whether the model's thread is running (a server is not ready without it).
    pub fn is_alive(&self) -> bool {
        self.inner.alive.load(Ordering::SeqCst)
    }

    /// What the model reads and predicts.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// The runs' limits on a record's files.
    pub fn limits(&self) -> &fusion_data::Limits {
        self.inner.preparer.limits()
    }

    /// The bounds in force.
    pub fn options(&self) -> &BatchOptions {
        &self.inner.options
    }

    /// Requests waiting for the model (decoded, not yet in a batch).
    pub fn queue_depth(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Records admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.options.queue - self.inner.admission.available_permits()
    }

    /// Refuses new requests from now on ([`ServeError::ShuttingDown`]); those admitted are
    /// still answered.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// The counters this handle updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
}

/// The thread that owns the model.
struct Worker {
    alive: Arc<AtomicBool>,
    predictor: Predictor,
    incoming: mpsc::Receiver<Job>,
    max_batch: usize,
    max_delay: Duration,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
    admission: Arc<Semaphore>,
    queue: usize,
}

impl Worker {
    /// Records admitted and not yet answered, this batch's included.
    fn in_flight(&self) -> usize {
        self.queue - self.admission.available_permits()
    }

    fn run(self) {
        // Whatever ends this thread (a panic included) makes the server not ready.
        struct Alive(Arc<AtomicBool>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _alive = Alive(self.alive.clone());
        let mut held: Option<Job> = None;
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match self.incoming.recv() {
                    Ok(job) => {
                        self.queued.fetch_sub(1, Ordering::SeqCst);
                        job
                    }
                    Err(_) => return,
                },
            };
            let mut records = first.prepared.len();
            let mut batch = vec![first];
            let until = Instant::now() + self.max_delay;
            // Wait for more only while other admitted requests are on their way (decoding
            // or queued): a lone request goes at once instead of waiting out the delay.
            while records < self.max_batch && self.in_flight() > records {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                match self.incoming.recv_timeout(left) {
                    Ok(job) => {
                        self.queued.fetch_sub(1, Ordering::SeqCst);
                        // A job that would overflow the batch starts the next one.
                        if records + job.prepared.len() > self.max_batch {
                            held = Some(job);
                            break;
                        }
                        records += job.prepared.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.answer(batch);
        }
    }

    /// One pass through the model for every job still within its deadline.
    fn answer(&self, batch: Vec<Job>) {
        let now = Instant::now();
        let (batch, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
        for job in late {
            // Its caller has stopped waiting; nothing to answer.
            drop(job.reply);
        }
        if batch.is_empty() {
            return;
        }
        self.metrics.batch(batch.iter().map(|j| j.prepared.len()).sum());
        let groups: Vec<&Prepared> = batch.iter().map(|j| &j.prepared).collect();
        let predicted = match self.predict(&groups) {
            Ok(predicted) => predicted.into_iter().map(Ok).collect(),
            // One bad request must not fail the others: each alone, then.
            Err(_) if groups.len() > 1 => groups
                .iter()
                .map(|g| self.predict(&[g]).map(|mut p| p.remove(0)))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        drop(groups);
        for (job, predictions) in batch.into_iter().zip(predicted) {
            let predictions = match predictions {
                Ok(predictions) => predictions,
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            };
            let explanation = if job.explain && !predictions.predictions.is_empty() {
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.predictor.explain_prepared(&job.prepared))) {
                    Ok(Ok(report)) => Some(report),
                    Ok(Err(e)) => {
                        let _ = job.reply.send(Err(ServeError::BadRequest(e.to_string())));
                        continue;
                    }
                    Err(_) => {
                        let _ = job
                            .reply
                            .send(Err(ServeError::Internal("the explanation panicked".into())));
                        continue;
                    }
                }
            } else {
                None
            };
            let _ = job.reply.send(Ok(Answer {
                predictions,
                explanation,
            }));
        }
    }

    /// One pass through the model; a panic in libtorch must not take the model's thread
    /// (and every later request) down.
    fn predict(&self, groups: &[&Prepared]) -> Result<Vec<Predictions>, ServeError> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.predictor.predict_prepared(groups))) {
            Ok(Ok(predicted)) => Ok(predicted),
            Ok(Err(e)) => Err(ServeError::Model(e.to_string())),
            Err(_) => Err(ServeError::Internal("the model panicked".into())),
        }
    }
}
