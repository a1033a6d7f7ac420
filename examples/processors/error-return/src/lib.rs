//! Returns an error for a record whose value contains `error` (the well-behaved
//! way to refuse one record); echoes other records.

use eddy_processor::{Error, Output, Record};

#[eddy_processor::map]
fn check(record: &Record) -> Result<Output, Error> {
    if record.value.windows(5).any(|w| w == b"error") {
        return Err(Error::msg(format!("record {} is not acceptable", record.offset)));
    }
    Ok(Output::new(record.value))
}
