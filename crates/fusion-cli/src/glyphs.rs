//! Text on PNG charts set glyph by glyph with each glyph's own bounds. plotters' bitmap text
//! drops each glyph's left side bearing (its outline is drawn from the pen, not from the
//! pen plus the bearing), so narrow or overhanging glyphs land in the wrong place (users saw
//! "T-shirt" as "Tshirt", "San dal", "Ank le boot"). This backend passes every drawing call
//! to the bitmap backend and sets text itself: the pen advances by the font's advance and
//! kerning, each outline is placed at the pen plus its bearing, on the baseline.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::prelude::*;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
    text_anchor::{HPos, VPos},
};

/// A drawing backend whose text is set with correct glyph placement.
pub struct SetText<'f, B> {
    inner: B,
    font: FontRef<'f>,
}

impl<'f, B> SetText<'f, B> {
    /// Draws through `inner`; text in `font` (TrueType bytes).
    pub fn new(inner: B, font: &'f [u8]) -> Result<Self, ab_glyph::InvalidFont> {
        Ok(Self {
            inner,
            font: FontRef::try_from_slice(font)?,
        })
    }
}

/// One glyph's coverage `(x, y, coverage)` relative to the text's top-left, and the text's
/// width and height, for `text` at `size` pixels (plotters' size: an em of size / 1.24).
pub fn rasterize(font: &FontRef<'_>, text: &str, size: f64) -> (Vec<(i32, i32, f32)>, i32, i32) {
    let scaled = font.as_scaled(PxScale::from(size as f32));
    let ascent = scaled.ascent();
    let mut pen = 0f32;
    let mut previous = None;
    let mut pixels = Vec::new();
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(previous) = previous {
            pen += scaled.kern(previous, id);
        }
        previous = Some(id);
        let glyph = id.with_scale_and_position(scaled.scale(), point(pen, ascent));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                pixels.push((bounds.min.x as i32 + x as i32, bounds.min.y as i32 + y as i32, coverage));
            });
        }
        pen += scaled.h_advance(id);
    }
    (pixels, pen.ceil() as i32, (ascent - scaled.descent()).ceil() as i32)
}

impl<B: DrawingBackend> DrawingBackend for SetText<'_, B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, (iw, ih), src)
    }
    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (_, width, height) = rasterize(&self.font, text, style.size());
        Ok((width.max(0) as u32, height.max(0) as u32))
    }
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (pixels, width, height) = rasterize(&self.font, text, style.size());
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        for (x, y, coverage) in pixels {
            let (x, y) = transform.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 && coverage > 0.0 {
                let shade = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                self.inner.draw_pixel((x, y), shade)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn font() -> FontRef<'static> {
        FontRef::try_from_slice(crate::plots::FONT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Ink of a glyph starts at the pen plus its left side bearing (plotters drew it at the
    /// pen), and every glyph sits on one baseline.
    #[test]
    fn glyphs_keep_their_side_bearing_and_baseline() {
        let font = font();
        let scaled = font.as_scaled(PxScale::from(80.0));
        let inked = |text: &str| -> Vec<(i32, i32)> {
            rasterize(&font, text, 80.0)
                .0
                .into_iter()
                .filter(|p| p.2 > 0.5)
                .map(|p| (p.0, p.1))
                .collect()
        };
        let hyphen = font.glyph_id('-');
        let bearing = scaled.h_side_bearing(hyphen);
        assert!(bearing >= 3.0, "DejaVu's hyphen has a bearing: {bearing}");
        let left = inked("-").iter().map(|p| p.0).min().unwrap_or(0);
        assert!((left as f32 - bearing).abs() <= 1.0, "ink at {left}, bearing {bearing}");
        // After a T, the hyphen's ink begins a bearing past the T's advance.
        let t = scaled.h_advance(font.glyph_id('T')) + scaled.kern(font.glyph_id('T'), hyphen);
        let after_t = inked("T-");
        let hyphen_left = after_t
            .iter()
            .filter(|p| p.1 > inked("T").iter().map(|q| q.1).min().unwrap_or(0) + 24)
            .filter(|p| p.0 as f32 > t - 1.0)
            .map(|p| p.0)
            .min()
            .unwrap_or(0);
        assert!(
            (hyphen_left as f32 - (t + bearing)).abs() <= 1.5,
            "{hyphen_left} vs {}",
            t + bearing
        );
        let bottom = |text: &str| inked(text).iter().map(|p| p.1).max().unwrap_or(0);
        assert!(
            (bottom("x") - bottom("X")).abs() <= 1,
            "{} vs {}",
            bottom("x"),
            bottom("X")
        );
        let (_, width, _) = rasterize(&font, "Sandal", 80.0);
        let advances: f32 = "Sandal".chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum();
        assert!((width as f32 - advances).abs() <= 2.0, "{width} vs {advances}");
    }
}
