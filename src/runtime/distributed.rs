//! Distributed mode's part of the stack (the `broker` feature): the bridge
//! from the scheduler to RabbitMQ and the worker embedded in this process.

use std::sync::Arc;

use super::RuntimeError;
use crate::remote::{
    Bridge, BridgeConfig, BridgeLink, BrokerKey, BrokerUrl, KeyOrigin, Names, Prefetch,
    ResourceSource, WorkerConfig, WorkerHandle,
};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::{Recovered, Store};
use crate::tasks::Registry;
use crate::telemetry::Telemetry;

/// Distributed mode: the scheduler publishes to the broker, and a worker
/// process embedded in this one (sized by the scheduler's `workers`) keeps
/// the local machine working.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The broker.
    pub url: BrokerUrl,
    /// Queue names.
    pub names: Names,
    /// How long an attempt stays with a worker that stopped sending heartbeats.
    pub lease: std::time::Duration,
    /// Whether to run the embedded worker (the window always does, so its
    /// pool control can grow it from zero).
    pub local_worker: bool,
    /// The embedded worker's name.
    pub worker_name: String,
    /// Where the logs that worker processes ship are written (the
    /// directory the HTTP API reads task logs from); none: not kept.
    pub log_dir: Option<std::path::PathBuf>,
    /// The key the scheduler and its workers sign their messages with.
    pub key: BrokerKey,
}

impl BrokerSettings {
    /// The settings with shipped logs written to `dir`.
    #[must_use]
    pub fn with_log_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.log_dir = Some(dir);
        self
    }
}

/// The bridge, prepared before the scheduler starts (it starts the
/// scheduler).
pub(super) struct Link {
    link: BridgeLink,
    settings: BrokerSettings,
    local_workers: usize,
}

/// Prepares the bridge to the broker, when there is one.
pub(super) fn link(broker: Option<BrokerSettings>, config: &SchedulerConfig) -> Option<Link> {
    let settings = broker?;
    let local_workers = config.workers;
    let link = BridgeLink::new(
        BridgeConfig {
            url: settings.url.clone(),
            names: settings.names.clone(),
            lease: settings.lease,
            log_dir: settings.log_dir.clone(),
            key: settings.key.clone(),
        },
        if settings.local_worker {
            local_workers
        } else {
            0
        },
    );
    Some(Link {
        link,
        settings,
        local_workers,
    })
}

/// The bridge and the embedded worker, while they run.
#[derive(Default)]
pub(super) struct Running {
    bridge: Option<Bridge>,
    local_worker: Option<WorkerHandle>,
}

/// Starts the scheduler: on its own workers without a link; otherwise with
/// dispatch through the bridge, then the bridge and, when asked for, the
/// embedded worker.
pub(super) fn start(
    link: Option<Link>,
    config: SchedulerConfig,
    registry: Registry,
    opened: Option<(Arc<Store>, Recovered)>,
    telemetry: &Arc<Telemetry>,
) -> Result<(Scheduler, Running), RuntimeError> {
    let Some(Link {
        link,
        settings,
        local_workers,
    }) = link
    else {
        let scheduler = Scheduler::start_with_store(config, registry, opened)?;
        return Ok((scheduler, Running::default()));
    };
    log_key(&settings.key);
    let size = link.local_size();
    let (scheduler, bridge) = link.start(config, registry, opened)?;
    if !settings.local_worker {
        let running = Running {
            bridge: Some(bridge),
            local_worker: None,
        };
        return Ok((scheduler, running));
    }
    let worker = local_worker_config(&settings, &scheduler, telemetry, local_workers);
    match WorkerHandle::start(worker, Some(size)) {
        Ok(worker) => Ok((
            scheduler,
            Running {
                bridge: Some(bridge),
                local_worker: Some(worker),
            },
        )),
        Err(error) => {
            bridge.stop();
            let _ = scheduler.shutdown();
            Err(RuntimeError::Broker(error))
        }
    }
}

impl Running {
    /// Stops the embedded worker, then the bridge (the worker hands back
    /// through the bridge what it cannot finish).
    pub(super) fn stop(self) {
        if let Some(worker) = self.local_worker {
            worker.stop();
        }
        if let Some(bridge) = self.bridge {
            bridge.stop();
        }
    }
}

/// Says which key signs the broker messages; when the key file was just
/// created, that workers on other machines need a copy of it.
fn log_key(key: &BrokerKey) {
    match key.origin() {
        KeyOrigin::Created(path) => tracing::info!(
            key_file = %path.display(),
            "created the broker key that signs every message between this scheduler and its \
             workers; workers on other machines need a copy (e.g. scp {} HOST:{} and chmod 600 \
             it there, or --broker-key-file PATH); workers run by this user with this data \
             directory find it themselves",
            path.display(),
            path.display(),
        ),
        origin => tracing::info!(key = %origin, "broker messages are signed with the shared key"),
    }
}

/// The settings of the worker process embedded in this one.
fn local_worker_config(
    broker: &BrokerSettings,
    scheduler: &Scheduler,
    telemetry: &Arc<Telemetry>,
    local_workers: usize,
) -> WorkerConfig {
    let resources: ResourceSource = {
        let telemetry = Arc::clone(telemetry);
        Arc::new(move || telemetry.latest())
    };
    WorkerConfig {
        url: broker.url.clone(),
        names: broker.names.clone(),
        name: broker.worker_name.clone(),
        host: crate::telemetry::host_name(),
        concurrency: local_workers,
        prefetch: Prefetch::Auto,
        heartbeat: crate::remote::heartbeat_for(broker.lease),
        stop_grace: scheduler.config().shutdown_grace,
        registry: scheduler.registry_handle(),
        resources: Some(resources),
        gpus: scheduler.gpus().to_vec(),
        // Its tasks write into the directory the scheduler reads.
        ship_logs: None,
        key: broker.key.clone(),
    }
}
