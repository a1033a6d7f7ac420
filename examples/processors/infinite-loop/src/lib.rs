//! Hostile (for tests): never returns on a record whose value is `loop`; echoes
//! other records.

use eddy_processor::{Output, Record};

#[eddy_processor::map]
fn spin(record: &Record) -> Output {
    if record.value == b"loop" {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    Output::new(record.value)
}
