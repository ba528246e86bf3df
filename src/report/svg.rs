//! Every SVG chart of the crate, drawn one way: plotters' SVG backend (no system font or
//! image libraries needed). Generic line charts and histograms, and the charts built on them:
//! training curves, the audit's margin histogram, robust accuracy against ε.

use std::fmt::Write;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::robust::RobustReport;
use crate::train::EpochMetrics;

/// One named curve: `(x, y)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
}

fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Invalid(format!("plotting: {e}"))
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1.0)
    };
    Some((lo - pad, hi + pad))
}

/// The ten "tab10" colours (matplotlib's default cycle), so up to ten series are distinct.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];

/// A tick label that stays readable at any scale: scientific notation with three digits
/// when the axis spans tiny or huge values (so `1.0e-5, 1.5e-5` rather than
/// `0.00001, 0.00001`), otherwise at most four decimals without trailing zeros.
fn tick(v: f64, span: (f64, f64)) -> String {
    let m = span.0.abs().max(span.1.abs());
    if v == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&m) {
        format!("{v:.2e}")
    } else {
        let t = format!("{v:.4}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        t.to_string()
    }
}

/// The corner or side of the plot (40 % of each axis) that the lines cross least — counted on 16
/// points along every segment, not only at the data points — where the legend hides the
/// least.
fn emptiest_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    // (position, right side, vertical band of the plot height it covers)
    let corners = [
        (SeriesLabelPosition::UpperRight, true, (0.6, 1.0)),
        (SeriesLabelPosition::UpperLeft, false, (0.6, 1.0)),
        (SeriesLabelPosition::LowerRight, true, (0.0, 0.4)),
        (SeriesLabelPosition::LowerLeft, false, (0.0, 0.4)),
        (SeriesLabelPosition::MiddleRight, true, (0.3, 0.7)),
        (SeriesLabelPosition::MiddleLeft, false, (0.3, 0.7)),
    ];
    let inside = |p: &(f64, f64), right: bool, band: (f64, f64)| {
        let fx = (p.0 - x.0) / (x.1 - x.0);
        let fy = (p.1 - y.0) / (y.1 - y.0);
        (if right { fx > 0.6 } else { fx < 0.4 }) && fy > band.0 && fy < band.1
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, top)| {
            series
                .iter()
                .flat_map(|s| s.points.windows(2))
                .flat_map(|w| {
                    (0..16).map(move |k| {
                        let t = k as f64 / 16.0;
                        (
                            w[0].0 + t * (w[1].0 - w[0].0),
                            w[0].1 + t * (w[1].1 - w[0].1),
                        )
                    })
                })
                .chain(series.iter().flat_map(|s| s.points.iter().copied()))
                .filter(|p| inside(p, right, top))
                .count()
        })
        .map_or(SeriesLabelPosition::UpperRight, |c| c.0)
}

/// A line chart of several series in one panel, as SVG text.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let xr = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
            .ok_or_else(|| Error::Invalid(format!("plotting '{title}': no finite points")))?;
        let yr = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))
            .ok_or_else(|| Error::Invalid(format!("plotting '{title}': no finite points")))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| tick(*v, xr))
            .y_label_formatter(&|v| tick(*v, yr))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points
                        .iter()
                        .copied()
                        .filter(|p| p.0.is_finite() && p.1.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(emptiest_corner(series, xr, yr))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The colour of histogram bars: steelblue. [`histogram`] recognises the bars plotters drew
/// by it (no other element uses it) to name them and attach their counts.
const BAR: RGBColor = RGBColor(70, 130, 180);
/// How plotters' SVG backend writes a filled [`BAR`] rectangle's closing attributes.
const BAR_SVG: &str = "fill=\"#4682B4\" stroke=\"none\"/>";
/// The decision boundary `x = 0` (crimson).
const ZERO: RGBColor = RGBColor(220, 20, 60);

/// A histogram of the finite `values` in `bins` equal bins, as SVG text. Each bar is a
/// `fill="steelblue"` rectangle carrying its count as a `<title>` (a tooltip); when the bins
/// straddle 0 a crimson line marks `x = 0`; non-finite values are not binned but counted in
/// the title. Errors when no value is finite.
pub fn histogram(title: &str, x_label: &str, values: &[f64], bins: usize) -> Result<String> {
    let (lo, hi) = range(values.iter().copied())
        .ok_or_else(|| Error::Invalid(format!("plotting '{title}': no finite values")))?;
    let bins = bins.max(1);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    let finite = values.iter().filter(|v| v.is_finite());
    for &v in finite.clone() {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let skipped = values.len() - finite.count();
    let caption = if skipped > 0 {
        format!("{title}, {skipped} non-finite not shown")
    } else {
        title.to_string()
    };
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("examples")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BAR.filled())
            }))
            .map_err(plot_err)?;
        if lo < 0.0 && hi > 0.0 {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, 0.0), (0.0, top)],
                    ZERO.stroke_width(2),
                )))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(name_bars(&svg, &counts))
}

