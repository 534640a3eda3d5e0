//! The HTML report's charts, as inline SVG templates: horizontal bars (namespaces), columns on an
//! axis (projects by how many they miss, repositories by month) and one stacked bar (the
//! analysis' progress). Each is an accessible image (`role="img"`, `aria-label`, `<title>`,
//! `<desc>`), scales with its container (a `viewBox`), and gives every bar a `<title>` with its
//! figure; the page puts a table with the same figures beside it. Colours and fonts come from the
//! page's stylesheet. The templates are maud's, which escapes every text and attribute it splices.

use maud::{html, Markup};

use super::units;

/// What a chart is, for people using a screen reader as much as for the others.
pub struct Chart<'a> {
    /// Its accessible name and `<title>`.
    pub title: &'a str,
    /// A sentence saying what it shows (`<desc>`).
    pub description: &'a str,
    /// The class of its bars (the stylesheet colours it).
    pub class: &'a str,
}

/// One bar.
pub struct Bar {
    pub label: String,
    pub value: i64,
    /// The value as people read it.
    pub shown: String,
    /// What the axis says under it, if anything ([`columns`] only).
    pub tick: Option<String>,
}

/// How values read on an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Count,
    Bytes,
}

impl Scale {
    fn format(self, value: i64) -> String {
        match self {
            Scale::Count => units::grouped(value),
            Scale::Bytes => units::bytes(value),
        }
    }

    /// The top of the axis: at least `max`, a round number (in binary units for bytes).
    fn ceiling(self, max: i64) -> i64 {
        let max = max.max(1);
        match self {
            Scale::Count => nice(max as f64, &[1.0, 2.0, 5.0, 10.0]) as i64,
            Scale::Bytes => {
                let mut unit = 1.0_f64;
                while max as f64 / (unit * 1024.0) >= 1.0 {
                    unit *= 1024.0;
                }
                (nice(max as f64 / unit, &[1.0, 2.0, 2.5, 5.0, 10.0]) * unit).min(i64::MAX as f64)
                    as i64
            }
        }
    }
}

