//! The errors a client can act on, and the one place they become a gRPC
//! status. Messages name fields and reasons; they never carry a pseudonym,
//! an identifier or a count of households.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use wijkradar_store::StoreError;

/// Most field violations reported for one request; the rest are summarised.
const MAX_VIOLATIONS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more fields are invalid; nothing of the request was stored.
    #[error("{}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// A size limit was exceeded; nothing of the request was stored.
    #[error("{}", describe(std::slice::from_ref(.0)))]
    TooLarge(Violation),
    #[error(
        "batch id `{0}` was already used for a batch with other content; choose a new batch id"
    )]
    BatchIdReused(String),
    /// A budget (of differential privacy) is spent: nothing more of it.
    #[error("{}", describe(std::slice::from_ref(.0)))]
    BudgetSpent(Violation),
    #[error("{0}")]
    PermissionDenied(String),
    /// A field names something the caller is not granted.
    #[error("{}", describe(std::slice::from_ref(.0)))]
    Forbidden(Violation),
    #[error("a client certificate from the aggregator's CA is required")]
    Unauthenticated,
    /// A certificate of the right CA that the access file does not grant
    /// (unknown, revoked, or without a usable identity).
    #[error(
        "this certificate is not authorised for this aggregator: its organisation is not in the access configuration, or the certificate was revoked"
    )]
    NotAuthorised,
    /// What the request names does not exist (or is not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The request was made against a state that has changed meanwhile.
    #[error("{0}")]
    Conflict(String),
    #[error("the store is unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// A field at fault: a path such as `batch.signals[3].buurt_code` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl ToString) -> Violation {
        Violation {
            field: field.into(),
            description: description.to_string(),
        }
    }
}

fn describe(vs: &[Violation]) -> String {
    let mut s = vs
        .iter()
        .take(3)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    if vs.len() > 3 {
        s.push_str(&format!("; and {} more in the details", vs.len() - 3));
    }
    s
}

fn bad_request(code: Code, message: String, violations: &[Violation]) -> Status {
    let fv: Vec<FieldViolation> = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
        .collect();
    Status::with_error_details(code, message, ErrorDetails::with_bad_request(fv))
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::InvalidArgument(vs) => bad_request(Code::InvalidArgument, message, &vs),
            ApiError::TooLarge(v) => {
                bad_request(Code::ResourceExhausted, message, std::slice::from_ref(&v))
            }
            ApiError::BudgetSpent(v) => {
                bad_request(Code::ResourceExhausted, message, std::slice::from_ref(&v))
            }
            ApiError::BatchIdReused(_) => Status::already_exists(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Forbidden(v) => {
                bad_request(Code::PermissionDenied, message, std::slice::from_ref(&v))
            }
            ApiError::Unauthenticated | ApiError::NotAuthorised => Status::unauthenticated(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::Conflict(_) => Status::failed_precondition(message),
            ApiError::Unavailable => Status::unavailable(message),
            ApiError::Internal => Status::internal(message),
        }
    }
}

impl ApiError {
    /// The kind of error, for summing refusals up: no field, no value.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::TooLarge(_) => "too_large",
            ApiError::BudgetSpent(_) => "budget_spent",
            ApiError::BatchIdReused(_) => "batch_id_reused",
            ApiError::PermissionDenied(_) | ApiError::Forbidden(_) => "permission_denied",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::NotAuthorised => "not_authorised",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::BatchConflict(id) => ApiError::BatchIdReused(id),
            StoreError::Unavailable => ApiError::Unavailable,
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::Internal
            }
        }
    }
}
