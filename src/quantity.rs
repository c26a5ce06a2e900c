//! Kubernetes resource quantities ("500m", "1Gi", "2e3"), parsed to milli-units so that
//! limits can be compared with caps exactly. Written by hand: k8s-openapi keeps
//! quantities as strings and no small crate parses the full grammar.

use std::fmt;

/// A parse failure, naming the text that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {text:?}: {reason}")]
pub struct QuantityError {
    pub text: String,
    pub reason: &'static str,
}

/// A quantity in thousandths of its base unit (millicores, millibytes), rounded up the
/// way Kubernetes rounds `MilliValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Milli(pub i128);

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// A quantity as a person writes it: bytes in the largest binary unit that divides
/// them (`16Gi`), other amounts as [`Milli`] shows them (`8`, `250m`).
pub fn show(q: Milli, bytes: bool) -> String {
    if bytes && q.0 > 0 && q.0 % 1000 == 0 {
        let b = q.0 / 1000;
        for (unit, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            if b % (1i128 << shift) == 0 {
                return format!("{}{unit}", b >> shift);
            }
        }
    }
    q.to_string()
}

/// Parses a quantity in the Kubernetes grammar: `<signedNumber><suffix>` where the suffix
/// is a binary SI (`Ki`..`Ei`), decimal SI (`n`, `u`, `m`, ``, `k`, `M`..`E`) or a
/// decimal exponent (`e3`, `E-2`).
pub fn parse(text: &str) -> Result<Milli, QuantityError> {
    let err = |reason| QuantityError {
        text: text.to_string(),
        reason,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("no number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.len() + frac_part.len() > 30 {
        return Err(err("too many digits"));
    }
    // mantissa / 10^frac_digits is the number as written.
    let mut mantissa: i128 = 0;
    for d in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa * 10 + i128::from(d - b'0');
    }
    let frac_digits = frac_part.len() as i32;

    // value = mantissa * base^exp10 / 10^frac_digits, as (numerator, power-of-ten) pairs.
    let (multiplier, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(|| err("unknown suffix"))?;
            let exp: i32 = exp.parse().map_err(|_| err("bad exponent"))?;
            if !(-30..=30).contains(&exp) {
                return Err(err("exponent out of range"));
            }
            (1, exp)
        }
    };
    // Milli-units: shift by 3 more decimal places.
    let shift = exp10 + 3 - frac_digits;
    let scaled = mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| err("too large"))?;
    let value = if shift >= 0 {
        let pow = 10i128
            .checked_pow(shift as u32)
            .ok_or_else(|| err("too large"))?;
        scaled.checked_mul(pow).ok_or_else(|| err("too large"))?
    } else {
        let pow = 10i128
            .checked_pow((-shift) as u32)
            .ok_or_else(|| err("too small"))?;
        // Round up, as Kubernetes does for sub-milli values.
        (scaled + pow - 1) / pow
    };
    Ok(Milli(if negative { -value } else { value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        let cases = [
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("512Mi", 512 * (1 << 20) * 1000),
            ("1Gi", (1i128 << 30) * 1000),
            ("1G", 1_000_000_000_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("100n", 1),
            ("1u", 1),
            ("-1", -1000),
            ("+2", 2000),
            (".5", 500),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(Milli(want)), "{text}");
        }
    }

    #[test]
    fn shows_bytes_in_binary_units() {
        let q = |t| parse(t).unwrap();
        assert_eq!(show(q("16Gi"), true), "16Gi");
        assert_eq!(show(q("1536Mi"), true), "1536Mi");
        assert_eq!(show(q("1000"), true), "1000");
        assert_eq!(show(q("1500m"), false), "1500m");
        assert_eq!(show(q("8"), false), "8");
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "abc",
            "1x",
            "1..2",
            ".",
            "1Kix",
            "1e",
            "1e999",
            "99999999999999999999999999999999Ei",
        ] {
            assert!(parse(text).is_err(), "{text} should not parse");
        }
    }

    #[test]
    fn orders_across_units() {
        assert!(parse("1Gi").unwrap() > parse("1G").unwrap());
        assert!(parse("1").unwrap() == parse("1000m").unwrap());
        assert!(parse("1024Mi").unwrap() == parse("1Gi").unwrap());
    }
}
