//! Uppercases each record's value (ASCII), keeping its key: the smallest map.

use eddy_processor::{Output, Record};

#[eddy_processor::map]
fn uppercase(record: &Record) -> Output {
    Output::new(record.value.to_ascii_uppercase())
}
