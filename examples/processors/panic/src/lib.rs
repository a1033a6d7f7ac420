//! Hostile (for tests): panics on a record whose value contains `panic`; echoes
//! other records.

use eddy_processor::{Output, Record};

#[eddy_processor::map]
fn maybe_panic(record: &Record) -> Output {
    if record.value.windows(5).any(|w| w == b"panic") {
        panic!("record {} asked for it", record.offset);
    }
    Output::new(record.value)
}