/// Rewrites the `counts.len()` bars plotters drew (in order) as `fill="steelblue"`
/// rectangles titled with their counts.
fn name_bars(svg: &str, counts: &[usize]) -> String {
    let mut out = String::with_capacity(svg.len() + 48 * counts.len());
    let mut counts = counts.iter();
    let mut rest = svg;
    while let Some(i) = rest.find(BAR_SVG) {
        out.push_str(&rest[..i]);
        match counts.next() {
            Some(c) => {
                let _ = write!(
                    out,
                    "fill=\"steelblue\" stroke=\"none\"><title>{c}</title></rect>"
                );
            }
            None => out.push_str(BAR_SVG),
        }
        rest = &rest[i + BAR_SVG.len()..];
    }
    out.push_str(rest);
    out
}

/// A chart with a title and a one-line note instead of data (what is drawn when there is
/// nothing to plot, so a report's image link never dangles).
pub fn empty_chart(title: &str, note: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        root.draw(&Text::new(
            note.to_string(),
            (40, 200),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The audit's margin histogram: the certified lower bounds of every example's margin `q_n`
/// in `bins` bins (see [`histogram`]); an [`empty_chart`] saying so when none is finite.
pub fn histogram_svg(lower_bounds: &[f64], bins: usize) -> String {
    let title = format!(
        "certified lower bounds of the margins q_n ({} examples)",
        lower_bounds.len()
    );
    histogram(&title, "lower bound of q_n", lower_bounds, bins)
        .or_else(|_| empty_chart(&title, "no finite lower bound to draw"))
        .unwrap_or_else(|e| {
            format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- {e} --></svg>\n")
        })
}

/// The points of a right-continuous step function that is `v[i]` on `[eps[i], eps[i+1])`.
fn steps(eps: &[f64], v: &[f64]) -> Vec<(f64, f64)> {
    let mut p = Vec::with_capacity(2 * eps.len());
    for i in 0..eps.len().min(v.len()) {
        if i > 0 {
            p.push((eps[i], v[i - 1]));
        }
        p.push((eps[i], v[i]));
    }
    p
}

/// Robust accuracy against the radius ε of `rep`, as step functions on its curve's grid:
/// the certified accuracy of the best radius per example (a lower bound), of each method
/// run on its own when there are several, and the attack's (an upper bound, when an attack
/// ran); axes with ticks and labels, and a legend.
pub fn robust_curves(rep: &RobustReport) -> Result<String> {
    use crate::robust::{AttackKind, RadiusMethod};
    let c = &rep.curve;
    let n = rep.examples.len().max(1) as f64;
    let methods: Vec<RadiusMethod> = RadiusMethod::ALL
        .into_iter()
        .filter(|&m| rep.examples.iter().any(|e| e.radius(m).is_some()))
        .collect();
    let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    // The title names the methods too: a chart of one curve has no legend.
    let title = format!(
        "robust accuracy against eps ({:?}, {} examples; certified by {})",
        rep.norm,
        rep.examples.len(),
        names.join(", ")
    );
    // The per-method curves first, so that the best one is drawn over them.
    let mut series = Vec::new();
    if methods.len() > 1 {
        for &m in &methods {
            let frac: Vec<f64> = c
                .eps
                .iter()
                .map(|&e| {
                    rep.examples
                        .iter()
                        .filter(|x| x.radius(m).unwrap_or(0.0) > e)
                        .count() as f64
                        / n
                })
                .collect();
            series.push(Series {
                label: format!("certified: {} only", m.name()),
                points: steps(&c.eps, &frac),
            });
        }
    }
    series.push(Series {
        label: format!("certified: best of {} (lower bound)", names.join(", ")),
        points: steps(&c.eps, &c.certified),
    });
    if rep.attack.kind != AttackKind::None {
        series.push(Series {
            label: format!("attack: {} (upper bound)", super::robust::attack_text(rep)),
            points: steps(&c.eps, &c.empirical),
        });
    }
    line_chart(
        &title,
        &format!("eps ({:?} radius)", rep.norm),
        "robust accuracy (fraction of examples)",
        &series,
    )
    .or_else(|_| empty_chart(&title, "no example: nothing to draw"))
}

/// A line chart of the series that have points, or `None` when none has.
fn chart_if_any(title: &str, x: &str, y: &str, series: Vec<Series>) -> Result<Option<String>> {
    let series: Vec<Series> = series
        .into_iter()
        .filter(|s| s.points.iter().any(|p| p.0.is_finite() && p.1.is_finite()))
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    line_chart(title, x, y, &series).map(Some)
}

/// The training curves of a run: log10 loss and the normalized margins against epoch
/// (the paper's Figure 1 panels), as SVG charts; a chart is `None` when it has no point
/// (the normalized-margin chart before any epoch separates the data).
pub fn training_curves(metrics: &[EpochMetrics]) -> Result<(Option<String>, Option<String>)> {
    let pts = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        metrics
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    let loss = chart_if_any(
        "training loss",
        "epoch",
        "log10 loss",
        vec![
            Series {
                label: "mean loss".into(),
                points: pts(&|m| Some(m.log10_loss)),
            },
            Series {
                label: "summed loss".into(),
                points: pts(&|m| Some(m.log10_loss_sum)),
            },
        ],
    )?;
    // Normalized margins are tiny and of different scales: plot log10 of the positive ones.
    let lg = |v: Option<f64>| v.filter(|&x| x > 0.0).map(f64::log10);
    let margin = chart_if_any(
        "normalized margin (positive values)",
        "epoch",
        "log10 margin",
        vec![
            Series {
                label: "q_min / rho^L".into(),
                points: pts(&|m| lg(m.normalized_margin)),
            },
            Series {
                label: "q_min / prod ||W_i||".into(),
                points: pts(&|m| lg(m.paper_normalized_margin())),
            },
            Series {
                label: "smoothed margin".into(),
                points: pts(&|m| lg(m.smoothed_margin)),
            },
        ],
    )?;
    Ok((loss, margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_readable_at_every_scale() {
        // The normalized-margin axis once read "0.00001, 0.00001, 0.0".
        assert_eq!(tick(1.0e-5, (0.0, 2e-5)), "1.00e-5");
        assert_ne!(tick(1.0e-5, (0.0, 2e-5)), tick(1.5e-5, (0.0, 2e-5)));
        assert_eq!(tick(0.25, (0.0, 1.0)), "0.25");
        assert_eq!(tick(120.0, (0.0, 300.0)), "120");
        assert_eq!(tick(3.0e7, (0.0, 5e7)), "3.00e7");
        assert_eq!(tick(0.0, (0.0, 5e7)), "0");
    }

    #[test]
    fn the_legend_goes_where_the_data_are_not() {
        // A rising curve fills the lower-left and upper-right corners.
        let s = [Series {
            label: "up".into(),
            points: (0..100).map(|i| (i as f64, i as f64)).collect(),
        }];
        let pos = emptiest_corner(&s, (0.0, 99.0), (0.0, 99.0));
        assert!(matches!(
            pos,
            SeriesLabelPosition::UpperLeft | SeriesLabelPosition::LowerRight
        ));
    }

    #[test]
    fn charts_are_svg_with_the_labels() {
        let s = line_chart(
            "t",
            "epoch",
            "y",
            &[Series {
                label: "curve".into(),
                points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
            }],
        )
        .unwrap();
        assert!(s.starts_with("<svg") && s.contains("epoch"));
        let h = histogram("h", "margin", &[1.0, 2.0, 2.5, 9.0], 4).unwrap();
        assert!(h.contains("<rect"));
        assert!(line_chart("t", "x", "y", &[]).is_err());
        assert!(histogram("h", "x", &[f64::NAN], 3).is_err());
    }

    #[test]
    fn histogram_bars_carry_their_counts_and_zero_is_marked() {
        let v = [-1.0, 0.5, 0.5, 2.0, f64::INFINITY];
        let h = histogram("h", "q", &v, 3).unwrap();
        assert_eq!(h.matches("fill=\"steelblue\"").count(), 3);
        assert!(!h.contains(BAR_SVG));
        let counts: Vec<usize> = h
            .split("<title>")
            .skip(1)
            .map(|t| t.split('<').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 4);
        assert!(h.contains("1 non-finite not shown"));
        assert!(h.contains("#DC143C"), "the q = 0 line");
        let all_equal = histogram_svg(&[1.0; 5], 4);
        assert_eq!(all_equal.matches("<title>5</title>").count(), 1);
        let none = histogram_svg(&[f64::NAN], 4);
        assert!(none.starts_with("<svg") && none.contains("no finite lower bound"));
    }
}
