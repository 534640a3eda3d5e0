//! A progress bar on standard error while `run --until-done` or `demo` runs on a terminal:
//! done/total, rate and ETA from the Scheduler's status, redrawn four times a second.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::scheduler::{BreakerPosition, GetStatus, SchedulerAddr, ServiceStatus};

/// Draws until the Scheduler stops answering; returns at once when standard error is not a
/// terminal (logs and pipes get no bar).
pub fn spawn(scheduler: SchedulerAddr) -> Option<actix_rt::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(actix_rt::spawn(async move {
        while let Ok(status) = scheduler.send(GetStatus).await {
            eprint!("\r\x1b[2K{}", line(&status));
            let _ = std::io::stderr().flush();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }))
}

/// Ends the bar's line.
pub fn finish(handle: Option<actix_rt::task::JoinHandle<()>>) {
    if let Some(handle) = handle {
        handle.abort();
        eprintln!();
    }
}

/// `[########------------]  40.0%  1200/3000  350/s  ETA 5s`
pub fn line(s: &ServiceStatus) -> String {
    const WIDTH: usize = 30;
    let Some((done, total, _)) = s.progress() else {
        return format!(
            "{} done  {:.0}/s  (counting the projects left...)",
            s.analysed, s.rate_per_s
        );
    };
    let share = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((share * WIDTH as f64).round() as usize).min(WIDTH);
    let eta = s
        .eta_s
        .map(|e| format!("ETA {}", human(e)))
        .unwrap_or_default();
    format!(
        "[{}{}] {:5.1}%  {done}/{}{total}  {:.0}/s  {eta}{}{}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        share * 100.0,
        if s.remaining_estimated { "~" } else { "" },
        s.rate_per_s,
        if s.remaining_estimated {
            "  (left: estimated from the table statistics)"
        } else {
            ""
        },
        if s.breaker != BreakerPosition::Closed {
            "  (registry unavailable)"
        } else {
            ""
        }
    )
}

fn human(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(super::human(42.4), "42s");
        assert_eq!(super::human(125.0), "2m05s");
        assert_eq!(super::human(7322.0), "2h02m");
    }
}
