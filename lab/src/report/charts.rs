//! The report's charts: grouped bar charts drawn by `plotters` into SVG
//! text that the page inlines (no script, no image files). One shape
//! serves every chart of the report: categories along x, one bar per
//! series in each, a linear or logarithmic y axis.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("Drawing the chart '{title}' failed.")]
    Draw {
        title: String,
        #[source]
        source: DrawingAreaErrorKind<std::io::Error>,
    },
}

/// One series: its legend and a value per category (`None`: no bar).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// A grouped bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    /// A logarithmic y axis (latencies that span decades).
    pub log: bool,
}

/// The x axis: one slot per category, labelled at its centre (plotters'
/// own key points would fall between categories).
struct Slots(usize);

impl Ranged for Slots {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.0.max(1) as f64 * span).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

/// The series' colours: distinct, and readable on white.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

impl BarChart {
    /// Whether the chart has at least one bar to draw.
    pub fn has_bars(&self) -> bool {
        self.values().next().is_some()
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .filter(|v| v.is_finite() && (!self.log || *v > 0.0))
    }

    /// The y range: from 0 (linear) or the decade below the smallest bar
    /// (log) to a little above the largest.
    fn y_range(&self) -> Range<f64> {
        let max = self.values().fold(f64::MIN, f64::max);
        if self.log {
            let min = self.values().fold(f64::MAX, f64::min);
            let lo = 10f64.powf(min.log10().floor());
            let hi = 10f64.powf(max.log10().ceil());
            lo..if hi > lo { hi } else { lo * 10.0 }
        } else if max > 0.0 {
            0.0..max * 1.15
        } else {
            0.0..1.0
        }
    }

    /// The chart as an `<svg>` element. Long category lists get wider
    /// charts and labels turned upright.
    pub fn to_svg(&self) -> Result<String, ChartError> {
        let n = self.categories.len();
        let slot_px = 22 * self.series.len().max(1) as u32;
        let width = (n as u32 * slot_px + 140).clamp(720, 1800);
        let upright = n > 12 || self.categories.iter().any(|c| c.len() > 14);
        let label_area = if upright {
            12 + 7 * self.categories.iter().map(String::len).max().unwrap_or(0) as u32
        } else {
            40
        };
        let height = 300 + label_area;
        let mut svg = String::new();
        self.draw(&mut svg, (width, height), label_area, upright)
            .map_err(|source| ChartError::Draw {
                title: self.title.clone(),
                source,
            })?;
        Ok(svg)
    }

    fn draw(
        &self,
        svg: &mut String,
        size: (u32, u32),
        label_area: u32,
        upright: bool,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        let root = SVGBackend::with_string(svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let n = self.categories.len();
        let y = self.y_range();
        let label_style = if upright {
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90)
                .into_text_style(&root)
        } else {
            ("sans-serif", 12).into_text_style(&root)
        };
        let categories = &self.categories;
        let fmt_x = |x: &f64| {
            let i = x.floor() as usize;
            categories.get(i).cloned().unwrap_or_default()
        };
        let groups = self.series.len().max(1) as f64;
        let bar = 0.8 / groups;
        macro_rules! draw_bars {
            ($chart:expr, $base:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(n)
                    .x_label_formatter(&fmt_x)
                    .x_label_style(label_style.clone())
                    .y_desc(self.y_label.as_str())
                    .y_label_formatter(&|v: &f64| short_number(*v))
                    .light_line_style(RGBColor(0xee, 0xee, 0xee))
                    .draw()?;
                for (s, series) in self.series.iter().enumerate() {
                    let colour = COLOURS[s % COLOURS.len()];
                    let bars = series
                        .values
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| {
                            let v = (*v)?;
                            (v.is_finite() && v > $base).then_some((i, v))
                        })
                        .map(move |(i, v)| {
                            let x0 = i as f64 + 0.1 + s as f64 * bar;
                            Rectangle::new([(x0, $base), (x0 + bar, v)], colour.filled())
                        });
                    chart
                        .draw_series(bars)?
                        .label(series.name.as_str())
                        .legend(move |(x, y)| {
                            Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                        });
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .border_style(RGBColor(0xaa, 0xaa, 0xaa))
                    .background_style(WHITE.mix(0.85))
                    .label_font(("sans-serif", 12))
                    .draw()?;
            }};
        }
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(label_area)
            .y_label_area_size(72);
        if self.log {
            let chart = builder.build_cartesian_2d(Slots(n), y.clone().log_scale())?;
            draw_bars!(chart, y.start);
        } else {
            let chart = builder.build_cartesian_2d(Slots(n), y.clone())?;
            draw_bars!(chart, 0.0);
        }
        root.present()?;
        Ok(())
    }
}

/// A tick label: 1500 as 1.5k, 2000000 as 2M, small numbers as they are.
fn short_number(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x.fract().abs() < 1e-9 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    };
    format!("{s}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log: bool, values: Vec<Option<f64>>) -> BarChart {
        BarChart {
            title: "t".into(),
            y_label: "y".into(),
            categories: (0..values.len()).map(|i| format!("c{i}")).collect(),
            series: vec![Series {
                name: "s".into(),
                values,
            }],
            log,
        }
    }

    #[test]
    fn bars_are_drawn_and_labelled() {
        let svg = chart(false, vec![Some(1.0), Some(3.0), None])
            .to_svg()
            .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for label in ["c0", "c1", "c2", ">s<"] {
            assert!(svg.contains(label), "{label}");
        }
        // Two bars and the legend's swatch, on top of the background.
        let filled = svg.matches("<rect").count();
        assert!(filled >= 4, "{filled}\n{svg}");
    }

    #[test]
    fn log_axes_span_whole_decades() {
        let c = chart(true, vec![Some(3000.0), Some(250_000.0), Some(0.0)]);
        assert_eq!(c.y_range(), 1000.0..1_000_000.0);
        c.to_svg().unwrap();
        let empty = chart(true, vec![None, Some(0.0)]);
        assert!(!empty.has_bars());
        assert_eq!(chart(false, vec![Some(10.0)]).y_range(), 0.0..11.5);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(2_000_000.0), "2M");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(40.0), "40");
    }
}
