//! One model instance on a dedicated thread, fed by a bounded FIFO queue. Requests are run one at a
//! time in arrival order; results stream back over a per-request channel.

use crate::metrics::Metrics;
use decdec_model::generate::{generate, GenerateParams, GenerationOutput};
use decdec_model::{Engine, Tokenizer};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What the worker sends back for one request.
#[derive(Debug)]
pub enum Event {
    /// Newly final text.
    Delta(String),
    Done(Box<GenerationOutput>),
    Failed(String),
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub events: UnboundedSender<Event>,
    pub enqueued: Instant,
    pub endpoint: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    Full,
    Closed,
}

struct QueueState {
    jobs: VecDeque<Job>,
    running: bool,
    closed: bool,
}

/// Bounded FIFO of waiting requests (the running one is not counted).
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                running: false,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    // A panic while holding the lock cannot leave the queue inconsistent (every update is one
    // statement), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn push(&self, job: Job) -> Result<(), PushError> {
        let mut s = self.lock();
        if s.closed {
            return Err(PushError::Closed);
        }
        if s.jobs.len() >= self.capacity {
            return Err(PushError::Full);
        }
        s.jobs.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    /// Blocks until a job is available; `None` once the queue is closed and drained.
    fn pop(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(j) = s.jobs.pop_front() {
                s.running = true;
                return Some(j);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn finish(&self) {
        self.lock().running = false;
    }

    /// Waiting requests.
    pub fn depth(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn running(&self) -> bool {
        self.lock().running
    }

    /// Refuse new work; the worker drains what is queued and exits.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Start the engine thread. It exits when the queue is closed and empty.
pub fn spawn(
    mut engine: Box<dyn Engine>,
    tokenizer: Arc<Tokenizer>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("decdec-engine".into())
        .spawn(move || {
            while let Some(job) = queue.pop() {
                let last = run_job(engine.as_mut(), &tokenizer, &metrics, &job);
                metrics.set_dec_counters(engine.dec_counters());
                queue.finish();
                // Bookkeeping first, so a client holding its answer sees the server idle.
                if let Some(ev) = last {
                    let _ = job.events.send(ev);
                }
            }
        })
}

/// Run one job, streaming its deltas; returns the final event (none if the client already left).
fn run_job(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    metrics: &Metrics,
    job: &Job,
) -> Option<Event> {
    let queue_wait = job.enqueued.elapsed().as_secs_f64();
    if job.events.is_closed() {
        // The client left while waiting: do not spend the engine on it.
        metrics.record_outcome(job.endpoint, "cancelled");
        return None;
    }
    let events = &job.events;
    let result = catch_unwind(AssertUnwindSafe(|| {
        generate(
            engine,
            tokenizer,
            &job.prompt,
            &job.params,
            &mut |delta: &str| {
                // Sending fails once the client's receiver is gone: that cancels generation.
                events.send(Event::Delta(delta.to_string())).is_ok()
            },
        )
    }));
    Some(match result {
        Ok(Ok(out)) => {
            let outcome = match out.finish_reason {
                decdec_model::generate::FinishReason::Cancelled => "cancelled",
                _ => "ok",
            };
            metrics.record_generation(job.endpoint, outcome, queue_wait, &out);
            Event::Done(Box::new(out))
        }
        Ok(Err(e)) => {
            metrics.record_outcome(job.endpoint, "error");
            Event::Failed(format!("generation failed: {e:#}"))
        }
        Err(_) => {
            // The next job resets the KV cache (generate truncates to 0), so the engine stays usable.
            metrics.record_outcome(job.endpoint, "error");
            Event::Failed("internal error: the engine panicked on this request".into())
        }
    })
}
