//! Write Eddy stream processors in plain Rust.
//!
//! A processor is one ordinary function plus one attribute naming its shape; the
//! crate builds to a Wasm component (`cargo build --release --target
//! wasm32-wasip2`, crate type `cdylib`) that Eddy runs on every record of the
//! input topic:
//!
//! ```no_run
//! use eddy_processor::{Output, Record};
//!
//! #[eddy_processor::map]
//! fn uppercase(record: &Record) -> Output {
//!     Output::new(record.value.to_ascii_uppercase())
//! }
//! ```
//!
//! The shapes, as in Fluvio's SmartModules:
//!
//! | attribute | function | outputs per record |
//! |---|---|---|
//! | [`#[map]`](macro@map) | `fn(&Record) -> Output` (or [`MapResult`]) | exactly one |
//! | [`#[filter]`](macro@filter) | `fn(&Record) -> bool` (or [`FilterResult`]) | the record itself, or none |
//! | [`#[filter_map]`](macro@filter_map) | `fn(&Record) -> Option<Output>` (or [`FilterMapResult`]) | zero or one |
//! | [`#[flat_map]`](macro@flat_map) | `fn(&Record) -> Vec<Output>` (or [`FlatMapResult`]) | any number |
//!
//! Each may also return `Result<_, Error>`: an error sends that one record to the
//! dead-letter topic (or skips it, or stops the processor, by the deployment's
//! `--on-error` policy). A panic does the same, with the panic message as the
//! reason.
//!
//! An optional init function receives the deployment's `--param k=v` pairs once
//! per instance; an error refuses the deployment: `#[eddy_processor::filter(init =
//! setup)]` with `fn setup(params: &Params) -> Result<(), Error>`. Parameters stay
//! readable afterwards through [`params()`].
//!
//! [`state`] is a key-value store kept by the cluster for this processor and the
//! input partition (its changes commit atomically with the input offsets), and
//! [`log`] writes to the processor's logs topic.
//!
//! Records of an output keep the input record's key unless the function sets
//! another ([`Output::key`]) or none ([`Output::no_key`]).

// The attribute macros expand to `::eddy_processor::...` paths, which must also
// resolve inside this crate (its own tests and the generated bindings).
extern crate self as eddy_processor;

use std::fmt;
use std::sync::OnceLock;

pub use eddy_processor_macros::{filter, filter_map, flat_map, map};

/// The WIT bindings (`sdk/wit/processor.wit`), hidden behind the types below.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "processor",
        pub_export_macro: true,
        export_macro_name: "__export_processor",
        default_bindings_module: "::eddy_processor::__private::bindings",
        runtime_path: "::eddy_processor::__private::wit_bindgen::rt",
    });
}

use bindings::eddy::processor::{log as wit_log, state as wit_state, types as wit};

/// A record read from an input topic, borrowed from the batch being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The topic it came from (a processor may read several topics).
    pub topic: &'a str,
    /// The partition of `topic` it came from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as stored by the broker.
    pub timestamp_ms: i64,
    /// Its key, if it has one.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: &'a [u8],
    /// Its headers, in order (names may repeat).
    pub headers: &'a [(String, Vec<u8>)],
}

impl<'a> Record<'a> {
    /// The value as UTF-8 text, or an error naming the record.
    pub fn value_str(&self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.value).map_err(|e| {
            Error::msg(format!("value of {}/{}@{} is not UTF-8: {e}", self.topic, self.partition, self.offset))
        })
    }

    /// The key as UTF-8 text, if there is a key and it is UTF-8.
    pub fn key_str(&self) -> Option<&'a str> {
        self.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// Which key an [`Output`] gets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OutputKey {
    Inherit,
    None,
    Set(Vec<u8>),
}

