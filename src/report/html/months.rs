//! When the registry created the missing repositories: a column per month, in counts and in
//! bytes, each column with its figure where it fits; then every month as a table, `unknown`
//! included.

use chrono::{Datelike, NaiveDate};
use maud::{html, Markup};

use super::super::svg::{self, Bar, Chart, Scale};
use super::super::{units, Report};
use super::{bytes_cell, columns, count_cell, panel};
use crate::db::report::UNKNOWN_MONTH;

pub(super) fn months(report: &Report) -> Markup {
    let lead = html! {
        "By the month of the registry's " code { "created_at" } " (UTC): when the lost \
         repositories were first pushed, which dates the loss."
    };
    let known: Vec<(&str, i64, i64)> = report
        .by_month
        .iter()
        .filter(|m| m.month != UNKNOWN_MONTH)
        .map(|m| (m.month.as_str(), m.missing, m.missing_bytes))
        .collect();
    let axis = continuous_months(&known);
    let unknown = report.by_month.iter().find(|m| m.month == UNKNOWN_MONTH);
    let body = html! {
        @if axis.is_empty() {
            p { "No missing repository with a creation time recorded." }
        } @else {
            div.pair {
                (chart(&axis, "Missing repositories by month created", "count", Scale::Count))
                (chart(&axis, "Missing bytes by month created", "bytes", Scale::Bytes))
            }
        }
        @if let Some(unknown) = unknown {
            p.note {
                (units::grouped(unknown.missing)) " missing repositories ("
                (units::bytes(unknown.missing_bytes)) ") have no creation time from the \
                 registry: the row " em { "unknown" } " below, not on the charts."
            }
        }
        div class="scroll tall" {
            table {
                caption { "Missing repositories by month created" }
                (columns(&[
                    ("Month", false),
                    ("Missing", true),
                    ("Bytes", true),
                    ("Size unknown", true),
                ]))
                tbody {
                    @for (i, m) in report.by_month.iter().enumerate() {
                        @let at = |name: &str| format!("by_month.{i}.{name}");
                        tr {
                            th scope="row" data-field=(at("month")) data-value=(m.month) {
                                (m.month)
                            }
                            (count_cell(&at("missing"), m.missing))
                            (bytes_cell(&at("missing_bytes"), m.missing_bytes))
                            (count_cell(&at("missing_sizes_unknown"), m.missing_sizes_unknown))
                        }
                    }
                }
            }
        }
    };
    panel(
        "months",
        "When the registry created the missing repositories",
        lead,
        body,
    )
}

/// The columns of `axis` (from [`continuous_months`]) in counts or in bytes, under `title`.
fn chart(axis: &[(String, i64, i64)], title: &str, class: &str, scale: Scale) -> Markup {
    let description = format!(
        "From {} to {}, one column per month.",
        axis.first().map_or("", |m| m.0.as_str()),
        axis.last().map_or("", |m| m.0.as_str())
    );
    let bars: Vec<Bar> = axis
        .iter()
        .zip(month_ticks(axis))
        .map(|((month, n, b), tick)| {
            let (value, shown) = if scale == Scale::Bytes {
                (*b, units::bytes(*b))
            } else {
                (*n, units::grouped(*n))
            };
            Bar {
                label: month.clone(),
                value,
                shown,
                tick,
            }
        })
        .collect();
    let chart = Chart {
        title,
        description: &description,
        class,
    };
    html! {
        figure {
            figcaption { (title) }
            (svg::columns(&chart, &bars, scale))
        }
    }
}

/// `YYYY-MM` as the first day of that month.
fn month_start(month: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()
}

/// Every month from the first to the last of `months` (`YYYY-MM`, sorted), with its figures, 0
/// where none: the chart's axis runs in time, gaps included.
fn continuous_months(months: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    let dated: Vec<(NaiveDate, i64, i64)> = months
        .iter()
        .filter_map(|(m, n, b)| month_start(m).map(|d| (d, *n, *b)))
        .collect();
    let (Some(first), Some(last)) = (dated.first(), dated.last()) else {
        return Vec::new();
    };
    let index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
    let (from, to) = (index(first.0), index(last.0));
    (from..=to)
        .map(|i| {
            let (year, month) = (i.div_euclid(12), i.rem_euclid(12) + 1);
            let found = dated.iter().find(|(d, _, _)| index(*d) == i);
            (
                format!("{year:04}-{month:02}"),
                found.map_or(0, |f| f.1),
                found.map_or(0, |f| f.2),
            )
        })
        .collect()
}

/// The axis' labels under `axis`'s months: about eight at most, on round months (every quarter,
/// half year, or year, labelled by the year alone).
fn month_ticks(axis: &[(String, i64, i64)]) -> Vec<Option<String>> {
    let step: i64 = [1, 2, 3, 6, 12, 24, 60, 120, 240]
        .into_iter()
        .find(|step| (axis.len() as i64 + step - 1) / step <= 8)
        .unwrap_or(480);
    axis.iter()
        .map(|(month, _, _)| {
            let date = month_start(month)?;
            let index = i64::from(date.year()) * 12 + i64::from(date.month0());
            if index.rem_euclid(step) != 0 {
                None
            } else if step >= 12 {
                Some(date.year().to_string())
            } else {
                Some(month.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_run_continuously_through_gaps() {
        let axis = continuous_months(&[("2023-11", 3, 30), ("2024-02", 5, 50)]);
        let labels: Vec<&str> = axis.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(labels, vec!["2023-11", "2023-12", "2024-01", "2024-02"]);
        assert_eq!(axis[1].1, 0);
        assert_eq!(axis[3], ("2024-02".to_string(), 5, 50));
        assert!(continuous_months(&[]).is_empty());
        let ticks = month_ticks(&axis);
        assert_eq!(
            ticks.iter().flatten().count(),
            4,
            "few months: each labelled"
        );
        let long: Vec<(String, i64, i64)> = (0..40)
            .map(|i| {
                (
                    format!("{}-{:02}", 2020 + (i + 4) / 12, (i + 4) % 12 + 1),
                    1,
                    1,
                )
            })
            .collect();
        let ticks: Vec<String> = month_ticks(&long).into_iter().flatten().collect();
        assert_eq!(
            ticks,
            vec!["2020-07", "2021-01", "2021-07", "2022-01", "2022-07", "2023-01", "2023-07"]
        );
    }
}
