//! Turning an error and the chain of its causes into one message that shows each cause
//! once, for every front end (the CLI's last line, the HTTP API's error bodies).
use std::error::Error;

/// `err` and its causes, joined by ": ", leaving out a cause whose text the message already
/// holds (an error whose message quotes its source and also exposes it as `source()`).
pub fn message(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Leaf {
        #[error("No such file or directory (os error 2)")]
        Missing,
    }

    #[derive(Debug, thiserror::Error)]
    enum Quoting {
        #[error("cannot back up /x: {source}")]
        Path { source: Leaf },
    }

    #[derive(Debug, thiserror::Error)]
    enum Silent {
        #[error("backup failed")]
        Backup(#[source] Quoting),
    }

    #[test]
    fn each_cause_is_shown_once() {
        let quoting = Quoting::Path {
            source: Leaf::Missing,
        };
        assert_eq!(
            message(&quoting),
            "cannot back up /x: No such file or directory (os error 2)"
        );
        let silent = Silent::Backup(quoting);
        assert_eq!(
            message(&silent),
            "backup failed: cannot back up /x: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn anyhow_contexts_are_kept() {
        let e = anyhow::Error::new(Leaf::Missing).context("reading /etc/strata.conf");
        assert_eq!(
            message(e.as_ref()),
            "reading /etc/strata.conf: No such file or directory (os error 2)"
        );
    }
}
