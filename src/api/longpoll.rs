//! The long-poll thread: holds `/wait`, `/tasks/wait` and `/tasks/run`
//! requests and answers each the moment its tasks have finished (the
//! scheduler notifies it) or its deadline passes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use tiny_http::Request;

use super::error::ApiError;
use super::handlers::{self, Awaited};
use super::server::respond;
use crate::model::TaskId;
use crate::scheduler::{Scheduler, Watch};

/// A waiting request.
pub struct Poll {
    /// The request to answer.
    pub request: Request,
    /// The tasks it waits for and the shape of its answer.
    pub awaited: Awaited,
    /// When to answer anyway.
    pub deadline: Instant,
}

/// What the long-poll thread receives.
pub enum Message {
    /// Hold this request.
    Poll(Box<Poll>),
    /// Answer everything still waiting and finish.
    Stop,
}

/// How long the thread sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);

/// A request being held.
struct Held {
    /// The request to answer.
    request: Request,
    /// What it waits for.
    awaited: Awaited,
    /// How many of its tasks have not finished yet.
    unfinished: usize,
}

/// The requests held and which tasks they wait for.
struct Holder<'a> {
    scheduler: &'a Scheduler,
    notify: Sender<TaskId>,
    /// Held requests by ticket.
    held: HashMap<u64, Held>,
    /// Tickets waiting for each watched task.
    watchers: HashMap<TaskId, Vec<u64>>,
    /// When each ticket must be answered anyway.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_ticket: u64,
    /// Tasks awaited by all held requests together.
    awaiting: usize,
    /// Most tasks awaited at once.
    max: usize,
}

impl Holder<'_> {
    /// Takes a request: answers it now when its tasks are all final,
    /// otherwise watches the unfinished ones; refuses it when too many tasks
    /// are awaited already.
    fn hold(
        &mut self,
        Poll {
            request,
            awaited,
            deadline,
        }: Poll,
    ) {
        if self.awaiting + awaited.ids().len() > self.max {
            return respond(
                request,
                Err(ApiError::unavailable(
                    "too many waiting requests; try again",
                )),
            );
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let mut unfinished = 0;
        for &id in awaited.ids() {
            if let Some(tickets) = self.watchers.get_mut(&id) {
                tickets.push(ticket);
                unfinished += 1;
                continue;
            }
            match self.scheduler.watch(id, &self.notify) {
                None => {
                    self.release(ticket_ids_before(&awaited, id), ticket);
                    return respond(
                        request,
                        Err(ApiError::not_found(format!("task {id} not found"))),
                    );
                }
                Some(Watch::Finished(_)) => {}
                Some(Watch::Registered) => {
                    self.watchers.insert(id, vec![ticket]);
                    unfinished += 1;
                }
            }
        }
        if unfinished == 0 {
            return respond(request, handlers::awaited_reply(self.scheduler, &awaited));
        }
        self.deadlines.push(Reverse((deadline, ticket)));
        self.awaiting += awaited.ids().len();
        self.held.insert(
            ticket,
            Held {
                request,
                awaited,
                unfinished,
            },
        );
    }

    /// Answers a request that is no longer held.
    fn answer(&mut self, held: Held) {
        self.awaiting -= held.awaited.ids().len();
        respond(
            held.request,
            handlers::awaited_reply(self.scheduler, &held.awaited),
        );
    }

    /// A watched task finished: answers the requests it was the last for.
    fn finished(&mut self, id: TaskId) {
        let Some(tickets) = self.watchers.remove(&id) else {
            return;
        };
        for ticket in tickets {
            let Some(held) = self.held.get_mut(&ticket) else {
                continue;
            };
            held.unfinished = held.unfinished.saturating_sub(1);
            if held.unfinished == 0
                && let Some(held) = self.held.remove(&ticket)
            {
                self.answer(held);
            }
        }
    }

    /// Answers the requests whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((due, ticket))) = self.deadlines.peek() {
            if due > now {
                break;
            }
            self.deadlines.pop();
            let Some(held) = self.held.remove(&ticket) else {
                continue;
            };
            self.release(held.awaited.ids(), ticket);
            self.answer(held);
        }
    }

    /// Drops `ticket`'s watches of `ids`, unwatching tasks nobody else waits for.
    fn release(&mut self, ids: &[TaskId], ticket: u64) {
        for id in ids {
            let Some(tickets) = self.watchers.get_mut(id) else {
                continue;
            };
            tickets.retain(|t| *t != ticket);
            if tickets.is_empty() {
                self.watchers.remove(id);
                self.scheduler.unwatch(*id, &self.notify);
            }
        }
    }

    /// Answers everything still held and drops every watch.
    fn answer_all(mut self) {
        for (id, _) in std::mem::take(&mut self.watchers) {
            self.scheduler.unwatch(id, &self.notify);
        }
        for (_, held) in std::mem::take(&mut self.held) {
            self.answer(held);
        }
    }
}

/// The ids of `awaited` before the first `id`: those this ticket may watch already.
fn ticket_ids_before(awaited: &Awaited, id: TaskId) -> &[TaskId] {
    let ids = awaited.ids();
    let end = ids.iter().position(|x| *x == id).unwrap_or(ids.len());
    &ids[..end]
}

/// Body of the "taskdeck-longpoll" thread; returns at [`Message::Stop`] (or
/// when every sender is gone), answering what still waits. `max` bounds the
/// tasks awaited by all held requests together.
pub fn run(scheduler: &Scheduler, polls: &Receiver<Message>, max: usize) {
    let (notify, notify_rx) = crossbeam_channel::unbounded::<TaskId>();
    let mut holder = Holder {
        scheduler,
        notify,
        held: HashMap::new(),
        watchers: HashMap::new(),
        deadlines: BinaryHeap::new(),
        next_ticket: 0,
        awaiting: 0,
        max: max.max(1),
    };
    loop {
        let timeout = holder.deadlines.peek().map_or(IDLE, |Reverse((due, _))| {
            due.saturating_duration_since(Instant::now())
        });
        select! {
            recv(polls) -> poll => {
                let Ok(Message::Poll(poll)) = poll else {
                    break;
                };
                holder.hold(*poll);
            }
            recv(notify_rx) -> id => {
                if let Ok(id) = id {
                    holder.finished(id);
                }
            }
            default(timeout) => {}
        }
        holder.expire(Instant::now());
    }
    holder.answer_all();
}
