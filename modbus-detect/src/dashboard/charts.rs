//! The overview charts as SVG, drawn here once for every place that shows
//! them: the dashboard (served and static) and `--plots-dir`. Plain SVG
//! with presentation attributes only (no `style`, no script), so that the
//! dashboard's Content-Security-Policy needs no exception for them, and
//! every label escaped: type names are ours, but addresses and file names
//! come from the traffic and the command line.

use std::fmt::Write as _;

/// One slice, bar or lane: a label, a value and its colour.
#[derive(Debug, Clone)]
pub struct Item {
    pub label: String,
    pub value: u64,
    pub color: &'static str,
}

/// One alert entry on the timeline.
pub struct Span {
    pub lane: usize,
    pub first: f64,
    pub last: f64,
    pub count: u64,
    pub color: &'static str,
}

/// Colours: by severity, and for traffic that raised nothing.
pub fn severity_color(severity: &str) -> &'static str {
    match severity {
        "CRITICAL" => "#b00020",
        "HIGH" => "#e65100",
        "MEDIUM" => "#c49000",
        "LOW" => "#1565c0",
        _ => "#607d8b",
    }
}
pub const NORMAL_COLOR: &str = "#2e7d32";

const FONT: &str = "font-family=\"sans-serif\" font-size=\"12\"";

/// Text for SVG and HTML: markup characters as entities, control
/// characters as visible `\u{..}` escapes (a terminal escape sequence in a
/// device name is shown, not passed on).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn open(svg: &mut String, w: u32, h: u32, title: &str) {
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title><rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/><text x=\"8\" y=\"18\" {FONT} font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
}

