//! One line for an error and its causes, each said once.
//!
//! Many errors carry their cause in their own text ("cannot read X: Read-only
//! file system (os error 30)") and also return it from `source()`, and a
//! caller's context often names the file the cause names again. Printing
//! the chain as anyhow's `{:#}` does repeats both. [`error_chain`] joins
//! the chain with ": " but leaves out a cause whose text is already in the
//! line, and a leading "X: " of a cause when the line already ends in X.

use std::error::Error;

/// `e` and its `source()` chain as one line, nothing said twice.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        append(&mut out, &cause.to_string());
        next = cause.source();
    }
    out
}

fn append(out: &mut String, msg: &str) {
    let msg = msg.trim();
    if msg.is_empty() || out.contains(msg) {
        return;
    }
    // "writing a/b" + "a/b: Read-only file system" -> "writing a/b: Read-only
    // file system": drop the longest "X: " prefix of `msg` that `out` ends in.
    let rest = msg
        .match_indices(": ")
        .filter(|(i, _)| out.ends_with(&msg[..*i]))
        .map(|(i, sep)| &msg[i + sep.len()..])
        .last()
        .unwrap_or(msg);
    if rest.is_empty() || out.contains(rest) {
        return;
    }
    out.push_str(": ");
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(String, Option<Box<dyn Error + 'static>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn each_part_once() {
        let os = std::io::Error::from_raw_os_error(30);
        let os_text = os.to_string();
        let inner = E(format!("ro/o.st: {os_text}"), Some(Box::new(os)));
        let outer = E("writing ro/o.st".into(), Some(Box::new(inner)));
        let line = error_chain(&outer);
        assert_eq!(line, format!("writing ro/o.st: {os_text}"));
        assert_eq!(line.matches("os error 30").count(), 1, "{line}");

        // Causes not said yet are kept, in order.
        let c = E("c".into(), None);
        let b = E("b".into(), Some(Box::new(c)));
        let a = E("a".into(), Some(Box::new(b)));
        assert_eq!(error_chain(&a), "a: b: c");
    }
}
