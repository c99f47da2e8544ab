//! Named queues of tasks: each is a lane of the ready queue with its own
//! limit on running tasks and its own pause, and its own counts.
//!
//! Rules:
//! - a task names its queue (none: `default`); queues come into being when
//!   a task names one or a setting is made, and are never forgotten while
//!   the scheduler runs;
//! - a lane gives tasks only while it is open: not paused, and with fewer
//!   tasks running (placed on a worker process counts) than its limit;
//! - its settings are stored, so a restart keeps a paused queue paused and
//!   a limit in force.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Core;
use crate::model::{DEFAULT_QUEUE, TaskSpec, TaskStatus};
use crate::scheduler::queue::Lane;

/// A queue's settings, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Most of its tasks running at once; none: only the pool and the GPUs
    /// limit it.
    #[serde(default)]
    pub limit: Option<usize>,
    /// No task of it starts until it is resumed.
    #[serde(default)]
    pub paused: bool,
}

/// A queue as readers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Most of its tasks running at once.
    pub limit: Option<usize>,
    /// Paused.
    pub paused: bool,
    /// Its tasks in each status, indexed by [`TaskStatus::index`].
    #[serde(skip)]
    pub counts: [usize; TaskStatus::ALL.len()],
}

/// Every queue known, by lane.
#[derive(Debug, Clone)]
pub struct Queues {
    names: Vec<String>,
    index: HashMap<String, Lane>,
    settings: Vec<QueueSettings>,
    counts: Vec<[usize; TaskStatus::ALL.len()]>,
}

impl Default for Queues {
    fn default() -> Self {
        Self {
            names: vec![DEFAULT_QUEUE.to_owned()],
            index: HashMap::from([(DEFAULT_QUEUE.to_owned(), 0)]),
            settings: vec![QueueSettings::default()],
            counts: vec![[0; TaskStatus::ALL.len()]],
        }
    }
}

impl Queues {
    /// The lane of queue `name`, made on first use.
    pub fn intern(&mut self, name: &str) -> Lane {
        if let Some(lane) = self.index.get(name) {
            return *lane;
        }
        let lane = Lane::try_from(self.names.len()).unwrap_or(Lane::MAX);
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), lane);
        self.settings.push(QueueSettings::default());
        self.counts.push([0; TaskStatus::ALL.len()]);
        lane
    }

    /// The lane of a spec's queue, made on first use (when a task is taken
    /// in).
    pub fn intern_spec(&mut self, spec: &TaskSpec) -> Lane {
        match &spec.queue {
            Some(name) => self.intern(name),
            None => 0,
        }
    }

    /// The lane of a spec's queue (made when the task was taken in).
    pub fn lane_of(&self, spec: &TaskSpec) -> Lane {
        spec.queue
            .as_deref()
            .and_then(|name| self.index.get(name).copied())
            .unwrap_or(0)
    }

    /// The lane of queue `name`, if it is known.
    pub fn lane(&self, name: &str) -> Option<Lane> {
        self.index.get(name).copied()
    }

    /// Whether lane `lane` may give a task now.
    pub fn open(&self, lane: Lane) -> bool {
        let index = lane as usize;
        let Some(settings) = self.settings.get(index) else {
            return true;
        };
        let running = self
            .counts
            .get(index)
            .map_or(0, |counts| counts[TaskStatus::Running.index()]);
        !settings.paused && settings.limit.is_none_or(|limit| running < limit)
    }

    /// The settings of lane `lane`.
    pub fn settings(&self, lane: Lane) -> QueueSettings {
        self.settings
            .get(lane as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Changes the settings of lane `lane`.
    pub fn set(&mut self, lane: Lane, settings: QueueSettings) {
        if let Some(slot) = self.settings.get_mut(lane as usize) {
            *slot = settings;
        }
    }

    /// Counts a task of `spec`'s queue in `status` (`delta` +1 or -1).
    pub fn count(&mut self, spec: &TaskSpec, status: TaskStatus, add: bool) {
        let lane = self.lane_of(spec) as usize;
        if let Some(counts) = self.counts.get_mut(lane) {
            let slot = &mut counts[status.index()];
            *slot = if add {
                *slot + 1
            } else {
                slot.saturating_sub(1)
            };
        }
    }

    /// Every queue, by name.
    pub fn list(&self) -> Vec<QueueInfo> {
        let mut list: Vec<QueueInfo> = self
            .names
            .iter()
            .zip(&self.settings)
            .zip(&self.counts)
            .map(|((name, settings), counts)| QueueInfo {
                name: name.clone(),
                limit: settings.limit,
                paused: settings.paused,
                counts: *counts,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

impl Core {
    /// Applies stored queue settings (at start).
    pub fn restore_queues(&mut self, stored: impl IntoIterator<Item = (String, QueueSettings)>) {
        for (name, settings) in stored {
            let lane = self.queues.intern(&name);
            self.queues.set(lane, settings);
        }
    }

    /// Changes queue `name`'s settings (making it when new); returns them
    /// as they were.
    pub fn set_queue(&mut self, name: &str, settings: QueueSettings) -> QueueSettings {
        let lane = self.queues.intern(name);
        let was = self.queues.settings(lane);
        self.queues.set(lane, settings);
        was
    }

    /// The settings of queue `name` (a queue never named has the defaults).
    pub fn queue_settings(&self, name: &str) -> QueueSettings {
        self.queues
            .lane(name)
            .map(|lane| self.queues.settings(lane))
            .unwrap_or_default()
    }

    /// Every queue with its settings and counts.
    pub fn queue_list(&self) -> Vec<QueueInfo> {
        self.queues.list()
    }
}
