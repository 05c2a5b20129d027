//! The PNG chart of a run: latency percentiles per path (left) and throughput per path and
//! connection count (right), as grouped bars.

mod canvas;

use std::path::Path;

use plotters::prelude::*;

pub use canvas::{Anchor, Canvas, FONT_CANDIDATES, Rgb, load_font};

use super::error::BenchError;
use super::report::model::{BenchResults, Path as MeshPath};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 540;
const SPLIT: u32 = 720;
const BLACK_RGB: Rgb = (30, 30, 30);
const GREY_RGB: Rgb = (110, 110, 110);

fn color(p: MeshPath) -> Rgb {
    match p {
        MeshPath::NoMesh => (150, 150, 150),
        MeshPath::L4 => (31, 119, 180),
        MeshPath::L7 => (255, 127, 14),
    }
}

/// Bars of one series: a value and its label per group.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    color: Rgb,
    values: Vec<Option<(f64, String)>>,
}

#[derive(Debug, Clone)]
struct Panel {
    title: String,
    groups: Vec<String>,
    series: Vec<Series>,
    note: Option<String>,
}

/// A text to draw once the shapes are done.
struct Label {
    x: i32,
    y: i32,
    text: String,
    size: f32,
    color: Rgb,
    anchor: Anchor,
}

impl Label {
    fn new(x: i32, y: i32, text: impl Into<String>, size: f32, anchor: Anchor) -> Self {
        Self {
            x,
            y,
            text: text.into(),
            size,
            color: BLACK_RGB,
            anchor,
        }
    }
}

/// A round step for about `ticks` grid lines up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn fmt_tick(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn chart_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Chart(e.to_string())
}

/// Draws `panel`'s shapes into `pixels` within `area` (x0, y0, x1, y1) and returns its texts.
fn draw_shapes(
    pixels: &mut [u8],
    area: (u32, u32, u32, u32),
    panel: &Panel,
) -> Result<Vec<Label>, BenchError> {
    let (x0, y0, x1, y1) = area;
    let ymax_data = panel
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten().map(|(v, _)| *v))
        .fold(0.0f64, f64::max);
    let step = nice_step(ymax_data.max(1e-9), 5.0);
    // Room above the tallest bar for its label.
    let ymax = (ymax_data * 1.08 / step).ceil().max(1.0) * step;
    let n = panel.groups.len().max(1) as f64;
    let mut labels = Vec::new();

    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    let sub = root.clone().shrink((x0, y0), (x1 - x0, y1 - y0));
    let mut chart = ChartBuilder::on(&sub)
        .margin_top(64)
        .margin_left(64)
        .margin_bottom(48)
        .margin_right(16)
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(chart_err)?;
    let grid = RGBColor(225, 225, 225);
    let mut t = 0.0;
    while t <= ymax + step * 1e-6 {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, t), (n, t)],
                grid.stroke_width(1),
            )))
            .map_err(chart_err)?;
        let (px, py) = chart.backend_coord(&(0.0, t));
        labels.push(Label {
            color: GREY_RGB,
            ..Label::new(px - 6, py + 4, fmt_tick(t), 12.0, Anchor::Right)
        });
        t += step;
    }
    let axis = RGBColor(60, 60, 60).stroke_width(1);
    chart
        .draw_series([
            PathElement::new(vec![(0.0, 0.0), (n, 0.0)], axis),
            PathElement::new(vec![(0.0, 0.0), (0.0, ymax)], axis),
        ])
        .map_err(chart_err)?;

    let k = panel.series.len().max(1) as f64;
    let bar = 0.8 / k;
    for (si, s) in panel.series.iter().enumerate() {
        let (r, g, b) = s.color;
        for (gi, v) in s.values.iter().enumerate() {
            let Some((v, text)) = v else { continue };
            let left = gi as f64 + 0.1 + si as f64 * bar;
            let right = left + bar * 0.92;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(left, 0.0), (right, *v)],
                    RGBColor(r, g, b).filled(),
                )))
                .map_err(chart_err)?;
            let (px, py) = chart.backend_coord(&((left + right) / 2.0, *v));
            labels.push(Label::new(px, py - 4, text.clone(), 11.0, Anchor::Center));
        }
    }
    for (gi, g) in panel.groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
        labels.push(Label::new(px, py + 22, g.clone(), 14.0, Anchor::Center));
    }
    // Legend: one swatch per series in a row above the plot.
    let (left_x, top_y) = chart.backend_coord(&(0.0, ymax));
    for (si, s) in panel.series.iter().enumerate() {
        let (x, y) = (left_x + 8 + si as i32 * 110, top_y - 18);
        let (r, g, b) = s.color;
        root.draw(&Rectangle::new(
            [(x, y - 10), (x + 12, y + 2)],
            RGBColor(r, g, b).filled(),
        ))
        .map_err(chart_err)?;
        labels.push(Label::new(
            x + 18,
            y + 1,
            s.name.clone(),
            13.0,
            Anchor::Left,
        ));
    }
    labels.push(Label::new(
        ((x0 + x1) / 2) as i32,
        y0 as i32 + 22,
        panel.title.clone(),
        16.0,
        Anchor::Center,
    ));
    if let Some(note) = &panel.note {
        labels.push(Label {
            color: GREY_RGB,
            ..Label::new(
                ((x0 + x1) / 2) as i32,
                y1 as i32 - 6,
                note.clone(),
                12.0,
                Anchor::Center,
            )
        });
    }
    root.present().map_err(chart_err)?;
    Ok(labels)
}

