//! An error and its sources as one line of text. A leaf module: the
//! modules whose errors `error` wraps use it without importing `error`
//! back.

/// An error and its sources as one text: sentences follow each other, a
/// message that does not end a sentence is followed by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let sep = if msg.trim_end().ends_with(['.', '!', '?', ':']) {
            " "
        } else {
            ": "
        };
        msg = format!("{}{sep}{s}", msg.trim_end());
        src = s.source();
    }
    msg
}
