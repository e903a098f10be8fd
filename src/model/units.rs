//! Validated value types shared by the config and the API: byte sizes and names.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A value that does not parse or is out of range; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl ValueError {
    pub fn new(m: impl Into<String>) -> ValueError {
        ValueError(m.into())
    }
}

/// A byte count, written as an integer or as a string with a `Ki`/`Mi`/`Gi`/`Ti`
/// suffix (`"64Mi"`). Parsing rejects negatives, fractions and overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Parses `"128Mi"`, `"1Gi"`, `"4096"`; the error says what is wrong.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ValueError::new("empty size"));
    }
    let (num, mult): (&str, u64) = if let Some(n) = t.strip_suffix("Ki") {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix("Mi") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("Gi") {
        (n, 1 << 30)
    } else if let Some(n) = t.strip_suffix("Ti") {
        (n, 1 << 40)
    } else {
        (t, 1)
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError(format!(
            "{s:?} is not a size: use a whole number of bytes or a number with Ki, Mi, Gi or Ti"
        )));
    }
    let too_large = || ValueError(format!("{s:?} is too large"));
    let n: u64 = num.parse().map_err(|_| too_large())?;
    n.checked_mul(mult).ok_or_else(too_large)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes or a string like \"64Mi\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{v} is negative: sizes must be positive")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(format!("{v} is not a whole number of bytes")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// What [`parse_size`] trims: Rust's `char::is_whitespace` (Unicode
/// White_Space), spelled out, since a regex's `\s` differs from it.
const WS: &str = r"[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*";

/// By hand: serde reads a number or a string with a suffix, writes a number.
impl utoipa::PartialSchema for Size {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        let int = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .maximum(Some(u64::MAX));
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^{WS}[0-9]+(Ki|Mi|Gi|Ti)?{WS}$")));
        OneOfBuilder::new()
            .item(int)
            .item(text)
            .description(Some(
                "A byte count: an integer, or a string of digits with an optional Ki, Mi, Gi or Ti \
                 suffix (\"64Mi\"); at most 2^64-1 bytes. Answers write it as an integer.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Size {}

/// Container names: `[a-z0-9][a-z0-9_.-]{0,62}`. Safe as a path component and
/// a cgroup name (no `/`, never `.` or `..`).
pub fn validate_name(name: &str) -> Result<(), ValueError> {
    if name.is_empty() {
        return Err(ValueError::new("name is empty"));
    }
    if name.len() > 63 {
        return Err(ValueError(format!(
            "name is {} characters long; at most 63 are allowed",
            name.len()
        )));
    }
    let b = name.as_bytes();
    if !(b[0].is_ascii_lowercase() || b[0].is_ascii_digit()) {
        return Err(ValueError(format!(
            "name {name:?} must start with a lowercase letter or digit"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ValueError(format!(
            "name {name:?} has {c:?}: only a-z, 0-9, '_', '.' and '-' are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5Gi").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184Gi").is_err());
        let s: Size = serde_json::from_str("\"10Mi\"").unwrap();
        assert_eq!(s.0, 10 << 20);
        assert!(serde_json::from_str::<Size>("-5").is_err());
        assert!(serde_json::from_str::<Size>("1.5").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("app1-v2-0").is_ok());
        assert!(validate_name("a").is_ok());
        assert!(validate_name(&"a".repeat(63)).is_ok());
        assert!(validate_name(&"a".repeat(64)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("../x").is_err());
        assert!(validate_name("Upper").is_err());
        assert!(validate_name(".x").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
