//! The window's state and logic: what it shows, fed from scheduler events
//! and telemetry samples, and the actions the panels return, applied once
//! per frame through the scheduler's public handle.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::backend::{Backend, Command, InProcess, Outcome};
use super::create::CreateForm;
use super::focus::FocusInfo;
use super::live::{LOGS_FOLDER, LiveAction, LiveDetails};
use super::queues::{QueuesPanel, change_notice};
use super::resources::{ResourcesPanel, TaskMarker};
use super::task_view::{SelectMode, TaskView, ViewSettings};
use super::waiting::{ShownRow, WaitingRows};
use crate::model::{Event, EventKind, ResourceSample, TaskId, TaskSpec, TaskStatus, now_us};
use crate::scheduler::{QueueChange, Scheduler, SchedulerStats, StorageStatus, WorkerInfo};
use crate::telemetry::History;

/// What the window drives and shows, handed in by the program.
#[derive(Clone)]
pub struct Services {
    /// The scheduler shown: in this process or on a remote server.
    pub backend: Arc<dyn Backend>,
    /// Resource samples, when telemetry runs.
    pub samples: Option<Receiver<Arc<ResourceSample>>>,
    /// Samples from before the start (from the store), oldest first.
    pub past_samples: Vec<ResourceSample>,
    /// The address HTTP clients should use, when the listener runs.
    pub http_url: Option<String>,
    /// Where data and logs live.
    pub data_dir: Option<PathBuf>,
}

impl Services {
    /// The window on `scheduler` in this process, without telemetry, the
    /// listener's address or a data directory (tests add what they need).
    pub fn local(scheduler: &Scheduler) -> Self {
        Self {
            backend: Arc::new(InProcess::new(scheduler.clone())),
            samples: None,
            past_samples: Vec::new(),
            http_url: None,
            data_dir: None,
        }
    }
}

/// Something a panel asks for; applied at the end of the frame.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Submit a task (from the create form).
    Submit(TaskSpec),
    /// Submit this many random mock tasks.
    SubmitRandom(usize),
    /// Remove waiting tasks from the queue.
    Remove(Vec<TaskId>),
    /// Ask running tasks to stop.
    Stop(Vec<TaskId>),
    /// Queue failed or cancelled tasks again.
    Retry(Vec<TaskId>),
    /// Queue failed or cancelled tasks again together with the dependents
    /// (and theirs) that their end cancelled.
    RetryWithDependents(Vec<TaskId>),
    /// Hold waiting tasks: they do not start until released.
    Hold(Vec<TaskId>),
    /// Release held tasks.
    Release(Vec<TaskId>),
    /// Pause (true) or resume (false) the scheduler.
    SetPaused(bool),
    /// Pause the scheduler and stop the running tasks; they go back to the
    /// queue without counting an attempt.
    PauseAndStop,
    /// Change a named queue's limit or pause or resume it.
    SetQueue(String, QueueChange),
    /// Drop finished rows from the table.
    ClearFinished,
    /// Resize the worker pool.
    SetWorkers(usize),
    /// A click on a row.
    Select(TaskId, SelectMode),
    /// A click on a task id named elsewhere (a dependency in the details):
    /// select only that task and scroll the table to it, bringing its row
    /// back when it was cleared from the table.
    Show(TaskId),
    /// Forget the selection.
    ClearSelection,
    /// New sort or filter.
    SetView(ViewSettings),
    /// Open the create form.
    OpenCreate,
    /// Change what the details' live parts show (attempt, log search,
    /// following the log).
    Live(LiveAction),
}

/// A message in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// An error (shown in the error colour) or a confirmation.
    pub error: bool,
}

/// Most task markers kept for the plots.
const MARKERS_KEPT: usize = 2_000;
/// How often counts and worker states are re-read from the scheduler.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// Longest time one frame spends taking events.
const RECEIVE_BUDGET: Duration = Duration::from_millis(4);