fn latency_panel(r: &BenchResults) -> Option<Panel> {
    let d = r.dataplane.as_ref()?;
    if d.latency.is_empty() {
        return None;
    }
    let series = d
        .latency
        .iter()
        .map(|l| {
            let x = &l.latency;
            Series {
                name: l.path.name().to_string(),
                color: color(l.path),
                values: [x.p50_us, x.p90_us, x.p99_us, x.p999_us]
                    .into_iter()
                    .map(|v| Some((v, format!("{v:.0}"))))
                    .collect(),
            }
        })
        .collect();
    let s = &r.settings.load;
    Some(Panel {
        title: format!(
            "Latency (µs): fortio, {} req/s, {} connections, {} B",
            s.qps, s.connections, s.payload_bytes
        ),
        groups: ["p50", "p90", "p99", "p99.9"].map(String::from).to_vec(),
        series,
        note: d
            .l7_unavailable
            .as_ref()
            .map(|_| "L7: waypoint not available in this run".to_string()),
    })
}

fn throughput_panel(r: &BenchResults) -> Option<Panel> {
    let d = r.dataplane.as_ref()?;
    if d.throughput.is_empty() {
        return None;
    }
    let gbps = |p: MeshPath, n: u32| {
        d.throughput
            .iter()
            .find(|t| t.path == p && t.streams == n)
            .map(|t| t.throughput.gbps)
    };
    let series = [MeshPath::NoMesh, MeshPath::L4]
        .into_iter()
        .map(|p| Series {
            name: p.name().to_string(),
            color: color(p),
            values: [1, 8]
                .into_iter()
                .map(|n| {
                    let v = gbps(p, n)?;
                    let text = match gbps(MeshPath::NoMesh, n) {
                        Some(base) if p != MeshPath::NoMesh && base > 0.0 => {
                            format!("{v:.1} ({:.0}%)", 100.0 * v / base)
                        }
                        _ => format!("{v:.1}"),
                    };
                    Some((v, text))
                })
                .collect(),
        })
        .collect();
    Some(Panel {
        title: "Throughput (Gbit/s): iperf3".into(),
        groups: vec!["1 connection".into(), "8 connections".into()],
        series,
        note: None,
    })
}

