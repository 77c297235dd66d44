//! The app's side of the worker: every request sent is recorded with the
//! job it carries, so each event goes straight to the part of the app that
//! asked ([`Owner`]) instead of asking every part whether it is theirs.

use std::collections::HashMap;

use crate::worker::{Event, Job, Request, RequestId, WorkerGone, WorkerHandle};

/// The part of the app a job belongs to: its requests are made there and
/// its events handled there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Image A or B.
    Images,
    Backbone,
    /// The main pair's columns and their PCA colours.
    Features,
    /// The gallery's targets: their images and features.
    Gallery,
    /// The sweep view's series.
    Sweep,
    /// The Fine-tune panel's run.
    Train,
    /// The benchmark view's dataset and pairs.
    Benchmark,
}

impl Owner {
    /// Who makes requests of `job`.
    pub fn of(job: Job) -> Owner {
        match job {
            Job::Image(_) => Owner::Images,
            Job::Backbone => Owner::Backbone,
            Job::Features(_) | Job::PreviousStudent | Job::Dino | Job::Fused | Job::Pca => {
                Owner::Features
            }
            Job::TargetImage(_) | Job::TargetFeatures(..) => Owner::Gallery,
            Job::Sweep | Job::Variance => Owner::Sweep,
            Job::Train => Owner::Train,
            Job::BenchOpen | Job::Bench { .. } | Job::BenchHeatmap => Owner::Benchmark,
        }
    }
}

/// An event with the job of the request it answers (`None`: the worker
/// died, or a request this link did not send).
pub struct Routed {
    pub job: Option<Job>,
    pub event: Event,
}

impl Routed {
    /// The part of the app the event goes to.
    pub fn owner(&self) -> Option<Owner> {
        self.job.map(Owner::of)
    }
}

/// The worker and the jobs of the requests sent to it that have not
/// finished yet.
pub struct WorkerLink {
    handle: WorkerHandle,
    jobs: HashMap<RequestId, Job>,
}

impl WorkerLink {
    pub fn new(handle: WorkerHandle) -> WorkerLink {
        WorkerLink {
            handle,
            jobs: HashMap::new(),
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> RequestId {
        self.handle.next_id()
    }

    /// Sends `req`, recording its job under its id.
    pub fn send(&mut self, req: Request) -> Result<(), WorkerGone> {
        let (id, job) = (req.id(), req.job());
        self.handle.send(req)?;
        self.jobs.insert(id, job);
        Ok(())
    }

    /// Cancels request `id` (its `Cancelled` event still comes, routed as
    /// any other).
    pub fn cancel(&self, id: RequestId) {
        self.handle.cancel(id);
    }

    /// The next event with the job it answers; a request's last event
    /// (anything but progress) retires its id.
    pub fn try_recv(&mut self) -> Option<Routed> {
        let event = self.handle.try_recv()?;
        let job = event.id().and_then(|id| {
            if matches!(event, Event::Progress { .. } | Event::Training { .. }) {
                self.jobs.get(&id).copied()
            } else {
                self.jobs.remove(&id)
            }
        });
        Some(Routed { job, event })
    }

    /// The job of request `id` while it has not finished.
    #[cfg(test)]
    pub fn job_of(&self, id: RequestId) -> Option<Job> {
        self.jobs.get(&id).copied()
    }

    /// Requests sent and not finished.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_alive(&self) -> bool {
        self.handle.is_alive()
    }

    /// The worker itself (tests poke it).
    pub fn handle_mut(&mut self) -> &mut WorkerHandle {
        &mut self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::Side;

    #[test]
    fn every_job_has_one_owner() {
        let cases = [
            (Job::Image(Side::B), Owner::Images),
            (Job::Backbone, Owner::Backbone),
            (
                Job::Features(crate::features::extract::Mode::Noisy),
                Owner::Features,
            ),
            (Job::PreviousStudent, Owner::Features),
            (Job::Dino, Owner::Features),
            (Job::Fused, Owner::Features),
            (Job::Pca, Owner::Features),
            (Job::TargetImage(3), Owner::Gallery),
            (
                Job::TargetFeatures(3, crate::features::extract::Mode::Clean),
                Owner::Gallery,
            ),
            (Job::Sweep, Owner::Sweep),
            (Job::Variance, Owner::Sweep),
            (Job::Train, Owner::Train),
            (Job::BenchOpen, Owner::Benchmark),
            (Job::Bench { strip: true }, Owner::Benchmark),
            (Job::BenchHeatmap, Owner::Benchmark),
        ];
        for (job, owner) in cases {
            assert_eq!(Owner::of(job), owner, "{job:?}");
        }
    }

    #[test]
    fn events_carry_the_job_of_their_request_until_it_finishes() {
        let worker = WorkerHandle::spawn(std::sync::Arc::new(|| {})).expect("worker");
        let mut link = WorkerLink::new(worker);
        // Two decodes of one side: each event goes with its own request.
        let a = link.next_id();
        let b = link.next_id();
        for (id, side) in [(a, Side::A), (b, Side::B)] {
            link.send(Request::LoadImage {
                id,
                side,
                source: crate::worker::ImageSource::Bytes {
                    label: "broken.png".into(),
                    bytes: std::sync::Arc::from(&b"not an image"[..]),
                },
            })
            .expect("send");
        }
        assert_eq!(link.in_flight(), 2);
        let mut seen = Vec::new();
        let t0 = std::time::Instant::now();
        while seen.len() < 2 {
            assert!(t0.elapsed().as_secs() < 60, "no answer");
            match link.try_recv() {
                Some(Routed {
                    job,
                    event: Event::Failed { id, .. },
                }) => seen.push((id, job)),
                Some(_) => {}
                None => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        seen.sort_by_key(|(id, _)| *id);
        assert_eq!(
            seen,
            [
                (a, Some(Job::Image(Side::A))),
                (b, Some(Job::Image(Side::B)))
            ]
        );
        assert_eq!(link.in_flight(), 0);
        assert_eq!(link.job_of(a), None);
    }
}
