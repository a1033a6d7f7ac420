//! Hostile (for tests): on a record whose value is `bomb`, allocates (and
//! touches) 1 MiB after 1 MiB without bound; echoes other records.

use eddy_processor::{Output, Record};

#[eddy_processor::map]
fn bomb(record: &Record) -> Output {
    if record.value == b"bomb" {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
        }
    }
    Output::new(record.value)
}
