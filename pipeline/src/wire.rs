//! Reading protobuf in place: varints and length-delimited fields as prost reads them, and
//! the fields of one message, in order, with length-delimited ones as slices of the buffer.
//!
//! The batch's scan checks requests with the primitives; readers of what
//! [`crate::MetricBatch::encoded_requests`] hands out (checked by the scan, so not checked
//! again) walk it with [`Fields`], which stops at the first thing it cannot read (not reached
//! for a checked request) and knows nothing of groups, which a checked request does not hold.

/// A field's value, by wire type.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub enum Wire<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    I32,
}

/// The fields of one message: `(field number, value)`.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of `message`.
    pub fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next field with its whole record (key, length and value bytes).
    #[inline]
    pub fn next_record(&mut self) -> Option<(u32, Wire<'a>, &'a [u8])> {
        let start = self.rest;
        let Some((field, value)) = self.read() else {
            self.rest = &[];
            return None;
        };
        let record = start
            .get(..start.len() - self.rest.len())
            .unwrap_or_default();
        Some((field, value, record))
    }

    #[inline]
    fn read(&mut self) -> Option<(u32, Wire<'a>)> {
        let key = varint(&mut self.rest)?;
        let field = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut self.rest)?),
            1 => Wire::I64(u64::from_le_bytes(
                take(&mut self.rest, 8)?.try_into().ok()?,
            )),
            2 => Wire::Len(len_delimited(&mut self.rest)?),
            5 => {
                take(&mut self.rest, 4)?;
                Wire::I32
            }
            _ => return None,
        };
        Some((field, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Wire<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let field = self.read();
        if field.is_none() {
            self.rest = &[];
        }
        field
    }
}

/// A varint as prost reads it: at most ten bytes, the tenth at most 1.
#[inline]
pub fn varint(b: &mut &[u8]) -> Option<u64> {
    // Most varints of a request are one byte (keys, short lengths, small enums): read those
    // without the loop.
    if let Some((&byte, rest)) = b.split_first()
        && byte < 0x80
    {
        *b = rest;
        return Some(u64::from(byte));
    }
    varint_long(b)
}

/// [`varint`] past its first byte's fast path.
#[inline(never)]
fn varint_long(b: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The next `n` bytes.
#[inline]
pub fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

/// A length-delimited value: its varint length, then that many bytes.
#[inline]
pub fn len_delimited<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(b)?).ok()?;
    take(b, len)
}

/// The values of a repeated `fixed64` / `double` field, packed or one per field, as prost
/// collects them (every occurrence appends), each mapped by `f` (`f64::from_bits` for a double).
pub fn push_fixed64<T>(value: Wire<'_>, out: &mut Vec<T>, f: impl Fn(u64) -> T) {
    match value {
        Wire::I64(v) => out.push(f(v)),
        Wire::Len(packed) => out.extend(
            packed
                .chunks_exact(8)
                .map(|c| f(u64::from_le_bytes(c.try_into().unwrap_or_default()))),
        ),
        Wire::Varint(_) | Wire::I32 => {}
    }
}

/// Whether `bytes` are UTF-8, as prost requires of a string field. Attribute keys and values
/// are short and nearly always ASCII, which is checked inline before the general check.
#[inline]
pub fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// A string field's text (checked UTF-8 by the scan; empty if it were not).
pub fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type_and_stops_at_what_it_cannot_read() {
        let mut buf = Vec::new();
        prost::encoding::encode_varint(1 << 3, &mut buf);
        prost::encoding::encode_varint(300, &mut buf);
        buf.push(2 << 3 | 1);
        buf.extend_from_slice(&7u64.to_le_bytes());
        buf.push(3 << 3 | 2);
        buf.push(2);
        buf.extend_from_slice(b"hi");
        buf.push(4 << 3 | 5);
        buf.extend_from_slice(&9u32.to_le_bytes());
        // A length past the end.
        buf.push(5 << 3 | 2);
        buf.push(9);
        let fields: Vec<_> = Fields::new(&buf).collect();
        assert!(matches!(fields[0], (1, Wire::Varint(300))));
        assert!(matches!(fields[1], (2, Wire::I64(7))));
        assert!(matches!(fields[2], (3, Wire::Len(b"hi"))));
        assert!(matches!(fields[3], (4, Wire::I32)));
        assert_eq!(fields.len(), 4);
        let mut out = Vec::new();
        push_fixed64(Wire::I64(1), &mut out, |v| v);
        push_fixed64(
            Wire::Len(&[2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]),
            &mut out,
            |v| v,
        );
        assert_eq!(out, [1, 2, 3]);
        let mut doubles = Vec::new();
        push_fixed64(Wire::I64(2.5f64.to_bits()), &mut doubles, f64::from_bits);
        assert_eq!(doubles, [2.5]);
        // prost's limits: a tenth varint byte above 1 is refused.
        let mut over = [0xff; 10];
        over[9] = 2;
        assert_eq!(varint(&mut &over[..]), None);
    }

    #[test]
    fn one_byte_varints_and_ascii_take_the_fast_paths_with_the_same_answers() {
        for v in crate::fixtures::VARINT_EDGES {
            let mut buf = Vec::new();
            prost::encoding::encode_varint(v, &mut buf);
            buf.push(0x2a);
            let mut rest = &buf[..];
            assert_eq!(varint(&mut rest), Some(v), "{v}");
            assert_eq!(rest, [0x2a], "{v} leaves the next byte");
        }
        assert_eq!(varint(&mut &[0x80][..]), None, "a truncated varint");
        assert_eq!(varint(&mut &[][..]), None);
        assert!(is_utf8(b""));
        assert!(is_utf8(b"gpu_id"));
        assert!(is_utf8("d\u{e9}j\u{e0} \u{1f916}".as_bytes()));
        assert!(
            !is_utf8(b"gpu\xff"),
            "a byte past ASCII that starts nothing"
        );
        assert!(!is_utf8(&[0xc3]), "a truncated sequence");
        assert!(!is_utf8(&[0xed, 0xa0, 0x80]), "a surrogate");
    }
}