/// Renders the chart of `r` to `path` (PNG).
pub fn render(r: &BenchResults, path: &Path) -> Result<(), BenchError> {
    let latency = latency_panel(r);
    let throughput = throughput_panel(r);
    if latency.is_none() && throughput.is_none() {
        return Err(BenchError::Chart(
            "no data-plane figures to chart".to_string(),
        ));
    }
    let mut canvas = Canvas::new(WIDTH, HEIGHT, load_font()?);
    let mut labels = Vec::new();
    if let Some(p) = &latency {
        labels.extend(draw_shapes(&mut canvas.pixels, (0, 0, SPLIT, HEIGHT), p)?);
    }
    if let Some(p) = &throughput {
        labels.extend(draw_shapes(
            &mut canvas.pixels,
            (SPLIT, 0, WIDTH, HEIGHT),
            p,
        )?);
    }
    for l in labels {
        canvas.text(l.x, l.y, &l.text, l.size, l.color, l.anchor);
    }
    canvas.text(
        (WIDTH - 8) as i32,
        (HEIGHT - 8) as i32,
        &format!("make bench, {}", r.date),
        11.0,
        GREY_RGB,
        Anchor::Right,
    );
    canvas.save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(1000.0, 5.0), 200.0);
        assert_eq!(nice_step(23.0, 5.0), 5.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(200.0), "200");
    }

    fn sample() -> BenchResults {
        use crate::bench::fortio::Latency;
        use crate::bench::iperf::Throughput;
        use crate::bench::report::model::{Dataplane, PathLatency, PathThroughput};
        let lat = |p50: f64| Latency {
            p50_us: p50,
            p90_us: p50 * 1.5,
            p99_us: p50 * 3.0,
            p999_us: p50 * 6.0,
            avg_us: p50,
            max_us: p50 * 10.0,
            requests: 12_000,
            actual_qps: 1000.0,
            errors: 0,
        };
        let tp = |path, streams, gbps| PathThroughput {
            path,
            streams,
            throughput: Throughput {
                gbps,
                retransmits: None,
            },
            proxies: Vec::new(),
        };
        BenchResults {
            date: "2030-01-02".into(),
            dataplane: Some(Dataplane {
                latency: vec![
                    PathLatency {
                        path: MeshPath::NoMesh,
                        latency: lat(200.0),
                    },
                    PathLatency {
                        path: MeshPath::L4,
                        latency: lat(260.0),
                    },
                ],
                l7_unavailable: Some("no waypoint binary".into()),
                throughput: vec![
                    tp(MeshPath::NoMesh, 1, 20.0),
                    tp(MeshPath::L4, 1, 4.0),
                    tp(MeshPath::NoMesh, 8, 30.0),
                    tp(MeshPath::L4, 8, 9.0),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn renders_a_png_with_bars_and_text() {
        let path =
            std::env::temp_dir().join(format!("mesh-bench-chart-{}.png", std::process::id()));
        render(&sample(), &path)
            .expect("chart rendered (needs a TrueType font: fonts-dejavu-core)");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let px = &buf[..info.buffer_size()];
        let has = |c: Rgb| px.chunks(3).any(|p| (p[0], p[1], p[2]) == c);
        assert!(has(color(MeshPath::NoMesh)), "no-mesh bars drawn");
        assert!(has(color(MeshPath::L4)), "L4 bars drawn");
        assert!(!has(color(MeshPath::L7)), "no L7 bars without an L7 figure");
        // Text is anti-aliased dark grey on white: some near-black pixels exist.
        assert!(px.chunks(3).any(|p| p[0] < 80 && p[1] < 80 && p[2] < 80));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn nothing_to_chart_is_an_error() {
        let e = render(
            &BenchResults::default(),
            std::path::Path::new("/nonexistent/x.png"),
        );
        assert!(e.unwrap_err().to_string().contains("no data-plane figures"));
    }
}
