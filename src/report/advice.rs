//! What to do about a failed project, by the cause recorded with it: the report's formats show it
//! per cause, and `report --repositories --project` for a failed project. `run --retry-failed`
//! mends only what has changed since; where nothing can have (a project without a route), the
//! advice says so.

use crate::db::failures::FailureCause;

/// The advice for a failed project whose recorded cause is the word `cause`; `None`: no cause
/// was recorded.
pub fn for_cause(cause: Option<&str>) -> &'static str {
    let Some(word) = cause else {
        return "reason not recorded (GitLab's own worker or an earlier release): \
                `run --retry-failed` analyses it again, and records why if it fails again";
    };
    match FailureCause::parse(word) {
        Some(FailureCause::NoRoute) => {
            "the project has no route in GitLab's database: an orphaned or half-deleted project; \
             check it in GitLab (its projects and routes rows); `run --retry-failed` cannot help \
             until it has a route"
        }
        Some(FailureCause::TooManyPages) => {
            "its listing has more pages than registry.max_pages: raise registry.max_pages, then \
             `run --retry-failed`"
        }
        Some(FailureCause::RegistryRefusedPath) => {
            "the registry refuses this path itself (a 4xx of its own: 400, NAME_INVALID): check \
             the path in the registry; `run --retry-failed` once it accepts it"
        }
        Some(FailureCause::HostileAnswer) => {
            "the registry listed a repository path its own name grammar forbids: check the \
             registry's metadata database for that path; `run --retry-failed` once it is mended"
        }
        Some(FailureCause::Troubled) => {
            "the registry answered this path with 5xx, timeouts or broken answers while it served \
             others: look in the registry's logs for the path; `run --retry-failed` once it is \
             mended"
        }
        Some(FailureCause::Refused) => {
            "the registry refused this path (401, 403, 429, a redirect) while it served others: \
             look in the registry's logs for the path; `run --retry-failed` once it is mended"
        }
        Some(FailureCause::Crashed) => {
            "its analysis panicked: report a bug (with the log lines naming the project), then \
             `run --retry-failed`"
        }
        None => {
            "a cause this release does not know (a later release's): read the reason; \
             `run --retry-failed` once it is mended"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrying_is_advised_except_where_it_cannot_help() {
        for cause in FailureCause::ALL {
            let advice = for_cause(Some(cause.as_str()));
            assert!(advice.contains("--retry-failed"), "{cause}: {advice}");
        }
        assert!(for_cause(Some("no_route")).contains("cannot help until it has a route"));
        assert!(for_cause(Some("too_many_pages")).contains("raise registry.max_pages"));
        assert!(for_cause(Some("crashed")).contains("report a bug"));
        assert!(for_cause(None).starts_with("reason not recorded (GitLab's own worker"));
        assert!(for_cause(Some("later")).contains("does not know"));
    }
}
