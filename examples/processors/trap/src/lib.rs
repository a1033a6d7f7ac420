//! Hostile (for tests): executes `unreachable` on a record whose value is
//! `trap`, reads far out of bounds of its memory on `oob`; echoes other records.

use eddy_processor::{Output, Record};

#[eddy_processor::map]
fn trap(record: &Record) -> Output {
    match record.value {
        #[cfg(target_arch = "wasm32")]
        b"trap" => core::arch::wasm32::unreachable(),
        // SAFETY: none; this module exists to perform an invalid access. On
        // wasm32 it is a bounds-checked load that traps (memory is far smaller).
        b"oob" => Output::new(unsafe { core::ptr::read_volatile(0xFFFF_FF00usize as *const [u8; 4]) }.to_vec()),
        _ => Output::new(record.value),
    }
}
