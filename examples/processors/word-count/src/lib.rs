//! Counts words per record key in the processor's state and writes one
//! `"<word> <count so far>"` record per word seen, keyed like its input.

use eddy_processor::{state, Error, Output, Record};

#[eddy_processor::flat_map]
fn count_words(record: &Record) -> Result<Vec<Output>, Error> {
    let key = record.key.unwrap_or_default();
    let mut outputs = Vec::new();
    for word in record.value_str()?.split_whitespace() {
        // State key: the record key, a NUL, the word.
        let mut state_key = Vec::with_capacity(key.len() + 1 + word.len());
        state_key.extend_from_slice(key);
        state_key.push(0);
        state_key.extend_from_slice(word.as_bytes());
        let count = state::add_u64(&state_key, 1);
        outputs.push(Output::new(format!("{word} {count}")));
    }
    Ok(outputs)
}
