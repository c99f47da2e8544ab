//! The task registry: named Rust functions with argument signatures, the
//! context they run with, the small built-in tasks, and the `command` and
//! `python` tasks that run processes.
//!
//! Depends only on [`crate::model`]. The scheduler looks tasks up here to
//! validate submissions and to run attempts; a program that embeds Taskdeck
//! builds a [`Registry`] with its own tasks before starting the scheduler.

mod builtin;
mod context;
mod exec;
pub mod logfile;
mod signature;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

pub use builtin::register_builtins;
pub use context::{CancelToken, PROGRESS_EVERY, ProgressSink, StopReason, TaskContext};
pub use exec::{ExecSettings, GpuMemoryProbe, register_exec_tasks};
pub use signature::{ArgError, BoundArgs, Param, ParamType, Signature, parse_arg};
pub use types::{TaskType, TaskTypes};

use crate::model::TaskSpec;

/// How a task attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// Set when the attempt ended because it was asked to stop.
    pub stop: Option<StopReason>,
    /// What went wrong, for people.
    pub message: String,
}

impl TaskError {
    /// An error worth retrying (the default for task failures).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            stop: None,
            message: message.into(),
        }
    }

    /// An error no retry can fix (bad input found while running, say).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            stop: None,
            message: message.into(),
        }
    }

    /// The attempt stopped because it was asked to.
    pub fn stopped(reason: StopReason) -> Self {
        let message = match reason {
            StopReason::Cancelled => "cancelled",
            StopReason::TimedOut => "timed out",
            StopReason::Shutdown => "stopped by shutdown",
            StopReason::Paused => "stopped because the scheduler was paused",
        };
        Self {
            retryable: true,
            stop: Some(reason),
            message: message.to_owned(),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// The function behind a registered task.
pub type TaskFn = Arc<dyn Fn(&TaskContext, &BoundArgs) -> Result<Value, TaskError> + Send + Sync>;

/// One registered task type.
#[derive(Clone)]
pub struct TaskDef {
    /// Name clients submit.
    pub name: String,
    /// One line on what it does.
    pub description: String,
    /// Its parameters.
    pub signature: Signature,
    /// Runs a program or code named in its arguments (commands, Python
    /// functions): the HTTP API refuses it unless the server opted in.
    pub runs_code: bool,
    func: TaskFn,
}

impl TaskDef {
    /// Runs one attempt with arguments already bound to the signature.
    pub fn call(&self, ctx: &TaskContext, args: &BoundArgs) -> Result<Value, TaskError> {
        (self.func)(ctx, args)
    }
}

impl fmt::Debug for TaskDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskDef")
            .field("name", &self.name)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// A submission the registry refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No task has that name.
    #[error("unknown task {name:?}; registered tasks: {known}")]
    UnknownTask {
        /// The name asked for.
        name: String,
        /// Comma-separated registered names.
        known: String,
    },
    /// The arguments do not fit the task's signature.
    #[error("invalid arguments for {name}: {source}")]
    Arguments {
        /// The task name.
        name: String,
        /// What does not fit.
        source: ArgError,
    },
    /// Priority outside 0..=9.
    #[error("priority {0} is out of range 0-9")]
    Priority(u8),
    /// A timeout of zero would fail every attempt at once.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
    /// A queue name that is not allowed.
    #[error("{0}")]
    Queue(String),
    /// More GPUs (of that much memory) than this scheduler has, or than any
    /// one worker process has.
    #[error("the task asks for {asked} GPU(s){}, but at most {available} such device(s) are available (on one worker)", memory_mb.map(|mb| format!(" of at least {mb} MB")).unwrap_or_default())]
    Gpus {
        /// Devices asked for.
        asked: u32,
        /// Memory asked for per device, MB.
        memory_mb: Option<u64>,
        /// Devices that fit.
        available: usize,
    },
}

/// Registered task types by name. Built before the scheduler starts and
/// read-only afterwards, so lookups need no lock.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<String, TaskDef>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry holding the built-in tasks.
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        register_builtins(&mut registry);
        registry
    }

    /// Registers (or replaces) a task type.
    pub fn register<F>(
        &mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        signature: Signature,
        func: F,
    ) -> &mut Self
    where
        F: Fn(&TaskContext, &BoundArgs) -> Result<Value, TaskError> + Send + Sync + 'static,
    {
        self.insert(
            name.into(),
            description.into(),
            signature,
            false,
            Arc::new(func),
        )
    }

    /// Registers a task type that runs a program or code named in its
    /// arguments; see [`TaskDef::runs_code`].
    pub fn register_code_runner<F>(
        &mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        signature: Signature,
        func: F,
    ) -> &mut Self
    where
        F: Fn(&TaskContext, &BoundArgs) -> Result<Value, TaskError> + Send + Sync + 'static,
    {
        self.insert(
            name.into(),
            description.into(),
            signature,
            true,
            Arc::new(func),
        )
    }

    fn insert(
        &mut self,
        name: String,
        description: String,
        signature: Signature,
        runs_code: bool,
        func: TaskFn,
    ) -> &mut Self {
        self.tasks.insert(
            name.clone(),
            TaskDef {
                name,
                description,
                signature,
                runs_code,
                func,
            },
        );
        self
    }

    /// Whether the named task type runs code named in its arguments.
    pub fn runs_code(&self, name: &str) -> bool {
        self.get(name).is_some_and(|def| def.runs_code)
    }

    /// The task type with this name.
    pub fn get(&self, name: &str) -> Option<&TaskDef> {
        self.tasks.get(name)
    }

    /// Every registered task type, by name.
    pub fn iter(&self) -> impl Iterator<Item = &TaskDef> {
        self.tasks.values()
    }

    /// Checks a submission: the task exists, its arguments fit the signature,
    /// and priority and timeout are in range. Returns the task type.
    pub fn validate(&self, spec: &TaskSpec) -> Result<&TaskDef, SpecError> {
        let unknown = || SpecError::UnknownTask {
            name: spec.name.clone(),
            known: self.known(),
        };
        check_spec(
            spec,
            |name| self.get(name).map(|def| &def.signature),
            || self.known(),
        )?;
        self.get(&spec.name).ok_or_else(unknown)
    }

    fn known(&self) -> String {
        self.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The checks of [`Registry::validate`] on a spec, given how to find a
/// type's signature and how to list the known names:
/// - priority at most [`PRIORITY_MAX`](crate::model::PRIORITY_MAX);
/// - no zero timeout;
/// - a queue name that is allowed;
/// - a known task type whose signature binds the arguments.
fn check_spec<'a>(
    spec: &TaskSpec,
    signature: impl Fn(&str) -> Option<&'a Signature>,
    known: impl Fn() -> String,
) -> Result<(), SpecError> {
    if spec.priority > crate::model::PRIORITY_MAX {
        return Err(SpecError::Priority(spec.priority));
    }
    if spec.timeout_ms == Some(0) {
        return Err(SpecError::ZeroTimeout);
    }
    if let Some(queue) = &spec.queue {
        crate::model::check_queue_name(queue).map_err(SpecError::Queue)?;
    }
    let signature = signature(&spec.name).ok_or_else(|| SpecError::UnknownTask {
        name: spec.name.clone(),
        known: known(),
    })?;
    signature
        .bind(&spec.args, &spec.kwargs)
        .map_err(|source| SpecError::Arguments {
            name: spec.name.clone(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validate_rejects_unknown_names_and_bad_policy() {
        let registry = Registry::with_builtins();
        let unknown = registry.validate(&TaskSpec::new("nope", vec![]));
        assert!(matches!(unknown, Err(SpecError::UnknownTask { .. })));
        let message = unknown.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("noop"), "{message}");

        let high = TaskSpec::new("noop", vec![]).priority(10);
        assert_eq!(
            registry.validate(&high).err(),
            Some(SpecError::Priority(10))
        );
        let zero = TaskSpec::new("noop", vec![]).timeout_ms(0);
        assert_eq!(registry.validate(&zero).err(), Some(SpecError::ZeroTimeout));
    }

    #[test]
    fn validate_checks_arguments_against_the_signature() {
        let registry = Registry::with_builtins();
        let ok = TaskSpec::new("fail", vec![json!(1)]);
        assert!(registry.validate(&ok).is_ok());
        let missing = TaskSpec::new("fail", vec![]);
        assert!(matches!(
            registry.validate(&missing),
            Err(SpecError::Arguments { .. })
        ));
        let wrong_type = TaskSpec::new("sleep", vec![json!("ten")]);
        assert!(matches!(
            registry.validate(&wrong_type),
            Err(SpecError::Arguments { .. })
        ));
    }
}
