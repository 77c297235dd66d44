//! Request tracking: which request the app waits for, under which key, and
//! which key failed or was cancelled (not asked for again by itself).

use crate::model::FeatureKey;
use crate::worker::RequestId;

/// One kind of request kept track of by the key it was made for.
#[derive(Debug, Clone)]
pub struct Tracked<K> {
    /// The request in flight and its key.
    pending: Option<(RequestId, K)>,
    /// A key that failed or was cancelled: not requested again by itself.
    blocked: Option<K>,
}

impl<K> Default for Tracked<K> {
    fn default() -> Self {
        Tracked {
            pending: None,
            blocked: None,
        }
    }
}

impl<K: Clone + PartialEq> Tracked<K> {
    /// Whether a request is in flight.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a key failed or was cancelled.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Whether `id` is the request in flight.
    pub fn awaits(&self, id: RequestId) -> bool {
        self.pending.as_ref().is_some_and(|(p, _)| *p == id)
    }

    /// The key of the request in flight.
    pub fn pending_key(&self) -> Option<&K> {
        self.pending.as_ref().map(|(_, k)| k)
    }

    /// Whether `key` should be asked for: neither in flight nor blocked.
    pub fn wants(&self, key: &K) -> bool {
        let inflight = self.pending.as_ref().is_some_and(|(_, k)| k == key);
        let blocked = self.blocked.as_ref() == Some(key);
        !(inflight || blocked)
    }

    /// Records request `id` for `key` as the one in flight.
    pub fn start(&mut self, id: RequestId, key: K) {
        self.pending = Some((id, key));
    }

    /// Forgets the request in flight (to cancel it) and returns its id.
    pub fn take(&mut self) -> Option<RequestId> {
        self.pending.take().map(|(id, _)| id)
    }

    /// Request `id` answered: returns its key when it was the one in flight.
    pub fn finish(&mut self, id: RequestId) -> Option<K> {
        if self.awaits(id) {
            self.pending.take().map(|(_, k)| k)
        } else {
            None
        }
    }

    /// Request `id` failed or was cancelled: when it was the one in flight,
    /// its key is blocked. Returns whether it was.
    pub fn block(&mut self, id: RequestId) -> bool {
        match self.finish(id) {
            Some(key) => {
                self.blocked = Some(key);
                true
            }
            None => false,
        }
    }

    /// Blocks the request in flight (cancel everything) and returns its id.
    pub fn block_pending(&mut self) -> Option<RequestId> {
        let (id, key) = self.pending.take()?;
        self.blocked = Some(key);
        Some(id)
    }

    /// Lets a blocked key be asked for again.
    pub fn unblock(&mut self) {
        self.blocked = None;
    }
}

/// What PCA colours are computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PcaKey {
    /// `PairFeatures::generation`.
    pub features: u64,
    pub layer: FeatureKey,
    /// One basis for both images.
    pub joint: bool,
}
