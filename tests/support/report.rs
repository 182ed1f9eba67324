//! What a benchmark reports: its lines and tables on stdout and in
//! `target/bench-report/<bench>.md`, and its plots as SVG files beside them (drawn by plotters).
//! Latencies are plotted as distributions (CDF), repeated runs as values per round, each series
//! beside the peer's.

use std::fmt::Write as _;
use std::path::PathBuf;

use plotters::prelude::*;

/// One chart of a report.
pub enum Plot {
    /// The cumulative distribution of each series' samples: x is the value, y the fraction of
    /// samples at or below it.
    Cdf {
        title: String,
        unit: String,
        series: Vec<(String, Vec<f64>)>,
    },
    /// One value per round for each series (throughput per run, say).
    Rounds {
        title: String,
        unit: String,
        series: Vec<(String, Vec<f64>)>,
    },
    /// One bar per measure, side by side (cost per path, say).
    Bars {
        title: String,
        unit: String,
        bars: Vec<(String, f64)>,
    },
}

impl Plot {
    pub fn cdf(title: &str, unit: &str, series: &[(&str, &[f64])]) -> Plot {
        Plot::Cdf {
            title: title.into(),
            unit: unit.into(),
            series: owned(series),
        }
    }

    pub fn rounds(title: &str, unit: &str, series: &[(&str, &[f64])]) -> Plot {
        Plot::Rounds {
            title: title.into(),
            unit: unit.into(),
            series: owned(series),
        }
    }

    pub fn bars(title: &str, unit: &str, bars: &[(&str, f64)]) -> Plot {
        Plot::Bars {
            title: title.into(),
            unit: unit.into(),
            bars: bars.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }
}

fn owned(series: &[(&str, &[f64])]) -> Vec<(String, Vec<f64>)> {
    series
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect()
}

/// A benchmark's report, written out by `finish`.
pub struct Report {
    name: String,
    text: String,
    plots: Vec<(String, Plot)>,
}

impl Report {
    /// A report named after its benchmark (the file names under `target/bench-report/`).
    pub fn new(name: &str) -> Report {
        Report {
            name: name.into(),
            text: String::new(),
            plots: Vec::new(),
        }
    }

    /// Prints a line and keeps it for the report file.
    pub fn say(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    /// Prints a Markdown table (one row per `rows` entry, cells already formatted).
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.say("");
        self.say(format!("| {} |", header.join(" | ")));
        self.say(format!("|{}", " --- |".repeat(header.len())));
        for row in rows {
            self.say(format!("| {} |", row.join(" | ")));
        }
        self.say("");
    }

    /// Adds a chart, written as `<bench>-<stem>.svg`.
    pub fn plot(&mut self, stem: &str, plot: Plot) {
        self.plots.push((stem.into(), plot));
    }

    /// Writes the report and its charts; a chart that cannot be drawn is said, not fatal (the
    /// numbers are already printed).
    pub fn finish(mut self) {
        let dir = report_dir();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return;
        }
        let plots = std::mem::take(&mut self.plots);
        for (stem, plot) in &plots {
            let file = format!("{}-{stem}.svg", self.name);
            let path = dir.join(&file);
            match draw(&path, plot) {
                Ok(()) => {
                    let _ = writeln!(self.text, "![{stem}]({file})");
                    println!("plot: {}", path.display());
                }
                Err(e) => eprintln!("cannot draw {}: {e}", path.display()),
            }
        }
        let path = dir.join(format!("{}.md", self.name));
        match std::fs::write(&path, &self.text) {
            Ok(()) => println!("report: {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

/// `target/bench-report`, found from the benchmark binary's own path
/// (`target/<profile>/deps/<bench>-<hash>`), so that `CARGO_TARGET_DIR` is followed too.
fn report_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench-report")
}

/// The `p` quantile (0 to 1) of sorted samples, nearest rank; NaN for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// The median of samples in any order; NaN for none.
pub fn median(samples: &[f64]) -> f64 {
    let s = sorted(samples);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Samples sorted ascending (NaNs last).
pub fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A series as points, with its name.
type Line = (String, Vec<(f64, f64)>);

fn draw(path: &std::path::Path, plot: &Plot) -> DrawResult {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    match plot {
        Plot::Cdf {
            title,
            unit,
            series,
        } => {
            let lines = as_lines(series, |values| {
                let s = sorted(values);
                let n = s.len() as f64;
                let at = |k: usize, v: f64| (v, (k + 1) as f64 / n);
                s.iter().enumerate().map(|(k, v)| at(k, *v)).collect()
            });
            let (lo, hi) = extent(lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)));
            let y = 0.0..1.0;
            let ylabel = "fraction of samples at or below";
            // Latencies that span orders of magnitude read better on a log axis.
            if lo > 0.0 && hi / lo > 50.0 {
                let x = (lo * 0.9..hi * 1.1).log_scale();
                lines_chart(&root, title, unit, ylabel, x, y, &lines, false)?;
            } else {
                lines_chart(
                    &root,
                    title,
                    unit,
                    ylabel,
                    0.0..headroom(hi),
                    y,
                    &lines,
                    false,
                )?;
            }
        }
        Plot::Rounds {
            title,
            unit,
            series,
        } => {
            let lines = as_lines(series, |values| {
                let at = |k: usize, v: f64| ((k + 1) as f64, v);
                values.iter().enumerate().map(|(k, v)| at(k, *v)).collect()
            });
            let rounds = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
            let (_, hi) = extent(lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)));
            let x = 0.5..rounds as f64 + 0.5;
            lines_chart(
                &root,
                title,
                "round",
                unit,
                x,
                0.0..headroom(hi),
                &lines,
                true,
            )?;
        }
        Plot::Bars { title, unit, bars } => {
            let (_, hi) = extent(bars.iter().map(|(_, v)| *v));
            let names: Vec<String> = bars.iter().map(|(n, _)| n.clone()).collect();
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(72)
                // A segmented 0..n has n + 1 segments.
                .build_cartesian_2d(
                    (0..bars.len().max(1) - 1).into_segmented(),
                    0.0..headroom(hi),
                )?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_desc(unit.as_str())
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .draw()?;
            chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let color = Palette99::pick(i).to_rgba();
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Each named series as the points `points` makes of its values.
fn as_lines(
    series: &[(String, Vec<f64>)],
    points: impl Fn(&[f64]) -> Vec<(f64, f64)>,
) -> Vec<Line> {
    series
        .iter()
        .map(|(name, values)| (name.clone(), points(values)))
        .collect()
}

/// A chart of lines on any x axis (linear or log), with a legend; `marks` puts a dot on each
/// point (few points, such as rounds).
#[allow(clippy::too_many_arguments)]
fn lines_chart<X>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    x: X,
    y: std::ops::Range<f64>,
    lines: &[Line],
    marks: bool,
) -> DrawResult
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .draw()?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if marks {
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The smallest and largest finite values (0, 0 for none).
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or((0.0, 0.0))
}

/// The axis' upper end: a little above the largest value, and never an empty range.
fn headroom(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.08
    } else {
        1.0
    }
}
