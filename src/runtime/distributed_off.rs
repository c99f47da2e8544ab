//! The stack without distributed mode (a build without the `broker`
//! feature): no broker settings can be made, and nothing runs.

use std::sync::Arc;

use super::RuntimeError;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::{Recovered, Store};
use crate::tasks::Registry;
use crate::telemetry::Telemetry;

/// Distributed mode's settings; this build has none (the type has no
/// values), so a stack always runs its own workers.
#[derive(Debug, Clone)]
pub enum BrokerSettings {}

/// Nothing to link.
pub(super) enum Link {}

/// Nothing to link: the scheduler runs its own workers.
pub(super) fn link(broker: Option<BrokerSettings>, _config: &SchedulerConfig) -> Option<Link> {
    broker.map(|settings| match settings {})
}

/// Nothing runs beside the scheduler.
#[derive(Default)]
pub(super) struct Running;

/// Starts the scheduler on its own workers.
pub(super) fn start(
    link: Option<Link>,
    config: SchedulerConfig,
    registry: Registry,
    opened: Option<(Arc<Store>, Recovered)>,
    _telemetry: &Arc<Telemetry>,
) -> Result<(Scheduler, Running), RuntimeError> {
    if let Some(link) = link {
        match link {}
    }
    let scheduler = Scheduler::start_with_store(config, registry, opened)?;
    Ok((scheduler, Running))
}

impl Running {
    /// Stops nothing.
    pub(super) fn stop(self) {}
}
