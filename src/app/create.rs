//! The "Create task" form: a registered task type, its arguments, queue,
//! priority, retries, GPUs, timeout, start delay and the tasks it waits
//! for, validated before it is submitted.

use eframe::egui::{self, RichText, Ui};

use super::state::Action;
use super::theme::Theme;
use crate::model::{
    DEFAULT_QUEUE, OnDependencyFailure, PRIORITY_DEFAULT, PRIORITY_MAX, RETRIES_DEFAULT, TaskId,
    TaskSpec, check_queue_name,
};
use crate::tasks::TaskTypes;
use crate::tasks::parse_arg;

/// The form's fields; the app owns it and keeps it between openings.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateForm {
    /// Shown?
    pub is_open: bool,
    /// Chosen task type.
    pub task: String,
    /// One text per parameter of the chosen type (JSON, or plain text).
    pub params: Vec<String>,
    /// Extra positional arguments as a JSON array, for types that take them.
    pub extra: String,
    /// The queue's name (empty: the default queue).
    pub queue: String,
    /// 0-9.
    pub priority: u8,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// GPUs the task needs.
    pub gpus: u32,
    /// Whether it asks for GPU memory: with one GPU, a share of a device.
    pub gpu_memory_enabled: bool,
    /// The memory, MB.
    pub gpu_memory_mb: u64,
    /// Whether an attempt has a time limit.
    pub timeout_enabled: bool,
    /// The limit in seconds.
    pub timeout_s: f64,
    /// Whether the task starts only after a delay.
    pub delay_enabled: bool,
    /// The delay in seconds from the submit.
    pub delay_s: f64,
    /// Ids of the tasks it starts after, e.g. `3, 5 7`.
    pub after: String,
    /// Whether it runs even if one of those fails or is cancelled.
    pub run_anyway: bool,
    /// Why the last submit was refused.
    pub error: Option<String>,
}

/// The longest delay the form accepts: a year.
const MAX_DELAY_S: f64 = 365.0 * 86_400.0;

impl Default for CreateForm {
    fn default() -> Self {
        Self {
            is_open: false,
            task: String::new(),
            params: Vec::new(),
            extra: String::new(),
            queue: String::new(),
            priority: PRIORITY_DEFAULT,
            retries: RETRIES_DEFAULT,
            gpus: 0,
            gpu_memory_enabled: false,
            gpu_memory_mb: 8_000,
            timeout_enabled: false,
            timeout_s: 60.0,
            delay_enabled: false,
            delay_s: 60.0,
            after: String::new(),
            run_anyway: false,
            error: None,
        }
    }
}

impl CreateForm {
    /// Opens the form with the last values.
    pub fn open(&mut self) {
        self.is_open = true;
        self.error = None;
    }

    /// Closes it after a successful submit and clears the arguments.
    pub fn submitted(&mut self) {
        self.is_open = false;
        self.error = None;
        self.params.iter_mut().for_each(String::clear);
        self.extra.clear();
        self.after.clear();
    }

    /// Builds and validates the spec the fields describe.
    ///
    /// Rules:
    /// - a task type must be chosen;
    /// - an empty parameter field leaves the parameter out (its default
    ///   applies, or the registry reports it missing);
    /// - a field is read as JSON when it is JSON, else as text;
    /// - an empty queue means the default queue; any other must be a queue
    ///   name ([`check_queue_name`]), spaces around it aside;
    /// - "After tasks" holds task ids (see [`parse_task_ids`]); whether
    ///   they exist is the scheduler's to say at submit;
    /// - "Run even if one fails" applies only with tasks to wait for;
    /// - the registry checks types and arity, exactly as for any submit.
    pub fn build(&self, registry: &TaskTypes) -> Result<TaskSpec, String> {
        let def = registry
            .get(&self.task)
            .ok_or_else(|| "choose a task type".to_owned())?;
        let mut spec = TaskSpec::new(self.task.clone(), Vec::new())
            .priority(self.priority)
            .max_retries(self.retries)
            .gpus(self.gpus);
        if self.gpu_memory_enabled {
            if self.gpus == 0 {
                return Err("GPU memory needs at least one GPU".into());
            }
            if self.gpu_memory_mb == 0 {
                return Err("GPU memory must be at least 1 MB".into());
            }
            spec.gpu_memory_mb = Some(self.gpu_memory_mb);
        }
        let mut positional = true;
        for (param, text) in def.signature.params.iter().zip(&self.params) {
            let text = text.trim();
            if text.is_empty() {
                positional = false;
                continue;
            }
            if positional {
                spec.args.push(parse_arg(text));
            } else {
                spec.kwargs.insert(param.name.clone(), parse_arg(text));
            }
        }
        if def.signature.rest.is_some() && !self.extra.trim().is_empty() {
            match serde_json::from_str::<serde_json::Value>(&self.extra) {
                Ok(serde_json::Value::Array(values)) if positional => spec.args.extend(values),
                Ok(serde_json::Value::Array(_)) => {
                    return Err("fill every parameter before adding extra arguments".into());
                }
                _ => return Err("extra arguments must be a JSON array, e.g. [1, \"two\"]".into()),
            }
        }
        if let Some(queue) = self.queue_name()? {
            spec = spec.queue(queue);
        }
        if self.timeout_enabled {
            if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
                return Err("the timeout must be more than 0 seconds".into());
            }
            spec.timeout_ms = Some((self.timeout_s * 1000.0).ceil() as u64);
        }
        if self.delay_enabled {
            if !(self.delay_s.is_finite() && (0.0..=MAX_DELAY_S).contains(&self.delay_s)) {
                return Err("the delay must be 0 seconds to a year".into());
            }
            spec.not_before_us = Some(crate::model::now_us() + (self.delay_s * 1e6).round() as i64);
        }
        for id in parse_task_ids(&self.after)? {
            spec = spec.after(id);
        }
        if self.run_anyway && !spec.depends_on.is_empty() {
            spec = spec.on_dependency_failure(OnDependencyFailure::Run);
        }
        registry.validate(&spec).map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The queue typed, if any; an error says why it is not a queue name.
    pub fn queue_name(&self) -> Result<Option<&str>, String> {
        let name = self.queue.trim();
        if name.is_empty() {
            return Ok(None);
        }
        check_queue_name(name)?;
        Ok(Some(name))
    }