/// A record to write to the output topic. It keeps the input record's key
/// unless [`key`](Output::key) or [`no_key`](Output::no_key) says otherwise; its
/// timestamp is the input record's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    key: OutputKey,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Output {
    /// An output with this value, the input record's key and no headers.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Output { key: OutputKey::Inherit, value: value.into(), headers: Vec::new() }
    }

    /// Sets the output's key (instead of the input record's).
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = OutputKey::Set(key.into());
        self
    }

    /// Writes the output without a key.
    pub fn no_key(mut self) -> Self {
        self.key = OutputKey::None;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The output's value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Appends the key and value to the batch's output `data` and returns the
    /// record (made from input record number `input`) that points at them.
    fn lower(self, input: u32, data: &mut Vec<u8>) -> Result<wit::OutputRecord, Error> {
        let key = match self.key {
            OutputKey::Inherit => wit::OutputKey::Inherit,
            OutputKey::None => wit::OutputKey::None,
            OutputKey::Set(k) => wit::OutputKey::Set(append(data, &k)?),
        };
        let value = append(data, &self.value)?;
        let headers = if self.headers.is_empty() { None } else { Some(self.headers) };
        Ok(wit::OutputRecord { input, key, value, headers })
    }
}

/// Appends `bytes` to `data` and returns where they are.
fn append(data: &mut Vec<u8>, bytes: &[u8]) -> Result<wit::Span, Error> {
    let too_big = |_| Error::msg("a batch's outputs are over 4 GiB");
    let offset = u32::try_from(data.len()).map_err(too_big)?;
    let len = u32::try_from(bytes.len()).map_err(too_big)?;
    offset.checked_add(len).ok_or_else(|| Error::msg("a batch's outputs are over 4 GiB"))?;
    data.extend_from_slice(bytes);
    Ok(wit::Span { offset, len })
}

/// The bytes of `data` that `span` points at.
fn slice(data: &[u8], span: wit::Span) -> Result<&[u8], Error> {
    let start = span.offset as usize;
    data.get(start..start + span.len as usize).ok_or_else(|| Error::msg("the host sent a span outside the batch"))
}

impl From<Vec<u8>> for Output {
    fn from(value: Vec<u8>) -> Self {
        Output::new(value)
    }
}

impl From<&[u8]> for Output {
    fn from(value: &[u8]) -> Self {
        Output::new(value)
    }
}

impl From<String> for Output {
    fn from(value: String) -> Self {
        Output::new(value)
    }
}

impl From<&str> for Output {
    fn from(value: &str) -> Self {
        Output::new(value)
    }
}

