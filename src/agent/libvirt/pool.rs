//! The worker threads of the libvirt backend. libvirt's C API blocks, and a call can block
//! far longer than a probe may wait (an agent job may wait 30 s for another, a resync takes
//! up to 5 s), so no libvirt call runs on the HTTP thread or the async runtime: each runs
//! on a thread of a [`Pool`], and its caller waits by its own deadline. The backend has
//! two: [`AGENT_WORKERS`] threads for agent commands, and one of its own for the domain's
//! state, which needs no agent and so is answered even while every agent worker is held.
//!
//! When every worker is held by a call libvirt has not returned, new calls queue (at most
//! [`MAX_QUEUED`]); a queued call whose caller gives up before a worker is free is never
//! sent ([`Job::refuse`]), and beyond the queue's bound a call is refused at once.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Agent worker threads. A probe has one check in flight (single flight), and an exec check
/// adds status polls, so two probes and their orphans' polls fit; a hung call holds one.
pub(super) const AGENT_WORKERS: usize = 4;
/// Calls waiting for a worker, beyond which a call is refused at once.
const MAX_QUEUED: usize = 64;

/// One blocking call.
pub(super) trait Job: Send + 'static {
    fn run(self: Box<Self>);
    /// The call will not be made (the pool is closing or full).
    fn refuse(self: Box<Self>, why: &str);
}

struct Queue {
    jobs: VecDeque<Box<dyn Job>>,
    closed: bool,
}

pub(super) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Pool {
    /// Starts `workers` threads named `NAME-N` (fewer if the system refuses threads:
    /// logged).
    pub(super) fn start(name: &str, workers: usize) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for n in 0..workers {
            let worker = Arc::clone(&pool);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || worker.work());
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a libvirt worker thread");
            }
        }
        pool
    }

    /// Queues `job`, or refuses it when the pool is closed or the queue is full.
    pub(super) fn submit(&self, job: Box<dyn Job>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.closed {
            drop(queue);
            return job.refuse("the libvirt connection is closed");
        }
        if queue.jobs.len() >= MAX_QUEUED {
            drop(queue);
            return job
                .refuse("too many libvirt calls queued behind calls libvirt has not returned");
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.ready.notify_one();
    }

    /// Refuses the queued calls and lets the workers end once their calls return.
    pub(super) fn close(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.closed = true;
        let jobs: Vec<_> = queue.jobs.drain(..).collect();
        drop(queue);
        self.ready.notify_all();
        for job in jobs {
            job.refuse("the libvirt connection is closed");
        }
    }

    fn work(&self) {
        loop {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let job = loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = self
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            };
            drop(queue);
            job.run();
        }
    }
}
