//! Primitive encodings shared by every message.
//!
//! | type        | encoding                                         |
//! |-------------|--------------------------------------------------|
//! | `u8..u64`, `i64` | little-endian, fixed width                  |
//! | `bool`      | one byte, 0 or 1                                 |
//! | `String`    | `u32` byte length, then UTF-8 bytes              |
//! | `Bytes`     | `u32` byte length, then the bytes                |
//! | `Vec<T>`    | `u32` element count, then each element           |
//! | `Option<T>` | one byte 0 (none) or 1 (some), then the value    |
//!
//! Decoding is checked: every length is compared against the bytes that remain
//! and against the limits in [`crate::limits`] before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::limits::{MAX_LIST_LEN, MAX_STRING_BYTES};

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before a field was complete.
    #[error("truncated message: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    /// A length field exceeds a protocol limit.
    #[error("{what} of {len} exceeds the limit of {limit}")]
    TooLong { what: &'static str, len: usize, limit: usize },
    /// A string field is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    /// A field holds a value outside its domain.
    #[error("invalid value {value} for {what}")]
    InvalidValue { what: &'static str, value: u64 },
    /// Bytes remained after the message was fully decoded.
    #[error("{0} unexpected trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: BytesMut,
}

impl Encoder {
    /// An encoder with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: BytesMut::with_capacity(capacity) }
    }

    /// Encodes `value` at the end of the buffer.
    pub fn put<T: Wire>(&mut self, value: &T) -> &mut Self {
        value.encode(self);
        self
    }

    /// The underlying buffer, for writing raw bytes.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been encoded.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn finish(self) -> BytesMut {
        self.buf
    }
}

/// Reads encoded values from a shared buffer; byte strings are zero-copy slices.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Bytes,
}

impl Decoder {
    /// A decoder over `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Decodes one value of type `T`.
    pub fn get<T: Wire>(&mut self) -> Result<T, DecodeError> {
        T::decode(self)
    }

    /// Bytes not yet decoded.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless all input has been consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Ensures `n` bytes remain.
    pub fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what, needed: n - self.buf.len() });
        }
        Ok(())
    }

    /// Takes the next `n` bytes as a zero-copy slice.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// Reads a `u32` length prefix and checks it against `limit`.
    pub fn length(&mut self, what: &'static str, limit: usize) -> Result<usize, DecodeError> {
        let len = u32::decode(self)? as usize;
        if len > limit {
            return Err(DecodeError::TooLong { what, len, limit });
        }
        Ok(len)
    }
}

/// A value with a wire encoding.
pub trait Wire: Sized {
    /// Appends the encoding of `self`.
    fn encode(&self, enc: &mut Encoder);
    /// Decodes one value, consuming exactly its bytes.
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError>;
}

macro_rules! wire_int {
    ($($t:ty => $put:ident, $get:ident;)*) => {$(
        impl Wire for $t {
            fn encode(&self, enc: &mut Encoder) {
                enc.buf.$put(*self);
            }
            fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
                dec.need(std::mem::size_of::<$t>(), stringify!($t))?;
                Ok(dec.buf.$get())
            }
        }
    )*};
}

wire_int! {
    u8 => put_u8, get_u8;
    u16 => put_u16_le, get_u16_le;
    u32 => put_u32_le, get_u32_le;
    u64 => put_u64_le, get_u64_le;
    i64 => put_i64_le, get_i64_le;
}

impl Wire for bool {
    fn encode(&self, enc: &mut Encoder) {
        enc.buf.put_u8(u8::from(*self));
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match u8::decode(dec)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue { what: "bool", value: v.into() }),
        }
    }
}

impl Wire for String {
    fn encode(&self, enc: &mut Encoder) {
        debug_assert!(self.len() <= MAX_STRING_BYTES);
        enc.buf.put_u32_le(self.len() as u32);
        enc.buf.put_slice(self.as_bytes());
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        let len = dec.length("string", MAX_STRING_BYTES)?;
        let bytes = dec.take(len, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { what: "string" })
    }
}

