//! Threads: the UI's [`WorkerHandle`], the two lanes' loops and the
//! coalescing of superseded requests.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::jobs::LaneState;
use super::protocol::{Event, Lane, Notify, Progress, Request, RequestId};

// ---------------------------------------------------------------------------
// The handle

pub(super) struct Shared {
    /// Ids cancelled before they ran.
    cancelled: Mutex<HashSet<RequestId>>,
    /// The running job of each lane and its cancel flag.
    running: Mutex<Vec<(RequestId, Arc<AtomicBool>)>>,
    /// Cleared when a lane dies.
    alive: AtomicBool,
    /// Set by the handle's drop: lanes stop at their next request.
    shutdown: AtomicBool,
}

/// The UI's end of the worker.
pub struct WorkerHandle {
    model_tx: Option<Sender<Request>>,
    light_tx: Option<Sender<Request>>,
    events: Receiver<Event>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next_id: RequestId,
}

/// The worker is gone (it panicked or was shut down).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the background worker has stopped; restart it")]
pub struct WorkerGone;

impl WorkerHandle {
    /// Starts both lanes. `notify` runs after every event.
    pub fn spawn(notify: Notify) -> std::io::Result<WorkerHandle> {
        let (event_tx, events) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            cancelled: Mutex::new(HashSet::new()),
            running: Mutex::new(Vec::new()),
            alive: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
        });
        let out = Outbox {
            tx: event_tx,
            notify,
            shared: shared.clone(),
        };
        let (model_tx, model_rx) = crossbeam_channel::unbounded();
        let (light_tx, light_rx) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        for (lane, rx) in [(Lane::Model, model_rx), (Lane::Light, light_rx)] {
            let out = out.clone();
            let name = match lane {
                Lane::Model => "cleandift-model",
                Lane::Light => "cleandift-light",
            };
            threads.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || lane_main(lane, rx, out))?,
            );
        }
        Ok(WorkerHandle {
            model_tx: Some(model_tx),
            light_tx: Some(light_tx),
            events,
            shared,
            threads,
            next_id: 1,
        })
    }

    /// A fresh request id (increasing).
    pub fn next_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues a request.
    pub fn send(&self, req: Request) -> Result<(), WorkerGone> {
        if !self.is_alive() {
            return Err(WorkerGone);
        }
        let tx = match req.lane() {
            Lane::Model => &self.model_tx,
            Lane::Light => &self.light_tx,
        };
        tx.as_ref().ok_or(WorkerGone)?.send(req).map_err(|_| {
            self.shared.alive.store(false, Ordering::Relaxed);
            WorkerGone
        })
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        match self.events.try_recv() {
            Ok(e) => Some(e),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.shared.alive.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Waits up to `timeout` for the next event (tests, benchmarks).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Cancels a request: the running job stops at its next check, a queued
    /// one is skipped. An [`Event::Cancelled`] follows either way (unless
    /// the job had already finished).
    pub fn cancel(&self, id: RequestId) {
        if let Ok(running) = self.shared.running.lock()
            && let Some((_, flag)) = running.iter().find(|(rid, _)| *rid == id)
        {
            flag.store(true, Ordering::Relaxed);
            return;
        }
        if let Ok(mut c) = self.shared.cancelled.lock() {
            c.insert(id);
        }
    }

    /// Ids of the jobs running now.
    pub fn running(&self) -> Vec<RequestId> {
        self.shared
            .running
            .lock()
            .map(|r| r.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// False once a lane has died (or the channels closed).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        if let Ok(running) = self.shared.running.lock() {
            for (_, flag) in running.iter() {
                flag.store(true, Ordering::Relaxed);
            }
        }
        // Closing the request channels ends the lanes' loops. Threads are
        // not joined: a lane inside a long UNet pass must not hold up the
        // window closing; it exits at its next cancel check.
        self.model_tx = None;
        self.light_tx = None;
        self.threads.clear();
    }
}

// ---------------------------------------------------------------------------
// Lanes

#[derive(Clone)]
pub(super) struct Outbox {
    tx: Sender<Event>,
    notify: Notify,
    shared: Arc<Shared>,
}

impl Outbox {
    pub(super) fn send(&self, ev: Event) {
        // A closed channel means the UI is gone; nothing to tell.
        let _ = self.tx.send(ev);
        (self.notify)();
    }

    pub(super) fn progress(&self, id: RequestId, progress: Progress) {
        self.send(Event::Progress { id, progress });
    }
}

fn lane_main(lane: Lane, rx: Receiver<Request>, out: Outbox) {
    let mut state = LaneState::new(lane);
    let mut queue: VecDeque<Request> = VecDeque::new();
    loop {
        if out.shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        // Take everything waiting, then keep only the newest of each
        // supersede key.
        loop {
            match rx.try_recv() {
                Ok(r) => queue.push_back(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if queue.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        if queue.is_empty() {
            match rx.recv() {
                Ok(r) => queue.push_back(r),
                Err(_) => return,
            }
            continue;
        }
        coalesce(&mut queue);
        let Some(req) = queue.pop_front() else {
            continue;
        };
        let id = req.id();
        let job = req.job();
        let was_cancelled = out
            .shared
            .cancelled
            .lock()
            .map(|mut c| c.remove(&id))
            .unwrap_or(false);
        if was_cancelled {
            out.send(Event::Cancelled { id, job });
            continue;
        }
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = out.shared.running.lock() {
            r.push((id, flag.clone()));
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            state.handle(req, &flag, &out);
        }));
        if let Ok(mut r) = out.shared.running.lock() {
            r.retain(|(rid, _)| *rid != id);
        }
        if let Err(panic) = result {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!("worker lane {lane:?} died in {job} (request {id}): {what}");
            out.shared.alive.store(false, Ordering::Relaxed);
            out.send(Event::Died {
                message: format!("it crashed while working on {job}: {what}"),
            });
            return;
        }
    }
}

/// Drops every queued request that a later one with the same key makes
/// pointless.
fn coalesce(queue: &mut VecDeque<Request>) {
    let mut seen = HashSet::new();
    let mut keep = vec![true; queue.len()];
    for (i, r) in queue.iter().enumerate().rev() {
        if let Some(k) = r.supersede_key()
            && !seen.insert(k)
        {
            keep[i] = false;
        }
    }
    let mut i = 0;
    queue.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::pair::Side;
    use crate::worker::protocol::ImageSource;

    fn req(id: RequestId, side: Side) -> Request {
        Request::LoadImage {
            id,
            side,
            source: ImageSource::Bytes {
                label: "x.png".into(),
                bytes: Arc::from(&b"x"[..]),
            },
        }
    }

    #[test]
    fn coalesce_keeps_the_newest_of_each_key() {
        let mut q: VecDeque<Request> = [
            req(1, Side::A),
            req(2, Side::B),
            req(3, Side::A),
            Request::Crash { id: 4 },
            Request::Crash { id: 5 },
        ]
        .into_iter()
        .collect();
        coalesce(&mut q);
        let ids: Vec<_> = q.iter().map(Request::id).collect();
        assert_eq!(ids, vec![2, 3, 4, 5]);
    }
}
