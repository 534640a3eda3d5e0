//! Error text for people: an error and every cause under it, on one line.

use std::error::Error;

/// `error: cause: cause ...`, skipping a cause whose text the previous one already ends with.
pub fn chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
