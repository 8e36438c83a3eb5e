//! The report's charts: grouped bar charts drawn by `plotters` into SVG
//! text that the page inlines (no script, no image files). One shape
//! serves every chart of the report: categories along x, one bar per
//! series in each, a linear or logarithmic y axis.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    /// (log) to well above the largest, where the legend goes.
    fn y_range(&self) -> Range<f64> {
        let max = self.values().fold(f64::MIN, f64::max);
        if self.log {
            let min = self.values().fold(f64::MAX, f64::min);
            // Strictly below the smallest bar, so that one has a height.
            let lo = 10f64.powf(min.log10().ceil() - 1.0);
            // A decade above the tallest bar keeps the legend off the bars.
            let hi = 10f64.powf(max.log10().ceil() + 1.0);
            lo..hi
        } else if max > 0.0 {
            0.0..max * 1.4
        } else {
            0.0..1.0
        }
    }

    /// The chart as an `<svg>` element. Long category lists get wider
    /// charts and labels turned upright.
    pub fn to_svg(&self) -> Result<String, ChartError> {
        let n = self.categories.len();
        let bar_px = 22 * self.series.len().max(1) as u32;
        // Two charts of the narrowest kind fit side by side at 1280 px.
        let width = (n as u32 * bar_px + 140).clamp(600, 1800);
        // A label wider than its category's slot is turned upright (at
        // 15 px a character takes 6 to 8 px).
        let longest = self
            .categories
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0) as u32;
        let slot = f64::from(width - 100) / n.max(1) as f64;
        let upright = f64::from(longest * 8) > slot * 0.95;
        let label_area = if upright { 24 + 13 * longest / 2 } else { 40 };
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
        let label_style = ("sans-serif", 15).into_text_style(&root);
        let categories = &self.categories;
        // Upright labels are drawn below (plotters centres a turned label
        // on its tick, so half of it would hide behind the plot).
        let fmt_x = |x: &f64| {
            let i = x.floor() as usize;
            match upright {
                true => String::new(),
                false => categories.get(i).cloned().unwrap_or_default(),
            }
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
                    .y_label_style(("sans-serif", 14))
                    .axis_desc_style(("sans-serif", 15))
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
                if upright {
                    let style = ("sans-serif", 15)
                        .into_font()
                        .transform(FontTransform::Rotate90)
                        .into_text_style(&root)
                        .pos(Pos::new(HPos::Left, VPos::Center));
                    for (i, label) in categories.iter().enumerate() {
                        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, $base));
                        root.draw(&Text::new(label.as_str(), (x, y + 8), style.clone()))?;
                    }
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .border_style(RGBColor(0xaa, 0xaa, 0xaa))
                    .background_style(WHITE.mix(0.85))
                    .label_font(("sans-serif", 15))
                    .draw()?;
            }};
        }
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, ("sans-serif", 21))
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
    let s = if x.fract().abs() < 1e-9 || x.abs() >= 10.0 {
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
        // plotters writes each text on a line of its own.
        for label in ["c0", "c1", "c2", "s"] {
            assert!(svg.contains(&format!(">\n{label}\n</text>")), "{label}");
        }
        // Two bars and the legend's swatch, on top of the background.
        let filled = svg.matches("<rect").count();
        assert!(filled >= 4, "{filled}\n{svg}");
    }

    #[test]
    fn log_axes_span_whole_decades() {
        let c = chart(true, vec![Some(3000.0), Some(250_000.0), Some(0.0)]);
        assert_eq!(c.y_range(), 1000.0..10_000_000.0);
        let exact = chart(true, vec![Some(100.0), Some(2000.0)]);
        assert_eq!(exact.y_range(), 10.0..100_000.0);
        c.to_svg().unwrap();
        let empty = chart(true, vec![None, Some(0.0)]);
        assert!(!empty.has_bars());
        assert_eq!(chart(false, vec![Some(10.0)]).y_range(), 0.0..14.0);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(2_000_000.0), "2M");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(40.0), "40");
    }
}
