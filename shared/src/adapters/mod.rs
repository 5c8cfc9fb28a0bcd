//! The ports' adapters: in-process ones ([`local`]) for the local server and for functions running
//! without AWS, and AWS ones (`aws`), each behind its own cargo feature.

pub mod local;

#[cfg(any(
    feature = "aws-scheduler",
    feature = "aws-sqs",
    feature = "aws-eventbridge",
    feature = "aws-secrets"
))]
pub mod aws;

#[cfg(feature = "local-auth")]
pub mod jwt;