/// Everything the window shows.
pub struct AppState {
    services: Services,
    events: Receiver<Event>,
    /// The task table.
    pub tasks: TaskView,
    /// Resource history for the plots.
    pub history: History,
    /// Task starts and finishes for the plots, oldest first.
    pub markers: VecDeque<TaskMarker>,
    /// The tasks that ended last, newest last (the recent-finishes list).
    pub recent: VecDeque<TaskId>,
    /// Counts and latency as last read.
    pub stats: SchedulerStats,
    /// Workers as last read.
    pub workers: Vec<WorkerInfo>,
    /// With a broker: whether the scheduler is connected to it, as last read.
    pub broker: Option<Result<(), String>>,
    /// With a database: whether its writes succeed, as last read.
    pub storage: Option<StorageStatus>,
    /// The worker count being edited.
    pub worker_target: usize,
    /// The named queues as last read, and their controls.
    pub queues: QueuesPanel,
    /// The create form.
    pub create: CreateForm,
    /// The resource panel's settings.
    pub resources: ResourcesPanel,
    /// Status-bar message.
    pub notice: Option<Notice>,
    /// What the details panel shows about the focused task beyond its
    /// record, read from the scheduler when it changes.
    focus: FocusInfo,
    /// The focused task's progress history and live log.
    live: LiveDetails,
    /// Why the waiting rows the table shows wait, read from the scheduler
    /// at a bounded rate.
    waiting: WaitingRows,
    /// A row the table should scroll to at the next frame.
    reveal: Option<TaskId>,
    stats_at: Option<Instant>,
    rng: fastrand::Rng,
    /// Set by the event waker, cleared when the frame takes the events.
    pub wake_pending: Arc<AtomicBool>,
}

impl AppState {
    /// Subscribes to the scheduler, then loads the tasks it holds (an event
    /// arriving twice is harmless: versions decide). `waker` is called by
    /// core threads after events; it should set `wake_pending` and ask for
    /// a repaint.
    pub fn new(
        services: Services,
        view: ViewSettings,
        resources: ResourcesPanel,
        waker: Option<crate::scheduler::Waker>,
        wake_pending: Arc<AtomicBool>,
    ) -> Self {
        // The log reader wakes the window too, when output was read.
        let log_dir = services.data_dir.as_ref().map(|dir| dir.join(LOGS_FOLDER));
        let live = LiveDetails::new(waker.clone(), log_dir);
        let backend = Arc::clone(&services.backend);
        let events = backend.subscribe(waker);
        let mut tasks = TaskView::new(view);
        for record in backend.list_all() {
            tasks.upsert(record);
        }
        tasks.refresh(Instant::now(), true);
        let mut history = History::default();
        for sample in &services.past_samples {
            history.push(sample.clone());
        }
        let stats = backend.stats();
        let workers = backend.workers();
        let broker = backend.transport_status();
        let storage = backend.storage_status();
        let mut queues = QueuesPanel::default();
        queues.refresh(backend.as_ref(), Instant::now(), false);
        Self {
            queues,
            broker,
            storage,
            worker_target: stats.workers_target,
            events,
            tasks,
            history,
            markers: VecDeque::new(),
            recent: VecDeque::new(),
            stats,
            workers,
            create: CreateForm::default(),
            resources,
            notice: None,
            focus: FocusInfo::default(),
            live,
            waiting: WaitingRows::default(),
            reveal: None,
            stats_at: Some(Instant::now()),
            rng: fastrand::Rng::new(),
            wake_pending,
            services,
        }
    }

    /// The services the window was given.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Takes waiting events and samples within the frame's budget, and
    /// re-reads counts when due. Returns true when anything changed.
    pub fn receive(&mut self, now: Instant) -> bool {
        self.wake_pending.store(false, Ordering::Release);
        let deadline = now + RECEIVE_BUDGET;
        let mut changed = false;
        let mut taken = 0usize;
        while let Ok(event) = self.events.try_recv() {
            self.take_event(event);
            changed = true;
            taken += 1;
            if taken.is_multiple_of(256) && Instant::now() >= deadline {
                // More next frame; ask for it.
                self.wake_pending.store(true, Ordering::Release);
                break;
            }
        }
        if let Some(samples) = &self.services.samples {
            while let Ok(sample) = samples.try_recv() {
                self.history.push(sample);
                changed = true;
            }
        }
        if self
            .stats_at
            .is_none_or(|at| now.saturating_duration_since(at) >= STATS_EVERY)
        {
            let backend = &self.services.backend;
            self.stats = backend.stats();
            self.workers = backend.workers();
            self.broker = backend.transport_status();
            self.storage = backend.storage_status();
            self.stats_at = Some(now);
            changed = true;
        }
        changed |= self.take_outcomes();
        changed |= self
            .queues
            .refresh(self.services.backend.as_ref(), now, taken > 0);
        self.tasks.refresh(now, false);
        self.refresh_focus(now);
        changed |= self.refresh_live(now);
        if taken > 0 {
            self.waiting.changed();
        }
        changed |= self.refresh_waiting(now);
        changed
    }

