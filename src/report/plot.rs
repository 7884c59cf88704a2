//! The report's charts as inline SVG strings (plotters' SVG backend). Text is
//! emitted as SVG `<text>` with a generic `sans-serif` family, so nothing here
//! needs a font file or a C library; the browser lays the text out. Only
//! drawing lives here: what to plot is decided by `html.rs` from `Results`.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

/// Colour-blind-friendly enough, and distinct in print.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];
const GREY: RGBColor = RGBColor(128, 128, 128);

/// One line of a chart over the categorical ε axis.
pub struct Series {
    pub name: String,
    /// (index into the ε labels, value).
    pub points: Vec<(usize, f64)>,
    /// Drawn in grey: a baseline (random noise) rather than an attack.
    pub baseline: bool,
    /// Drawn dashed with hollow square markers, in the colour of the series
    /// before it: the companion of that series (e.g. its quantised figures).
    pub dashed: bool,
}

/// A horizontal reference line (e.g. clean accuracy).
pub struct Reference {
    pub name: String,
    pub value: f64,
}

pub struct LineChart<'a> {
    pub caption: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// ε as the user wrote them, in increasing order; the axis is categorical.
    pub x_labels: &'a [String],
    pub series: &'a [Series],
    pub reference: Option<Reference>,
    pub y_range: (f64, f64),
    /// Format y ticks as percentages.
    pub percent: bool,
    /// Legend in the upper-left corner (out of the way of rising curves) instead of the lower-left.
    pub legend_top: bool,
}

const SIZE: (u32, u32) = (640, 360);

/// Renders a line chart; a drawing error (which writing into a String does
/// not produce in practice) leaves an empty string rather than a broken page.
pub fn line_chart(c: &LineChart) -> String {
    let mut svg = String::new();
    let ok = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_lines(&root, c).is_ok()
    };
    if ok { svg } else { String::new() }
}

fn draw_lines(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    c: &LineChart,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let k = c.x_labels.len().max(1) as u32;
    let mut chart = ChartBuilder::on(root)
        .caption(c.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((0u32..k).into_segmented(), c.y_range.0..c.y_range.1)?;
    let labels = c.x_labels;
    let percent = c.percent;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(k as usize + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| if percent { format!("{:.0}%", 100.0 * v) } else { format!("{v:.2}") })
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    if let Some(r) = &c.reference {
        let style = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(LineSeries::new([(SegmentValue::Exact(0), r.value), (SegmentValue::Last, r.value)], style))?
            .label(r.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    let mut colour = 0;
    let mut last = PALETTE[0];
    for s in c.series {
        let col = if s.baseline {
            GREY
        } else if s.dashed && colour > 0 {
            last
        } else {
            colour += 1;
            PALETTE[(colour - 1) % PALETTE.len()]
        };
        last = col;
        let pts: Vec<_> = s.points.iter().map(|&(i, y)| (SegmentValue::CenterOf(i as u32), y)).collect();
        if s.dashed {
            let style = col.stroke_width(2);
            chart.draw_series(DashedLineSeries::new(pts.clone(), 7, 5, style))?.label(s.name.as_str()).legend(
                move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], style)
                        + PathElement::new(vec![(11, 0), (18, 0)], style)
                },
            );
            chart.draw_series(
                pts.into_iter().map(|p| EmptyElement::at(p) + Rectangle::new([(-3, -3), (3, 3)], col.stroke_width(2))),
            )?;
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .position(if c.legend_top { SeriesLabelPosition::UpperLeft } else { SeriesLabelPosition::LowerLeft })
        .draw()?;
    root.present()?;
    Ok(())
}

/// A histogram of `values` over [0, max] in `bins` equal bins; `tick`
/// formats an x value (so ε can be shown as k/255 when the user wrote it so).
pub fn histogram(
    caption: &str,
    x_desc: &str,
    values: &[f64],
    max: f64,
    bins: usize,
    tick: &dyn Fn(f64) -> String,
) -> String {
    let mut svg = String::new();
    let ok = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_histogram(&root, caption, x_desc, values, max, bins.max(1), tick).is_ok()
    };
    if ok { svg } else { String::new() }
}

fn draw_histogram(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    x_desc: &str,
    values: &[f64],
    max: f64,
    bins: usize,
    tick: &dyn Fn(f64) -> String,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let max = if max > 0.0 { max } else { 1.0 };
    let width = max / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in values {
        counts[((v / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(6)
        .x_label_formatter(&|v| tick(*v))
        .y_labels((top as usize + 1).min(8))
        .y_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() })
        .x_desc(x_desc)
        .y_desc("samples")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(b, &n)| {
        let x0 = b as f64 * width;
        Rectangle::new([(x0, 0.0), (x0 + width, n as f64)], PALETTE[0].mix(0.8).filled())
    }))?;
    root.present()?;
    Ok(())
}
