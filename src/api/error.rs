//! Errors as HTTP answers: a status and a JSON body
//! `{"error": {"code": ..., "message": ...}}`.

use serde_json::json;

use crate::scheduler::{QueueError, RequestError, StoreError, SubmitError};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Methods the route accepts (405 only).
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    /// 400: the request is malformed or names something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401: missing or wrong token.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "unauthorized",
            "missing or wrong token; send the header 'Authorization: Bearer TOKEN' with the server's \
             --token, or the secret in the file 'secret' of its data directory (taskdeck's command \
             line and Python client read it by themselves for a server on this machine)",
        )
    }

    /// 403: the server does not accept this from this client.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// 404: no such route or task.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 405: the route exists with other methods.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                405,
                "method_not_allowed",
                format!("this route accepts {allow}"),
            )
        }
    }

    /// 409: the task's state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 503: shutting down or too busy.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// 500: a fault on the server's side (the store failed).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::Invalid { .. } | SubmitError::Dependency { .. } => {
                Self::bad_request(error.to_string())
            }
            SubmitError::ShuttingDown | SubmitError::Unavailable(_) => {
                Self::unavailable(error.to_string())
            }
            SubmitError::Store(StoreError::Full { .. }) => {
                Self::new(507, "storage_full", error.to_string())
            }
            SubmitError::Store(StoreError::Unwritable(_)) => {
                Self::new(503, "storage_unavailable", error.to_string())
            }
            SubmitError::Store(_) => Self::internal(error.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Name(_) | QueueError::Limit => Self::bad_request(error.to_string()),
            QueueError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let message = format!("not stored: {error}");
        match error {
            StoreError::Full { .. } => Self::new(507, "storage_full", message),
            StoreError::Unwritable(_) | StoreError::Closed => {
                Self::new(503, "storage_unavailable", message)
            }
            _ => Self::internal(message),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::NotFound(_) => Self::not_found(error.to_string()),
            RequestError::AlreadyFinished { .. }
            | RequestError::NotRetryable { .. }
            | RequestError::Running(_)
            | RequestError::NotWaiting { .. }
            | RequestError::NotRunning { .. }
            | RequestError::DependencyFailed { .. } => Self::conflict(error.to_string()),
            RequestError::ShuttingDown => Self::unavailable(error.to_string()),
        }
    }
}