    /// Reads again why the waiting rows the table shows wait, all in one
    /// call, when due (not every frame); returns whether it read.
    fn refresh_waiting(&mut self, now: Instant) -> bool {
        let backend = &self.services.backend;
        self.waiting.refresh(now, |ids| backend.waiting(ids))
    }

    /// Takes the waiting rows the table laid out this frame; returns how
    /// long until reading their reasons falls due, when a frame is needed
    /// for it.
    pub fn shown_waiting(&mut self, rows: Vec<ShownRow>, now: Instant) -> Option<Duration> {
        self.waiting.set_shown(rows);
        self.waiting.due_in(now)
    }

    /// Why the waiting rows the table shows wait, as last read.
    pub fn waiting_rows(&self) -> &WaitingRows {
        &self.waiting
    }

    /// Reads again what the details show about the focused task when it or
    /// its record changed, or when the last read is due (not every frame).
    fn refresh_focus(&mut self, now: Instant) {
        let focused = self.focused();
        self.focus
            .refresh(self.services.backend.as_ref(), &self.tasks, focused, now);
    }

    /// Brings the focused task's metrics and log up to date (reads at a
    /// bounded rate, never every frame); returns whether anything changed.
    fn refresh_live(&mut self, now: Instant) -> bool {
        let focused = self.focused();
        self.live
            .refresh(self.services.backend.as_ref(), &self.tasks, focused, now)
    }

    /// How long until the focused task's log is read again, while it will
    /// be: the window needs a frame then.
    pub fn live_due_in(&self, now: Instant) -> Option<Duration> {
        self.live.due_in(now)
    }

    /// The focused task's progress history and live log.
    pub fn live(&self) -> &LiveDetails {
        &self.live
    }

