//! PNG copies of the report's figures, for papers and slides that take no
//! SVG: each figure rasterised at twice its layout size (192 dpi for the
//! figures' 96-dpi layout) on white, its labels set in DejaVu Sans, which is
//! built into the binary so that a figure looks the same on every machine,
//! with fonts installed or not (`assets/fonts/LICENSE`: Bitstream Vera
//! license, free to embed and redistribute).

use resvg::{tiny_skia, usvg};
use std::sync::{Arc, OnceLock};

/// The face every label is set in.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The font's family name, as the font file states it.
const FAMILY: &str = "DejaVu Sans";
/// Pixels per SVG unit.
const SCALE: f32 = 2.0;

/// A figure that could not be rasterised (a bug in the figure writer: the
/// SVG is ours).
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The SVG did not parse.
    #[error("figure {name}: not a valid SVG: {source}")]
    Parse {
        /// The figure's file name.
        name: String,
        /// The parser's complaint.
        source: usvg::Error,
    },
    /// The SVG's size gives no image.
    #[error("figure {name}: a {width} × {height} SVG gives no image")]
    Size {
        /// The figure's file name.
        name: String,
        /// SVG width.
        width: f32,
        /// SVG height.
        height: f32,
    },
    /// The PNG encoder failed.
    #[error("figure {name}: PNG encoding failed: {message}")]
    Encode {
        /// The figure's file name.
        name: String,
        /// The encoder's message.
        message: String,
    },
}

/// The font database: the built-in face, also standing for the generic
/// `sans-serif` the figures ask for last (after Helvetica and Arial).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family(FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// The figure `svg` (named `name` in errors) as PNG bytes.
pub fn render(name: &str, svg: &str) -> Result<Vec<u8>, PngError> {
    let options = usvg::Options {
        font_family: FAMILY.to_string(),
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|source| PngError::Parse {
        name: name.to_string(),
        source,
    })?;
    let size = tree.size();
    let no_image = || PngError::Size {
        name: name.to_string(),
        width: size.width(),
        height: size.height(),
    };
    let pixels = size.to_int_size().scale_by(SCALE).ok_or_else(no_image)?;
    let mut pixmap =
        tiny_skia::Pixmap::new(pixels.width(), pixels.height()).ok_or_else(no_image)?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(SCALE, SCALE),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| PngError::Encode {
        name: name.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels (any channel below 128) of a decoded PNG, and its size.
    fn dark_pixels(png: &[u8]) -> (usize, u32, u32) {
        let pixmap = tiny_skia::Pixmap::decode_png(png).expect("a PNG we wrote decodes");
        let dark = pixmap
            .pixels()
            .iter()
            .filter(|p| p.red() < 128 || p.green() < 128 || p.blue() < 128)
            .count();
        (dark, pixmap.width(), pixmap.height())
    }

    const FRAME: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100" font-family="Helvetica, Arial, sans-serif" font-size="12">"#;

    #[test]
    fn figures_render_at_twice_their_size_with_their_labels_drawn() {
        let line =
            r##"<polyline points="10,90 190,10" fill="none" stroke="#1f77b4" stroke-width="2"/>"##;
        let label = r#"<text x="20" y="30" font-size="15">Layer 12</text>"#;
        let plain = render("plain.svg", &format!("{FRAME}{line}</svg>")).unwrap();
        let labelled = render("labelled.svg", &format!("{FRAME}{line}{label}</svg>")).unwrap();
        assert_eq!(&plain[..8], b"\x89PNG\r\n\x1a\n");
        let (dark_plain, w, h) = dark_pixels(&plain);
        let (dark_labelled, ..) = dark_pixels(&labelled);
        assert_eq!((w, h), (400, 200));
        // The line is drawn; the label adds ink, so the built-in font was found
        // for a family list that names only fonts this machine may lack.
        assert!(dark_plain > 300, "{dark_plain} dark pixels for the line");
        assert!(
            dark_labelled > dark_plain + 150,
            "the label drew {} pixels",
            dark_labelled - dark_plain
        );
    }

    #[test]
    fn a_broken_figure_is_named_in_the_error() {
        let err = render("figures/broken.svg", "<svg").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("figure figures/broken.svg: not a valid SVG"),
            "{err}"
        );
    }
}
