//! Contacts handed to a simulation while another thread still finds them.
//!
//! A large scenario spends a noticeable part of its run finding contacts
//! (10,000 walkers for 12 hours: about 42 s of 320). The simulation only
//! ever needs the contacts up to its current time, so a [`ContactFeed`]
//! runs the contact search on its own thread and hands the changes over
//! in time order, step by step, through a bounded channel; the simulation
//! waits only when it catches up. Unless told not to, the feed keeps what
//! it handed over, so the protocols run after it get the whole list
//! ([`ContactFeed::finish`]; 10.5 M changes of 32 bytes in the
//! 10,000-node scenario, not kept when nothing runs after it). The
//! contacts are exactly those the search finds when run before the
//! simulation (`Scenario::workload_fed`).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::trace::Contact;

/// Steps of contact changes the search may run ahead of the simulation.
const STEPS_AHEAD: usize = 4096;

/// The contact changes of a scenario, in time order, as they are found.
#[derive(Debug)]
pub struct ContactFeed {
    rx: Option<Receiver<Vec<Contact>>>,
    worker: Option<JoinHandle<()>>,
    /// Received and not yet handed over.
    ahead: VecDeque<Contact>,
    /// Handed over so far, in order, if `keep`.
    seen: Vec<Contact>,
    keep: bool,
    /// Handed over so far.
    handed: usize,
}

impl ContactFeed {
    /// Runs `search` on its own thread; it hands each step's changes to
    /// the callback it is given, in time order.
    pub fn spawn(search: impl FnOnce(&mut dyn FnMut(&[Contact])) + Send + 'static) -> Self {
        let (tx, rx): (SyncSender<Vec<Contact>>, _) = sync_channel(STEPS_AHEAD);
        let worker = std::thread::spawn(move || {
            // A closed receiver (the simulation stopped early) ends nothing
            // but this search's purpose: the rest is dropped.
            search(&mut |changes: &[Contact]| {
                let _ = tx.send(changes.to_vec());
            });
        });
        ContactFeed {
            rx: Some(rx),
            worker: Some(worker),
            ahead: VecDeque::new(),
            seen: Vec::new(),
            keep: true,
            handed: 0,
        }
    }

    /// Whether the changes handed over from now on are kept for
    /// [`ContactFeed::finish`] (they are unless told otherwise).
    pub fn keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// The next change, without taking it; waits for the search when it
    /// has none ready. `None` once the search ended and all were taken.
    pub fn peek(&mut self) -> Option<&Contact> {
        while self.ahead.is_empty() {
            let step = self.rx.as_ref()?.recv();
            match step {
                Ok(changes) => self.ahead.extend(changes),
                Err(_) => {
                    self.rx = None;
                    self.join();
                    return None;
                }
            }
        }
        self.ahead.front()
    }

    /// The kept changes, those handed over and those still to come, and
    /// how many there were in all (waits for the search to end).
    pub fn finish(mut self) -> (Vec<Contact>, usize) {
        while self.next().is_some() {}
        (std::mem::take(&mut self.seen), self.handed)
    }

    fn join(&mut self) {
        if let Some(w) = self.worker.take() {
            // A panic in the search is the simulator's bug: surface it.
            if let Err(e) = w.join() {
                std::panic::resume_unwind(e);
            }
        }
    }
}

impl Iterator for ContactFeed {
    type Item = Contact;

    /// Takes the next change (see [`ContactFeed::peek`]).
    fn next(&mut self) -> Option<Contact> {
        self.peek()?;
        let c = self.ahead.pop_front()?;
        self.handed += 1;
        if self.keep {
            self.seen.push(c);
        }
        Some(c)
    }
}