impl Wire for Bytes {
    fn encode(&self, enc: &mut Encoder) {
        enc.buf.put_u32_le(self.len() as u32);
        enc.buf.put_slice(self);
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        let len = dec.length("bytes", crate::limits::MAX_FRAME_BYTES as usize)?;
        dec.take(len, "bytes")
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, enc: &mut Encoder) {
        debug_assert!(self.len() <= MAX_LIST_LEN);
        enc.buf.put_u32_le(self.len() as u32);
        for item in self {
            item.encode(enc);
        }
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        let len = dec.length("list", MAX_LIST_LEN)?;
        // Every element takes at least one byte, so a count beyond the remaining
        // input is refused before allocating.
        dec.need(len, "list elements")?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode(dec)?);
        }
        Ok(out)
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            None => enc.buf.put_u8(0),
            Some(v) => {
                enc.buf.put_u8(1);
                v.encode(enc);
            }
        }
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match u8::decode(dec)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(dec)?)),
            v => Err(DecodeError::InvalidValue { what: "option tag", value: v.into() }),
        }
    }
}

/// Implements [`Wire`] for a struct by encoding its fields in declaration order.
#[macro_export]
macro_rules! wire_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }

        impl $crate::codec::Wire for $name {
            #[allow(unused_variables)]
            fn encode(&self, enc: &mut $crate::codec::Encoder) {
                $(enc.put(&self.$field);)*
            }
            #[allow(unused_variables)]
            fn decode(dec: &mut $crate::codec::Decoder) -> Result<Self, $crate::codec::DecodeError> {
                Ok(Self { $($field: dec.get()?,)* })
            }
        }
    };
}

/// Encodes a value into a fresh buffer.
pub fn to_bytes<T: Wire>(value: &T) -> Bytes {
    let mut enc = Encoder::default();
    value.encode(&mut enc);
    enc.finish().freeze()
}

/// Decodes a whole buffer as one `T`, refusing trailing bytes.
pub fn from_bytes<T: Wire>(buf: Bytes) -> Result<T, DecodeError> {
    let mut dec = Decoder::new(buf);
    let value = dec.get()?;
    dec.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_primitives() {
        let mut enc = Encoder::default();
        enc.put(&7u8).put(&300u16).put(&70_000u32).put(&(1u64 << 40)).put(&-5i64);
        enc.put(&true).put(&"héllo".to_string()).put(&Bytes::from_static(b"ab"));
        enc.put(&vec![1u32, 2, 3]).put(&Some(9u16)).put(&None::<u16>);
        let mut dec = Decoder::new(enc.finish().freeze());
        assert_eq!(dec.get::<u8>().unwrap(), 7);
        assert_eq!(dec.get::<u16>().unwrap(), 300);
        assert_eq!(dec.get::<u32>().unwrap(), 70_000);
        assert_eq!(dec.get::<u64>().unwrap(), 1 << 40);
        assert_eq!(dec.get::<i64>().unwrap(), -5);
        assert!(dec.get::<bool>().unwrap());
        assert_eq!(dec.get::<String>().unwrap(), "héllo");
        assert_eq!(&dec.get::<Bytes>().unwrap()[..], b"ab");
        assert_eq!(dec.get::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
        assert_eq!(dec.get::<Option<u16>>().unwrap(), Some(9));
        assert_eq!(dec.get::<Option<u16>>().unwrap(), None);
        dec.finish().unwrap();
    }

    #[test]
    fn refuses_lengths_beyond_input_before_allocating() {
        let mut enc = Encoder::default();
        enc.put(&(MAX_LIST_LEN as u32));
        let err = from_bytes::<Vec<u64>>(enc.finish().freeze()).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
        let mut enc = Encoder::default();
        enc.put(&u32::MAX);
        let err = from_bytes::<String>(enc.finish().freeze()).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
    }

    #[test]
    fn refuses_bad_utf8_and_trailing_bytes() {
        let mut enc = Encoder::default();
        enc.put(&Bytes::from_static(&[0xff, 0xfe]));
        assert!(matches!(from_bytes::<String>(enc.finish().freeze()), Err(DecodeError::InvalidUtf8 { .. })));
        let mut enc = Encoder::default();
        enc.put(&1u8).put(&2u8);
        assert_eq!(from_bytes::<u8>(enc.finish().freeze()), Err(DecodeError::TrailingBytes(1)));
    }
}
