//! Sending to workers' queues, all kept in the broker's memory: placements,
//! those for one worker in a round as one message, with the answer to the
//! worker's reports riding along; stop and hand-back requests; answers that
//! found no placement to ride on.

use super::*;

/// A placement to send: its task and attempt, its worker, the message.
pub(super) type Outgoing = (Attempt, String, Control);

/// Reports applied and committed, by worker: the newest of its stream and
/// whether the worker was told.
#[derive(Debug, Default)]
pub(super) struct Answers {
    by_worker: HashMap<String, Answer>,
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    stream: u64,
    upto: u64,
    told: bool,
}

impl Answers {
    /// The worker's reports of `stream` up to `upto` are committed.
    pub(super) fn applied(&mut self, worker: String, stream: u64, upto: u64) {
        let answer = self.by_worker.entry(worker).or_insert(Answer {
            stream,
            upto,
            told: false,
        });
        // A restarted worker process starts a new stream.
        if answer.stream != stream || answer.upto < upto {
            *answer = Answer {
                stream,
                upto,
                told: false,
            };
        } else {
            // Reports it sent again: it missed the answer, so it hears it
            // again.
            answer.told = false;
        }
    }

    /// How many of a message's leading `reports` (numbered `first` to
    /// `last` of the worker's `stream`) were applied before:
    /// - all, when the newest applied of the stream is `last` or later;
    /// - those up to the newest applied, when the message names its first
    ///   and its numbers run one by one;
    /// - none otherwise (another stream, a worker that does not name the
    ///   first, or numbers that do not fit the count).
    pub(super) fn applied_before(
        &self,
        worker: &str,
        stream: u64,
        first: Option<u64>,
        last: u64,
        reports: usize,
    ) -> usize {
        let Some(answer) = self
            .by_worker
            .get(worker)
            .filter(|answer| answer.stream == stream)
        else {
            return 0;
        };
        if answer.upto >= last {
            return reports;
        }
        let Some(first) = first else {
            return 0;
        };
        let counted = last
            .checked_sub(first)
            .and_then(|span| usize::try_from(span).ok())
            .is_some_and(|span| span + 1 == reports);
        if !counted || answer.upto < first {
            return 0;
        }
        usize::try_from(answer.upto - first + 1).unwrap_or(0)
    }

    /// The answer the worker has not been told yet, marked told.
    fn take(&mut self, worker: &str) -> Option<Control> {
        let answer = self
            .by_worker
            .get_mut(worker)
            .filter(|answer| !answer.told)?;
        answer.told = true;
        Some(Control::Applied {
            stream: answer.stream,
            upto: answer.upto,
        })
    }

    /// Forgets a worker that said goodbye.
    pub(super) fn forget(&mut self, worker: &str) {
        self.by_worker.remove(worker);
    }

    /// The answers no worker has been told yet, by worker, marked told.
    fn take_untold(&mut self) -> Vec<(String, Control)> {
        self.by_worker
            .iter_mut()
            .filter(|(_, answer)| !answer.told)
            .map(|(worker, answer)| {
                answer.told = true;
                let control = Control::Applied {
                    stream: answer.stream,
                    upto: answer.upto,
                };
                (worker.clone(), control)
            })
            .collect()
    }
}

/// The placements of one round for one worker.
#[derive(Default)]
struct ForWorker {
    controls: Vec<Control>,
}

/// Publishes to workers' queues on one connection's channel.
pub(super) struct Sender<'a> {
    pub(super) channel: &'a lapin::Channel,
    pub(super) signer: &'a Signer,
    pub(super) names: &'a Names,
    pub(super) traffic: &'a Traffic,
}

