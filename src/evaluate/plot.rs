//! The evaluation picture (SVG): above, the score histogram of true matches
//! and non-matches; below, precision, recall and F1 against the threshold,
//! with the threshold that maximises F1 marked on both.

use std::path::Path;

use plotters::prelude::*;

use super::{CurvePoint, EvaluateError};

/// Histogram bins between the lowest score shown and 1.
const BINS: usize = 50;
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 900;

/// A curve of the lower chart: its label, colour and value.
type Series = (&'static str, RGBColor, fn(&CurvePoint) -> f64);

/// Score counts of true matches and non-matches in `BINS` bins from `low` to 1.
pub(crate) struct Histogram {
    low: f64,
    true_bins: Vec<u64>,
    false_bins: Vec<u64>,
}

impl Histogram {
    pub fn new(low: f64) -> Histogram {
        Histogram {
            low,
            true_bins: vec![0; BINS],
            false_bins: vec![0; BINS],
        }
    }

    pub fn add(&mut self, score: f32, is_true: bool) {
        let width = (1.0 - self.low) / BINS as f64;
        // The nudge puts an f32 score such as 0.51 (0.50999...) in the bin that starts at 0.51.
        let bin = ((f64::from(score) - self.low) / width + 1e-4)
            .floor()
            .max(0.0) as usize;
        let bins = if is_true {
            &mut self.true_bins
        } else {
            &mut self.false_bins
        };
        bins[bin.min(BINS - 1)] += 1;
    }

    /// (from, to, count) of each bin.
    fn bars(&self, is_true: bool) -> Vec<(f64, f64, f64)> {
        let width = (1.0 - self.low) / BINS as f64;
        let bins = if is_true {
            &self.true_bins
        } else {
            &self.false_bins
        };
        bins.iter()
            .enumerate()
            .map(|(i, &c)| {
                (
                    self.low + i as f64 * width,
                    self.low + (i + 1) as f64 * width,
                    c as f64,
                )
            })
            .collect()
    }
}

/// What the picture shows.
pub(crate) struct PlotData {
    /// Score distribution of the pairs.
    pub histogram: Histogram,
    /// The precision / recall curve, ascending threshold.
    pub curve: Vec<CurvePoint>,
    /// The threshold to mark (best F1).
    pub marked: Option<f32>,
    /// What the pairs are ("candidate pairs", "links").
    pub source: &'static str,
}

/// Draws `data` and writes the SVG to `path` atomically.
pub(crate) fn write_svg(path: &Path, data: &PlotData) -> Result<(), EvaluateError> {
    let mut svg = String::new();
    draw(&mut svg, data).map_err(|e| EvaluateError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::io::atomic::write_all(path, svg.as_bytes()).map_err(|e| EvaluateError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The lowest x shown: the lowest score (or marked threshold) rounded down to 0.05.
pub(crate) fn x_low(lowest_score: f32, marked: Option<f32>) -> f64 {
    let lowest = marked.map_or(lowest_score, |m| m.min(lowest_score));
    let low = (f64::from(lowest) * 20.0).floor() / 20.0;
    low.clamp(0.0, 0.95)
}

fn draw(svg: &mut String, data: &PlotData) -> Result<(), Box<dyn std::error::Error>> {
    let true_colour = RGBColor(0, 140, 70);
    let false_colour = RGBColor(200, 40, 40);
    let mark_colour = RGBColor(90, 90, 90);

    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    let low = data.histogram.low;
    let true_bins = data.histogram.bars(true);
    let false_bins = data.histogram.bars(false);
    let count = |bins: &[u64]| bins.iter().sum::<u64>();
    let y_max = true_bins
        .iter()
        .chain(&false_bins)
        .map(|b| b.2)
        .fold(1.0, f64::max)
        * 2.0;
    // Counts on a log scale: non-matches usually outnumber true matches by
    // orders of magnitude, and both tails must stay visible where they meet.
    // Bars start at 0.5 so that a bin holding one pair still shows.
    let y_min = 0.5;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "Scores of {}: {} true matches, {} non-matches",
                data.source,
                count(&data.histogram.true_bins),
                count(&data.histogram.false_bins)
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(low..1.0f64, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("score")
        .y_desc("pairs (log scale)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (bins, colour, label) in [
        (&false_bins, false_colour, "non-matches"),
        (&true_bins, true_colour, "true matches"),
    ] {
        let style = colour.mix(0.5).filled();
        chart
            .draw_series(
                bins.iter()
                    .filter(|b| b.2 > 0.0)
                    .map(move |&(x0, x1, c)| Rectangle::new([(x0, y_min), (x1, c)], style)),
            )?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], style));
    }
    if let Some(t) = data.marked {
        let t = f64::from(t);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(t, y_min), (t, y_max)],
                mark_colour.stroke_width(2),
            )))?
            .label(format!("best F1 threshold {t:.4}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], mark_colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "Precision, recall and F1 of the links at each threshold",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(low..1.0f64, 0.0..1.05f64)?;
    chart
        .configure_mesh()
        .x_desc("threshold (links: pairs scoring at least this)")
        .y_desc("fraction")
        .draw()?;
    let series: [Series; 3] = [
        ("precision", RGBColor(30, 90, 200), |p| p.precision),
        ("recall", RGBColor(230, 130, 0), |p| p.recall),
        ("F1", BLACK, |p| p.f1),
    ];
    for (label, colour, value) in series {
        chart
            .draw_series(LineSeries::new(
                data.curve
                    .iter()
                    .map(|p| (f64::from(p.threshold), value(p))),
                colour.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
            });
    }
    if let Some(t) = data.marked {
        let t = f64::from(t);
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(t, 0.0), (t, 1.05)],
            mark_colour.stroke_width(2),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("best F1 threshold {t:.4}"),
            (t + (1.0 - low) * 0.006, 0.45), // clear of the legend (lower left)
            ("sans-serif", 14),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_score_once() {
        let mut h = Histogram::new(0.5);
        for (score, is_true) in [
            (0.5f32, false),
            (0.51, false),
            (0.99, true),
            (1.0, true),
            (1.0, true),
        ] {
            h.add(score, is_true);
        }
        assert_eq!(h.false_bins.iter().sum::<u64>(), 2);
        assert_eq!(h.true_bins.iter().sum::<u64>(), 3);
        assert_eq!(h.true_bins[BINS - 1], 3); // 0.99 and both 1.0
        assert_eq!((h.false_bins[0], h.false_bins[1]), (1, 1));
        assert_eq!(x_low(0.51, Some(0.8)), 0.5);
        assert_eq!(x_low(0.99, None), 0.95);
    }
}
