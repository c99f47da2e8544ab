//! The threads attempts run on, kept and reused: handing a short attempt to
//! a waiting thread costs a wake-up, where starting a thread for each one
//! costs its creation and teardown on the worker's loop (a stack mapped,
//! cleared and unmapped, kernel task bookkeeping) at every task.
//!
//! Rules:
//! - an attempt goes to a thread that waits for work if there is one, else
//!   to a new thread;
//! - a thread that waited [`IDLE_FOR`] without work ends, so a worker that
//!   ran many attempts at once gives its threads back once quiet;
//! - a thread whose attempt never returns (left behind after a stop
//!   request) is simply never reused; the pool does not count on it;
//! - threads are not joined: a worker stops once its attempts ended or
//!   were left behind, and its waiting threads end as soon as the pool is
//!   dropped (their channel closes).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// How long a thread waits for another attempt before it ends.
const IDLE_FOR: Duration = Duration::from_secs(10);

/// One attempt's work, run on a slot thread.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads that run attempts, reused while work keeps coming.
pub(super) struct SlotThreads {
    jobs: Sender<Job>,
    jobs_rx: Receiver<Job>,
    /// Threads waiting for work that no caller has yet claimed; a caller
    /// claims one before it sends a job, and a thread that gives up
    /// waiting must take its own claim back first, so every job sent has
    /// a thread that will take it.
    idle: Arc<AtomicUsize>,
}

impl SlotThreads {
    pub(super) fn new() -> Self {
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        Self {
            jobs,
            jobs_rx,
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `job` on a waiting thread, or on a new one when none waits.
    pub(super) fn run(&self, job: Job) -> io::Result<()> {
        if claim(&self.idle) {
            // A thread is waiting and cannot leave before taking a job; the
            // receiver lives in `self`, so the channel is open.
            return self
                .jobs
                .send(job)
                .map_err(|_| io::Error::other("the slot threads' channel closed"));
        }
        let jobs = self.jobs_rx.clone();
        let idle = Arc::clone(&self.idle);
        thread::Builder::new()
            .name("taskdeck-slot".into())
            .spawn(move || serve(job, &jobs, &idle))
            .map(drop)
    }

    /// Threads waiting for work now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.load(Ordering::SeqCst)
    }
}

/// Takes one unclaimed waiting thread, if there is one.
fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
        count.checked_sub(1)
    })
    .is_ok()
}

/// A slot thread's life: its first job, then whatever comes while it keeps
/// being given work.
fn serve(first: Job, jobs: &Receiver<Job>, idle: &AtomicUsize) {
    first();
    idle.fetch_add(1, Ordering::SeqCst);
    loop {
        match jobs.recv_timeout(IDLE_FOR) {
            Ok(job) => {
                job();
                idle.fetch_add(1, Ordering::SeqCst);
            }
            // Quiet for a while: leave, unless a caller just claimed this
            // thread (its job is on the way).
            Err(RecvTimeoutError::Timeout) => {
                if claim(idle) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn attempts_one_after_another_share_one_thread() {
        let slots = SlotThreads::new();
        let (tx, rx) = mpsc::channel();
        let mut threads = HashSet::new();
        for _ in 0..20 {
            let tx = tx.clone();
            slots
                .run(Box::new(move || {
                    let _ = tx.send(thread::current().id());
                }))
                .expect("a slot thread should start");
            threads.insert(rx.recv().expect("the job should run"));
            // The thread is back waiting before the next attempt comes.
            wait_until("the thread to wait again", || slots.idle() == 1);
        }
        assert_eq!(threads.len(), 1);
    }

    #[test]
    fn attempts_at_once_get_a_thread_each() {
        let slots = SlotThreads::new();
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = crossbeam_channel::unbounded::<()>();
        for _ in 0..4 {
            let started_tx = started_tx.clone();
            let release = release.clone();
            slots
                .run(Box::new(move || {
                    let _ = started_tx.send(thread::current().id());
                    // Each holds its thread until released.
                    let _ = release.recv();
                }))
                .expect("a slot thread should start");
        }
        let threads: HashSet<_> = (0..4)
            .map(|_| started.recv().expect("every job should start"))
            .collect();
        assert_eq!(threads.len(), 4, "no job waited for another");
        for _ in 0..4 {
            release_tx.send(()).expect("the jobs should wait");
        }
        wait_until("all four threads to wait again", || slots.idle() == 4);
    }
}
