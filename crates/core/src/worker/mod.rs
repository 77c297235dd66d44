//! The background worker: the UI sends [`Request`]s and drains [`Event`]s at
//! the start of each frame; nothing here ever blocks the UI.
//!
//! Two lanes, each one thread:
//!
//! - the **model lane** owns the models: it loads the backbone and extracts
//!   features (then prepares them for matching);
//! - the **light lane** owns no model: it decodes images and computes PCA
//!   colours, so a dropped image shows at once even while a backbone
//!   downloads or an ensemble runs.
//!
//! Conventions:
//!
//! - Every request carries an id ([`RequestId`], from [`WorkerHandle::next_id`]);
//!   every event names the request it answers. The UI drops events of ids it
//!   no longer waits for (stale results).
//! - Requests that make an older one pointless (a second extraction of the
//!   same mode, a second image for the same side, ...) share a
//!   [`Request::supersede_key`]: queued older ones are skipped unrun.
//! - Cancellation: [`WorkerHandle::cancel`] sets the running job's
//!   `AtomicBool` (the engine checks it between stages, ensemble batches and
//!   layers) or marks a queued job, which is then skipped. Either way an
//!   [`Event::Cancelled`] follows.
//! - The `notify` callback runs after every event (the app passes
//!   `ctx.request_repaint`).
//! - A panic in a lane is caught and reported as [`Event::Died`]; the handle
//!   then says so ([`WorkerHandle::is_alive`]) and the app offers a restart
//!   (a fresh [`WorkerHandle`]).
//!
//! Files: [`protocol`] (requests, events, progress, job kinds), [`errors`]
//! (user-facing errors and their hints), [`handle`] (threads, lanes,
//! coalescing), `jobs` (the job bodies), [`sweep`] (one step of the
//! timestep sweep and of the variance analysis) and [`bench`] (the
//! benchmark view's datasets and pairs, scored by the evaluation). The prepared features
//! ([`PairFeatures`], [`Side`]) and the view geometry ([`ViewMapping`]) live
//! in [`crate::features`]; they are re-exported here.
//!
//! Extending (e.g. the fine-tune): add a `Request` variant, route it in
//! `Request::lane` (protocol.rs), handle it in `LaneState::handle`
//! (jobs.rs), add `Event` variants for its progress and results, and a
//! supersede key if a newer request makes an older one pointless.

pub mod bench;
pub mod errors;
pub mod handle;
mod jobs;
pub mod protocol;
pub mod sweep;
mod train_data;

pub use crate::features::pair::{LayerViews, PairFeatures, PrepareError, Side, SideFeatures};
pub use crate::features::view::ViewMapping;
pub use crate::util::next_generation;
pub use errors::{JobError, OFFLINE_HINT, UserError, backbone_error};
pub use handle::{WorkerGone, WorkerHandle};
pub use protocol::{
    BackboneChoice, BackboneInfo, DroppedFile, DroppedFileHandle, Event, ExtractJob, ImageSource,
    Job, Notify, PcaColours, Progress, Request, RequestId, SOURCE_LAYER, TrainData, TrainSummary,
    human_bytes,
};
pub use sweep::{SweepPoint, VariancePoint};