    /// True when events are still waiting (the frame ran out of budget).
    pub fn more_pending(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire) || !self.events.is_empty()
    }

    fn take_event(&mut self, event: Event) {
        let Event { kind, task, .. } = event;
        let marker = match kind {
            EventKind::Started => task.started_at_us.map(|at| (at, false)),
            EventKind::Completed | EventKind::Failed => task.finished_at_us.map(|at| (at, true)),
            _ => None,
        };
        if let Some((at_us, finished)) = marker {
            self.markers.push_back(TaskMarker {
                at_us,
                finished,
                task_id: task.id.0,
                name: task.spec.name.clone(),
            });
            while self.markers.len() > MARKERS_KEPT {
                self.markers.pop_front();
            }
        }
        if matches!(
            kind,
            EventKind::Completed | EventKind::Failed | EventKind::Cancelled
        ) {
            super::recent::remember(&mut self.recent, task.id);
        }
        if kind == EventKind::Progress {
            // A report changes no sort key: the row changes in place.
            self.tasks.update_progress(task);
        } else {
            self.tasks.upsert(task);
        }
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
        });
    }

    /// Applies the frame's actions through the scheduler.
    pub fn apply(&mut self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        for action in actions {
            self.apply_one(action);
        }
        // In-process outcomes are there already; remote ones come later.
        self.take_outcomes();
        // What the user just did shows at once, not at the next re-sort.
        let now = Instant::now();
        self.tasks.refresh(now, true);
        self.refresh_focus(now);
        self.refresh_live(now);
        self.waiting.changed();
    }

    fn apply_one(&mut self, action: Action) {
        let command = match action {
            Action::Submit(spec) => Command::Submit(spec),
            Action::SubmitRandom(count) => Command::SubmitBatch(
                (0..count)
                    .map(|_| {
                        crate::demo::random_mock_spec(&mut self.rng, crate::demo::RANDOM_MAX_MS)
                    })
                    .collect(),
            ),
            Action::Remove(ids) => Command::Remove(ids),
            Action::Stop(ids) => Command::Stop(ids),
            Action::Retry(ids) => Command::Retry(ids),
            Action::RetryWithDependents(ids) => Command::RetryWithDependents(ids),
            Action::Hold(ids) => Command::Hold(ids),
            Action::Release(ids) => Command::Release(ids),
            Action::SetPaused(paused) => Command::SetPaused(paused),
            Action::PauseAndStop => Command::PauseAndStop,
            Action::SetQueue(name, change) => Command::SetQueue(name, change),
            Action::SetWorkers(count) => {
                self.worker_target = count;
                Command::SetWorkers(count)
            }
            Action::ClearFinished => {
                let gone = self.tasks.clear_finished();
                self.say(
                    format!("Cleared {gone} finished task(s) from the table"),
                    false,
                );
                return;
            }
            Action::Select(id, mode) => return self.tasks.select(id, mode),
            Action::Show(id) => return self.show_task(id),
            Action::ClearSelection => return self.tasks.clear_selection(),
            Action::SetView(settings) => return self.tasks.set_settings(settings),
            Action::OpenCreate => return self.create.open(),
            Action::Live(action) => return self.live.apply(action),
        };
        self.services.backend.send(command);
    }

    /// Takes what came of the commands sent; returns whether any came.
    fn take_outcomes(&mut self) -> bool {
        let mut any = false;
        while let Ok(outcome) = self.services.backend.outcomes().try_recv() {
            any = true;
            match outcome {
                Outcome::Submitted(id) => {
                    self.create.submitted();
                    self.say(format!("Task {id} queued"), false);
                }
                Outcome::SubmitRefused(error) => self.create.error = Some(error),
                Outcome::Said { text, error } => {
                    // A pause or resume shows in the header at once.
                    self.stats_at = None;
                    self.say(text, error);
                }
                Outcome::QueueChanged(info, change) => {
                    self.say(change_notice(&info, change), false);
                    self.queues.updated(info);
                }
                Outcome::WorkersSet(count) => {
                    self.worker_target = count;
                    self.stats_at = None;
                    self.say(format!("Worker pool set to {count}"), false);
                }
            }
        }
        if any {
            let backend = &self.services.backend;
            self.stats = backend.stats();
            self.workers = backend.workers();
        }
        any
    }

    /// Selects only `id` and asks the table to scroll to it; a task cleared
    /// from the table is read back from the scheduler.
    fn show_task(&mut self, id: TaskId) {
        if self.tasks.get(id).is_none() {
            match self.services.backend.task(id) {
                Some(record) => self.tasks.upsert(record),
                None => {
                    self.say(
                        format!("Task {id} is no longer in the scheduler's history"),
                        true,
                    );
                    return;
                }
            }
        }
        self.tasks.select(id, SelectMode::Only);
        self.reveal = Some(id);
    }

    /// The row the table should scroll to this frame, once.
    pub fn take_reveal(&mut self) -> Option<TaskId> {
        self.reveal.take()
    }

    /// What the details panel shows about the focused task beyond its
    /// record.
    pub fn focus(&self) -> &FocusInfo {
        &self.focus
    }

    /// Shows the create form against the backend's task types (shared,
    /// not copied: this runs every frame).
    pub fn create_ui(
        &mut self,
        ui: &mut eframe::egui::Ui,
        theme: super::theme::Theme,
    ) -> Option<Action> {
        let task_types = self.services.backend.task_types();
        self.create.ui(ui, &task_types, theme)
    }

    /// The one selected task, for the details panel.
    pub fn focused(&self) -> Option<TaskId> {
        match self.tasks.selected().as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// Selected tasks that can be removed from the queue.
    pub fn removable(&self) -> Vec<TaskId> {
        self.tasks
            .selected_where(|s| matches!(s, TaskStatus::Queued | TaskStatus::Retrying))
    }

    /// Selected tasks that run.
    pub fn stoppable(&self) -> Vec<TaskId> {
        self.tasks.selected_where(|s| s == TaskStatus::Running)
    }

    /// Selected waiting tasks that are not held.
    pub fn holdable(&self) -> Vec<TaskId> {
        self.tasks.selected_records_where(|record| {
            matches!(record.status, TaskStatus::Queued | TaskStatus::Retrying) && !record.held
        })
    }

    /// Selected held tasks.
    pub fn releasable(&self) -> Vec<TaskId> {
        self.tasks.selected_records_where(|record| record.held)
    }

    /// Selected tasks that can be retried.
    pub fn retryable(&self) -> Vec<TaskId> {
        self.tasks
            .selected_where(|s| matches!(s, TaskStatus::Failed | TaskStatus::Cancelled))
    }

    /// Microseconds since the epoch, for relative times in the panels.
    pub fn now_us(&self) -> i64 {
        now_us()
    }
}