/// The least `step × 10^k` at or above `value` (> 0).
fn nice(value: f64, steps: &[f64]) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    steps
        .iter()
        .map(|s| s * magnitude)
        .find(|candidate| *candidate >= value * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

const WIDTH: f64 = 480.0;

/// The `<svg>` of `chart`, `height` units tall, around `content`. `stretch`: shapes only, which
/// may stretch to any width at the stylesheet's height.
fn frame(chart: &Chart, height: f64, stretch: bool, content: Markup) -> Markup {
    html! {
        svg preserveAspectRatio=[stretch.then_some("none")] class={ "chart " (chart.class) }
            role="img" aria-label=(chart.title) viewBox={ "0 0 " (WIDTH) " " (height) }
            width=(WIDTH) height=(height) xmlns="http://www.w3.org/2000/svg" {
            title { (chart.title) }
            desc { (chart.description) }
            (content)
        }
    }
}

/// `label` cut to `max` characters, with an ellipsis where it was cut.
fn cut(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let mut cut: String = label.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Horizontal bars, one row each, longest for the largest value: each label above its bar (so
/// that it has the whole width, on a phone too), the figure at the bar's end.
pub fn bars(chart: &Chart, bars: &[Bar]) -> Markup {
    const ROW: f64 = 42.0;
    const FIGURE: f64 = 84.0;
    let height = (bars.len() as f64 * ROW).max(ROW) + 2.0;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
    let span = WIDTH - FIGURE;
    let rows = html! {
        @for (i, bar) in bars.iter().enumerate() {
            @let y = i as f64 * ROW;
            @let length =
                (bar.value.max(0) as f64 / max * span).max(if bar.value > 0 { 1.0 } else { 0.0 });
            g {
                title { (bar.label) ": " (bar.shown) }
                text.label x="0" y=(format_args!("{:.1}", y + 16.0)) { (cut(&bar.label, 48)) }
                rect.bar x="0" y=(format_args!("{:.1}", y + 23.0))
                    width=(format_args!("{length:.1}")) height="13" rx="2" {}
                text.figure x=(format_args!("{:.1}", length + 6.0))
                    y=(format_args!("{:.1}", y + 34.0)) { (bar.shown) }
            }
        }
    };
    frame(chart, height, false, rows)
}

/// About how wide a character of a figure is, in the chart's units, at the phone's larger type
/// too; and how tall a line of it is.
const CHAR_WIDTH: f64 = 8.5;
const LINE_HEIGHT: f64 = 15.0;

/// How a column's figure is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figures {
    /// Across, above each column: every figure fits its column's width.
    Across,
    /// Upwards, above the column or inside its top where there is no room above; on columns far
    /// enough apart for the lines not to touch, the largest first.
    Upwards,
}

/// Which columns carry their figure, and how: all of them across if every figure fits its
/// column's width; otherwise upwards, the largest first, each at least a line's height from the
/// next labelled one.
fn labelled(bars: &[Bar], slot: f64) -> (Figures, Vec<bool>) {
    let shown = |bar: &Bar| bar.value > 0;
    if bars
        .iter()
        .filter(|b| shown(b))
        .all(|b| slot >= b.shown.chars().count() as f64 * CHAR_WIDTH)
    {
        return (Figures::Across, bars.iter().map(shown).collect());
    }
    let gap = (LINE_HEIGHT / slot).ceil().max(1.0) as usize;
    let mut order: Vec<usize> = (0..bars.len()).filter(|i| shown(&bars[*i])).collect();
    order.sort_by_key(|i| (std::cmp::Reverse(bars[*i].value), *i));
    let mut labelled = vec![false; bars.len()];
    for i in order {
        let from = i.saturating_sub(gap - 1);
        let to = (i + gap).min(bars.len());
        if !labelled[from..to].iter().any(|l| *l) {
            labelled[i] = true;
        }
    }
    (Figures::Upwards, labelled)
}

/// The plot area of [`columns`], in the chart's units.
const COLUMNS_HEIGHT: f64 = 236.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 30.0;
const PLOT_HEIGHT: f64 = COLUMNS_HEIGHT - TOP - BOTTOM;
/// Where the columns stand.
const BASE: f64 = TOP + PLOT_HEIGHT;

/// Columns on a value axis (0, half way, top) with light grid lines; each bar's `tick` below the
/// axis; each column's figure above it, across where every figure fits its column, upwards
/// otherwise (see [`labelled`]).
pub fn columns(chart: &Chart, bars: &[Bar], scale: Scale) -> Markup {
    let top = scale.ceiling(bars.iter().map(|b| b.value).max().unwrap_or(0));
    let slot = (WIDTH - LEFT - RIGHT) / bars.len().max(1) as f64;
    let width = (slot * 0.72).max(1.0);
    let (figures, labelled) = labelled(bars, slot);
    let plot = html! {
        (value_axis(scale, top))
        @for (i, bar) in bars.iter().enumerate() {
            @let x = LEFT + i as f64 * slot + (slot - width) / 2.0;
            @let h = bar.value.max(0) as f64 / top as f64 * PLOT_HEIGHT;
            @let centre = x + width / 2.0;
            g {
                title { (bar.label) ": " (bar.shown) }
                rect.bar x=(format_args!("{x:.1}")) y=(format_args!("{:.1}", BASE - h))
                    width=(format_args!("{width:.1}")) height=(format_args!("{h:.1}")) rx="1.5" {}
                @if labelled[i] {
                    (column_figure(figures, &bar.shown, centre, h))
                }
            }
            @if let Some(tick) = &bar.tick {
                text.axis x=(format_args!("{centre:.1}")) y=(format_args!("{:.1}", BASE + 18.0))
                    text-anchor="middle" { (tick) }
            }
        }
        line.baseline x1=(LEFT) x2=(WIDTH - RIGHT) y1=(BASE) y2=(BASE) {}
    };
    frame(chart, COLUMNS_HEIGHT, false, plot)
}

/// The grid lines of [`columns`] at 0, half way (where round) and `top`, each labelled.
fn value_axis(scale: Scale, top: i64) -> Markup {
    let mut ticks = vec![0, top];
    if scale == Scale::Bytes || top % 2 == 0 {
        ticks.insert(1, top / 2);
    }
    html! {
        @for tick in ticks {
            @let y = BASE - tick as f64 / top as f64 * PLOT_HEIGHT;
            line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format_args!("{y:.1}"))
                y2=(format_args!("{y:.1}")) {}
            text.axis x=(LEFT - 6.0) y=(format_args!("{:.1}", y + 4.0)) text-anchor="end" {
                (scale.format(tick))
            }
        }
    }
}

/// The figure `shown` of a column `h` tall centred on `x`, written as [`labelled`] decided.
fn column_figure(figures: Figures, shown: &str, x: f64, h: f64) -> Markup {
    let above = BASE - h - 5.0;
    match figures {
        Figures::Across => html! {
            text.figure x=(format_args!("{x:.1}")) y=(format_args!("{above:.1}"))
                text-anchor="middle" { (shown) }
        },
        // Above the column if the line fits below the chart's top edge, else inside it, reading
        // down from its top (the axis' top is at least the tallest column, so one of the two
        // always has room).
        Figures::Upwards => {
            let length = shown.chars().count() as f64 * CHAR_WIDTH;
            let (y, anchor, class) = if above - length >= 2.0 || h < length + 10.0 {
                (above, "start", "figure")
            } else {
                (BASE - h + 5.0, "end", "figure inside")
            };
            html! {
                text class=(class) x=(format_args!("{x:.1}")) y=(format_args!("{y:.1}"))
                    text-anchor=(anchor) dominant-baseline="central"
                    transform=(format_args!("rotate(-90 {x:.1} {y:.1})")) { (shown) }
            }
        }
    }
}

/// One segment of a [`stacked`] bar.
pub struct Segment<'a> {
    pub label: &'a str,
    pub value: i64,
    /// Its class (the stylesheet colours it).
    pub class: &'a str,
}

