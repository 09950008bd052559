//! Charts of sweeps and audits, drawn with `plotters` into SVG or PNG (chosen by the file's
//! extension): SNR against bits per value with the Shannon bound, the gap to the bound per
//! codec, and per-layer, per-head heatmaps of an audit statistic.
//!
//! Each chart is a value implementing [`Chart`], drawn by one generic function for both
//! backends, so the SVG and the PNG of a chart cannot disagree.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use kv_codec::{CodecSpec, CompatLattice};

use crate::audit::{AuditReport, HeadAudit, Kind};
use crate::error::{Error, Result};
use crate::metrics::db_per_bit;
use crate::rd::RdResult;

/// The font PNG text is drawn with (see `assets/README.md`: a DejaVu Sans subset under the
/// Bitstream Vera license). SVG output names `sans-serif` and leaves the font to the viewer.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

/// The family name charts ask for.
const FAMILY: &str = "sans-serif";

/// Registers [`FONT`] once per process for plotters' text layout.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are compiled in and checked by a test, so a failure here is a build
        // problem, not a run-time one; the charts then fall back to no text.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// A chart that can draw itself on any plotters backend.
pub trait Chart {
    /// Pixel size (width, height).
    fn size(&self) -> (u32, u32);

    /// Draws on `area`.
    ///
    /// # Errors
    /// The backend's drawing errors.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Writes `chart` to `path`: SVG for `.svg`, PNG for anything else.
///
/// # Errors
/// [`Error::Chart`] if drawing or writing fails.
pub fn save(chart: &impl Chart, path: &Path) -> Result<()> {
    register_font();
    let fail = |message: String| Error::Chart {
        path: path.to_owned(),
        message,
    };
    if path.extension().is_some_and(|e| e == "svg") {
        let area = SVGBackend::new(path, chart.size()).into_drawing_area();
        chart.draw(&area).map_err(|e| fail(e.to_string()))?;
        area.present().map_err(|e| fail(e.to_string()))
    } else {
        let area = BitMapBackend::new(path, chart.size()).into_drawing_area();
        chart.draw(&area).map_err(|e| fail(e.to_string()))?;
        area.present().map_err(|e| fail(e.to_string()))
    }
}

/// The codec family of a spec string (`voronoi-e8-q16-s4` → `voronoi-e8`), so that one
/// scheme's rates form one line of the chart. A string that is not a spec is its own family.
pub fn family(codec: &str) -> String {
    let Ok(spec) = codec.parse::<CodecSpec>() else {
        return codec.to_owned();
    };
    let group = |g: u32| {
        if g == 0 {
            String::new()
        } else {
            format!("-g{g}")
        }
    };
    match spec {
        CodecSpec::Compat { lattice, joint, .. } => format!(
            "compat-{}{}",
            match lattice {
                CompatLattice::D4 => "d4",
                CompatLattice::E8 => "e8",
            },
            if joint { "-joint" } else { "" }
        ),
        CodecSpec::Voronoi { .. } => DEFAULT_FAMILY.to_owned(),
        CodecSpec::Fp8E4m3 { group: g } => format!("fp8-e4m3{}", group(g)),
        CodecSpec::Int { group: g, .. } => format!("int{}", group(g)),
        CodecSpec::LlamaCpp { .. } => "llama.cpp q_0".to_owned(),
        CodecSpec::TurboQuant { .. } => "turboquant".to_owned(),
        CodecSpec::Strawman { .. } => "strawman".to_owned(),
        other => other.to_string(),
    }
}

/// The family of the default codec.
const DEFAULT_FAMILY: &str = "voronoi-e8";

/// Mean SNR of K and V in dB (the chart's y value for a codec).
pub fn mean_snr_db(r: &RdResult) -> f64 {
    (r.snr_db_k + r.snr_db_v) / 2.0
}

/// A qualitative palette (Okabe–Ito, readable with colour-vision deficiencies), then greys.
fn palette(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    P.get(i).copied().unwrap_or(RGBColor(128, 128, 128))
}

/// SNR against bits per value, one line per codec family, with the Shannon bound.
#[derive(Clone, Debug)]
pub struct RdChart<'a> {
    /// Title.
    pub title: String,
    /// The sweep's results.
    pub results: &'a [RdResult],
}

