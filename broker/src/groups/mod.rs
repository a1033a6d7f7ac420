//! Consumer groups: membership, assignment and committed offsets.
//!
//! * [`assign`]: the sticky, range and round-robin assignors (pure functions).
//! * [`coordinator`]: the membership state machine (no I/O, time passed in).
//! * [`service`]: the async glue that drives it from requests and a ticker,
//!   and stores committed offsets through the store (the seam where offsets
//!   move onto replicated storage later).

pub mod assign;
pub mod coordinator;
pub mod service;

pub use service::GroupService;
