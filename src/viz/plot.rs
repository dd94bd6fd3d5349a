//! Line plots (plotters, bitmap backend) written as PNG. The font is embedded so plots render the
//! same on any machine (DejaVu Sans, licence in assets/fonts/).

use std::io::Cursor;
use std::path::Path;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::Once;

use image::{ImageFormat, RgbImage};
use plotters::prelude::*;
#[cfg(not(target_arch = "wasm32"))]
use plotters::style::{register_font, FontStyle};

use crate::error::{DaceError, Result};
use crate::fsio;

#[cfg(not(target_arch = "wasm32"))]
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn ensure_font() {
    // plotters has no font registry on wasm32 (the browser demo draws no plots).
    #[cfg(not(target_arch = "wasm32"))]
    {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| {
            // Only fails on a malformed font, which the include above rules out.
            let _ = register_font("sans-serif", FontStyle::Normal, FONT);
        });
    }
}

/// One named line; `dashed` draws reference lines (baselines, upper bounds).
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

fn plot_err(e: impl std::fmt::Display) -> DaceError {
    DaceError::Invalid(format!("cannot draw plot: {e}"))
}

/// Draws `series` on one chart and writes it to `path` as PNG.
pub fn line_plot(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    ensure_font();
    let (w, h) = (900u32, 560u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points().filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Err(DaceError::Invalid(format!("nothing to plot in {}", path.display())));
    }
    let pad_x = ((x1 - x0) * 0.05).max(0.5);
    let pad_y = ((y1 - y0) * 0.08).max(1.0);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), (y0 - pad_y)..(y1 + pad_y))
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = ShapeStyle::from(color).stroke_width(2);
            let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            let drawn = if s.dashed {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 6, style))
            } else {
                chart.draw_series(LineSeries::new(pts.clone(), style))
            }
            .map_err(plot_err)?;
            drawn.label(s.name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            if !s.dashed {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err("buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).map_err(plot_err)?;
    fsio::write_atomic(path, &png)
}
