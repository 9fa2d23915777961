//! Reading the protobuf wire format in place: fields as slices of the
//! message, so a decoder can look at (or borrow) what it needs without
//! building the generated structs and their strings.

use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};

/// One field of a protobuf message, as it is on the wire.
pub(crate) enum Field<'a> {
    /// A length-delimited field: bytes, a string or a message.
    Len(&'a [u8]),
    /// A varint.
    Varint(u64),
    /// A 64-bit field (`double`, `fixed64`), little-endian.
    Fixed64(u64),
    /// A 32-bit field.
    Fixed32,
}

/// The next field of `buf` (its number and value), or `None` at the end;
/// errors name `what` is being read.
pub(crate) fn next_field<'a>(
    buf: &mut &'a [u8],
    what: &str,
) -> Result<Option<(u32, Field<'a>)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    let bad = |e: prost::DecodeError| format!("invalid protobuf {what}: {e}");
    let past_end = || format!("invalid protobuf {what}: a field runs past the end");
    let (tag, wire_type) = decode_key(buf).map_err(bad)?;
    let field = match wire_type {
        WireType::Varint => Field::Varint(decode_varint(buf).map_err(bad)?),
        WireType::SixtyFourBit => {
            if buf.len() < 8 {
                return Err(past_end());
            }
            Field::Fixed64(buf.get_u64_le())
        }
        WireType::ThirtyTwoBit => {
            if buf.len() < 4 {
                return Err(past_end());
            }
            buf.advance(4);
            Field::Fixed32
        }
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf).map_err(bad)?).unwrap_or(usize::MAX);
            if buf.len() < len {
                return Err(past_end());
            }
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Field::Len(value)
        }
        WireType::StartGroup | WireType::EndGroup => {
            return Err(format!("invalid protobuf {what}: groups are not supported"));
        }
    };
    Ok(Some((tag, field)))
}

/// A string field's text: protobuf strings are UTF-8.
pub(crate) fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes)
        .map_err(|_| format!("invalid protobuf {what}: a string is not UTF-8"))
}
