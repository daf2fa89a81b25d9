//! Dynamic batching: HTTP handlers push jobs (one request's inputs) without blocking; model
//! workers take the jobs that arrive within a short wait, up to a batch, and score them in one
//! call, sorted by length as `score` does. A bounded queue gives back-pressure (429).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use harmaug_core::{Guard, GuardInput, Scores};
use tokio::sync::oneshot;

use super::metrics::Metrics;

/// A job's answer, or why scoring failed (a server fault, not the client's).
pub type JobResult = Result<JobScores, String>;

/// One job's scores, in the order of its inputs.
#[derive(Debug, PartialEq)]
pub struct JobScores {
    /// P(unsafe) per input.
    pub scores: Vec<f32>,
    /// Every label's probability, per input.
    pub label_probabilities: Vec<Vec<f32>>,
}

/// One request's inputs and where its scores go.
pub struct Job {
    pub inputs: Vec<GuardInput>,
    pub reply: oneshot::Sender<JobResult>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// Taking the job would exceed the queue's capacity (in inputs).
    Full,
    /// The server is shutting down.
    Closed,
}

/// How workers gather jobs into model calls.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Inputs per model call (a larger single request is scored in several).
    pub max_batch: usize,
    /// How long the first job of a batch waits for company.
    pub max_wait: Duration,
}

pub struct BatchQueue {
    state: Mutex<QueueState>,
    arrived: Condvar,
    /// Inputs (not requests) that may wait at once.
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    inputs: usize,
    closed: bool,
}

impl BatchQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            arrived: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A worker that panicked holding the lock left the queue consistent (it only pops).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, job: Job) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.inputs + job.inputs.len() > self.capacity {
            return Err(PushError::Full);
        }
        state.inputs += job.inputs.len();
        state.jobs.push_back(job);
        self.arrived.notify_one();
        Ok(())
    }

    /// Inputs waiting.
    pub fn depth(&self) -> usize {
        self.lock().inputs
    }

    /// No more jobs are taken; workers finish those queued, then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    /// Blocks for a job (`None` once closed and drained), then gathers the jobs that arrive
    /// within `max_wait` while they fit in `max_batch` inputs. Jobs whose caller has gone
    /// (disconnected or timed out) are dropped unscored.
    pub fn next_batch(&self, settings: BatchSettings, metrics: &Metrics) -> Option<Vec<Job>> {
        let mut state = self.lock();
        let first = loop {
            match self.pop_live(&mut state, metrics) {
                Some(job) => break job,
                None if state.closed => return None,
                None => state = self.wait(state, None),
            }
        };
        let deadline = Instant::now() + settings.max_wait;
        let mut size = first.inputs.len();
        let mut batch = vec![first];
        while size < settings.max_batch {
            match state.jobs.front() {
                Some(next) if size + next.inputs.len() > settings.max_batch => break,
                Some(_) => {
                    if let Some(job) = self.pop_live(&mut state, metrics) {
                        size += job.inputs.len();
                        batch.push(job);
                    }
                }
                None if state.closed || Instant::now() >= deadline => break,
                None => state = self.wait(state, Some(deadline)),
            }
        }
        Some(batch)
    }

    fn pop_live(&self, state: &mut QueueState, metrics: &Metrics) -> Option<Job> {
        while let Some(job) = state.jobs.pop_front() {
            state.inputs -= job.inputs.len();
            if !job.reply.is_closed() {
                return Some(job);
            }
            metrics.count_abandoned();
        }
        None
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, QueueState>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, QueueState> {
        // As in `lock`: a poisoned lock still guards a consistent queue.
        match deadline {
            None => self
                .arrived
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let waited = self.arrived.wait_timeout(state, left);
                waited.unwrap_or_else(PoisonError::into_inner).0
            }
        }
    }
}

/// A model worker: scores batches until the queue is closed and drained.
pub fn work<B: Backend>(
    guard: &Guard<B>,
    queue: &BatchQueue,
    settings: BatchSettings,
    metrics: &Metrics,
) {
    while let Some(jobs) = queue.next_batch(settings, metrics) {
        // A panic inside the model (a backend bug) fails this batch, not the server.
        let scored = std::panic::catch_unwind(AssertUnwindSafe(|| {
            score_jobs(guard, &jobs, settings.max_batch, metrics)
        }))
        .unwrap_or_else(|_| Err("the model failed on this batch (see the server log)".into()));
        reply(jobs, scored);
    }
}

