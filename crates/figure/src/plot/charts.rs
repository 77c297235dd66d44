//! Charts that the app and the CLI both export, built once: the variance
//! fractions against t, and the pieces of every chart against t (points
//! coloured by t as the sweep view colours them, the main-t line).

use super::{Chart, Line, PointScale, Stacked, VLine};
use crate::analysis::VarianceFit;
use crate::render::Colormap;
use crate::style::{T_LINE, VARIANCE, t_rgb};

/// One timestep of one layer's variance analysis.
#[derive(Debug, Clone, Copy)]
pub struct VarianceRow<'a> {
    pub t: f64,
    pub fit: &'a VarianceFit,
}

/// The stacked fractions of variance (x0 features, ε features, residual)
/// of `layer` against t; the y axis is 0…1 when every fraction is in it.
pub fn variance_chart(layer: &str, rows: &[VarianceRow<'_>]) -> Chart {
    let col = |f: fn(&VarianceFit) -> f64| rows.iter().map(|r| f(r.fit)).collect::<Vec<_>>();
    let in_unit = rows.iter().all(|r| {
        [r.fit.frac_x0, r.fit.frac_eps, r.fit.frac_residual]
            .iter()
            .all(|v| (-1e-9..=1.0 + 1e-9).contains(v))
    });
    Chart {
        title: format!("Fraction of variance vs timestep, layer {layer}"),
        x_label: "t".into(),
        y_label: "fraction of variance".into(),
        stacked: Some(Stacked {
            xs: rows.iter().map(|r| r.t).collect(),
            layers: vec![
                ("x0 features".into(), col(|f| f.frac_x0), VARIANCE[0]),
                ("eps features".into(), col(|f| f.frac_eps), VARIANCE[1]),
                ("residual".into(), col(|f| f.frac_residual), VARIANCE[2]),
            ],
        }),
        y_range: in_unit.then_some((0.0, 1.0)),
        ..Chart::default()
    }
}

/// Gives `line`'s points the colour of their t (viridis 0 → 999).
pub fn colour_by_t(line: &mut Line) {
    line.points = true;
    line.point_colors = line.xs.iter().map(|t| t_rgb(*t)).collect();
}

/// The legend's scale for points coloured by t.
pub fn t_scale() -> PointScale {
    PointScale {
        label: "points: colour of t".into(),
        colormap: Colormap::Viridis,
        lo: 0.0,
        hi: 999.0,
    }
}

/// The dotted line at the main t.
pub fn main_t_line(label: impl Into<String>, t: f64) -> VLine {
    VLine {
        label: label.into(),
        x: t,
        color: T_LINE,
    }
}

impl Chart {
    /// Colours every line's points by t, shows the t scale in the legend
    /// and draws the main-t line, as the sweep view does.
    pub fn by_t(mut self, main_t_label: impl Into<String>, main_t: f64) -> Chart {
        for l in &mut self.lines {
            colour_by_t(l);
        }
        self.point_scale = Some(t_scale());
        self.vlines.push(main_t_line(main_t_label, main_t));
        self
    }
}
