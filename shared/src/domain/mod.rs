//! The domain: identifiers, money, what the API shows, deadlines, events and the pure payment
//! rule. Nothing here does I/O.

pub mod admission;
pub mod deadline;
pub mod events;
pub mod ids;
pub mod model;
pub mod money;
pub mod payment;
pub mod queue;
pub mod retry;
pub mod waiting_room;
pub mod webhook;
