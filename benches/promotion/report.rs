//! The report: the rows of the table (measure, monoship, baseline, ratio, goal), the notes under
//! it and the raw figures, printed to stdout and written to `target/bench/promotion.json` with
//! the machine they were measured on.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::Outcome;
use crate::fixture::kib_field;

pub struct Row {
    measure: String,
    monoship: Option<f64>,
    baseline: Option<f64>,
    goal: String,
    /// Whether monoship's figure meets the goal; `None` when the row has no goal.
    met: Option<bool>,
    unit: &'static str,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    /// Tables printed after the main one, with their titles.
    tables: Vec<(String, String)>,
    notes: Vec<String>,
    raw: serde_json::Map<String, Value>,
}

impl Report {
    pub fn row(
        &mut self,
        measure: &str,
        monoship: Option<f64>,
        baseline: Option<f64>,
        goal: &str,
        met: Option<bool>,
        unit: &'static str,
    ) {
        self.rows.push(Row {
            measure: measure.to_owned(),
            monoship,
            baseline,
            goal: goal.to_owned(),
            met,
            unit,
        });
    }

    /// A table of its own, printed under `title` after the main one.
    pub fn table(&mut self, title: &str, table: String) {
        self.tables.push((title.to_owned(), table));
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn raw(&mut self, key: &str, value: Value) {
        self.raw.insert(key.to_owned(), value);
    }

    /// Add the figures of one measure's baseline to the raw `baselines` object.
    pub fn baseline(&mut self, figures: Value) {
        let baselines = self
            .raw
            .entry("baselines")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let (Value::Object(baselines), Value::Object(figures)) = (baselines, figures) {
            baselines.extend(figures);
        }
    }

    /// Print the table and the notes, and write them with the raw figures to
    /// `out_dir/promotion.json`.
    pub fn publish(&self, count: usize, started: Instant, out_dir: &Path) -> Outcome<()> {
        let seconds = started.elapsed().as_secs_f64();
        let machine = machine();
        let table = render(self);
        println!();
        println!(
            "monoship promotion bench: {count} services, {} cores, {}, {:.1} GiB RAM, run {seconds:.0}s",
            machine["cores"],
            machine["cpu"].as_str().unwrap_or_default(),
            machine["memory_gib"].as_f64().unwrap_or_default()
        );
        println!();
        print!("{table}");
        for (title, table) in &self.tables {
            println!();
            println!("{title}");
            println!();
            print!("{table}");
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
        let json_path = out_dir.join("promotion.json");
        std::fs::write(
            &json_path,
            serde_json::to_string_pretty(&to_json(self, &machine, seconds))?,
        )?;
        println!();
        println!("written: {}", json_path.display());
        Ok(())
    }
}

fn number(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}{unit}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}{unit}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}{unit}"),
        Some(v) => format!("{v:.2}{unit}"),
    }
}

fn ratio(row: &Row) -> Option<f64> {
    match (row.monoship, row.baseline) {
        (Some(m), Some(b)) if b != 0.0 => Some(m / b),
        _ => None,
    }
}

fn ratio_text(row: &Row) -> String {
    match (row.monoship, row.baseline) {
        (Some(_), Some(_)) => match ratio(row) {
            Some(0.0) => "0".to_owned(),
            Some(r) if r < 0.01 => format!("{r:.4}"),
            Some(r) => format!("{r:.2}"),
            None => "-".to_owned(),
        },
        _ => "n/a".to_owned(),
    }
}

fn goal_text(row: &Row) -> String {
    match row.met {
        Some(true) => format!("{} (met)", row.goal),
        Some(false) => format!("{} (NOT met)", row.goal),
        None => row.goal.clone(),
    }
}

/// The first and last columns are left-aligned, the figures right-aligned.
fn left_aligned(column: usize) -> bool {
    column == 0 || column == 4
}

fn render(report: &Report) -> String {
    let header = ["measure", "monoship", "baseline", "ratio", "goal"];
    let cells: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|row| {
            vec![
                row.measure.clone(),
                number(row.monoship, row.unit),
                number(row.baseline, row.unit),
                ratio_text(row),
                goal_text(row),
            ]
        })
        .collect();
    table(&header, &cells, left_aligned)
}

/// A Markdown table of `cells` under `header`; the columns for which `left` holds are
/// left-aligned, the others right-aligned.
pub fn table(header: &[&str], cells: &[Vec<String>], left: impl Fn(usize) -> bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            if left(i) {
                out.push_str(&format!(" {cell}{pad} |"));
            } else {
                out.push_str(&format!(" {pad}{cell} |"));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if left(i) {
                format!(":{}", "-".repeat(w + 1))
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for c in cells {
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        out.push_str(&line(&c));
    }
    out
}

fn to_json(report: &Report, machine: &Value, seconds: f64) -> Value {
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|row| {
            json!({
                "measure": row.measure,
                "monoship": row.monoship,
                "baseline": row.baseline,
                "ratio": ratio(row),
                "goal": row.goal,
                "goal_met": row.met,
                "unit": row.unit.trim(),
            })
        })
        .collect();
    json!({
        "rows": rows,
        "notes": report.notes,
        "raw": report.raw,
        "machine": machine,
        "run_seconds": seconds,
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .map(|text| kib_field(&text, "MemTotal:"))
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    json!({"cpu": cpu, "cores": cores, "memory_gib": memory_kib as f64 / 1048576.0})
}
