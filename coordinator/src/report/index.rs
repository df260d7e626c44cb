//! The report's front page, `index.html`: self-contained (inline style,
//! relative links), every interpolated string escaped.

use super::svg;
use std::fmt::Write;

/// `index.html` with a warning box under its header.
pub(super) fn with_warnings(html: &str, warnings: &[String]) -> String {
    let mut b = String::from(
        "<div class=\"warn\" style=\"background:#fff4e5;border:1px solid #f0b46a;padding:10px 16px;margin:14px 0\"><strong>Attention</strong><ul>",
    );
    for w in warnings {
        let _ = write!(b, "<li>{}</li>", svg::esc(w));
    }
    b.push_str("</ul></div>\n");
    html.replacen("<main>\n", &format!("<main>\n{b}"), 1)
}

/// A figure as the index shows it.
pub(super) struct Shown {
    pub(super) svg: String,
    pub(super) csv: String,
    /// The figure as PNG, when this build writes one.
    pub(super) png: Option<String>,
    pub(super) title: String,
    pub(super) section: String,
}

/// The report's front page: tables, then one section per dataset with its
/// figures side by side (small multiples over precision and noise), the
/// model × dataset heatmaps and the multiple-choice curves. Self-contained
/// (inline style, relative links), so it works from `file://` and from the
/// store alike.
pub(super) fn index_html(
    sweep: &str,
    cells: usize,
    others: usize,
    files: &[(String, String)],
    figures: &[Shown],
    unreadable: &[String],
) -> String {
    // Everything interpolated comes from metrics.json files, grid names and
    // model names: escaped, never markup.
    let esc = svg::esc;
    let sweep = esc(sweep);
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{sweep}: concept-depth report</title>\n\
<style>body{{font-family:Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}} header{{background:#1f3b57;color:white;padding:16px 28px}} \
header h1{{margin:0;font-size:22px}} main{{padding:8px 28px 40px}} nav a{{margin-right:14px}} section{{margin-top:26px}} h2{{border-bottom:1px solid #ddd;padding-bottom:4px}} \
.grid{{display:flex;flex-wrap:wrap;gap:14px}} figure{{margin:0;background:white;border:1px solid #e2e2e2;border-radius:6px;padding:8px}} \
figure img{{max-width:560px;display:block}} figcaption{{font-size:13px;margin-top:4px}} figcaption a{{margin-left:8px;font-size:12px}} ul.tables li{{margin:3px 0}}</style></head><body>\n\
<header><h1>concept-depth report: sweep {sweep}</h1><div>{cells} completed cells</div></header><main>\n"
    );
    let mut sections: Vec<&str> = Vec::new();
    for f in figures {
        if !sections.contains(&f.section.as_str()) {
            sections.push(&f.section);
        }
    }
    s.push_str("<nav><a href=\"#tables\">Tables</a>");
    for (i, sec) in sections.iter().enumerate() {
        let _ = write!(s, "<a href=\"#s{i}\">{}</a>", esc(sec));
    }
    s.push_str("</nav>\n<section id=\"tables\"><h2>Tables</h2><ul class=\"tables\">\n");
    for (name, _) in files
        .iter()
        .filter(|(n, _)| !n.starts_with("figures/") && n != "index.html")
    {
        let name = esc(name);
        let _ = writeln!(s, "<li><a href=\"{name}\">{name}</a></li>");
    }
    s.push_str("</ul>\n");
    if others > 0 {
        let _ = writeln!(s, "<p>{others} completed cells of this sweep are not in the grid last served; they are listed in <a href=\"other_cells.csv\">other_cells.csv</a> and left out of every table and figure.</p>");
    }
    if !unreadable.is_empty() {
        s.push_str("<h3>Unreadable results</h3><ul>\n");
        for u in unreadable {
            let _ = writeln!(s, "<li>{}</li>", esc(u));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</section>\n");
    for (i, sec) in sections.iter().enumerate() {
        let _ = writeln!(
            s,
            "<section id=\"s{i}\"><h2>{}</h2><div class=\"grid\">",
            esc(sec)
        );
        for f in figures.iter().filter(|f| f.section == *sec) {
            let (svg_name, csv_name, title) = (esc(&f.svg), esc(&f.csv), esc(&f.title));
            let png = f
                .png
                .as_deref()
                .map_or(String::new(), |p| format!("<a href=\"{}\">PNG</a>", esc(p)));
            let _ = writeln!(s, "<figure><a href=\"{svg_name}\"><img src=\"{svg_name}\" alt=\"{title}\"></a><figcaption>{title}<a href=\"{csv_name}\">data (CSV)</a>{png}</figcaption></figure>");
        }
        s.push_str("</div></section>\n");
    }
    s.push_str("</main></body></html>\n");
    s
}
