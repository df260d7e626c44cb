//! Figures in hand-written SVG, in the manner of the papers: line charts of a
//! quantity against relative depth (one coloured curve per model with its
//! interval band, the converging layer marked, a dashed baseline or chance
//! line, a legend) and heatmaps of a model × dataset table. Every figure
//! also gives its data as CSV, written beside it.

use std::fmt::Write;

/// One curve.
pub(crate) struct Line {
    /// Legend label.
    pub label: String,
    /// x values (relative depth, 0..1).
    pub x: Vec<f64>,
    /// y values.
    pub y: Vec<f64>,
    /// Standard deviation per point (drawn as a ±std band when any is > 0
    /// and no interval is given).
    pub y_std: Vec<f64>,
    /// An interval per point (e.g. the bootstrap 95% interval), drawn as the
    /// band instead of ±std.
    pub y_interval: Option<(Vec<f64>, Vec<f64>)>,
    /// Index of the point to mark (the converging layer).
    pub marker: Option<usize>,
}

impl Line {
    /// A curve without band or marker.
    pub fn plain(label: String, x: Vec<f64>, y: Vec<f64>) -> Line {
        let n = y.len();
        Line {
            label,
            x,
            y,
            y_std: vec![0.0; n],
            y_interval: None,
            marker: None,
        }
    }

    /// The band's (low, high) at point `i`: the interval if any, else ±std.
    fn band(&self, i: usize) -> (f64, f64) {
        let y = self.y[i];
        match &self.y_interval {
            Some((lo, hi)) => (lo[i], hi[i]),
            None => {
                let s = self.y_std.get(i).copied().unwrap_or(0.0);
                (y - s, y + s)
            }
        }
    }

    fn has_band(&self) -> bool {
        self.y_interval.is_some() || self.y_std.iter().any(|s| *s > 0.0)
    }
}

/// A chart to render.
pub(crate) struct Chart {
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
        for (i, &y) in l.y.iter().enumerate() {
            let (a, b) = l.band(i);
            if y.is_finite() && a.is_finite() && b.is_finite() {
                lo = lo.min(a.min(y));
                hi = hi.max(b.max(y));
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
        // The legend's width follows its longest label (within bounds).
        let longest = self
            .lines
            .iter()
            .map(|l| l.label.chars().count())
            .max()
            .unwrap_or(0)
            .max(16) as f64;
        let right = (48.0 + 6.2 * longest).min(330.0);
        let (w, h) = (530.0 + right, 440.0);
        let (left, top, bottom) = (64.0, 40.0, 52.0);
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
            // (x, y, band low, band high) of the finite points.
            let pts: Vec<(f64, f64, f64, f64)> = (0..line.y.len().min(line.x.len()))
                .filter(|&j| line.x[j].is_finite() && line.y[j].is_finite())
                .map(|j| {
                    let (a, b) = line.band(j);
                    (line.x[j], line.y[j], a, b)
                })
                .collect();
            if line.has_band() {
                let upper = pts
                    .iter()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.3.min(y1))));
                let lower = pts
                    .iter()
                    .rev()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.2.max(y0))));
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
            // The converging layer: a diamond on the curve and a tick on the axis.
            if let Some(m) = line
                .marker
                .filter(|&m| m < line.y.len() && m < line.x.len())
            {
                let (px, py) = (sx(line.x[m]), sy(line.y[m].clamp(y0, y1)));
                let _ = writeln!(
                    s,
                    r##"<path class="converging" d="M{:.1},{:.1} l6,6 l-6,6 l-6,-6 z" fill="{colour}" stroke="#222" stroke-width="1"><title>{}: converging layer {m}</title></path>"##,
                    px,
                    py - 6.0,
                    esc(&line.label)
                );
                let _ = writeln!(
                    s,
                    r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/>"#,
                    top + ph - 8.0,
                    top + ph
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
                r#"<text x="{}" y="{}" font-size="11">{}</text>"#,
                lx + 28.0,
                ly + 4.0,
                esc(&line.label)
            );
        }
        if self.lines.iter().any(|l| l.marker.is_some()) {
            let ly = top + 10.0 + self.lines.len() as f64 * 20.0 + 6.0;
            let lx = left + pw + 16.0;
            let _ = writeln!(
                s,
                r##"<path d="M{:.1},{:.1} l6,6 l-6,6 l-6,-6 z" fill="#999" stroke="#222"/><text x="{}" y="{}">converging layer</text>"##,
                lx + 11.0,
                ly - 6.0,
                lx + 28.0,
                ly + 4.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// The chart's data as CSV: one row per point of every curve.
    pub fn csv(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                String::new()
            }
        };
        let mut rows = vec![csv_row(&[
            "series",
            "x",
            "y",
            "band_low",
            "band_high",
            "converging",
        ])];
        for l in &self.lines {
            for i in 0..l.y.len().min(l.x.len()) {
                let (a, b) = if l.has_band() {
                    l.band(i)
                } else {
                    (f64::NAN, f64::NAN)
                };
                rows.push(csv_row(&[
                    &l.label,
                    &num(l.x[i]),
                    &num(l.y[i]),
                    &num(a),
                    &num(b),
                    if l.marker == Some(i) { "1" } else { "0" },
                ]));
            }
        }
        if let Some((r, label)) = &self.reference {
            rows.push(csv_row(&[label, "", &r.to_string(), "", "", "0"]));
        }
        rows.concat()
    }
}

/// One CSV record through the `csv` crate (quoting as RFC 4180 wants).
fn csv_row(fields: &[&str]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("fields are UTF-8")
}

