//! `status`, `concurrency N`, `pause` and `resume`: calls to a running service's admin API (found
//! at `admin.listen`, with `admin.token`), each a message to its Scheduler.

use super::current_thread_runtime;
use crate::admin::AdminClient;
use crate::config::Settings;
use crate::db::fleet::FleetStatus;
use crate::scheduler::ServiceStatus;
use crate::work::WorkName;

/// `status`: the service's state, as lines or (`json`) the API's JSON.
pub fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    control(settings, |client| async move {
        let status = client.status().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_status(&status);
        }
        Ok(())
    })
}

/// `concurrency N`: at most `n` projects in flight from now on (0 pauses).
pub fn concurrency(settings: &Settings, n: u32) -> anyhow::Result<()> {
    control(settings, |client| async move {
        let status = client.set_concurrency(i64::from(n)).await?;
        println!(
            "max_concurrency is now {} ({} in flight{}{})",
            status.max_concurrency,
            status.in_flight,
            if status.share.is_some() {
                "; the fleet's total: every member takes it within a heartbeat or two"
            } else {
                ""
            },
            if n == 0 { "; 0 pauses new work" } else { "" }
        );
        Ok(())
    })
}

/// `pause` (`enabled` false) and `resume` (true): the feature flag.
pub fn set_enabled(settings: &Settings, enabled: bool) -> anyhow::Result<()> {
    control(settings, |client| async move {
        let status = client.set_enabled(enabled).await?;
        if enabled {
            println!(
                "resumed: dispatching up to {} projects at once",
                status.max_concurrency
            );
        } else {
            println!(
                "paused: no new project is dispatched; {} in flight will finish and be recorded",
                status.in_flight
            );
        }
        Ok(())
    })
}

fn control<F, Fut>(settings: &Settings, call: F) -> anyhow::Result<()>
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = AdminClient::new(settings.admin.listen, settings.admin.token.clone());
    current_thread_runtime()?.block_on(call(client))
}

fn print_status(s: &ServiceStatus) {
    println!("state            {}", s.state);
    println!("work             {}", s.work);
    println!("enabled          {}", s.enabled);
    println!("max_concurrency  {}", s.max_concurrency);
    println!("in flight        {}", s.in_flight);
    println!("queued           {}", s.queued);
    match s.work {
        WorkName::Analysis => {
            println!(
                "analysed         {} ({} completed, {} failed) in {:.0} s",
                s.analysed, s.completed, s.failed, s.uptime_s
            );
            println!(
                "missing found    {} ({} by the registry's sizes, {} sizes unknown)",
                s.missing_found,
                crate::report::units::bytes(
                    i64::try_from(s.missing_bytes_found).unwrap_or(i64::MAX)
                ),
                s.sizes_unknown
            );
        }
        // A repair's projects are planned (and for an apply, handed to the Writer to write).
        WorkName::RepairPlan | WorkName::RepairApply { .. } => {
            let done = match s.work {
                WorkName::RepairPlan => "planned",
                _ => "planned for writing",
            };
            println!(
                "projects         {} {done}, {} not planned, in {:.0} s",
                s.completed, s.failed, s.uptime_s
            );
            println!(
                "repositories     {} without a row in their plans",
                s.missing_found
            );
        }
    }
    println!("rate             {:.1} projects/s", s.rate_per_s);
    println!("progress         {}", crate::progress::line(s));
    println!("deferred         {}", s.deferred);
    if s.handed_back > 0 {
        println!("handed back      {} (no heartbeat confirmed this member in time: its requests were cancelled)", s.handed_back);
    }
    println!("ignored entries  {}", s.ignored_entries);
    println!("unaddressable    {}", s.unaddressable);
    println!("breaker          {} ({} trips)", s.breaker, s.breaker_trips);
    println!("analyzer restarts {}", s.analyzer_restarts);
    if let Some(error) = &s.last_error {
        println!("last error       {error}");
    }
    if let Some(fleet) = &s.fleet {
        print_fleet(fleet);
    }
}

/// The fleet as this member last read it: one line per member, live ones first as shares go.
fn print_fleet(fleet: &FleetStatus) {
    println!(
        "fleet            {} live, shares {} of {}, {} in flight",
        fleet.live, fleet.shares, fleet.total, fleet.in_flight
    );
    let repairing: Vec<_> = fleet
        .members
        .iter()
        .filter(|m| m.live && m.work != crate::db::fleet::ANALYSIS)
        .collect();
    for m in &repairing {
        println!(
            "repair           {} under way on {} (pid {}): {} in flight of a share of {}",
            m.work, m.host, m.pid, m.in_flight, m.share
        );
    }
    if let Some(holder) = &fleet.repair {
        println!("repair lease     held by {holder}");
    }
    println!(
        "  {:<40} {:>5} {:>9} {:>9} {:>9}  {:<8} state",
        "member", "share", "in flight", "done", "heartbeat", "shard"
    );
    for m in &fleet.members {
        let me = if m.id == fleet.me { " (this one)" } else { "" };
        let heartbeat = match m.live {
            true => format!("{:.1} s", m.heartbeat_age_s),
            false => format!("dead {:.0} s", m.heartbeat_age_s),
        };
        let work = match m.work.as_str() {
            crate::db::fleet::ANALYSIS => String::new(),
            work => format!(" [{work}]"),
        };
        println!(
            "  {:<40} {:>5} {:>9} {:>9} {:>9}  {:<8} {}{work}{me}",
            m.id, m.share, m.in_flight, m.analysed, heartbeat, m.shard, m.state
        );
    }
}
