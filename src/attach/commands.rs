//! The commands thread: the window's commands over HTTP, one at a time, in
//! the order given; each reports its outcome as the in-process backend
//! does, with the server's refusals in its words.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::{Receiver, select};
use serde_json::Value;

use super::{Remote, convert};
use crate::app::{Command, Outcome};
use crate::app::{pause_and_stop_text, paused_text, queued_text, report};
use crate::client::{Client, ClientError};
use crate::model::TaskId;

/// Runs commands until the attachment stops.
pub(super) struct Runner {
    pub client: Client,
    pub remote: Arc<Remote>,
}

impl Runner {
    pub fn run(&self, commands: &Receiver<Command>, cancelled: &Receiver<()>) {
        loop {
            select! {
                recv(cancelled) -> _ => return,
                recv(commands) -> command => match command {
                    Ok(command) => self.run_one(command),
                    Err(_) => return,
                },
            }
        }
    }

    fn say(&self, text: impl Into<String>, error: bool) {
        self.remote.tell(Outcome::Said {
            text: text.into(),
            error,
        });
    }

    /// Applies `request` to each task and says how many it was done to,
    /// and the first refusal.
    fn for_each(
        &self,
        ids: &[TaskId],
        what: &str,
        request: impl Fn(u64) -> Result<Value, ClientError>,
    ) {
        let mut done = 0;
        let mut errors = Vec::new();
        for id in ids {
            match request(id.0) {
                Ok(_) => done += 1,
                Err(error) => errors.push(error.to_string()),
            }
        }
        let (text, error) = report(done, what, &errors);
        self.say(text, error);
    }

    fn run_one(&self, command: Command) {
        let client = &self.client;
        match command {
            Command::Submit(spec) => match client.submit(&convert::submission(&spec)) {
                Ok(id) => self.remote.tell(Outcome::Submitted(TaskId(id))),
                Err(error) => self.remote.tell(Outcome::SubmitRefused(error.to_string())),
            },
            Command::SubmitBatch(specs) => {
                let bodies: Vec<Value> = specs.iter().map(convert::submission).collect();
                match client.submit_batch(&bodies) {
                    Ok(ids) => {
                        let ids: Vec<TaskId> = ids.into_iter().map(TaskId).collect();
                        self.say(queued_text(&ids), false);
                    }
                    Err(error) => self.say(error.to_string(), true),
                }
            }
            // Over the API a waiting task is removed by cancelling it.
            Command::Remove(ids) => {
                self.for_each(&ids, "removed from the queue", |id| client.cancel(id))
            }
            Command::Stop(ids) => self.for_each(&ids, "asked to stop", |id| client.cancel(id)),
            Command::Retry(ids) => {
                self.for_each(&ids, "queued again", |id| client.retry(id, false))
            }
            Command::RetryWithDependents(ids) => self.retry_with_dependents(ids),
            Command::Hold(ids) => self.for_each(&ids, "held", |id| client.hold(id)),
            Command::Release(ids) => self.for_each(&ids, "released", |id| client.release(id)),
            Command::SetPaused(paused) => {
                let result = if paused {
                    client.pause(false)
                } else {
                    client.resume()
                };
                match result {
                    Ok(_) => {
                        self.refresh_counts();
                        self.say(paused_text(paused), false);
                    }
                    Err(error) => self.say(format!("Could not pause or resume: {error}"), true),
                }
            }
            Command::PauseAndStop => match client.pause(true) {
                Ok(answer) => {
                    let stopped = answer.get("stopped").and_then(Value::as_u64).unwrap_or(0);
                    self.refresh_counts();
                    self.say(
                        pause_and_stop_text(usize::try_from(stopped).unwrap_or(usize::MAX)),
                        false,
                    );
                }
                Err(error) => self.say(format!("Could not pause: {error}"), true),
            },
            Command::SetQueue(name, change) => {
                let answer = client
                    .set_queue(&name, &convert::queue_change(change))
                    .map_err(|error| error.to_string())
                    .and_then(|answer| convert::queue(&answer).map_err(|e| e.to_string()));
                match answer {
                    Ok(info) => self.remote.tell(Outcome::QueueChanged(info, change)),
                    Err(error) => self.say(format!("Could not change queue {name}: {error}"), true),
                }
            }
            Command::SetWorkers(_) => self.say(
                "The worker pool of a remote server is sized where it runs \
                 (`taskdeck serve --workers N`); the API does not resize it",
                true,
            ),
        }
    }

    /// Retries each task with cascade, lowest id first, skipping those an
    /// earlier one already queued again.
    fn retry_with_dependents(&self, mut ids: Vec<TaskId>) {
        ids.sort_unstable();
        let mut queued = HashSet::new();
        let mut errors = Vec::new();
        for id in ids {
            if queued.contains(&id.0) {
                continue;
            }
            match self.client.retry(id.0, true) {
                Ok(answer) => queued.extend(
                    answer
                        .get("ids")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_u64),
                ),
                Err(error) => errors.push(error.to_string()),
            }
        }
        let (text, error) = report(queued.len(), "queued again, dependents included", &errors);
        self.say(text, error);
    }

    /// Reads the counts again after a pause or resume, so the header shows
    /// it with the outcome (a failure waits for the follower's next poll).
    fn refresh_counts(&self) {
        if let Err(reason) = super::follow::poll(&self.client, &self.remote) {
            tracing::debug!(%reason, "the counts could not be read after a command");
        }
    }
}
