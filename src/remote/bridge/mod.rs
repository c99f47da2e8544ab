//! The scheduler's side of the broker: sends the attempts the scheduler
//! places to their workers' queues (persistent, with publisher confirms),
//! applies what workers report, sends stop and hand-back requests and
//! expires leases.
//!
//! One thread, `taskdeck-broker`, runs the AMQP connection on a one-thread
//! tokio runtime. It places tasks when the scheduler says work may have
//! come (a submit, a retry due, a release), after each batch of worker
//! reports (an attempt that ended frees its slot) and on its lease tick.
//! Messages stay in the broker's memory: every placement whose attempt may
//! still run is sent again on each new connection (the worker ignores one
//! it has or ran), and workers keep their reports until told they were
//! applied. The scheduler learns of the bridge only through
//! [`ExternalHooks`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::amqp::{self, Beside, Keep, LinkError, Reconnect};
use super::key::BrokerKey;
use super::protocol::{Control, Names, PROTOCOL, WireOutcome, WireProgress, WorkerEvent, decode};
use super::signing::{Gate, Signer};
use super::url::BrokerUrl;
use crate::model::{ProgressReport, TaskId};
use crate::scheduler::{
    ExternalDispatch, ExternalHooks, GpuDevice, Heartbeat, Placed, Recovered, RemoteOutcome, Run,
    Scheduler, SchedulerConfig, StartError, StopRequest, Store, TransportLink,
};
use crate::tasks::{Registry, TaskError};

mod logs;
mod send;
mod session;

use send::{Answers, Outgoing, Sender};

/// A placement's task and attempt.
type Attempt = (TaskId, u32);
use session::Link;

/// Most attempts placed per round.
const PLACE_BATCH: usize = 1_000;
/// Most worker reports applied per store commit.
const EVENT_BATCH: usize = 1_000;
/// How often leases are checked.
const LEASE_CHECK: Duration = Duration::from_millis(250);
/// How long a worker whose connection closed may take to come back (after
/// a network blip it reconnects at once) before its attempts are lost.
const RECONNECT_GRACE: Duration = Duration::from_millis(400);

/// How the scheduler reaches the broker.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The broker.
    pub url: BrokerUrl,
    /// Queue names.
    pub names: Names,
    /// How long an attempt stays with a silent worker.
    pub lease: Duration,
    /// Where the logs that workers ship are written; none: dropped.
    pub log_dir: Option<std::path::PathBuf>,
    /// The key the scheduler and its workers sign their messages with.
    pub key: BrokerKey,
}

/// The hooks the scheduler calls, and what the bridge tells it.
struct Hooks {
    url: String,
    status: Mutex<Result<(), String>>,
    stops: mpsc::UnboundedSender<StopRequest>,
    /// Wakes the connection's loop to place tasks (one pending wake is
    /// enough).
    work: mpsc::Sender<()>,
    local_workers: AtomicUsize,
    resize: watch::Sender<usize>,
}

impl ExternalHooks for Hooks {
    fn ready(&self) -> Result<(), String> {
        self.status.lock().clone()
    }

    fn work(&self) {
        // Full: a wake is pending already, which places this work too.
        let _ = self.work.try_send(());
    }

    fn stop(&self, request: StopRequest) {
        // The receiver lives as long as the bridge; after it stopped, stop
        // requests have nowhere to go and the worker's lease settles it.
        let _ = self.stops.send(request);
    }

    fn resize(&self, workers: usize) {
        self.local_workers.store(workers, Ordering::Relaxed);
        self.resize.send_replace(workers);
    }

    fn local_workers(&self) -> usize {
        self.local_workers.load(Ordering::Relaxed)
    }
}

/// The bridge before the scheduler exists: it starts the scheduler with
/// dispatch through itself and keeps the transport link to it.
pub struct BridgeLink {
    config: BridgeConfig,
    hooks: Arc<Hooks>,
    stops: mpsc::UnboundedReceiver<StopRequest>,
    work: mpsc::Receiver<()>,
    resize: watch::Receiver<usize>,
}