/// Why a record could not be processed; the message travels with the record to
/// the dead-letter topic. Any `std::error::Error` converts into it, so `?` works.
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error { message: message.to_string() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::msg(e)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a [`#[map]`](macro@map) function may return: an [`Output`], or anything
/// that converts into one (`Vec<u8>`, `String`, `&str`), or a `Result` of those.
pub trait MapResult {
    /// The output, or why there is none.
    fn into_output(self) -> Result<Output, Error>;
}

macro_rules! map_result_for {
    ($($t:ty),*) => {$(
        impl MapResult for $t {
            fn into_output(self) -> Result<Output, Error> {
                Ok(self.into())
            }
        }
    )*};
}
map_result_for!(Output, Vec<u8>, String, &str, &[u8]);

impl<O: Into<Output>> MapResult for Result<O, Error> {
    fn into_output(self) -> Result<Output, Error> {
        self.map(Into::into)
    }
}

/// What a [`#[filter]`](macro@filter) function may return: `bool` or
/// `Result<bool, Error>` (true keeps the record).
pub trait FilterResult {
    /// Whether to keep the record, or why it could not be decided.
    fn into_keep(self) -> Result<bool, Error>;
}

impl FilterResult for bool {
    fn into_keep(self) -> Result<bool, Error> {
        Ok(self)
    }
}

impl FilterResult for Result<bool, Error> {
    fn into_keep(self) -> Result<bool, Error> {
        self
    }
}

/// What a [`#[filter_map]`](macro@filter_map) function may return: `Option<O>`
/// or `Result<Option<O>, Error>`, where `O` converts into an [`Output`].
pub trait FilterMapResult {
    /// The output, if any, or why it could not be computed.
    fn into_output(self) -> Result<Option<Output>, Error>;
}

impl<O: Into<Output>> FilterMapResult for Option<O> {
    fn into_output(self) -> Result<Option<Output>, Error> {
        Ok(self.map(Into::into))
    }
}

impl<O: Into<Output>> FilterMapResult for Result<Option<O>, Error> {
    fn into_output(self) -> Result<Option<Output>, Error> {
        self.map(|o| o.map(Into::into))
    }
}

/// What a [`#[flat_map]`](macro@flat_map) function may return: `Vec<O>` or
/// `Result<Vec<O>, Error>`, where `O` converts into an [`Output`].
pub trait FlatMapResult {
    /// The outputs, or why they could not be computed.
    fn into_outputs(self) -> Result<Vec<Output>, Error>;
}

impl<O: Into<Output>> FlatMapResult for Vec<O> {
    fn into_outputs(self) -> Result<Vec<Output>, Error> {
        Ok(self.into_iter().map(Into::into).collect())
    }
}

impl<O: Into<Output>> FlatMapResult for Result<Vec<O>, Error> {
    fn into_outputs(self) -> Result<Vec<Output>, Error> {
        self.map(|v| v.into_iter().map(Into::into).collect())
    }
}

/// The deployment's parameters (`--param k=v`), in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from name/value pairs (for tests of init functions).
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Params { pairs }
    }

    /// The value of the last parameter named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or an error saying it is missing.
    pub fn require(&self, name: &str) -> Result<&str, Error> {
        self.get(name).ok_or_else(|| Error::msg(format!("missing parameter `{name}` (deploy with --param {name}=...)")))
    }

    /// The value of `name` parsed as `T`; `Ok(None)` when absent.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|v| v.parse::<T>().map_err(|e| Error::msg(format!("parameter `{name}`={v:?}: {e}"))))
            .transpose()
    }

    /// All parameters, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

static PARAMS: OnceLock<Params> = OnceLock::new();

/// The deployment's parameters (empty before init, and in native unit tests).
pub fn params() -> &'static Params {
    static EMPTY: Params = Params { pairs: Vec::new() };
    PARAMS.get().unwrap_or(&EMPTY)
}

/// The processor's key-value state, scoped by the cluster to this processor and
/// the input partition being processed.
///
/// Writes made while processing a batch commit atomically with that batch's
/// input offsets, so a restart neither loses nor repeats them. Reads see this
/// instance's own writes. If processing traps or times out, the writes made
/// during that call are discarded (the records are processed again); writes made
/// before a record returns an `Error` are kept.
pub mod state {
    use super::wit_state;

    /// The value stored under `key`.
    pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        wit_state::get(key.as_ref())
    }

    /// Stores `value` under `key`.
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        wit_state::put(key.as_ref(), value.as_ref())
    }

    /// Removes `key`.
    pub fn delete(key: impl AsRef<[u8]>) {
        wit_state::delete(key.as_ref())
    }

    /// The value under `key` as UTF-8 text (`None` if absent or not UTF-8).
    pub fn get_string(key: impl AsRef<[u8]>) -> Option<String> {
        get(key).and_then(|v| String::from_utf8(v).ok())
    }

    /// A counter: the `u64` stored under `key` (8 bytes, little-endian), 0 if
    /// absent or not 8 bytes long.
    pub fn get_u64(key: impl AsRef<[u8]>) -> u64 {
        get(key).and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_le_bytes).unwrap_or(0)
    }

    /// Stores a counter under `key` (8 bytes, little-endian).
    pub fn put_u64(key: impl AsRef<[u8]>, value: u64) {
        put(key, value.to_le_bytes())
    }

    /// Adds `delta` to the counter under `key` (saturating) and returns the new
    /// value.
    pub fn add_u64(key: impl AsRef<[u8]>, delta: u64) -> u64 {
        let key = key.as_ref();
        let value = get_u64(key).saturating_add(delta);
        put_u64(key, value);
        value
    }
}