/// One bar across the whole width, split in proportion to the segments' values.
pub fn stacked(chart: &Chart, segments: &[Segment]) -> Markup {
    const HEIGHT: f64 = 36.0;
    let total: i64 = segments.iter().map(|s| s.value.max(0)).sum();
    // Each drawn segment with its share and where it starts.
    let mut x = 0.0;
    let mut drawn = Vec::new();
    for segment in segments {
        if segment.value <= 0 || total == 0 {
            continue;
        }
        let share = segment.value as f64 / total as f64;
        drawn.push((segment, share, x));
        x += share * WIDTH;
    }
    let bar = html! {
        rect.track x="0" y="4" width=(WIDTH) height="28" {}
        @for (segment, share, x) in drawn {
            rect class=(segment.class) x=(format_args!("{x:.2}")) y="4"
                width=(format_args!("{:.2}", share * WIDTH)) height="28" {
                title {
                    (segment.label) ": " (units::grouped(segment.value)) " ("
                    (format_args!("{:.1}", share * 100.0)) "%)"
                }
            }
        }
    };
    frame(chart, HEIGHT, true, bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart<'static> {
        Chart {
            title: "Top <namespaces>",
            description: "Missing repositories & bytes",
            class: "count",
        }
    }

    fn bar(label: &str, value: i64) -> Bar {
        Bar {
            label: label.into(),
            value,
            shown: units::grouped(value),
            tick: Some(label.into()),
        }
    }

    #[test]
    fn a_chart_is_an_accessible_image_with_a_title_per_bar() {
        let svg = bars(&chart(), &[bar("Acme", 1200), bar("Quiet", 0)]).into_string();
        assert!(svg.starts_with(
            "<svg class=\"chart count\" role=\"img\" aria-label=\"Top &lt;namespaces&gt;\""
        ));
        assert!(svg.contains(
            "<title>Top &lt;namespaces&gt;</title><desc>Missing repositories &amp; bytes</desc>"
        ));
        assert!(svg.contains("<title>Acme: 1,200</title>"));
        assert!(svg.contains("<title>Quiet: 0</title>"));
        // The largest bar spans the bars' whole width; a zero draws nothing.
        assert!(svg.contains("width=\"396.0\""), "{svg}");
        assert!(svg.contains("width=\"0.0\""), "{svg}");
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn long_labels_are_cut_but_titled_in_full() {
        let long = "a-very-long-namespace-name-indeed-yes";
        let svg = bars(&chart(), &[bar(long, 1)]).into_string();
        assert!(svg.contains(&format!("<title>{long}: 1</title>")));
        assert!(
            svg.contains(">a-very-long-namespace-name-indeed-yes</text>"),
            "{svg}"
        );
        let longer = long.repeat(2);
        let svg = bars(&chart(), &[bar(&longer, 1)]).into_string();
        assert!(svg.contains(&format!("<title>{longer}: 1</title>")));
        assert!(
            svg.contains(">a-very-long-namespace-name-indeed-yesa-very-lon…</text>"),
            "{svg}"
        );
    }

    #[test]
    fn axes_end_at_round_numbers() {
        assert_eq!(Scale::Count.ceiling(0), 1);
        assert_eq!(Scale::Count.ceiling(7), 10);
        assert_eq!(Scale::Count.ceiling(1200), 2000);
        assert_eq!(Scale::Count.ceiling(5000), 5000);
        assert_eq!(Scale::Bytes.ceiling(3 << 30), 5 << 30);
        assert_eq!(Scale::Bytes.ceiling(1000), 1000);
        assert_eq!(Scale::Bytes.ceiling(1100), 2048);
        let svg = columns(
            &chart(),
            &[bar("2024-01", 3), bar("2024-02", 0)],
            Scale::Count,
        )
        .into_string();
        assert!(
            svg.contains(">5</text>") && svg.contains(">0</text>"),
            "{svg}"
        );
        assert!(svg.contains(">2024-02</text>"));
        assert!(svg.contains("<title>2024-01: 3</title>"));
        let mut untagged = bar("b", 1);
        untagged.tick = None;
        let sparse = columns(&chart(), &[bar("a", 1), untagged], Scale::Count).into_string();
        assert!(sparse.contains(">a</text>") && !sparse.contains(">b</text>"));
    }

    fn figures(svg: &str) -> Vec<&str> {
        svg.split("<text class=\"figure")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1)?.split('<').next())
            .collect()
    }

    #[test]
    fn columns_carry_their_figures_across_where_they_fit_and_upwards_where_not() {
        let bytes = |label: &str, value: i64| Bar {
            label: label.into(),
            value,
            shown: units::bytes(value),
            tick: None,
        };
        // Six wide columns: every figure across, above its column; none for a zero.
        let few = columns(
            &chart(),
            &[bar("a", 1200), bar("b", 0), bar("c", 3)],
            Scale::Count,
        )
        .into_string();
        assert_eq!(figures(&few), ["1,200", "3"]);
        assert!(!few.contains("rotate("));

        // Thirty-one months of bytes: no figure fits across, so they go upwards; those far
        // enough apart all carry theirs, the tallest inside its top, the short ones above.
        let mut months: Vec<Bar> = (0..31).map(|i| bytes(&format!("m{i}"), 0)).collect();
        months[0] = bytes("2023-01", 105_857_601);
        months[16] = bytes("2024-05", 3 << 30);
        months[30] = bytes("2025-07", 5 << 30);
        let svg = columns(&chart(), &months, Scale::Bytes).into_string();
        assert_eq!(figures(&svg), ["101 MiB", "3.00 GiB", "5.00 GiB"], "{svg}");
        assert_eq!(svg.matches("rotate(-90 ").count(), 3);
        assert_eq!(svg.matches("class=\"figure inside\"").count(), 1, "{svg}");

        // Neighbours too close for two lines: the larger keeps its figure.
        let mut crowded: Vec<Bar> = (0..60).map(|i| bytes(&format!("m{i}"), 0)).collect();
        crowded[10] = bytes("big", 5 << 30);
        crowded[11] = bytes("small", 1 << 20);
        crowded[40] = bytes("far", 2 << 20);
        let svg = columns(&chart(), &crowded, Scale::Bytes).into_string();
        assert_eq!(figures(&svg), ["5.00 GiB", "2.00 MiB"], "{svg}");
    }

    #[test]
    fn a_stacked_bar_splits_in_proportion() {
        let svg = stacked(
            &chart(),
            &[
                Segment {
                    label: "completed",
                    value: 3,
                    class: "completed",
                },
                Segment {
                    label: "failed",
                    value: 0,
                    class: "failed",
                },
                Segment {
                    label: "pending",
                    value: 1,
                    class: "pending",
                },
            ],
        )
        .into_string();
        assert!(svg.contains("class=\"completed\" x=\"0.00\" y=\"4\" width=\"360.00\""));
        assert!(svg.contains("class=\"pending\" x=\"360.00\" y=\"4\" width=\"120.00\""));
        assert!(!svg.contains("class=\"failed\""));
        assert!(svg.contains("<title>pending: 1 (25.0%)</title>"));
    }
}
