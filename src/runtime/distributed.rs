//! Distributed mode's part of the stack (the `broker` feature): the bridge
//! from the scheduler to RabbitMQ and the worker embedded in this process.

use std::sync::Arc;

use crate::remote::{
    Bridge, BridgeConfig, BridgeLink, BrokerUrl, Names, ResourceSource, WorkerConfig, WorkerHandle,
};
use crate::scheduler::{Dispatch, Scheduler, SchedulerConfig};
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
    /// How long a submit waits for the broker's confirm.
    pub publish_wait: std::time::Duration,
    /// Whether to run the embedded worker (the window always does, so its
    /// pool control can grow it from zero).
    pub local_worker: bool,
    /// The embedded worker's name.
    pub worker_name: String,
}

/// The bridge's link, made before the scheduler starts (it carries the
/// scheduler's dispatch).
pub(super) struct Link {
    link: BridgeLink,
    settings: BrokerSettings,
    local_workers: usize,
}

/// Points the scheduler's dispatch at the broker, when there is one.
pub(super) fn link(broker: Option<BrokerSettings>, config: &mut SchedulerConfig) -> Option<Link> {
    let settings = broker?;
    let local_workers = config.workers;
    let link = BridgeLink::new(
        BridgeConfig {
            url: settings.url.clone(),
            names: settings.names.clone(),
            lease: settings.lease,
            publish_wait: settings.publish_wait,
        },
        if settings.local_worker {
            local_workers
        } else {
            0
        },
    );
    config.dispatch = Dispatch::External(link.dispatch());
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

/// Starts the bridge and, when asked for, the embedded worker.
pub(super) fn start(
    link: Option<Link>,
    scheduler: &Scheduler,
    telemetry: &Arc<Telemetry>,
) -> std::io::Result<Running> {
    let Some(Link {
        link,
        settings,
        local_workers,
    }) = link
    else {
        return Ok(Running::default());
    };
    let (bridge, local_worker) =
        start_distributed(link, &settings, scheduler, telemetry, local_workers)?;
    Ok(Running {
        bridge,
        local_worker,
    })
}

impl Running {
    /// Stops the embedded worker, then the bridge (the worker hands back
    /// through the bridge what it cannot finish).
    pub(super) fn stop(self) {
        stop_distributed(self.local_worker, self.bridge);
    }
}

/// Starts the bridge and, when asked for, the embedded worker.
fn start_distributed(
    link: BridgeLink,
    broker: &BrokerSettings,
    scheduler: &Scheduler,
    telemetry: &Arc<Telemetry>,
    local_workers: usize,
) -> std::io::Result<(Option<Bridge>, Option<WorkerHandle>)> {
    let size = link.local_size();
    let bridge = link.start(scheduler.clone())?;
    if !broker.local_worker {
        return Ok((Some(bridge), None));
    }
    let resources: ResourceSource = {
        let telemetry = Arc::clone(telemetry);
        Arc::new(move || telemetry.latest())
    };
    let config = WorkerConfig {
        url: broker.url.clone(),
        names: broker.names.clone(),
        name: broker.worker_name.clone(),
        host: crate::telemetry::host_name(),
        concurrency: local_workers,
        heartbeat: crate::remote::heartbeat_for(broker.lease),
        stop_grace: scheduler.config().shutdown_grace,
        registry: scheduler.registry_handle(),
        resources: Some(resources),
        gpus: scheduler.gpus().to_vec(),
    };
    match WorkerHandle::start(config, Some(size)) {
        Ok(worker) => Ok((Some(bridge), Some(worker))),
        Err(error) => {
            bridge.stop();
            Err(error)
        }
    }
}

/// Stops the embedded worker, then the bridge.
fn stop_distributed(local_worker: Option<WorkerHandle>, bridge: Option<Bridge>) {
    if let Some(worker) = local_worker {
        worker.stop();
    }
    if let Some(bridge) = bridge {
        bridge.stop();
    }
}
