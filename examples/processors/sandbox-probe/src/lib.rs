//! Probe (for tests): does what its record's value asks and reports what the
//! sandbox allowed. `clock` reads the wall clock (denied: traps), `file` reads
//! /etc/passwd (no directory is granted: an error), `env` counts environment
//! variables (none are granted), `print` writes to stdout and stderr (captured
//! into the processor's log), `hashmap` uses a `HashMap` (random seeds are
//! granted).

use std::collections::HashMap;

use eddy_processor::Record;

#[eddy_processor::map]
fn probe(record: &Record) -> String {
    match record.value {
        b"clock" => format!("{:?}", std::time::SystemTime::now()),
        b"file" => match std::fs::read("/etc/passwd") {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("denied: {e}"),
        },
        b"env" => format!("{} variables", std::env::vars().count()),
        b"print" => {
            println!("hello from stdout");
            eprintln!("hello from stderr");
            "printed".to_string()
        }
        b"hashmap" => {
            let map: HashMap<u32, u32> = (0..10).map(|i| (i, i * i)).collect();
            format!("{}", map[&3])
        }
        other => String::from_utf8_lossy(other).into_owned(),
    }
}
