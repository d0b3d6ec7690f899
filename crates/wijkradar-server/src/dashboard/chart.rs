//! The frame of the dashboard's line charts: an SVG with its label, three
//! grid lines with their values, and period labels along the bottom; where
//! a period and a value go.

use std::fmt::Write as _;

use super::format::{decimal, esc, short_period};

const W: f64 = 560.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
pub(super) const TOP: f64 = 10.0;

/// A chart `height` high with `n` periods and values up to `max`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub(super) height: f64,
    n: usize,
    /// The value at the top edge: 15% above the largest.
    top: f64,
}

impl Frame {
    pub(super) fn new(height: f64, n: usize, max: f64) -> Frame {
        Frame {
            height,
            n: n.max(1),
            top: max.max(1.0) * 1.15,
        }
    }

    /// The middle of period `i`.
    pub(super) fn x(&self, i: usize) -> f64 {
        LEFT + self.slot() * (i as f64 + 0.5)
    }

    /// The width of one period.
    pub(super) fn slot(&self) -> f64 {
        (W - LEFT - 8.0) / self.n as f64
    }

    pub(super) fn y(&self, v: f64) -> f64 {
        TOP + (self.height - TOP - BOTTOM) * (1.0 - v / self.top)
    }

    /// The bottom of the plotting area.
    pub(super) fn floor(&self) -> f64 {
        self.height - BOTTOM
    }

    /// The opening `<svg>` with `label`, the grid with its values, and at
    /// most eight of the `periods` (API labels) along the bottom. The
    /// caller draws its lines and closes with `</svg>`.
    pub(super) fn open<'a>(&self, label: &str, periods: impl Iterator<Item = &'a str>) -> String {
        let h = self.height;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" class="trend" role="img" aria-label="{}">"#,
            esc(label)
        );
        for step in 0..=3 {
            let v = self.top / 1.15 * f64::from(step) / 3.0;
            let _ = write!(
                s,
                r#"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="raster"/><text x="{}" y="{:.1}" class="as">{}</text>"#,
                W - 8.0,
                LEFT - 4.0,
                self.y(v) + 4.0,
                decimal(v),
                y = self.y(v),
            );
        }
        let every = self.n.div_ceil(8);
        for (i, p) in periods.enumerate() {
            if i % every == 0 {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{}" class="as midden">{}</text>"#,
                    self.x(i),
                    h - 8.0,
                    esc(&short_period(p))
                );
            }
        }
        s
    }
}
