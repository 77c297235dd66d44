//! How the views show an answer whose features belong to other inputs
//! than those of now ([`crate::app::provenance`]): greyed out under a
//! "stale (what changed), computing…" label while the images are the
//! same (a new t, mode, size or backbone), hidden (only the label) when
//! an image changed, so nothing of an old image is drawn over a new one
//! and no caption gives its coordinates. What each view drew is recorded
//! for tests ([`DrawnAnswer`]); the label is an AccessKit label too.

use std::sync::Arc;

use egui::{Align2, Color32, FontId, Rect, Role, Sense, WidgetInfo};

use super::Canvas;
use crate::app::column::Column;
use crate::app::provenance::{self, DrawnAnswer, Freshness, Provenance};

/// How an answer is shown.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Show {
    /// Drawn as it is: it belongs to the inputs of now.
    Current,
    /// Stale, with the same images: drawn under a grey veil and the label.
    Greyed(String),
    /// Stale, an image changed: only the label.
    Hidden(String),
}

impl Show {
    pub(super) fn is_current(&self) -> bool {
        matches!(self, Show::Current)
    }

    /// Whether the answer's heatmap and markers are drawn at all.
    pub(super) fn draws(&self) -> bool {
        !matches!(self, Show::Hidden(_))
    }

    pub(super) fn label(&self) -> Option<&str> {
        match self {
            Show::Current => None,
            Show::Greyed(l) | Show::Hidden(l) => Some(l),
        }
    }

    /// From a freshness: `name` names the answer in the label.
    pub(super) fn of(
        c: &Canvas,
        name: &str,
        fresh: Freshness,
        pending: bool,
        blocked: bool,
    ) -> Show {
        match fresh {
            Freshness::Current => Show::Current,
            Freshness::Stale { why, same_images } => {
                let status = provenance::stale_status(c.backbone, pending, blocked, c.training);
                let label = format!("{name}: stale ({why}), {status}");
                if same_images {
                    Show::Greyed(label)
                } else {
                    Show::Hidden(label)
                }
            }
        }
    }
}

/// How the answer of a main column is shown and what its features were
/// computed from (`None`: no features shown).
pub(super) fn column(c: &Canvas, col: Column) -> Option<(Show, Arc<Provenance>)> {
    let fresh = provenance::column_freshness(c.settings, c.backbone, c.images, c.features, col)?;
    let prov = c.features.provenance_of(col)?.clone();
    let slot = c.features.slot(col);
    let pending = slot.is_some_and(|s| s.is_pending());
    let blocked = slot.is_some_and(|s| s.is_blocked());
    Some((Show::of(c, &col.to_string(), fresh, pending, blocked), prov))
}

/// Greys `rect` out and writes `label` over it (also as an AccessKit
/// label).
pub(super) fn veil(
    ui: &egui::Ui,
    rect: Rect,
    label: &str,
    size: f32,
    salt: impl std::hash::Hash + std::fmt::Debug,
) {
    let p = ui.painter();
    p.rect_filled(rect, 0.0, Color32::from_black_alpha(170));
    let job = egui::text::LayoutJob::simple(
        label.to_string(),
        FontId::proportional(size),
        Color32::from_rgb(255, 220, 120),
        (rect.width() - 8.0).max(20.0),
    );
    let g = p.layout_job(job);
    let at = Align2::CENTER_CENTER.align_size_within_rect(g.size(), rect);
    p.galley(at.min, g, Color32::WHITE);
    let text = label.to_string();
    ui.interact(at, ui.make_persistent_id(("stale", salt)), Sense::hover())
        .widget_info(|| WidgetInfo::labeled(Role::Label, true, text.clone()));
}

/// Records what a view drew of an answer.
pub(super) fn record(
    c: &mut Canvas,
    place: impl Into<String>,
    column: impl ToString,
    show: &Show,
    drawn: bool,
    provenance: Arc<Provenance>,
) {
    c.view.drawn.push(DrawnAnswer {
        place: place.into(),
        column: column.to_string(),
        current: show.is_current(),
        drawn,
        label: show.label().map(str::to_string),
        provenance,
    });
}