/// Scores every input of `jobs` in calls of at most `max_batch` inputs; the scores come back
/// in the order of the jobs' inputs.
fn score_jobs<B: Backend>(
    guard: &Guard<B>,
    jobs: &[Job],
    max_batch: usize,
    metrics: &Metrics,
) -> Result<Scores, String> {
    let inputs: Vec<GuardInput> = jobs.iter().flat_map(|job| job.inputs.clone()).collect();
    let encoded = guard
        .encode_inputs(&inputs)
        .map_err(|e| format!("tokenizing: {e}"))?;
    let windows = guard
        .score_encoded(&encoded.rows(), max_batch, |n| {
            metrics.observe_model_call(n)
        })
        .map_err(|e| format!("scoring: {e}"))?;
    let scored = encoded.merge(windows);
    metrics.count_scored(inputs.len(), scored.truncated);
    Ok(scored)
}

fn reply(jobs: Vec<Job>, scored: Result<Scores, String>) {
    let mut offset = 0;
    for job in jobs {
        let n = job.inputs.len();
        let answer = match &scored {
            Ok(scored) => Ok(JobScores {
                scores: scored.scores[offset..offset + n].to_vec(),
                label_probabilities: (offset..offset + n)
                    .map(|i| scored.label_probabilities_of(i).to_vec())
                    .collect(),
            }),
            Err(message) => Err(message.clone()),
        };
        offset += n;
        // The caller may have gone meanwhile; nothing to do then.
        let _ = job.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: usize) -> (Job, oneshot::Receiver<JobResult>) {
        let (reply, receiver) = oneshot::channel();
        let inputs = vec![GuardInput::prompt("x"); n];
        (Job { inputs, reply }, receiver)
    }

    const SETTINGS: BatchSettings = BatchSettings {
        max_batch: 4,
        max_wait: Duration::from_millis(1),
    };

    #[test]
    fn gathers_jobs_up_to_the_batch_and_refuses_past_capacity() {
        let queue = BatchQueue::new(6);
        let metrics = Metrics::default();
        let (a, _ra) = job(2);
        let (b, _rb) = job(2);
        let (c, _rc) = job(2);
        let (d, _rd) = job(1);
        queue.push(a).unwrap();
        queue.push(b).unwrap();
        queue.push(c).unwrap();
        assert_eq!(queue.push(d), Err(PushError::Full));
        assert_eq!(queue.depth(), 6);
        let sizes = |jobs: Vec<Job>| jobs.iter().map(|j| j.inputs.len()).collect::<Vec<_>>();
        assert_eq!(sizes(queue.next_batch(SETTINGS, &metrics).unwrap()), [2, 2]);
        assert_eq!(sizes(queue.next_batch(SETTINGS, &metrics).unwrap()), [2]);
        assert_eq!(queue.depth(), 0);
    }

    #[test]
    fn drops_abandoned_jobs_and_stops_when_closed_and_drained() {
        let queue = BatchQueue::new(10);
        let metrics = Metrics::default();
        let (gone, receiver) = job(1);
        drop(receiver);
        let (kept, _receiver) = job(3);
        queue.push(gone).unwrap();
        queue.push(kept).unwrap();
        queue.close();
        let (late, _r) = job(1);
        assert_eq!(queue.push(late), Err(PushError::Closed));
        let batch = queue.next_batch(SETTINGS, &metrics).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].inputs.len(), 3);
        assert!(queue.next_batch(SETTINGS, &metrics).is_none());
        assert_eq!(metrics.abandoned(), 1);
    }

    #[test]
    fn replies_each_job_its_own_slice() {
        let (a, ra) = job(1);
        let (b, rb) = job(2);
        let scored = Scores {
            scores: vec![0.1, 0.2, 0.3],
            label_probabilities: vec![0.9, 0.1, 0.8, 0.2, 0.7, 0.3],
            num_labels: 2,
            truncated: 0,
        };
        reply(vec![a, b], Ok(scored));
        let answer = |scores: Vec<f32>, label_probabilities: Vec<Vec<f32>>| {
            Ok(JobScores {
                scores,
                label_probabilities,
            })
        };
        assert_eq!(
            ra.blocking_recv().unwrap(),
            answer(vec![0.1], vec![vec![0.9, 0.1]])
        );
        let b_answer = answer(vec![0.2, 0.3], vec![vec![0.8, 0.2], vec![0.7, 0.3]]);
        assert_eq!(rb.blocking_recv().unwrap(), b_answer);
    }
}
