//! The sweep's chart: throughput against clients, drawn with plotters.

use crate::run::RunResult;
use crate::scenario::Scenario;

/// Throughput against clients, one line per scenario, as a PNG.
pub fn chart(results: &[RunResult], path: &std::path::Path, font: &[u8]) -> Result<(), String> {
    use plotters::prelude::*;

    let font: &'static [u8] = Box::leak(font.to_vec().into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "unreadable font".to_owned())?;
    let max_clients = results.iter().map(|r| r.clients).max().unwrap_or(1) as f64;
    let max_rate = results
        .iter()
        .map(RunResult::per_second)
        .fold(1.0, f64::max)
        // Headroom for the legend, in the upper right corner.
        * 1.4;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| err.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "flash-sale: holds per second on one product (medians of alternating rounds)",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..max_clients.max(2.0)).log_scale(), 0f64..max_rate)
        .map_err(|err| err.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("operations / s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|err| err.to_string())?;
    let palette = [
        RED,
        BLUE,
        GREEN,
        BLACK,
        MAGENTA,
        CYAN,
        RGBColor(255, 140, 0),
        RGBColor(128, 128, 128),
    ];
    for (index, scenario) in Scenario::ALL.into_iter().enumerate() {
        let mut points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| (r.clients as f64, r.per_second()))
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = palette[index % palette.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|err| err.to_string())?
            .label(label(scenario))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|err| err.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|err| err.to_string())?;
    root.present().map_err(|err| err.to_string())
}

fn label(scenario: Scenario) -> String {
    let how = match scenario {
        Scenario::HotHold => "HTTP, local server",
        Scenario::HotHoldDirect => "store call, one pool",
        Scenario::LambdaHold => "handler, a connection per client",
        Scenario::RowlockBaseline => "raw SQL, row-lock counters",
        Scenario::RowlockText => "raw SQL, row-lock counters, text protocol",
        Scenario::SumBaseline => "raw SQL, sum of active holds",
        _ => return scenario.name().to_owned(),
    };
    format!("{} ({how})", scenario.name())
}
