//! Finds the example processors (examples/processors/, built for wasm32-wasip2):
//! in `EDDY_PROCESSORS_DIR` when set (`cargo xtask test` builds them and sets
//! it), otherwise built here once per test binary. A missing module fails the
//! test; it is never skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use eddy_runtime::InputRecord;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("runtime/ is in the repository").to_path_buf()
}

/// The directory holding the built `.wasm` processors.
pub fn processors_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("EDDY_PROCESSORS_DIR") {
            return PathBuf::from(dir);
        }
        // A target directory of its own: the outer `cargo test` may hold the
        // lock of the repository's.
        let target = repo_root().join("target/runtime-tests");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            // In the processors' directory, so that their .cargo/config.toml applies.
            .current_dir(repo_root().join("examples/processors"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running cargo to build the example processors");
        assert!(
            status.success(),
            "building the example processors failed ({status}); run `cargo xtask processors` \
             (needs `rustup target add wasm32-wasip2`) and set EDDY_PROCESSORS_DIR"
        );
        target.join("wasm32-wasip2/release")
    })
}

/// The bytes of the example processor `name` (crate name, `-` or `_`).
pub fn wasm(name: &str) -> Vec<u8> {
    let path = processors_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}; build the processors with `cargo xtask processors`", path.display())
    })
}

/// An owned input record (tests build these, then lend them to the runtime).
#[derive(Debug, Clone)]
pub struct Rec {
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Every test record carries this header.
pub const HEADERS: &[(&str, &[u8])] = &[("h", b"1")];

impl Rec {
    pub fn input(&self) -> InputRecord<'_> {
        InputRecord {
            offset: self.offset,
            timestamp_ms: 1_700_000_000_000 + self.offset as i64,
            key: self.key.as_deref(),
            value: &self.value,
            headers: HEADERS,
        }
    }
}

/// A record at `offset` with this key and value.
pub fn record(offset: u64, key: Option<&str>, value: &str) -> Rec {
    Rec { offset, key: key.map(|k| k.as_bytes().to_vec()), value: value.as_bytes().to_vec() }
}

/// Processes `records` as one batch of topic `in`, partition 0.
pub fn process(instance: &mut eddy_runtime::Instance, records: &[Rec]) -> Vec<eddy_runtime::RecordOutcome> {
    let inputs: Vec<InputRecord<'_>> = records.iter().map(Rec::input).collect();
    instance.process("in", 0, &inputs)
}
