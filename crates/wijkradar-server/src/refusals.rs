//! Refusals must not be a way to flood the audit log or the disk: per
//! organisation (or "unknown") and kind of refusal, the first of a window
//! is written as it comes; the rest of the window are counted and written
//! as one summary entry when the window has passed. Refusals are written
//! without fsync: nothing was acknowledged, so nothing has to survive a
//! crash in order (acknowledged batches are still fsynced one by one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wijkradar_audit::{AuditLog, Event};

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Refusals counted but not written one by one.
    more: u64,
}

#[derive(Debug)]
pub(crate) struct Refusals {
    window: Duration,
    open: Mutex<HashMap<(String, String), Window>>,
}

impl Refusals {
    pub(crate) fn new(window: Duration) -> Refusals {
        Refusals {
            window,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Records a refusal of `kind` (a call and a status code, never a
    /// count or an identifier) by `actor`: writes `event` when it is the
    /// first of its window, else counts it. Windows that have passed are
    /// summed up first.
    pub(crate) fn record(&self, audit: &AuditLog, actor: &str, kind: &str, event: Event) {
        self.write_due(audit);
        let mut open = self.open.lock().expect("not poisoned");
        match open.get_mut(&(actor.to_owned(), kind.to_owned())) {
            Some(w) => w.more += 1,
            None => {
                open.insert(
                    (actor.to_owned(), kind.to_owned()),
                    Window {
                        started: Instant::now(),
                        more: 0,
                    },
                );
                drop(open);
                audit.record(actor, event, false);
            }
        }
    }

    /// Writes a summary of every window that has passed with refusals
    /// counted in it, and closes those windows.
    pub(crate) fn write_due(&self, audit: &AuditLog) {
        let due: Vec<((String, String), u64)> = {
            let mut open = self.open.lock().expect("not poisoned");
            let window = self.window;
            let passed: Vec<(String, String)> = open
                .iter()
                .filter(|(_, w)| w.started.elapsed() >= window)
                .map(|(k, _)| k.clone())
                .collect();
            passed
                .into_iter()
                .filter_map(|k| open.remove(&k).map(|w| (k, w.more)))
                .filter(|(_, more)| *more > 0)
                .collect()
        };
        for ((actor, kind), more) in due {
            audit.record(
                &actor,
                crate::call_event(
                    "Refusals",
                    "",
                    &kind,
                    Some(format!(
                        "{more} more refusals of this kind within {} s after the one logged, not logged one by one",
                        self.window.as_secs()
                    )),
                ),
                false,
            );
        }
    }
}