    fn choose(&mut self, registry: &TaskTypes, name: &str) {
        if self.task != name {
            self.task = name.to_owned();
            let count = registry.get(name).map_or(0, |d| d.signature.params.len());
            self.params = vec![String::new(); count];
            self.error = None;
        }
    }

    /// Shows the form when open; returns the submit it asks for.
    pub fn ui(&mut self, ui: &mut Ui, registry: &TaskTypes, theme: Theme) -> Option<Action> {
        if !self.is_open {
            return None;
        }
        if self.task.is_empty()
            && let Some(first) = registry.iter().next()
        {
            let name = first.name.clone();
            self.choose(registry, &name);
        }
        let mut open = true;
        let mut action = None;
        egui::Window::new("Create task")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .default_width(420.0)
            .show(ui.ctx(), |ui| {
                action = self.form_ui(ui, registry, theme);
            });
        if !open {
            self.is_open = false;
        }
        action
    }

    fn form_ui(&mut self, ui: &mut Ui, registry: &TaskTypes, theme: Theme) -> Option<Action> {
        let mut chosen = None;
        egui::ComboBox::from_label("Task type")
            .selected_text(self.task.clone())
            .show_ui(ui, |ui| {
                for def in registry.iter() {
                    if ui
                        .selectable_label(def.name == self.task, &def.name)
                        .clicked()
                    {
                        chosen = Some(def.name.clone());
                    }
                }
            });
        if let Some(name) = chosen {
            self.choose(registry, &name);
        }
        let def = registry.get(&self.task)?.clone();
        ui.label(RichText::new(&def.description).color(theme.weak()));
        // Shown under its field as it is typed; the submit refuses it too.
        let queue_error = self.queue_name().map(drop);
        egui::Grid::new("create_params")
            .num_columns(2)
            .show(ui, |ui| {
                for (param, text) in def.signature.params.iter().zip(self.params.iter_mut()) {
                    let kind = serde_json::to_value(param.ty).unwrap_or_default();
                    let label = ui.label(format!(
                        "{} ({})",
                        param.name,
                        kind.as_str().unwrap_or("any")
                    ));
                    let hint = param
                        .default
                        .as_ref()
                        .map_or_else(|| "required".to_owned(), |d| format!("default {d}"));
                    ui.add(
                        egui::TextEdit::singleline(text)
                            .hint_text(hint)
                            .desired_width(220.0),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                }
                if let Some(rest) = &def.signature.rest {
                    let label = ui.label(format!("{rest} (JSON array)"));
                    ui.add(egui::TextEdit::singleline(&mut self.extra).hint_text("[1, \"two\"]"))
                        .labelled_by(label.id);
                    ui.end_row();
                }
                let label = ui.label("Queue");
                ui.add(
                    egui::TextEdit::singleline(&mut self.queue)
                        .hint_text(DEFAULT_QUEUE)
                        .desired_width(220.0),
                )
                .labelled_by(label.id)
                .on_hover_text("Its queue's limit and pause apply; empty: the default queue");
                ui.end_row();
                if let Err(error) = &queue_error {
                    ui.label("");
                    ui.label(RichText::new(error).color(theme.error()));
                    ui.end_row();
                }
                let label = ui.label("Priority");
                ui.add(
                    egui::Slider::new(&mut self.priority, 0..=PRIORITY_MAX)
                        .text("higher runs first"),
                )
                .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Retries");
                ui.add(egui::DragValue::new(&mut self.retries).range(0..=1_000))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("GPUs");
                ui.add(egui::DragValue::new(&mut self.gpus).range(0..=64))
                    .labelled_by(label.id)
                    .on_hover_text("Devices the task needs; it waits until they are free");
                ui.end_row();
                let label = ui.checkbox(&mut self.gpu_memory_enabled, "GPU memory (MB)");
                ui.add_enabled(
                    self.gpu_memory_enabled,
                    egui::DragValue::new(&mut self.gpu_memory_mb)
                        .range(1..=10_000_000)
                        .speed(100.0),
                )
                .labelled_by(label.id)
                .on_hover_text(
                    "With one GPU: a share of a device's memory, beside other shares; \
                     with more: the memory each whole device must have",
                );
                ui.end_row();
                let label = ui.checkbox(&mut self.timeout_enabled, "Timeout (s)");
                ui.add_enabled(
                    self.timeout_enabled,
                    egui::DragValue::new(&mut self.timeout_s)
                        .range(0.001..=86_400.0 * 365.0)
                        .speed(1.0),
                )
                .labelled_by(label.id);
                ui.end_row();
                let label = ui.checkbox(&mut self.delay_enabled, "Start after (s)");
                ui.add_enabled(
                    self.delay_enabled,
                    egui::DragValue::new(&mut self.delay_s)
                        .range(0.0..=MAX_DELAY_S)
                        .speed(1.0),
                )
                .labelled_by(label.id)
                .on_hover_text("The task waits queued this long before it may start");
                ui.end_row();
                let label = ui.label("After tasks");
                ui.add(
                    egui::TextEdit::singleline(&mut self.after)
                        .hint_text("task ids, e.g. 3, 5 7")
                        .desired_width(220.0),
                )
                .labelled_by(label.id)
                .on_hover_text("It starts only after these tasks completed");
                ui.end_row();
                ui.label("");
                ui.add_enabled(
                    !self.after.trim().is_empty(),
                    egui::Checkbox::new(&mut self.run_anyway, "Run even if one fails"),
                )
                .on_hover_text("Otherwise it is cancelled when one of them fails or is cancelled");
                ui.end_row();
            });
        if let Some(error) = self
            .error
            .as_ref()
            .filter(|error| queue_error.as_ref().err() != Some(*error))
        {
            ui.label(RichText::new(error).color(theme.error()));
        }
        let mut action = None;
        ui.horizontal(|ui| {
            if ui.button("Submit").clicked() {
                match self.build(registry) {
                    Ok(spec) => action = Some(Action::Submit(spec)),
                    Err(error) => self.error = Some(error),
                }
            }
            if ui.button("Close").clicked() {
                self.is_open = false;
            }
        });
        action
    }
}

/// Reads the task ids of the "After tasks" field.
///
/// Rules:
/// - ids are separated by commas, spaces or both (`3, 5 7`);
/// - an id may be written as in the table, `#3`;
/// - a repeated id counts once, and the order is kept;
/// - anything else is refused with the text that is not an id.
pub fn parse_task_ids(text: &str) -> Result<Vec<TaskId>, String> {
    let mut ids = Vec::new();
    for word in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
    {
        let digits = word.strip_prefix('#').unwrap_or(word);
        let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        let id = valid
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                format!("after tasks: {word:?} is not a task id; write ids like 3, 5 7")
            })?;
        if !ids.contains(&TaskId(id)) {
            ids.push(TaskId(id));
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(task: &str, params: &[&str]) -> CreateForm {
        CreateForm {
            task: task.into(),
            params: params.iter().map(|p| (*p).to_owned()).collect(),
            ..CreateForm::default()
        }
    }

    #[test]
    fn gpu_memory_asks_for_a_share_and_needs_a_gpu() {
        let registry = crate::tasks::Registry::with_builtins().types();
        let mut shared = form("sleep", &["10"]);
        shared.gpu_memory_enabled = true;
        shared.gpu_memory_mb = 12_000;
        assert!(shared.build(&registry).is_err(), "no GPU asked for");
        shared.gpus = 1;
        let spec = shared.build(&registry).expect("valid form");
        assert_eq!((spec.gpus, spec.gpu_memory_mb), (1, Some(12_000)));
        shared.gpu_memory_enabled = false;
        let spec = shared.build(&registry).expect("valid form");
        assert_eq!(spec.gpu_memory_mb, None, "unticked, a whole device");
    }

    #[test]
    fn a_delay_becomes_a_start_time_and_a_bad_one_is_refused() {
        let registry = crate::demo::registry().types();
        let mut delayed = form("sleep", &["10"]);
        delayed.delay_enabled = true;
        delayed.delay_s = 90.0;
        let before = crate::model::now_us();
        let spec = delayed.build(&registry).expect("valid form");
        let at = spec.not_before_us.expect("a start time");
        assert!((before + 90_000_000..=crate::model::now_us() + 90_000_000).contains(&at));
        delayed.delay_s = -1.0;
        assert!(delayed.build(&registry).is_err());
        delayed.delay_enabled = false;
        let now = delayed.build(&registry).expect("valid form");
        assert_eq!(
            now.not_before_us, None,
            "the delay applies only when ticked"
        );
    }

    #[test]
    fn fields_become_a_validated_spec() {
        let registry = crate::demo::registry().types();
        let spec = form("mock_ml_task", &["1500", "Random Forest"])
            .build(&registry)
            .expect("valid form");
        assert_eq!(spec.args, vec![json!(1500), json!("Random Forest")]);
        let mut timed = form("sleep", &["10"]);
        timed.timeout_enabled = true;
        timed.timeout_s = 2.5;
        timed.priority = 9;
        let spec = timed.build(&registry).expect("valid form");
        assert_eq!((spec.timeout_ms, spec.priority), (Some(2_500), 9));
        let mut noop = form("noop", &[]);
        noop.extra = "[1, \"two\"]".into();
        assert_eq!(
            noop.build(&registry).map(|s| s.args),
            Ok(vec![json!(1), json!("two")])
        );
    }

    #[test]
    fn after_tasks_become_dependencies_and_bad_ids_are_refused() {
        assert_eq!(
            parse_task_ids(" 3, 5 7,,#9 3 "),
            Ok(vec![TaskId(3), TaskId(5), TaskId(7), TaskId(9)])
        );
        assert_eq!(parse_task_ids("  "), Ok(Vec::new()));
        for bad in ["3, five", "-1", "0", "3.5", "#", "99999999999999999999999"] {
            let error = parse_task_ids(bad).expect_err(bad);
            assert!(error.contains("is not a task id"), "{bad}: {error}");
        }
        let registry = crate::demo::registry().types();
        let mut after = form("noop", &[]);
        after.after = "2, 1".into();
        let spec = after.build(&registry).expect("valid form");
        assert_eq!(
            spec.dependency_ids().collect::<Vec<_>>(),
            [TaskId(2), TaskId(1)]
        );
        assert_eq!(spec.on_dependency_failure, OnDependencyFailure::Cancel);
        after.run_anyway = true;
        let spec = after.build(&registry).expect("valid form");
        assert_eq!(spec.on_dependency_failure, OnDependencyFailure::Run);
        after.after = "2 x".into();
        assert!(after.build(&registry).is_err());
        after.after.clear();
        let spec = after.build(&registry).expect("valid form");
        assert_eq!(
            (spec.depends_on.len(), spec.on_dependency_failure),
            (0, OnDependencyFailure::Cancel),
            "the policy applies only with tasks to wait for"
        );
    }

    #[test]
    fn a_queue_name_is_checked_and_empty_means_the_default_queue() {
        let registry = crate::demo::registry().types();
        let mut queued = form("noop", &[]);
        let spec = queued.build(&registry).expect("valid form");
        assert_eq!(
            (spec.queue.as_deref(), spec.queue_name()),
            (None, "default")
        );
        queued.queue = " render.gpu-1 ".into();
        let spec = queued.build(&registry).expect("valid form");
        assert_eq!(spec.queue.as_deref(), Some("render.gpu-1"));
        queued.queue = "default".into();
        let spec = queued.build(&registry).expect("valid form");
        assert_eq!(spec.queue, None, "the default queue is kept as none");
        for bad in ["two words", "a/b", &"x".repeat(65)] {
            queued.queue = bad.to_owned();
            let error = queued.build(&registry).expect_err(bad);
            assert!(error.contains("must be 1 to 64"), "{bad}: {error}");
        }
    }

    #[test]
    fn bad_fields_are_explained() {
        let registry = crate::demo::registry().types();
        let missing = form("mock_cv_task", &["100", ""]).build(&registry);
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("missing argument")),
            "{missing:?}"
        );
        let wrong = form("sleep", &["soon"]).build(&registry);
        assert!(
            wrong
                .as_ref()
                .is_err_and(|e| e.contains("non-negative integer")),
            "{wrong:?}"
        );
        assert!(form("", &[]).build(&registry).is_err());
        let mut zero = form("sleep", &["1"]);
        zero.timeout_enabled = true;
        zero.timeout_s = 0.0;
        assert!(zero.build(&registry).is_err());
        let mut extra = form("noop", &[]);
        extra.extra = "{}".into();
        assert!(extra.build(&registry).is_err());
    }
}