impl Chart for RdChart<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let finite: Vec<&RdResult> = self
            .results
            .iter()
            .filter(|r| mean_snr_db(r).is_finite())
            .collect();
        let x_max = finite
            .iter()
            .map(|r| r.bits_per_value)
            .fold(1.0, f64::max)
            .ceil()
            + 0.5;
        let y_max = finite
            .iter()
            .map(|r| mean_snr_db(r))
            .fold(10.0, f64::max)
            .max(db_per_bit() * x_max.min(10.0))
            .min(db_per_bit() * x_max)
            + 5.0;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FAMILY, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("bits per value (everything stored)")
            .y_desc("SNR dB (mean of K and V)")
            .label_style((FAMILY, 14))
            .draw()?;
        let bound = [(0.0, 0.0), (x_max, db_per_bit() * x_max)];
        chart
            .draw_series(LineSeries::new(bound, BLACK.stroke_width(2)))?
            .label("Shannon bound, Gaussian source: 6.02 dB per bit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));

        let mut families: Vec<String> = Vec::new();
        for r in &finite {
            let f = family(&r.codec);
            if !families.contains(&f) {
                families.push(f);
            }
        }
        // The default family first, so it gets the first (strongest) colour.
        families.sort_by_key(|f| f != DEFAULT_FAMILY);
        for (i, f) in families.iter().enumerate() {
            let color = palette(i);
            let mut points: Vec<(f64, f64)> = finite
                .iter()
                .filter(|r| &family(&r.codec) == f)
                .map(|r| (r.bits_per_value, mean_snr_db(r)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(f.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
        Ok(())
    }
}

/// Horizontal bars: each codec's gap to the Shannon bound (dB), smallest first.
#[derive(Clone, Debug)]
pub struct GapChart<'a> {
    /// Title.
    pub title: String,
    /// The sweep's results.
    pub results: &'a [RdResult],
}

impl Chart for GapChart<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = u32::try_from(self.results.len()).unwrap_or(u32::MAX);
        (900, 120 + 24 * rows.min(200))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let mut rows: Vec<(&str, f64, f64)> = self
            .results
            .iter()
            .filter(|r| r.shannon_gap_db.is_finite())
            .map(|r| (r.codec.as_str(), r.shannon_gap_db, r.bits_per_value))
            .collect();
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        let x_max = rows.iter().map(|r| r.1).fold(1.0, f64::max) * 1.1;
        let n = rows.len();
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FAMILY, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(230)
            .build_cartesian_2d(0.0..x_max, 0.0..n as f64)?;
        let label = |y: &f64| {
            let i = y.floor() as usize;
            rows.get(n.wrapping_sub(i + 1))
                .map(|r| format!("{} ({:.2} b/v)", r.0, r.2))
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n * 2 + 1)
            .y_label_formatter(&|y| {
                if (y.fract() - 0.5).abs() < 1e-9 {
                    label(y)
                } else {
                    String::new()
                }
            })
            .x_desc("gap to the Shannon bound, dB (mean of K and V; smaller is better)")
            .label_style((FAMILY, 13))
            .draw()?;
        chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let y = (n - 1 - i) as f64;
            Rectangle::new([(0.0, y + 0.15), (r.1, y + 0.85)], palette(0).filled())
        }))?;
        Ok(())
    }
}

/// An audit statistic to map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeatStat {
    /// W₁ z-score after rotation.
    W1Z,
    /// Channel anisotropy before rotation (log10 scale).
    Anisotropy,
    /// Channel anisotropy after rotation (log10 scale).
    AnisotropyRotated,
    /// Largest per-channel excess kurtosis before rotation.
    KurtosisMax,
    /// Outlier fraction before rotation, in percent.
    OutlierPercent,
}

impl HeatStat {
    /// All of them.
    pub const ALL: [HeatStat; 5] = [
        Self::W1Z,
        Self::Anisotropy,
        Self::AnisotropyRotated,
        Self::KurtosisMax,
        Self::OutlierPercent,
    ];

    /// File stem and title.
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            Self::W1Z => (
                "audit-w1z",
                "distance to the Gaussian after rotation (W1 z-score vs Gaussian samples)",
            ),
            Self::Anisotropy => (
                "audit-anisotropy",
                "channel anisotropy before rotation, log10(max/min variance)",
            ),
            Self::AnisotropyRotated => (
                "audit-anisotropy-rotated",
                "channel anisotropy after rotation, log10(max/min variance)",
            ),
            Self::KurtosisMax => (
                "audit-kurtosis",
                "largest per-channel excess kurtosis before rotation",
            ),
            Self::OutlierPercent => (
                "audit-outliers",
                "values beyond 4 sigma before rotation, percent",
            ),
        }
    }

    /// The mapped value of a head.
    pub fn value(self, h: &HeadAudit) -> f64 {
        match self {
            Self::W1Z => h.w1_z,
            Self::Anisotropy => h.stats.anisotropy.log10(),
            Self::AnisotropyRotated => h.stats.anisotropy_rotated.log10(),
            Self::KurtosisMax => h.stats.kurtosis_max,
            Self::OutlierPercent => 100.0 * h.stats.outlier_fraction,
        }
    }
}

