//! The long-poll thread: holds `/wait` requests and answers each the moment
//! its task finishes (the scheduler notifies it) or its deadline passes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use tiny_http::Request;

use super::error::ApiError;
use super::handlers;
use super::server::respond;
use crate::model::TaskId;
use crate::scheduler::{Scheduler, Watch};

/// A waiting request.
pub struct Poll {
    /// The request to answer.
    pub request: Request,
    /// The task it waits for.
    pub id: TaskId,
    /// When to answer anyway.
    pub deadline: Instant,
}

/// What the long-poll thread receives.
pub enum Message {
    /// Hold this request.
    Poll(Poll),
    /// Answer everything still waiting and finish.
    Stop,
}

/// How long the thread sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);

/// Body of the "taskdeck-longpoll" thread; returns at [`Message::Stop`] (or
/// when every sender is gone), answering what still waits.
pub fn run(scheduler: &Scheduler, polls: &Receiver<Message>, max: usize) {
    let (notify_tx, notify_rx) = crossbeam_channel::unbounded::<TaskId>();
    let mut waiting: HashMap<TaskId, Vec<(u64, Request)>> = HashMap::new();
    let mut deadlines: BinaryHeap<Reverse<(Instant, u64, TaskId)>> = BinaryHeap::new();
    let mut held = 0usize;
    let mut next_ticket = 0u64;
    loop {
        let timeout = deadlines.peek().map_or(IDLE, |Reverse((due, _, _))| {
            due.saturating_duration_since(Instant::now())
        });
        select! {
            recv(polls) -> poll => {
                let Ok(Message::Poll(Poll { request, id, deadline })) = poll else {
                    break;
                };
                if held >= max {
                    respond(request, Err(ApiError::unavailable("too many waiting requests; try again")));
                    continue;
                }
                if !waiting.contains_key(&id) {
                    match scheduler.watch(id, &notify_tx) {
                        None => {
                            respond(request, Err(ApiError::not_found(format!("task {id} not found"))));
                            continue;
                        }
                        Some(Watch::Finished(_)) => {
                            respond(request, handlers::wait_reply(scheduler, id));
                            continue;
                        }
                        Some(Watch::Registered) => {}
                    }
                }
                next_ticket += 1;
                waiting.entry(id).or_default().push((next_ticket, request));
                deadlines.push(Reverse((deadline, next_ticket, id)));
                held += 1;
            }
            recv(notify_rx) -> id => {
                if let Ok(id) = id
                    && let Some(list) = waiting.remove(&id)
                {
                    held -= list.len();
                    for (_, request) in list {
                        respond(request, handlers::wait_reply(scheduler, id));
                    }
                }
            }
            default(timeout) => {}
        }
        let now = Instant::now();
        while let Some(&Reverse((due, ticket, id))) = deadlines.peek() {
            if due > now {
                break;
            }
            deadlines.pop();
            let Some(list) = waiting.get_mut(&id) else {
                continue;
            };
            let Some(position) = list.iter().position(|(t, _)| *t == ticket) else {
                continue;
            };
            let (_, request) = list.swap_remove(position);
            held -= 1;
            if list.is_empty() {
                waiting.remove(&id);
                scheduler.unwatch(id, &notify_tx);
            }
            respond(request, handlers::wait_reply(scheduler, id));
        }
    }
    for (id, list) in waiting {
        scheduler.unwatch(id, &notify_tx);
        for (_, request) in list {
            respond(request, handlers::wait_reply(scheduler, id));
        }
    }
}