/// A table as a heatmap: rows × columns of values in [0, 1], each cell
/// coloured and labelled with its value (blank where missing).
pub(crate) struct Heatmap {
    /// Title on top.
    pub title: String,
    /// What the colour means (legend caption).
    pub value_label: String,
    /// Row labels (models, smallest first).
    pub rows: Vec<String>,
    /// Column labels (datasets).
    pub columns: Vec<String>,
    /// `values[row][column]`.
    pub values: Vec<Vec<Option<f64>>>,
}

/// Sequential blue scale for v in [0, 1] (light = early/low, dark = late/high).
fn blue(v: f64) -> String {
    let t = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(239.0, 8.0),
        lerp(243.0, 48.0),
        lerp(255.0, 107.0)
    )
}

impl Heatmap {
    /// Render to an SVG document.
    pub fn render(&self) -> String {
        let cell_w = 96.0;
        let cell_h = 30.0;
        let left = 12.0
            + 7.0
                * self
                    .rows
                    .iter()
                    .map(|r| r.chars().count())
                    .max()
                    .unwrap_or(4) as f64;
        let top = 96.0;
        // Wide enough for the table, the title and the colour legend.
        let w = (left + cell_w * self.columns.len().max(1) as f64 + 24.0)
            .max(24.0 + 8.5 * self.title.chars().count() as f64)
            .max(left + 11.0 * 16.0 + 40.0 + 6.5 * self.value_label.chars().count() as f64);
        let h = top + cell_h * self.rows.len().max(1) as f64 + 56.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="12" y="24" font-size="15" font-weight="bold">{}</text>"#,
            esc(&self.title)
        );
        for (j, c) in self.columns.iter().enumerate() {
            let x = left + cell_w * (j as f64 + 0.5);
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="start" transform="rotate(-30 {x:.1} {:.1})">{}</text>"#,
                top - 8.0,
                top - 8.0,
                esc(c)
            );
        }
        for (i, r) in self.rows.iter().enumerate() {
            let y = top + cell_h * i as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + cell_h / 2.0 + 4.0,
                esc(r)
            );
            for (j, v) in self.values.get(i).into_iter().flatten().enumerate() {
                let x = left + cell_w * j as f64;
                let (fill, text, ink) = match v {
                    Some(v) if v.is_finite() => (
                        blue(*v),
                        format!("{v:.2}"),
                        if *v > 0.55 { "white" } else { "#111" },
                    ),
                    _ => ("#f4f4f4".to_string(), "–".to_string(), "#999"),
                };
                let _ = writeln!(
                    s,
                    r##"<rect class="cell" x="{x:.1}" y="{y:.1}" width="{cell_w}" height="{cell_h}" fill="{fill}" stroke="white"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{ink}">{text}</text>"##,
                    x + cell_w / 2.0,
                    y + cell_h / 2.0 + 4.0
                );
            }
        }
        // Colour legend.
        let ly = top + cell_h * self.rows.len().max(1) as f64 + 20.0;
        for k in 0..=10 {
            let v = k as f64 / 10.0;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{ly:.1}" width="16" height="12" fill="{}"/>"#,
                left + k as f64 * 16.0,
                blue(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">0 … 1: {}</text>"#,
            left + 11.0 * 16.0 + 8.0,
            ly + 10.0,
            esc(&self.value_label)
        );
        s.push_str("</svg>\n");
        s
    }

    /// The table as CSV (long form: row, column, value).
    pub fn csv(&self) -> String {
        let mut rows = vec![csv_row(&["model", "dataset", "value"])];
        for (i, r) in self.rows.iter().enumerate() {
            for (j, c) in self.columns.iter().enumerate() {
                let v = self
                    .values
                    .get(i)
                    .and_then(|row| row.get(j))
                    .copied()
                    .flatten()
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                rows.push(csv_row(&[r, c, &v]));
            }
        }
        rows.concat()
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
                    marker: Some(1),
                    ..Line::plain("A".into(), vec![0.0, 0.5, 1.0], vec![0.5, 0.8, 0.9])
                },
                Line {
                    y_std: vec![0.02, 0.01],
                    ..Line::plain("B & C".into(), vec![0.0, 1.0], vec![0.45, 0.95])
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
        assert_eq!(svg.matches("class=\"converging\"").count(), 1);
        assert!(svg.contains("converging layer 1"));
        let csv = chart.csv();
        assert_eq!(csv.lines().count(), 1 + 3 + 2 + 1, "{csv}");
        assert!(csv.contains("A,0.5,0.8,,,1"), "{csv}");
        assert!(csv.contains("B & C,0,0.45,0.43"), "{csv}");
        assert!(csv.ends_with("chance,,0.5,,,0\n"), "{csv}");
    }

    #[test]
    fn csv_fields_with_separators_or_quotes_are_quoted() {
        assert_eq!(
            csv_row(&["Qwen, 7B", "say \"hi\"", "", "1"]),
            "\"Qwen, 7B\",\"say \"\"hi\"\"\",,1\n"
        );
    }

    #[test]
    fn heatmap_colours_every_cell_and_blanks_missing_ones() {
        let map = Heatmap {
            title: "converging depth <paper rule>".into(),
            value_label: "layer / layers".into(),
            rows: vec!["small".into(), "large".into()],
            columns: vec!["cities".into(), "coinflip".into()],
            values: vec![vec![Some(0.25), None], vec![Some(0.5), Some(0.9)]],
        };
        let svg = map.render();
        assert_eq!(svg.matches("class=\"cell\"").count(), 4);
        assert!(svg.contains(">0.25<") && svg.contains(">0.90<") && svg.contains(">–<"));
        assert!(svg.contains("&lt;paper rule&gt;"));
        assert_eq!(
            map.csv(),
            "model,dataset,value\nsmall,cities,0.25\nsmall,coinflip,\nlarge,cities,0.5\nlarge,coinflip,0.9\n"
        );
    }
}