impl BridgeLink {
    /// Prepares a bridge; `local_workers` is the size of the worker process
    /// embedded in this one (0 for none).
    pub fn new(config: BridgeConfig, local_workers: usize) -> Self {
        let (stops_tx, stops) = mpsc::unbounded_channel();
        let (work_tx, work) = mpsc::channel(1);
        let (resize_tx, resize) = watch::channel(local_workers);
        let hooks = Arc::new(Hooks {
            url: config.url.to_string(),
            status: Mutex::new(Err(format!(
                "not yet connected to the broker at {}",
                config.url
            ))),
            stops: stops_tx,
            work: work_tx,
            local_workers: AtomicUsize::new(local_workers),
            resize: resize_tx,
        });
        Self {
            config,
            hooks,
            stops,
            work,
            resize,
        }
    }

    /// The scheduler's dispatch settings.
    fn dispatch(&self) -> ExternalDispatch {
        ExternalDispatch {
            lease: self.config.lease,
            hooks: Arc::clone(&self.hooks) as Arc<dyn ExternalHooks>,
        }
    }

    /// Changes of the embedded worker's size asked for in the window.
    pub fn local_size(&self) -> watch::Receiver<usize> {
        self.resize.clone()
    }

    /// Starts the scheduler with dispatch through this bridge (see
    /// [`Scheduler::start_external`]; `opened` as for
    /// [`Scheduler::start_with_store`]), then the bridge's threads, which
    /// alone hold the scheduler's transport link.
    pub fn start(
        self,
        config: SchedulerConfig,
        registry: Registry,
        opened: Option<(Arc<Store>, Recovered)>,
    ) -> Result<(Scheduler, Bridge), StartError> {
        let (scheduler, link) =
            Scheduler::start_external(config, registry, opened, self.dispatch())?;
        match self.start_threads(link) {
            Ok(bridge) => Ok((scheduler, bridge)),
            Err(error) => {
                let _ = scheduler.shutdown();
                Err(StartError::Thread(error))
            }
        }
    }

    fn start_threads(self, scheduler: TransportLink) -> std::io::Result<Bridge> {
        let Self {
            config,
            hooks,
            stops,
            work,
            resize: _,
        } = self;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let traffic = Arc::new(Traffic::default());
        let link = Link::new(scheduler, Arc::clone(&traffic), config, Arc::clone(&hooks));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let io = thread::Builder::new()
            .name("taskdeck-broker".into())
            .spawn(move || runtime.block_on(link.run(stops, work, shutdown_rx)))?;
        Ok(Bridge {
            shutdown: shutdown_tx,
            thread: Some(io),
            url: hooks.url.clone(),
            traffic,
        })
    }
}

/// The running bridge.
pub struct Bridge {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    url: String,
    traffic: Arc<Traffic>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("url", &self.url).finish()
    }
}

impl Bridge {
    /// The messages published and consumed so far.
    pub fn traffic(&self) -> BridgeTraffic {
        BridgeTraffic {
            published: self.traffic.published.load(Ordering::Relaxed),
            consumed: self.traffic.consumed.load(Ordering::Relaxed),
        }
    }

    /// Stops placing and consuming and closes the connection. Reports not
    /// yet applied stay in the broker for the next start.
    pub fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the broker thread panicked");
        }
    }
}

/// Messages the bridge has published to and consumed from the broker.
#[derive(Debug, Default)]
struct Traffic {
    published: AtomicU64,
    consumed: AtomicU64,
}

/// What went through the bridge so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeTraffic {
    /// Messages published: placements, stop and hand-back requests.
    pub published: u64,
    /// Messages consumed: every worker report (heartbeats, results,
    /// hand-backs, goodbyes, lost connections).
    pub consumed: u64,
}
