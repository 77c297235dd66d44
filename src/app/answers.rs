//! The cache of query answers (hover previews, committed clicks), shared
//! by the main pair's columns and the gallery's targets: an answer is
//! computed on demand and kept by what decides it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::query::{self, Answer, QueryOptions, QueryPoint};
use crate::model::FeatureKey;
use crate::worker::{PairFeatures, Side};

/// The most answers kept.
const MAX_ANSWERS: usize = 24;
/// About 200 MB of similarity maps (a 4096-px image's map is 64 MB); the
/// newest answer stays whatever its size.
const MAX_FLOATS: usize = 50_000_000;

/// What decides an answer: the features (`PairFeatures::generation`), the
/// layer, the point (bits of x and y) and side, k and the tolerance's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AnswerKey {
    features: u64,
    layer: FeatureKey,
    q: [u32; 2],
    side: Side,
    k: usize,
    tol: u32,
}

/// Answers computed lately, oldest first.
#[derive(Default)]
pub struct AnswerCache {
    list: VecDeque<(AnswerKey, Arc<Answer>)>,
}

impl AnswerCache {
    /// The answer of `q` in `f` on `layer` with `opts`: kept, or computed
    /// now and kept (`None` when the query has no answer).
    pub(super) fn get(
        &mut self,
        f: &PairFeatures,
        layer: FeatureKey,
        q: QueryPoint,
        opts: &QueryOptions,
    ) -> Option<Arc<Answer>> {
        let key = AnswerKey {
            features: f.generation,
            layer,
            q: [q.x.to_bits(), q.y.to_bits()],
            side: q.side,
            k: opts.k,
            tol: opts.tolerance_cells.to_bits(),
        };
        if let Some((_, a)) = self.list.iter().find(|(k, _)| *k == key) {
            return Some(a.clone());
        }
        match query::answer(f, layer, q, opts) {
            Ok(a) => {
                let a = Arc::new(a);
                self.list.push_back((key, a.clone()));
                while self.list.len() > MAX_ANSWERS
                    || (self.list.len() > 1 && self.floats() > MAX_FLOATS)
                {
                    self.list.pop_front();
                }
                Some(a)
            }
            Err(e) => {
                tracing::debug!("query {q:?} failed: {e}");
                None
            }
        }
    }

    fn floats(&self) -> usize {
        self.list.iter().map(|(_, a)| a.heat.sim.data.len()).sum()
    }

    /// Forgets every answer (the features they came from went).
    pub(super) fn clear(&mut self) {
        self.list.clear();
    }
}