/// Logging to the processor's logs topic (`eddy processor logs NAME`). The
/// [`trace!`], [`debug!`], [`info!`], [`warn!`] and [`error!`] macros format
/// like `format!`.
pub mod log {
    use super::wit_log::{self, Level};

    /// Logs at trace level.
    pub fn trace(message: impl AsRef<str>) {
        wit_log::log(Level::Trace, message.as_ref())
    }

    /// Logs at debug level.
    pub fn debug(message: impl AsRef<str>) {
        wit_log::log(Level::Debug, message.as_ref())
    }

    /// Logs at info level.
    pub fn info(message: impl AsRef<str>) {
        wit_log::log(Level::Info, message.as_ref())
    }

    /// Logs at warn level.
    pub fn warn(message: impl AsRef<str>) {
        wit_log::log(Level::Warn, message.as_ref())
    }

    /// Logs at error level.
    pub fn error(message: impl AsRef<str>) {
        wit_log::log(Level::Error, message.as_ref())
    }
}

/// Logs a `format!`-style message at trace level.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log::trace(::std::format!($($arg)*)) }; }
/// Logs a `format!`-style message at debug level.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::debug(::std::format!($($arg)*)) }; }
/// Logs a `format!`-style message at info level.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::info(::std::format!($($arg)*)) }; }
/// Logs a `format!`-style message at warn level.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::warn(::std::format!($($arg)*)) }; }
/// Logs a `format!`-style message at error level.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::error(::std::format!($($arg)*)) }; }

