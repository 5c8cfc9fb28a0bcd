//! The one error type of the domain, and the one place that maps it to an HTTP status and a
//! stable `code`. Database detail never reaches a client: 5xx answers carry a generic message.

use crate::domain::ids::ProductId;
use crate::server_errors::{self, Handling};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("missing or invalid webhook signature: {0}")]
    InvalidSignature(&'static str),
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("product {0} not found")]
    ProductNotFound(ProductId),
    #[error("hold not found")]
    HoldNotFound,
    #[error("order not found")]
    OrderNotFound,
    #[error("not enough stock: requested {requested}, available {available}")]
    InsufficientStock { requested: u32, available: i64 },
    #[error("hold has expired")]
    HoldExpired,
    #[error("the sale has not started yet: it starts in {starts_in_seconds} s")]
    SaleNotStarted { starts_in_seconds: u64 },
    #[error("the sale has ended")]
    SaleEnded,
    #[error("at most {limit} units of this product per buyer: {held} held or bought already")]
    BuyerLimitReached { limit: u32, held: i64 },
    #[error("the hold was redeemed into an order")]
    HoldRedeemed,
    #[error("the hold was released")]
    HoldReleased,
    #[error("product {0} has no waiting room")]
    NoWaitingRoom(ProductId),
    #[error("not in this product's queue: join it first")]
    NotInQueue,
    #[error("the product is sold out")]
    SoldOut,
    #[error("this product has a waiting room: send the Admission-Token it gave you")]
    AdmissionRequired,
    #[error("the Admission-Token is not valid for this buyer and product, or its admission ended")]
    AdmissionInvalid,
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("payment queue unavailable: {0}")]
    QueueUnavailable(String),
    #[error("the request ran past its {0:?} deadline")]
    DeadlineExceeded(std::time::Duration),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// One failure answered to several requests: the readers that waited for one product read
    /// (`store::product_reads`). It answers as the failure itself.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Self::Shared(err) => err.status(),
            Self::MalformedJson(_) | Self::InvalidRequest(_) => 400,
            Self::Unauthorized | Self::InvalidSignature(_) => 401,
            Self::AdmissionRequired | Self::AdmissionInvalid => 403,
            Self::RouteNotFound { .. }
            | Self::NotInQueue
            | Self::ProductNotFound(_)
            | Self::HoldNotFound
            | Self::OrderNotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::InsufficientStock { .. }
            | Self::SaleNotStarted { .. }
            | Self::SaleEnded
            | Self::BuyerLimitReached { .. }
            | Self::HoldRedeemed
            | Self::HoldReleased
            | Self::NoWaitingRoom(_)
            | Self::SoldOut => 409,
            Self::HoldExpired => 410,
            Self::PayloadTooLarge { .. } => 413,
            Self::IdempotencyKeyReused => 422,
            Self::QueueUnavailable(_) | Self::DeadlineExceeded(_) => 503,
            Self::Database(err) if is_transient(err) => 503,
            Self::Config(_) | Self::Internal(_) | Self::Database(_) | Self::Migrate(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Shared(err) => err.code(),
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidRequest(_) => "invalid_request",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unauthorized => "unauthorized",
            Self::InvalidSignature(_) => "invalid_signature",
            Self::RouteNotFound { .. } => "route_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::ProductNotFound(_) => "product_not_found",
            Self::HoldNotFound => "hold_not_found",
            Self::OrderNotFound => "order_not_found",
            Self::InsufficientStock { .. } => "insufficient_stock",
            Self::HoldExpired => "hold_expired",
            Self::SaleNotStarted { .. } => "sale_not_started",
            Self::SaleEnded => "sale_ended",
            Self::BuyerLimitReached { .. } => "buyer_limit_reached",
            Self::HoldRedeemed => "hold_redeemed",
            Self::HoldReleased => "hold_released",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::NoWaitingRoom(_) => "no_waiting_room",
            Self::NotInQueue => "not_in_queue",
            Self::SoldOut => "sold_out",
            Self::AdmissionRequired => "admission_required",
            Self::AdmissionInvalid => "admission_invalid",
            Self::QueueUnavailable(_) | Self::DeadlineExceeded(_) => "service_unavailable",
            Self::Database(_) if self.status() == 503 => "service_unavailable",
            Self::Config(_) | Self::Internal(_) | Self::Database(_) | Self::Migrate(_) => {
                "internal_error"
            }
        }
    }

    /// What a client may read: the domain message for 4xx, a generic sentence for 5xx.
    pub fn public_message(&self) -> String {
        if let Self::Shared(err) = self {
            return err.public_message();
        }
        match self.status() {
            503 => "the service is temporarily unavailable; retry shortly".to_owned(),
            500..=599 => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }

    /// A deadlock or lock-wait timeout: the whole transaction may simply be run again.
    pub fn is_retryable_conflict(&self) -> bool {
        matches!(self, Self::Database(err) if server_errors::handling_of(err) == Some(Handling::Conflict))
    }
}

pub(crate) fn is_duplicate_key(err: &sqlx::Error) -> bool {
    server_errors::number(err) == Some(server_errors::ER_DUP_ENTRY)
}

/// The database is unreachable, overloaded or failing over, not wrong: the client should retry
/// later. Which server errors say so is `server_errors::TABLE`'s to decide; besides them,
/// losing the server shows as `Io` (the socket closed or reset mid-statement) or, when it does
/// not come back within the acquire timeout, `PoolTimedOut`, and a connection whose session is
/// not what the service needs as `SessionRefused`.
fn is_transient(err: &sqlx::Error) -> bool {
    match server_errors::handling_of(err) {
        Some(Handling::Answered) => false,
        Some(_) => true,
        None => {
            matches!(
                err,
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
            ) || server_errors::SessionRefused::is(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_detail() {
        let err = Error::Database(sqlx::Error::Decode("secret table layout".into()));
        assert_eq!(err.status(), 500);
        assert_eq!(err.code(), "internal_error");
        assert!(!err.public_message().contains("secret"));
    }

    #[test]
    fn an_unreachable_database_is_a_503() {
        let err = Error::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(err.status(), 503);
        assert_eq!(err.code(), "service_unavailable");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Error::Database(sqlx::Error::Io(reset)).status(), 503);
        // A connection cut mid-answer leaves a packet half read.
        let cut = sqlx::Error::Protocol("unexpected end of packet".into());
        assert_eq!(Error::Database(cut).status(), 503);
    }

    #[test]
    fn client_errors_keep_their_message() {
        let err = Error::InsufficientStock {
            requested: 3,
            available: 1,
        };
        assert_eq!((err.status(), err.code()), (409, "insufficient_stock"));
        assert_eq!(
            err.public_message(),
            "not enough stock: requested 3, available 1"
        );
    }
}
