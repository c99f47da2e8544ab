//! The stack without distributed mode (a build without the `broker`
//! feature): no broker settings can be made, and nothing runs.

use std::sync::Arc;

use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::telemetry::Telemetry;

/// Distributed mode's settings; this build has none (the type has no
/// values), so a stack always runs its own workers.
#[derive(Debug, Clone)]
pub enum BrokerSettings {}

/// Nothing to link.
pub(super) enum Link {}

/// Leaves the scheduler's dispatch to its own workers.
pub(super) fn link(broker: Option<BrokerSettings>, _config: &mut SchedulerConfig) -> Option<Link> {
    broker.map(|settings| match settings {})
}

/// Nothing runs.
#[derive(Default)]
pub(super) struct Running;

/// Starts nothing.
pub(super) fn start(
    link: Option<Link>,
    _scheduler: &Scheduler,
    _telemetry: &Arc<Telemetry>,
) -> std::io::Result<Running> {
    if let Some(link) = link {
        match link {}
    }
    Ok(Running)
}

impl Running {
    /// Stops nothing.
    pub(super) fn stop(self) {}
}