/// What the attribute macros expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::__export_processor as export;
    pub use crate::bindings::eddy::processor::types::{InputBatch, OutputBatch};
    use crate::bindings::eddy::processor::types::{OutputKey, OutputRecord, RecordError};
    pub use crate::bindings::Guest;
    pub use wit_bindgen;

    use crate::{
        append, slice, Error, FilterMapResult, FilterResult, FlatMapResult, MapResult, Params, Record, PARAMS,
    };

    /// The type of a user's init function.
    pub type InitFn = fn(&Params) -> Result<(), Error>;

    /// `init`: remembers the parameters, routes panic messages to the log (the
    /// host reports the last error logged as the trap's reason) and runs the
    /// user's init function.
    pub fn init(params: Vec<(String, String)>, user: Option<InitFn>) -> Result<(), String> {
        std::panic::set_hook(Box::new(|info| crate::log::error(info.to_string())));
        let params = PARAMS.get_or_init(|| Params::new(params));
        match user {
            Some(f) => f(params).map_err(|e| e.message),
            None => Ok(()),
        }
    }

    /// Runs `f` on every record of the batch; `f` appends its outputs. A
    /// record's outputs are kept only if `f` succeeds.
    fn each<F>(batch: InputBatch, mut f: F) -> OutputBatch
    where
        F: FnMut(&Record<'_>, &mut Vec<u8>, &mut Vec<OutputRecord>, u32) -> Result<(), Error>,
    {
        let InputBatch { topic, partition, data, records } = batch;
        let mut out = OutputBatch {
            data: Vec::with_capacity(data.len()),
            outputs: Vec::with_capacity(records.len()),
            errors: Vec::new(),
        };
        for (index, r) in records.iter().enumerate() {
            let input = index as u32;
            let first_output = out.outputs.len();
            let result = (|| {
                let record = Record {
                    topic: &topic,
                    partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.map(|k| slice(&data, k)).transpose()?,
                    value: slice(&data, r.value)?,
                    headers: r.headers.as_deref().unwrap_or_default(),
                };
                f(&record, &mut out.data, &mut out.outputs, input)
            })();
            if let Err(e) = result {
                out.outputs.truncate(first_output);
                out.errors.push(RecordError { input, message: e.message });
            }
        }
        out
    }

    /// `process` for a map.
    pub fn map<R: MapResult>(batch: InputBatch, f: fn(&Record<'_>) -> R) -> OutputBatch {
        each(batch, |r, data, outputs, input| {
            outputs.push(f(r).into_output()?.lower(input, data)?);
            Ok(())
        })
    }

    /// `process` for a filter: kept records are passed on unchanged.
    pub fn filter<R: FilterResult>(batch: InputBatch, f: fn(&Record<'_>) -> R) -> OutputBatch {
        each(batch, |r, data, outputs, input| {
            if f(r).into_keep()? {
                let headers = if r.headers.is_empty() { None } else { Some(r.headers.to_vec()) };
                outputs.push(OutputRecord { input, key: OutputKey::Inherit, value: append(data, r.value)?, headers });
            }
            Ok(())
        })
    }

    /// `process` for a filter-map.
    pub fn filter_map<R: FilterMapResult>(batch: InputBatch, f: fn(&Record<'_>) -> R) -> OutputBatch {
        each(batch, |r, data, outputs, input| {
            if let Some(output) = f(r).into_output()? {
                outputs.push(output.lower(input, data)?);
            }
            Ok(())
        })
    }

    /// `process` for a flat-map.
    pub fn flat_map<R: FlatMapResult>(batch: InputBatch, f: fn(&Record<'_>) -> R) -> OutputBatch {
        each(batch, |r, data, outputs, input| {
            for output in f(r).into_outputs()? {
                outputs.push(output.lower(input, data)?);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_last_value_wins_and_parse() {
        let p = Params::new(vec![("n".into(), "1".into()), ("n".into(), "7".into()), ("s".into(), "x".into())]);
        assert_eq!(p.get("n"), Some("7"));
        assert_eq!(p.parse::<u32>("n").unwrap(), Some(7));
        assert!(p.parse::<u32>("s").is_err());
        assert_eq!(p.parse::<u32>("absent").unwrap(), None);
        assert!(p.require("absent").unwrap_err().message().contains("--param absent="));
    }

    #[test]
    fn result_shapes_convert() {
        assert_eq!(MapResult::into_output("a").unwrap(), Output::new("a"));
        assert_eq!(MapResult::into_output(Ok::<_, Error>(String::from("b"))).unwrap().value(), b"b");
        assert!(FilterResult::into_keep(Err::<bool, _>(Error::msg("no"))).is_err());
        assert_eq!(FilterMapResult::into_output(None::<Output>).unwrap(), None);
        assert_eq!(FlatMapResult::into_outputs(vec!["x", "y"]).unwrap().len(), 2);
        let e: Error = "x".parse::<u8>().unwrap_err().into();
        assert!(e.message().contains("invalid digit"));
    }

    #[test]
    fn outputs_lower_into_the_batch_data() {
        let mut data = b"xx".to_vec();
        let w = Output::new("v").key("k").header("h", "1").lower(7, &mut data).unwrap();
        assert_eq!(w.input, 7);
        assert_eq!(data, b"xxkv");
        assert!(matches!(w.key, wit::OutputKey::Set(wit::Span { offset: 2, len: 1 })));
        assert_eq!((w.value.offset, w.value.len), (3, 1));
        assert_eq!(w.headers, Some(vec![("h".to_string(), b"1".to_vec())]));
        let w = Output::new("v").no_key().lower(0, &mut data).unwrap();
        assert!(matches!(w.key, wit::OutputKey::None));
        assert_eq!(w.headers, None);
        assert!(slice(&data, wit::Span { offset: 4, len: 1 }).is_ok());
        assert!(slice(&data, wit::Span { offset: 4, len: 2 }).is_err());
    }
}
