//! A small line chart in hand-written SVG: axes with ticks, grid lines, one
//! coloured curve per model (with an optional ±std band) and a legend, in the
//! manner of the papers' accuracy-against-depth figures.

use std::fmt::Write;

/// One curve.
pub struct Line {
    /// Legend label.
    pub label: String,
    /// x values (relative depth, 0..1).
    pub x: Vec<f64>,
    /// y values.
    pub y: Vec<f64>,
    /// Standard deviation per point (drawn as a band when any is > 0).
    pub y_std: Vec<f64>,
}

/// A chart to render.
pub struct Chart {
    /// Title on top.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Curves, in legend order.
    pub lines: Vec<Line>,
    /// A dashed horizontal reference (e.g. chance level) with its label.
    pub reference: Option<(f64, String)>,
}

/// Colour-blind-friendly palette (Okabe–Ito, then Tableau for more curves).
const PALETTE: &[&str] = &[
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
    "#8c564b", "#7f7f7f", "#bcbd22", "#17becf",
];

/// `s` as HTML/SVG text or attribute value: markup characters escaped.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The y range shown: data range widened to 0.1 steps, within [0, 1] for
/// fractions.
fn y_range(chart: &Chart) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for l in &chart.lines {
        for (i, y) in l.y.iter().enumerate() {
            let s = l.y_std.get(i).copied().unwrap_or(0.0);
            if y.is_finite() {
                lo = lo.min(y - s);
                hi = hi.max(y + s);
            }
        }
    }
    if let Some((r, _)) = chart.reference {
        lo = lo.min(r);
        hi = hi.max(r);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let lo = ((lo * 10.0).floor() / 10.0).max(0.0);
    let mut hi = ((hi * 10.0).ceil() / 10.0).min(1.0);
    if hi <= lo {
        hi = (lo + 0.1).min(1.0);
    }
    (lo.min(hi - 0.1), hi)
}

impl Chart {
    /// Render to an SVG document.
    pub fn render(&self) -> String {
        let (w, h) = (720.0, 440.0);
        let (left, right, top, bottom) = (64.0, 190.0, 40.0, 52.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let (y0, y1) = y_range(self);
        let sx = |x: f64| left + x.clamp(0.0, 1.0) * pw;
        let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            left + pw / 2.0,
            esc(&self.title)
        );
        // Grid and ticks.
        for i in 0..=5 {
            let x = i as f64 / 5.0;
            let px = sx(x);
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##,
                top + ph
            );
            let _ = writeln!(
                s,
                r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{x:.1}</text>"#,
                top + ph + 18.0
            );
        }
        let steps = ((y1 - y0) / 0.1).round().max(1.0) as usize;
        let stride = if steps > 6 { 2 } else { 1 };
        for i in (0..=steps).step_by(stride) {
            let y = y0 + i as f64 * 0.1;
            let py = sy(y);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/>"##,
                left + pw
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{y:.1}</text>"#,
                left - 8.0,
                py + 4.0
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 12.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            top + ph / 2.0,
            top + ph / 2.0,
            esc(&self.y_label)
        );
        if let Some((r, label)) = &self.reference {
            let py = sy(*r);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#777" stroke-dasharray="5 4"/>"##,
                left + pw
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
                left + 6.0,
                py - 5.0,
                esc(label)
            );
        }
        for (i, line) in self.lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64, f64)> = line
                .x
                .iter()
                .zip(&line.y)
                .enumerate()
                .filter(|(_, (x, y))| x.is_finite() && y.is_finite())
                .map(|(j, (x, y))| (*x, *y, line.y_std.get(j).copied().unwrap_or(0.0)))
                .collect();
            if pts.iter().any(|p| p.2 > 0.0) {
                let upper = pts
                    .iter()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy((p.1 + p.2).min(y1))));
                let lower = pts
                    .iter()
                    .rev()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy((p.1 - p.2).max(y0))));
                let poly: Vec<String> = upper.chain(lower).collect();
                let _ = writeln!(
                    s,
                    r#"<polygon points="{}" fill="{colour}" fill-opacity="0.15" stroke="none"/>"#,
                    poly.join(" ")
                );
            }
            let path: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for p in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{colour}"/>"#,
                    sx(p.0),
                    sy(p.1)
                );
            }
            let ly = top + 10.0 + i as f64 * 20.0;
            let lx = left + pw + 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/>"#,
                lx + 22.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                lx + 28.0,
                ly + 4.0,
                esc(&line.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_axes_curves_and_legend() {
        let chart = Chart {
            title: "cities <32>".into(),
            x_label: "relative depth".into(),
            y_label: "accuracy".into(),
            lines: vec![
                Line {
                    label: "A".into(),
                    x: vec![0.0, 0.5, 1.0],
                    y: vec![0.5, 0.8, 0.9],
                    y_std: vec![0.0; 3],
                },
                Line {
                    label: "B & C".into(),
                    x: vec![0.0, 1.0],
                    y: vec![0.45, 0.95],
                    y_std: vec![0.02, 0.01],
                },
            ],
            reference: Some((0.5, "chance".into())),
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<polygon").count(), 1, "only B has a std band");
        assert!(svg.contains("B &amp; C") && svg.contains("cities &lt;32&gt;"));
        // y axis spans the data rounded to tenths: 0.4 .. 1.0.
        assert!(svg.contains(">0.4</text>") && svg.contains(">1.0</text>"));
    }
}
