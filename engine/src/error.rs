//! Errors where I/O happens: a [`ComponentError`] says whose fault it is
//! ([`Fault`]) and whether trying again can help, so a writer retries only
//! what can succeed (a database that is restarting, a 429) and reports the
//! rest with its cause (a permission denied, a 400, a value the schema
//! refuses) instead of retrying it forever.

use std::error::Error as StdError;
use std::fmt;
use std::io::ErrorKind;

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The pipeline's configuration: a wrong address, credentials, a path
    /// that cannot be written. Fixed by changing the pipeline.
    Config,
    /// The external system: down, overloaded, refusing for its own reasons.
    External,
    /// Tidemark's own: a bug, or data it produced that the system refuses.
    Internal,
}

impl Fault {
    /// The word used in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Config => "configuration",
            Fault::External => "external",
            Fault::Internal => "internal",
        }
    }
}

/// An error of a source, sink or notifier talking to the outside world.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ComponentError {
    /// Whose fault it is.
    pub fault: Fault,
    /// Whether the same request can succeed later (with backoff).
    pub retryable: bool,
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ComponentError {
    /// An error that may heal by itself: retry with backoff.
    pub fn transient(fault: Fault, message: impl Into<String>) -> ComponentError {
        ComponentError {
            fault,
            retryable: true,
            message: message.into(),
            source: None,
        }
    }

    /// An error that no retry can mend.
    pub fn permanent(fault: Fault, message: impl Into<String>) -> ComponentError {
        ComponentError {
            fault,
            retryable: false,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error, shown after the message.
    pub fn caused_by(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// An I/O error, classified by its kind: what a retry cannot change
    /// (permission denied, a file where a directory should be, an invalid
    /// argument such as fsync on a device, a read-only file system) is
    /// permanent and the configuration's fault; the rest is transient.
    pub fn io(message: impl Into<String>, error: std::io::Error) -> ComponentError {
        let permanent = matches!(
            error.kind(),
            ErrorKind::PermissionDenied
                | ErrorKind::AlreadyExists
                | ErrorKind::InvalidInput
                | ErrorKind::NotFound
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::IsADirectory
                | ErrorKind::NotADirectory
                | ErrorKind::Unsupported
                | ErrorKind::InvalidFilename
        );
        let error_for = if permanent {
            ComponentError::permanent(Fault::Config, message)
        } else {
            ComponentError::transient(Fault::External, message)
        };
        error_for.caused_by(error)
    }

    /// An HTTP status from an external API: 408, 425, 429 and 5xx may
    /// heal; other 4xx are the request's or the configuration's fault
    /// (401, 403 and 404 the configuration's) and are never retried.
    pub fn http_status(status: u16, message: impl Into<String>) -> ComponentError {
        match status {
            408 | 425 | 429 | 500..=599 => ComponentError::transient(Fault::External, message),
            401 | 403 | 404 => ComponentError::permanent(Fault::Config, message),
            _ => ComponentError::permanent(Fault::Internal, message),
        }
    }

    /// The message followed by each cause, once: `cannot connect: error
    /// performing TLS handshake: certificate verify failed`. Causes whose
    /// text their wrapper already shows are skipped.
    pub fn chain(&self) -> String {
        let mut text = self.message.clone();
        let mut cause: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(e) = cause {
            let part = e.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            cause = e.source();
        }
        text
    }
}

/// Turns any error into a transient external one (the default for a
/// system's client errors that say nothing more precise).
impl From<Box<dyn StdError + Send + Sync>> for ComponentError {
    fn from(error: Box<dyn StdError + Send + Sync>) -> ComponentError {
        let message = error.to_string();
        ComponentError::transient(Fault::External, message).caused_by(error)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_kind() {
        let einval = std::io::Error::from_raw_os_error(22);
        let e = ComponentError::io("cannot flush out.jsonl", einval);
        assert!(!e.retryable);
        assert_eq!(e.fault, Fault::Config);
        assert!(
            e.chain()
                .starts_with("cannot flush out.jsonl: Invalid argument")
        );
        let reset = std::io::Error::from(ErrorKind::ConnectionReset);
        let e = ComponentError::io("cannot write", reset);
        assert!(e.retryable);
        assert_eq!(e.fault, Fault::External);
    }

    #[test]
    fn http_statuses_back_off_only_where_waiting_helps() {
        for (status, retryable, fault) in [
            (429, true, Fault::External),
            (503, true, Fault::External),
            (400, false, Fault::Internal),
            (403, false, Fault::Config),
        ] {
            let e = ComponentError::http_status(status, format!("status {status}"));
            assert_eq!((e.retryable, e.fault), (retryable, fault), "{status}");
        }
    }

    #[test]
    fn causes_are_shown_once() {
        #[derive(Debug)]
        struct Handshake(std::io::Error);
        impl fmt::Display for Handshake {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error performing TLS handshake")
            }
        }
        impl StdError for Handshake {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = ComponentError::transient(Fault::External, "cannot connect").caused_by(Handshake(
            std::io::Error::other("certificate verify failed"),
        ));
        assert_eq!(
            e.chain(),
            "cannot connect: error performing TLS handshake: certificate verify failed"
        );
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(std::io::Error::other("x"));
        assert_eq!(ComponentError::from(boxed).chain(), "x");
    }
}
