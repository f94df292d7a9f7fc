//! Serde helpers shared by the processors' configs.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};

/// What a duration field expects, as serde error messages say it.
const EXPECTED_DURATION: &str = "a duration like 200ms, 5s or 1m30s";

/// `#[serde(deserialize_with = "crate::serde_util::duration")]`: a duration written as
/// `200ms` / `5s` / `1m30s` (or `0`). A bare number other than 0 is refused because its unit
/// would be a guess.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED_DURATION)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            vla_pipeline::config::parse_duration(s).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            if v == 0 {
                Ok(Duration::ZERO)
            } else {
                Err(E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            if v == 0 {
                Ok(Duration::ZERO)
            } else {
                Err(E::invalid_value(Unexpected::Signed(v), &self))
            }
        }
    }
    d.deserialize_any(V)
}
