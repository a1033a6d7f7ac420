//! Keeps the records whose value contains the `match` parameter
//! (`--param match=TEXT`); deploying without it is refused.

use std::sync::OnceLock;

use eddy_processor::{Error, Params, Record};
use memchr::memmem::Finder;

static NEEDLE: OnceLock<Finder<'static>> = OnceLock::new();

fn setup(params: &Params) -> Result<(), Error> {
    let needle = params.require("match")?;
    if needle.is_empty() {
        return Err(Error::msg("parameter `match` must not be empty"));
    }
    NEEDLE.get_or_init(|| Finder::new(needle.as_bytes()).into_owned());
    Ok(())
}

#[eddy_processor::filter(init = setup)]
fn contains_match(record: &Record) -> bool {
    NEEDLE.get().is_some_and(|needle| needle.find(record.value).is_some())
}