/// A donut of `items` with a legend of counts and shares.
pub fn donut(title: &str, items: &[Item]) -> String {
    let rows = items.len().max(1) as u32;
    let h = (rows * 18 + 40).max(200);
    let mut svg = String::new();
    open(&mut svg, 520, h, title);
    let total: u64 = items.iter().map(|i| i.value).sum();
    let (cx, cy, r) = (100.0_f64, 110.0_f64, 70.0_f64);
    if total == 0 {
        let _ = write!(
            svg,
            "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"{r}\" fill=\"none\" stroke=\"#cfd8dc\" stroke-width=\"28\"/><text x=\"{cx}\" y=\"{cy}\" text-anchor=\"middle\" {FONT}>nothing</text>"
        );
    }
    let mut start = -std::f64::consts::FRAC_PI_2;
    for item in items.iter().filter(|i| i.value > 0) {
        let share = item.value as f64 / total as f64;
        if share >= 0.999_999 {
            let _ = write!(
                svg,
                "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"{r}\" fill=\"none\" stroke=\"{}\" stroke-width=\"28\"/>",
                item.color
            );
            continue;
        }
        let end = start + share * std::f64::consts::TAU;
        let (x0, y0) = (cx + r * start.cos(), cy + r * start.sin());
        let (x1, y1) = (cx + r * end.cos(), cy + r * end.sin());
        let large = u8::from(share > 0.5);
        let _ = write!(
            svg,
            "<path d=\"M {x0:.2} {y0:.2} A {r} {r} 0 {large} 1 {x1:.2} {y1:.2}\" fill=\"none\" stroke=\"{}\" stroke-width=\"28\"><title>{}: {}</title></path>",
            item.color,
            esc(&item.label),
            item.value
        );
        start = end;
    }
    let _ = write!(
        svg,
        "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" {FONT} font-weight=\"bold\">{total}</text>",
        cy + 4.0
    );
    for (i, item) in items.iter().enumerate() {
        let y = 40 + i as u32 * 18;
        let pct = if total == 0 {
            0.0
        } else {
            100.0 * item.value as f64 / total as f64
        };
        let _ = write!(
            svg,
            "<rect x=\"200\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"218\" y=\"{}\" {FONT}>{} — {} ({pct:.1} %)</text>",
            y,
            item.color,
            y + 10,
            esc(&item.label),
            item.value
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, longest first as given.
pub fn bars(title: &str, items: &[Item]) -> String {
    let rows = items.len().max(1) as u32;
    let h = rows * 22 + 36;
    let mut svg = String::new();
    open(&mut svg, 640, h, title);
    if items.is_empty() {
        let _ = write!(svg, "<text x=\"8\" y=\"44\" {FONT}>none</text>");
    }
    let max = items.iter().map(|i| i.value).max().unwrap_or(0).max(1);
    for (i, item) in items.iter().enumerate() {
        let y = 28 + i as u32 * 22;
        let w = (item.value as f64 / max as f64 * 300.0).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"240\" y=\"{}\" text-anchor=\"end\" {FONT}>{}</text><rect x=\"248\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"{}\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{}\" {FONT}>{}</text>",
            y + 12,
            esc(&item.label),
            item.color,
            esc(&item.label),
            item.value,
            252.0 + w,
            y + 12,
            item.value
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Alert entries over capture time: one lane per type, each entry a bar
/// from its first to its last event, labelled with its count.
pub fn timeline(title: &str, lanes: &[String], spans: &[Span]) -> String {
    let rows = lanes.len().max(1) as u32;
    let h = rows * 22 + 64;
    let (x0, x1) = (250.0_f64, 620.0_f64);
    let mut svg = String::new();
    open(&mut svg, 640, h, title);
    let first = spans.iter().map(|s| s.first).fold(f64::INFINITY, f64::min);
    let last = spans
        .iter()
        .map(|s| s.last)
        .fold(f64::NEG_INFINITY, f64::max);
    if spans.is_empty() || !first.is_finite() || !last.is_finite() {
        let _ = write!(svg, "<text x=\"8\" y=\"44\" {FONT}>no alerts</text></svg>");
        return svg;
    }
    let width = (last - first).max(1e-3);
    let x = |t: f64| x0 + (t - first) / width * (x1 - x0);
    for (i, lane) in lanes.iter().enumerate() {
        let y = 28 + i as u32 * 22;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" {FONT}>{}</text><line x1=\"{x0}\" y1=\"{}\" x2=\"{x1}\" y2=\"{}\" stroke=\"#eceff1\"/>",
            x0 - 8.0,
            y + 12,
            esc(lane),
            y + 8,
            y + 8
        );
    }
    // Per lane, the pixel columns some entry covers, with its events and
    // colour (the most severe): a run of columns is one bar, so the chart
    // stays small however many entries there are.
    let columns = (x1 - x0) as usize + 1;
    let mut cells: Vec<Vec<(u64, &'static str)>> = vec![vec![(0, ""); columns]; lanes.len()];
    for s in spans {
        let Some(lane) = cells.get_mut(s.lane) else {
            continue;
        };
        let (a, b) = ((x(s.first) - x0) as usize, (x(s.last) - x0) as usize);
        for c in lane
            .iter_mut()
            .take(b.min(columns - 1) + 1)
            .skip(a.min(columns - 1))
        {
            c.0 += s.count;
            if c.1.is_empty() || severity_rank(s.color) < severity_rank(c.1) {
                c.1 = s.color;
            }
        }
    }
    for (lane, cols) in cells.iter().enumerate() {
        let y = 28 + lane as u32 * 22;
        let mut c = 0;
        while c < columns {
            if cols[c].0 == 0 {
                c += 1;
                continue;
            }
            let (start, color) = (c, cols[c].1);
            let mut events = 0;
            while c < columns && cols[c].0 > 0 && cols[c].1 == color {
                events = events.max(cols[c].0);
                c += 1;
            }
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{}\" height=\"16\" rx=\"2\" fill=\"{color}\" fill-opacity=\"0.8\"><title>up to {events} events</title></rect>",
                x0 + start as f64 - 1.0,
                c - start + 2,
            );
        }
    }
    let axis = 28 + rows * 22 + 14;
    for (t, anchor) in [(first, "start"), (last, "end")] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{axis}\" text-anchor=\"{anchor}\" {FONT}>{}</text>",
            x(t),
            clock(t)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Severity colours, most severe first (a cell shows its worst).
fn severity_rank(color: &str) -> usize {
    ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
        .iter()
        .position(|s| severity_color(s) == color)
        .unwrap_or(4)
}

/// `HH:MM:SS` UTC of an epoch time.
fn clock(epoch: f64) -> String {
    let s = epoch.max(0.0) as u64 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_control_characters_shown() {
        let items = [Item {
            label: "<script>alert(1)</script>\"'&\u{1b}[2J".into(),
            value: 3,
            color: NORMAL_COLOR,
        }];
        for svg in [donut("t", &items), bars("t", &items)] {
            assert!(!svg.contains("<script"), "{svg}");
            assert!(!svg.contains('\u{1b}'), "{svg}");
            assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;\\u{1b}[2J"));
        }
    }

    #[test]
    fn a_timeline_of_many_entries_stays_small() {
        let lanes = vec!["A".to_string(), "B".to_string()];
        let spans: Vec<Span> = (0..100_000)
            .map(|i| Span {
                lane: i % 2,
                first: 1000.0 + (i as f64) * 0.01,
                last: 1000.0 + (i as f64) * 0.01 + 0.5,
                count: 1,
                color: severity_color(if i % 2 == 0 { "HIGH" } else { "LOW" }),
            })
            .collect();
        let svg = timeline("t", &lanes, &spans);
        assert!(svg.len() < 20_000, "{} bytes", svg.len());
        assert_eq!(
            svg.matches("<rect x=").count(),
            2,
            "one run per lane: {svg}"
        );
    }

    #[test]
    fn a_donut_s_slices_add_up() {
        let items = [
            Item {
                label: "a".into(),
                value: 1,
                color: NORMAL_COLOR,
            },
            Item {
                label: "b".into(),
                value: 3,
                color: "#000000",
            },
        ];
        let svg = donut("t", &items);
        assert!(svg.contains("a — 1 (25.0 %)"), "{svg}");
        assert!(svg.contains("b — 3 (75.0 %)"), "{svg}");
        assert_eq!(svg.matches("<path").count(), 2);
    }
}