impl Sender<'_> {
    /// Sends a request that its sender repeats when it is lost.
    pub(super) async fn send(&self, worker: &str, control: &Control) -> Result<(), LinkError> {
        let queue = self.names.control(worker);
        amqp::publish(self.channel, self.signer, &queue, control, Keep::Transient).await?;
        self.traffic.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends placements, those for one worker as one message, each with
    /// the answer to that worker's reports when it has one untold. They are
    /// kept in the broker's memory: the bridge sends every placement whose
    /// attempt may still run again on its next connection.
    pub(super) async fn send_runs(
        &self,
        runs: Vec<Outgoing>,
        answers: &mut Answers,
    ) -> Result<(), LinkError> {
        let mut by_worker: BTreeMap<String, ForWorker> = BTreeMap::new();
        for (_, worker, control) in runs {
            by_worker.entry(worker).or_default().controls.push(control);
        }
        for (worker, ForWorker { mut controls }) in by_worker {
            controls.extend(answers.take(&worker));
            let queue = self.names.control(&worker);
            match controls.as_slice() {
                [one] => {
                    amqp::publish(self.channel, self.signer, &queue, one, Keep::Transient).await?
                }
                many => {
                    amqp::publish(self.channel, self.signer, &queue, &many, Keep::Transient).await?
                }
            };
            self.traffic.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends the answers that found no placement to ride on.
    pub(super) async fn send_answers(&self, answers: &mut Answers) -> Result<(), LinkError> {
        for (worker, answer) in answers.take_untold() {
            self.send(&worker, &answer).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(stream: u64, upto: u64) -> Option<Control> {
        Some(Control::Applied { stream, upto })
    }

    #[test]
    fn each_answer_is_told_once_and_only_the_newest() {
        let mut answers = Answers::default();
        assert_eq!(answers.take("a"), None, "nothing applied yet");
        answers.applied("a".into(), 7, 3);
        answers.applied("a".into(), 7, 9);
        answers.applied("a".into(), 7, 5);
        answers.applied("b".into(), 8, 1);
        assert_eq!(
            answers.take("a"),
            applied(7, 9),
            "the newest, not the last seen"
        );
        assert_eq!(answers.take("a"), None, "told once");
        assert_eq!(
            answers.take_untold(),
            [("b".to_owned(), Control::Applied { stream: 8, upto: 1 })]
        );
        assert_eq!(answers.take_untold(), [], "told once");
        assert_eq!(answers.take("a"), None, "nothing newer to tell");
        // Reports sent again: the worker missed the answer.
        answers.applied("a".into(), 7, 9);
        assert_eq!(answers.take("a"), applied(7, 9), "told again");
        answers.applied("a".into(), 7, 10);
        assert_eq!(answers.take("a"), applied(7, 10));
    }

    #[test]
    fn reports_applied_before_are_counted_from_the_front() {
        let mut answers = Answers::default();
        assert_eq!(answers.applied_before("a", 7, Some(1), 3, 3), 0, "none yet");
        answers.applied("a".into(), 7, 5);
        // Sent again whole, with or without its first number.
        assert_eq!(answers.applied_before("a", 7, Some(3), 5, 3), 3);
        assert_eq!(answers.applied_before("a", 7, None, 4, 2), 2);
        // Sent again with newer ones after them.
        assert_eq!(answers.applied_before("a", 7, Some(4), 8, 5), 2);
        // All new.
        assert_eq!(answers.applied_before("a", 7, Some(6), 8, 3), 0);
        // Without its first number only a message applied whole is known.
        assert_eq!(answers.applied_before("a", 7, None, 8, 5), 0);
        // Numbers that do not run one by one are not trusted.
        assert_eq!(answers.applied_before("a", 7, Some(4), 8, 3), 0);
        assert_eq!(answers.applied_before("a", 7, Some(9), 8, 0), 0);
        // Another stream, or another worker, has applied nothing.
        assert_eq!(answers.applied_before("a", 11, Some(1), 3, 3), 0);
        assert_eq!(answers.applied_before("b", 7, Some(1), 3, 3), 0);
    }

    #[test]
    fn a_restarted_worker_s_new_stream_replaces_the_old_one() {
        let mut answers = Answers::default();
        answers.applied("a".into(), 7, 900);
        assert_eq!(answers.take("a"), applied(7, 900));
        // Its numbers start again; a lower one of the new stream counts.
        answers.applied("a".into(), 11, 2);
        assert_eq!(answers.take("a"), applied(11, 2));
        answers.forget("a");
        assert_eq!(answers.take("a"), None);
        assert!(answers.take_untold().is_empty());
    }
}
