//! Draws `docs/growth.svg` from `docs/growth.csv` (written by `benches/growth.sh`): pure-read
//! identify latency (ns) and resident memory per contact (bytes, net of the empty service's VmRSS,
//! so the fixed ~10 MB does not swamp the small sizes) against the number of contacts, on a
//! log-scale x axis, with the targets as dashed lines (1.5 × the latency at the smallest N;
//! 150 B/contact).
//!
//! Run: `cargo run --release --example plot_growth -- docs/growth.csv docs/growth.svg`

use std::error::Error;

use plotters::prelude::*;

/// One row of `docs/growth.csv` (only the plotted columns).
struct Row {
    contacts: f64,
    read_ns: f64,
    bytes_per_contact: f64,
}

fn read_csv(path: &str) -> Result<Vec<Row>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let (n, ns, bpc) = (
        column("contacts")?,
        column("read_ns")?,
        column("net_bytes_per_contact")?,
    );
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| -> Result<f64, Box<dyn Error>> {
            Ok(f.get(i).ok_or("short row")?.trim().parse()?)
        };
        rows.push(Row {
            contacts: get(n)?,
            read_ns: get(ns)?,
            bytes_per_contact: get(bpc)?,
        });
    }
    Ok(rows)
}

/// One panel: `values` against contacts, with a dashed horizontal `limit`.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    values: &[(f64, f64)],
    limit: (f64, &str),
    colour: RGBColor,
) -> Result<(), Box<dyn Error>> {
    let x_min = values.iter().map(|v| v.0).fold(f64::INFINITY, f64::min) / 2.0;
    let x_max = values.iter().map(|v| v.0).fold(0.0, f64::max) * 2.0;
    let y_max = values.iter().map(|v| v.1).fold(limit.0, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("contacts")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            values.iter().copied(),
            colour.stroke_width(2),
        ))?
        .label(y_desc)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    chart.draw_series(
        values
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 4, colour.filled())),
    )?;
    let dashes = (0..40).map(|i| {
        let a = x_min * (x_max / x_min).powf(i as f64 / 40.0);
        let b = x_min * (x_max / x_min).powf((i as f64 + 0.5) / 40.0);
        PathElement::new(vec![(a, limit.0), (b, limit.0)], RED)
    });
    chart
        .draw_series(dashes)?
        .label(limit.1)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let input = args.get(1).map_or("docs/growth.csv", String::as_str);
    let output = args.get(2).map_or("docs/growth.svg", String::as_str);
    let rows = read_csv(input)?;
    if rows.is_empty() {
        return Err("no rows".into());
    }
    let root = SVGBackend::new(output, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let latency: Vec<(f64, f64)> = rows.iter().map(|r| (r.contacts, r.read_ns)).collect();
    let first = latency[0];
    panel(
        &left,
        "pure-read identify latency",
        "ns per identify (median)",
        &latency,
        (first.1 * 1.5, "target: 1.5 x latency at smallest N"),
        BLUE,
    )?;
    let memory: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.contacts, r.bytes_per_contact))
        .collect();
    panel(
        &right,
        "resident memory per contact",
        "bytes / contact ((VmRSS - empty VmRSS) / N)",
        &memory,
        (150.0, "target: 150 B/contact"),
        RGBColor(0, 128, 0),
    )?;
    root.present()?;
    eprintln!("wrote {output}");
    Ok(())
}
