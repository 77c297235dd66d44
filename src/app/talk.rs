//! Talk mode's scale of the whole UI, and the hover preview held back while
//! the pointer's position is from before a change of scale.
//!
//! Talk mode zooms everything (top bar, panels, status line, pictures'
//! labels): 1.4× on a screen up to 1920×1080 logical pixels, and in
//! proportion on a larger one (2.8× at 3840×2160 with no system scaling).
//! Ctrl+= and Ctrl+− (egui's zoom keys) change it by hand; leaving talk mode
//! restores the zoom from before.

use egui::Vec2;

use super::CleanDiftApp;

/// Talk mode's zoom on a screen of at most this size (logical pixels).
const TALK_ZOOM: f32 = 1.4;
const TALK_BASE: Vec2 = Vec2::new(1920.0, 1080.0);

/// Talk mode's zoom for a screen of `unzoomed` logical pixels (the size in
/// points at zoom 1).
pub fn talk_zoom(unzoomed: Vec2) -> f32 {
    let k = (unzoomed.x / TALK_BASE.x).min(unzoomed.y / TALK_BASE.y);
    TALK_ZOOM * k.clamp(1.0, 4.0)
}

/// Two sizes differ by more than rounding (a size in points times the zoom
/// is not exact).
fn differs(a: Vec2, b: Vec2) -> bool {
    (a - b).abs().max_elem() > 2.0
}

/// What talk mode's scale remembers.
#[derive(Debug, Default)]
pub struct UiScale {
    /// The zoom before talk mode began (restored when it ends).
    before_talk: Option<f32>,
    /// The screen (in points, and in points at zoom 1) the talk zoom was last
    /// chosen for: chosen again only when both change, i.e. when the window
    /// does, not when a zoom (ours, or Ctrl+=) changes the points.
    chosen_for: Option<(Vec2, Vec2)>,
    /// The zoom of the last frame.
    last_zoom: Option<f32>,
}

impl UiScale {
    /// Sets talk mode's zoom for the screen as it is now.
    fn choose(&mut self, ctx: &egui::Context) {
        let zoom = ctx.zoom_factor();
        let points = ctx.viewport_rect().size();
        let unzoomed = points * zoom;
        let known = ctx.cumulative_pass_nr() > 0
            && unzoomed.x.is_finite()
            && unzoomed.y.is_finite()
            && unzoomed.min_elem() > 0.0;
        // Before the first frame the size is not known yet: the base zoom,
        // chosen again once it is.
        self.chosen_for = known.then_some((points, unzoomed));
        let want = if known {
            talk_zoom(unzoomed)
        } else {
            TALK_ZOOM
        };
        if (want - zoom).abs() > 1e-3 {
            ctx.set_zoom_factor(want);
        }
    }
}

impl CleanDiftApp {
    /// Turns talk mode on or off: fullscreen, bigger markers and labels and
    /// a zoom of the whole UI ([`talk_zoom`]).
    pub fn set_talk(&mut self, on: bool) {
        if on == self.flags.talk {
            return;
        }
        self.flags.talk = on;
        self.ctx
            .send_viewport_cmd(egui::ViewportCommand::Fullscreen(on));
        let scale = &mut self.flags.scale;
        if on {
            scale.before_talk = Some(self.ctx.zoom_factor());
            scale.choose(&self.ctx);
        } else {
            self.ctx
                .set_zoom_factor(scale.before_talk.take().unwrap_or(1.0));
        }
        // The pointer's position is in the old scale until it moves.
        self.view.hover_held = true;
    }

    /// Once a frame, first: in talk mode, the zoom follows the screen's size;
    /// after any change of zoom the hover preview waits for the pointer to
    /// move (egui keeps its last position in points, which now name another
    /// place, and a click or PCA would take it for the query).
    pub(super) fn follow_ui_scale(&mut self, ctx: &egui::Context) {
        let zoom = ctx.zoom_factor();
        let points = ctx.viewport_rect().size();
        let unzoomed = points * zoom;
        let scale = &mut self.flags.scale;
        if self.flags.talk
            && scale
                .chosen_for
                .is_none_or(|(p, u)| differs(p, points) && differs(u, unzoomed))
        {
            scale.choose(ctx);
        }
        if scale.last_zoom.is_some_and(|z| (z - zoom).abs() > 1e-6) {
            self.view.hover_held = true;
        }
        scale.last_zoom = Some(zoom);
        if self.view.hover_held
            && ctx.input(|i| {
                i.events
                    .iter()
                    .any(|e| matches!(e, egui::Event::PointerMoved(_)))
            })
        {
            self.view.hover_held = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talk_zoom_grows_with_the_screen_beyond_full_hd() {
        assert_eq!(talk_zoom(Vec2::new(1280.0, 720.0)), TALK_ZOOM);
        assert_eq!(talk_zoom(Vec2::new(1920.0, 1080.0)), TALK_ZOOM);
        assert!((talk_zoom(Vec2::new(3840.0, 2160.0)) - 2.0 * TALK_ZOOM).abs() < 1e-6);
        // The tighter side decides: an ultra-wide screen of 1080 lines.
        assert_eq!(talk_zoom(Vec2::new(5120.0, 1080.0)), TALK_ZOOM);
    }
}
