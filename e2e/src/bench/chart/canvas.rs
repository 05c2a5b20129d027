//! An RGB pixel buffer with text: glyphs rasterised with ab_glyph from a TrueType font of the
//! system (Debian's fonts-dejavu-core), and PNG encoding.

use std::io::BufWriter;
use std::path::Path;

use ab_glyph::{Font, FontVec, PxScale, ScaleFont, point};

use crate::bench::error::BenchError;

/// Fonts tried in order.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Horizontal placement of a text relative to its x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Left,
    Center,
    Right,
}

pub type Rgb = (u8, u8, u8);

/// The first font of [`FONT_CANDIDATES`] that loads.
pub fn load_font() -> Result<FontVec, BenchError> {
    for path in FONT_CANDIDATES {
        if let Ok(bytes) = std::fs::read(path)
            && let Ok(font) = FontVec::try_from_vec(bytes)
        {
            return Ok(font);
        }
    }
    Err(BenchError::Chart(format!(
        "no TrueType font found (looked for {}; install Debian's fonts-dejavu-core)",
        FONT_CANDIDATES.join(", ")
    )))
}

/// A `width × height` RGB image.
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
    font: FontVec,
}

impl std::fmt::Debug for Canvas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Canvas({}x{})", self.width, self.height)
    }
}

impl Canvas {
    pub fn new(width: u32, height: u32, font: FontVec) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; (width * height * 3) as usize],
            font,
        }
    }

    /// Width in pixels of `text` at `size` px.
    pub fn text_width(&self, text: &str, size: f32) -> f32 {
        let f = self.font.as_scaled(PxScale::from(size));
        text.chars().map(|c| f.h_advance(f.glyph_id(c))).sum()
    }

    /// Draws `text` with its baseline at `y`.
    pub fn text(&mut self, x: i32, y: i32, text: &str, size: f32, color: Rgb, anchor: Anchor) {
        let width = self.text_width(text, size);
        let mut caret = match anchor {
            Anchor::Left => x as f32,
            Anchor::Center => x as f32 - width / 2.0,
            Anchor::Right => x as f32 - width,
        };
        let scale = PxScale::from(size);
        let advance: Vec<(ab_glyph::GlyphId, f32)> = {
            let f = self.font.as_scaled(scale);
            text.chars()
                .map(|c| {
                    let id = f.glyph_id(c);
                    (id, f.h_advance(id))
                })
                .collect()
        };
        for (id, adv) in advance {
            let glyph = id.with_scale_and_position(scale, point(caret, y as f32));
            caret += adv;
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let (w, h) = (self.width as i32, self.height as i32);
            let pixels = &mut self.pixels;
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i32 + gx as i32;
                let py = bounds.min.y as i32 + gy as i32;
                if px < 0 || py < 0 || px >= w || py >= h {
                    return;
                }
                let i = ((py * w + px) * 3) as usize;
                let a = coverage.clamp(0.0, 1.0);
                for (k, c) in [color.0, color.1, color.2].into_iter().enumerate() {
                    let old = f32::from(pixels[i + k]);
                    pixels[i + k] = (old * (1.0 - a) + f32::from(c) * a).round() as u8;
                }
            });
        }
    }

    /// Writes the image as an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), BenchError> {
        let file = std::fs::File::create(path)
            .map_err(BenchError::io(format!("creating {}", path.display())))?;
        let mut enc = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let chart_err = |e: png::EncodingError| BenchError::Chart(e.to_string());
        let mut writer = enc.write_header().map_err(chart_err)?;
        writer.write_image_data(&self.pixels).map_err(chart_err)?;
        writer.finish().map_err(chart_err)
    }
}
