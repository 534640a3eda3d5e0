//! `run`: the service. It analyses every project without a tracking row, keeps looking for new
//! ones, serves the admin API, and stops on SIGTERM or SIGINT (or, with `--until-done`, once every
//! project has a row).

use anyhow::{anyhow, Context as _};

use crate::analysis::Analysis;
use crate::config::Settings;
use crate::registry::TokenSigner;
use crate::scheduler::RunEnd;
use crate::service::{self, ServiceOptions};
use crate::signals::Signals;

pub fn execute(settings: Settings, analysis: Analysis) -> anyhow::Result<()> {
    let signer = TokenSigner::from_settings(&settings)?;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let until_done = analysis.until_done;
        // Listen before anything starts, so that no signal finds its default (killing) action.
        let mut signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
        let service = tokio::select! {
            started = service::start(&settings, signer, analysis, ServiceOptions::default()) => {
                started.context("starting the service")?
            }
            name = signals.next() => {
                tracing::info!(signal = name, "signal received while starting; nothing to stop");
                return Ok(());
            }
        };
        // Said once, at start: behind a pooler the service runs slower on purpose.
        if let Some(mode) = &service.statement_mode {
            tracing::info!(database = %settings.database.url, "{mode}");
        }
        let scheduler = service.scheduler.clone();
        let bar = until_done.then(|| crate::progress::spawn(scheduler.clone())).flatten();
        signals.forward_to(scheduler);
        let end = service.wait().await;
        crate::progress::finish(bar);
        match end {
            RunEnd::Done => {
                tracing::info!("every project has a row; done");
                Ok(())
            }
            RunEnd::Stopped => {
                tracing::info!("stopped");
                Ok(())
            }
            RunEnd::RegistryWithoutApi(message) => Err(anyhow!(message)),
            RunEnd::LostMembership => Err(anyhow!(
                "stopped: this instance could not reach the database for longer than fleet.member_timeout_ms, and the other members of the fleet took over its work; start it again"
            )),
            RunEnd::Refused(refused) => Err(anyhow!(refused)),
            RunEnd::FlushFailed(reason) => Err(anyhow!(
                "stopped, but the last results could not be written ({reason}); their projects will be analysed again on the next start"
            )),
        }
    })
}
