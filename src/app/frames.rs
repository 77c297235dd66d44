//! `--frame-report N`: the app measures its own frames on the real renderer
//! (whatever eframe runs on: a GPU, lavapipe, glow) and prints a table:
//! N frames still, N frames while the query point is dragged across A (a
//! new answer and a new heatmap upload every frame), and up to N frames
//! while the worker extracts a long noisy ensemble. Then the window closes.
//!
//! Per frame it records the interval since the previous frame (the real
//! frame rate with continuous repaint: UI, painting and presenting) and
//! eframe's CPU time of the frame.

use std::time::{Duration, Instant};

use super::query::QueryPoint;
use super::{CleanDiftApp, SizeChoice};
use crate::features::extract::Mode;
use crate::worker::Side;

/// The measurement's state.
#[derive(Debug)]
pub struct FrameReport {
    frames: usize,
    phase: Phase,
    count: usize,
    last: Option<Instant>,
    started: Instant,
    rows: Vec<(String, Vec<f32>, Vec<f32>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Settling,
    Still,
    Drag,
    StartBusy,
    Busy,
    Done,
}

impl FrameReport {
    pub fn new(frames: usize) -> FrameReport {
        FrameReport {
            frames: frames.max(10),
            phase: Phase::Settling,
            count: 0,
            last: None,
            started: Instant::now(),
            rows: Vec::new(),
        }
    }

    fn record(&mut self, name: &str, interval: Option<Duration>, cpu: Option<f32>) {
        if self.rows.last().is_none_or(|r| r.0 != name) {
            self.rows.push((name.to_string(), Vec::new(), Vec::new()));
        }
        if let Some(r) = self.rows.last_mut() {
            if let Some(i) = interval {
                r.1.push(i.as_secs_f32() * 1e3);
            }
            if let Some(c) = cpu {
                r.2.push(c * 1e3);
            }
        }
    }

    /// The table (markdown).
    pub fn table(&self, renderer: &str) -> String {
        let q = |v: &[f32], p: f32| -> f32 {
            if v.is_empty() {
                return f32::NAN;
            }
            let mut s = v.to_vec();
            s.sort_by(f32::total_cmp);
            s[((s.len() - 1) as f32 * p).round() as usize]
        };
        let mut out = format!(
            "frame report ({renderer})\n| phase | frames | interval median ms | interval p95 ms | CPU median ms | CPU p95 ms |\n|---|---|---|---|---|---|\n"
        );
        for (name, iv, cpu) in &self.rows {
            out.push_str(&format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                iv.len(),
                q(iv, 0.5),
                q(iv, 0.95),
                q(cpu, 0.5),
                q(cpu, 0.95)
            ));
        }
        out
    }
}

impl CleanDiftApp {
    /// One frame of `--frame-report`; call at the end of `ui`.
    pub(super) fn frame_report_tick(&mut self, ctx: &egui::Context, frame: &eframe::Frame) {
        let Some(mut r) = self.frame_report.take() else {
            return;
        };
        ctx.request_repaint();
        let now = Instant::now();
        let interval = r.last.map(|l| now.duration_since(l));
        r.last = Some(now);
        let cpu = frame.info().cpu_usage;
        let settled = !self.busy()
            && self.image(Side::A).is_some()
            && self.image(Side::B).is_some()
            && self.features_current(self.settings.features.mode);
        match r.phase {
            Phase::Settling => {
                if settled {
                    if self.view.query.is_none()
                        && let Some(a) = self.image(Side::A)
                    {
                        let (w, h) = (a.image.width as f32, a.image.height as f32);
                        self.view.query = Some(QueryPoint {
                            side: Side::A,
                            x: w * 0.5,
                            y: h * 0.4,
                        });
                    }
                    r.phase = Phase::Still;
                    r.count = 0;
                } else if now.duration_since(r.started) > Duration::from_secs(600) {
                    println!("frame report: the features never came; nothing measured");
                    r.phase = Phase::Done;
                }
            }
            Phase::Still => {
                r.record("idle, still", interval, cpu);
                r.count += 1;
                if r.count >= r.frames {
                    r.phase = Phase::Drag;
                    r.count = 0;
                }
            }
            Phase::Drag => {
                r.record(
                    "idle, dragging the query (new heatmap every frame)",
                    interval,
                    cpu,
                );
                if let Some(a) = self.image(Side::A) {
                    let (w, h) = (a.image.width as f32, a.image.height as f32);
                    let t = r.count as f32 / r.frames as f32;
                    self.view.query = Some(QueryPoint {
                        side: Side::A,
                        x: w * (0.15 + 0.7 * t),
                        y: h * (0.3 + 0.3 * (t * 6.0).sin().abs()),
                    });
                }
                r.count += 1;
                if r.count >= r.frames {
                    r.phase = Phase::StartBusy;
                    r.count = 0;
                }
            }
            Phase::StartBusy => {
                self.settings.features.mode = Mode::Noisy;
                self.settings.features.ensemble = 16;
                self.settings.features.size = SizeChoice::Square(1024);
                r.phase = Phase::Busy;
            }
            Phase::Busy => {
                if self.busy() {
                    r.record(
                        "busy: worker extracting (noisy, ensemble 16, 1024 px)",
                        interval,
                        cpu,
                    );
                    r.count += 1;
                }
                if r.count >= r.frames || (r.count > 0 && !self.busy()) {
                    self.cancel_all();
                    r.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
        if r.phase == Phase::Done {
            println!("{}", r.table(&self.flags.renderer_note));
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        self.frame_report = Some(r);
    }
}
