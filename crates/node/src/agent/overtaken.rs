//! Which of the ADDs the agent is running a DEL of the same attachment
//! overtook.
//!
//! A runtime that gives up on an ADD kills the plugin process and runs DEL
//! at once, but the agent's ADD goes on to its own deadline: its claim
//! create may still be on its way to the API server when the DEL reads and
//! finds nothing. Landing after that DEL, before the ADD's `answer-by`, the
//! claim would be answered for a torn-down sandbox. So the agent remembers
//! each DEL that arrives while an ADD of the same attachment (container ID
//! and interface) runs, and when that ADD ends, it runs the DEL again: by
//! then its create has either landed (the DEL finds the claim and deletes
//! it) or will land after the ADD's deadline (the controller deletes it
//! unanswered). An ADD of the attachment begun after the DEL owns the claim
//! again: the DEL is then not run again for the older ADD.

use std::collections::HashMap;
use std::sync::Mutex;

/// An attachment, as CNI names it: the container ID and the interface.
pub type Attachment = (String, String);

#[derive(Debug, Default)]
pub struct Overtaken {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Orders ADD starts and DELs.
    next: u64,
    running: HashMap<Attachment, Running>,
}

#[derive(Debug)]
struct Running {
    /// The ADDs of the attachment still running: their start, and the DEL
    /// that overtook each, if one did.
    adds: Vec<(u64, Option<u64>)>,
    /// The start of the attachment's latest ADD, running or ended.
    latest: u64,
}

impl Overtaken {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing here is left half-written by a panic: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An ADD of `attachment` begins; what it is known by until it ends.
    pub fn begin_add(&self, attachment: &Attachment) -> u64 {
        let mut state = self.lock();
        state.next += 1;
        let start = state.next;
        let running = state.running.entry(attachment.clone()).or_insert(Running {
            adds: Vec::new(),
            latest: start,
        });
        running.adds.push((start, None));
        running.latest = start;
        start
    }

    /// A DEL of `attachment` arrives: every ADD of it running now is
    /// overtaken.
    pub fn del(&self, attachment: &Attachment) {
        let mut state = self.lock();
        state.next += 1;
        let at = state.next;
        if let Some(running) = state.running.get_mut(attachment) {
            for (_, overtaken) in &mut running.adds {
                overtaken.get_or_insert(at);
            }
        }
    }

    /// The ADD `start` of `attachment` ends: whether the DEL must run again
    /// (a DEL overtook it and no ADD of the attachment began since).
    pub fn end_add(&self, attachment: &Attachment, start: u64) -> bool {
        let mut state = self.lock();
        let Some(running) = state.running.get_mut(attachment) else {
            return false;
        };
        let mut overtaken = None;
        running.adds.retain(|&(s, by)| {
            if s == start {
                overtaken = by;
            }
            s != start
        });
        let again = overtaken.is_some_and(|del| running.latest < del);
        if running.adds.is_empty() {
            state.running.remove(attachment);
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(container: &str) -> Attachment {
        (container.to_owned(), "net1".to_owned())
    }

    #[test]
    fn an_add_no_del_overtook_ends_with_nothing_to_undo() {
        let o = Overtaken::default();
        let add = o.begin_add(&at("c1"));
        assert!(!o.end_add(&at("c1"), add));
        assert!(o.lock().running.is_empty(), "nothing kept after it ends");
    }

    #[test]
    fn a_del_during_an_add_is_run_again_when_the_add_ends() {
        let o = Overtaken::default();
        let add = o.begin_add(&at("c1"));
        o.del(&at("c1"));
        assert!(o.end_add(&at("c1"), add));
        assert!(o.lock().running.is_empty());
    }

    #[test]
    fn a_del_of_another_attachment_overtakes_nothing() {
        let o = Overtaken::default();
        let add = o.begin_add(&at("c1"));
        o.del(&at("c2"));
        o.del(&("c1".to_owned(), "net2".to_owned()));
        assert!(!o.end_add(&at("c1"), add));
    }

    #[test]
    fn a_del_before_the_add_began_overtakes_nothing() {
        let o = Overtaken::default();
        o.del(&at("c1"));
        let add = o.begin_add(&at("c1"));
        assert!(!o.end_add(&at("c1"), add));
    }

    #[test]
    fn an_add_begun_after_the_del_owns_the_attachment_again() {
        // Ended first or still running, the newer ADD's claim is not the
        // older ADD's to delete.
        for newer_ends_first in [true, false] {
            let o = Overtaken::default();
            let old = o.begin_add(&at("c1"));
            o.del(&at("c1"));
            let new = o.begin_add(&at("c1"));
            if newer_ends_first {
                assert!(!o.end_add(&at("c1"), new));
                assert!(!o.end_add(&at("c1"), old));
            } else {
                assert!(!o.end_add(&at("c1"), old));
                assert!(!o.end_add(&at("c1"), new));
            }
            assert!(o.lock().running.is_empty());
        }
    }

    #[test]
    fn every_add_a_del_overtook_runs_it_again() {
        let o = Overtaken::default();
        let first = o.begin_add(&at("c1"));
        let second = o.begin_add(&at("c1"));
        o.del(&at("c1"));
        assert!(o.end_add(&at("c1"), first));
        assert!(o.end_add(&at("c1"), second));
    }

    #[test]
    fn an_unknown_add_ends_with_nothing_to_undo() {
        let o = Overtaken::default();
        assert!(!o.end_add(&at("c1"), 7));
        let add = o.begin_add(&at("c1"));
        o.del(&at("c1"));
        assert!(!o.end_add(&at("c1"), add + 1));
        assert!(o.end_add(&at("c1"), add));
    }
}