/// A colour from a viridis-like ramp, `t` in [0, 1].
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Layers across, K heads then V heads down; one cell per head, coloured by a statistic.
#[derive(Clone, Debug)]
pub struct Heatmap<'a> {
    /// The audit.
    pub audit: &'a AuditReport,
    /// What to map.
    pub stat: HeatStat,
}

impl Heatmap<'_> {
    /// Row labels and the heads of each row, per layer.
    fn rows(&self) -> Vec<(String, Kind, usize)> {
        let mut rows = Vec::new();
        for kind in [Kind::K, Kind::V] {
            let heads = self
                .audit
                .heads
                .iter()
                .filter(|h| h.kind == kind)
                .map(|h| h.head + 1)
                .max()
                .unwrap_or(0);
            for h in 0..heads {
                rows.push((format!("{} head {h}", kind.name()), kind, h));
            }
        }
        rows
    }
}

impl Chart for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = u32::try_from(self.rows().len())
            .unwrap_or(u32::MAX)
            .min(200);
        (1000, 170 + 34 * rows)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let (main, bar) = area.split_horizontally(880);
        let layers = self.audit.layers();
        let rows = self.rows();
        let values: Vec<f64> = self
            .audit
            .heads
            .iter()
            .map(|h| self.stat.value(h))
            .filter(|v| v.is_finite())
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (nx, ny) = (layers.len(), rows.len());
        let mut chart = ChartBuilder::on(&main)
            .caption(self.stat.name().1, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)?;
        let layer_label = |x: &f64| {
            let i = x.floor() as usize;
            if (x.fract() - 0.5).abs() < 1e-9 {
                layers.get(i).map(|l| (*l).to_owned()).unwrap_or_default()
            } else {
                String::new()
            }
        };
        let row_label = |y: &f64| {
            let i = y.floor() as usize;
            if (y.fract() - 0.5).abs() < 1e-9 {
                rows.get(ny.wrapping_sub(i + 1))
                    .map(|r| r.0.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * nx + 1)
            .y_labels(2 * ny + 1)
            .x_label_formatter(&layer_label)
            .y_label_formatter(&row_label)
            .x_desc("layer")
            .label_style((FAMILY, 12))
            .draw()?;
        let mut cells = Vec::new();
        for (xi, layer) in layers.iter().enumerate() {
            for (yi, (_, kind, head)) in rows.iter().enumerate() {
                let Some(h) = self.audit.heads_of(layer, *kind).find(|h| h.head == *head) else {
                    continue;
                };
                let v = self.stat.value(h);
                let color = if v.is_finite() {
                    ramp((v - lo) / span)
                } else {
                    RGBColor(200, 200, 200)
                };
                let y = (ny - 1 - yi) as f64;
                cells.push(Rectangle::new(
                    [(xi as f64, y), (xi as f64 + 1.0, y + 1.0)],
                    color.filled(),
                ));
            }
        }
        chart.draw_series(cells)?;

        // Colour bar: the ramp from the smallest (bottom) to the largest (top) value.
        let h = bar.dim_in_pixel().1;
        let (top, bottom) = (40i32, i32::try_from(h).unwrap_or(i32::MAX) - 50);
        let steps = 64;
        for s in 0..steps {
            let t = f64::from(s) / f64::from(steps - 1);
            let y0 =
                bottom - (f64::from(bottom - top) * f64::from(s + 1) / f64::from(steps)) as i32;
            let y1 = bottom - (f64::from(bottom - top) * f64::from(s) / f64::from(steps)) as i32;
            bar.draw(&Rectangle::new([(10, y0), (40, y1)], ramp(t).filled()))?;
        }
        let style = (FAMILY, 13).into_font();
        bar.draw(&Text::new(format!("{hi:.3}"), (44, top), style.clone()))?;
        bar.draw(&Text::new(format!("{lo:.3}"), (44, bottom - 12), style))?;
        Ok(())
    }
}
