//! How a failed trigger (expiry, sweeper, queue consumer) reports to the Lambda runtime: the
//! error's stable code as the error type, so retries and alarms can tell failures apart.

use lambda_runtime::Diagnostic;

use crate::error::Error;

impl From<Error> for Diagnostic {
    fn from(err: Error) -> Self {
        tracing::error!(code = err.code(), error = ?err, "invocation failed");
        Diagnostic {
            error_type: err.code().to_owned(),
            error_message: err.to_string(),
        }
    }
}
