//! Exact non-negative decimals as gateways send them (`0.00031`, `155.38559757`,
//! `5e-7`), and the conversions to micro-dollars, rounding down. Integer
//! arithmetic only, on a small unsigned big integer: no overflow, no floats.

use std::cmp::Ordering;

use nexus_core::domain::money::Micros;

/// Most significant digits and largest exponent magnitude accepted: far beyond
/// any amount, small enough that arithmetic stays cheap.
const MAX_DIGITS: usize = 40;
const MAX_EXPONENT: i64 = 40;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number")]
    Malformed,
    #[error("a negative amount")]
    Negative,
    #[error("too many digits")]
    TooPrecise,
    #[error("the amount does not fit")]
    TooLarge,
    #[error("division by zero")]
    DivisionByZero,
}

/// `mantissa × 10^-scale`, `mantissa` without leading zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal {
    mantissa: Big,
    scale: i64,
}

impl Decimal {
    /// Parses `digits[.digits][e[+-]digits]` (a JSON number's text or a decimal
    /// string). `-0` is zero; other negatives are refused.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let text = text.trim();
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (number, exponent) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (number.contains('.') && fraction.is_empty())
        {
            return Err(DecimalError::Malformed);
        }
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) || digits.len() > 6 {
                    return Err(DecimalError::Malformed);
                }
                e.parse().map_err(|_| DecimalError::Malformed)?
            }
        };
        if exponent.abs() > MAX_EXPONENT {
            return Err(DecimalError::TooPrecise);
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        if significant.len() > MAX_DIGITS || fraction.len() > MAX_DIGITS {
            return Err(DecimalError::TooPrecise);
        }
        let mantissa = Big::from_digits(significant);
        if negative && !mantissa.is_zero() {
            return Err(DecimalError::Negative);
        }
        Ok(Decimal {
            mantissa,
            scale: fraction.len() as i64 - exponent,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa.is_zero()
    }

    /// Plain decimal text, no exponent, no superfluous zeros: `5e-7` →
    /// `0.0000005`, `1.50` → `1.5`, `1.5E+2` → `150`.
    pub fn to_plain_string(&self) -> String {
        let mut digits = self.mantissa.to_digits();
        let mut scale = self.scale;
        while scale > 0 && digits.len() > 1 && digits.ends_with('0') {
            digits.pop();
            scale -= 1;
        }
        if digits == "0" {
            return digits;
        }
        if scale <= 0 {
            digits.extend(std::iter::repeat_n('0', (-scale) as usize));
            return digits;
        }
        let scale = scale as usize;
        if digits.len() <= scale {
            let zeros = "0".repeat(scale - digits.len());
            format!("0.{zeros}{digits}")
        } else {
            let (whole, fraction) = digits.split_at(digits.len() - scale);
            format!("{whole}.{fraction}")
        }
    }

    /// This many dollars in micro-dollars, rounded down.
    pub fn to_micros_floor(&self) -> Result<Micros, DecimalError> {
        floor_ratio(&self.mantissa, &Big::one(), 6 - self.scale)
    }

    /// `price × paid / quoted` micro-dollars, rounded down: the share of a price
    /// that a partial (or excess) crypto payment is worth.
    pub fn proportion_micros_floor(
        price: &Decimal,
        paid: &Decimal,
        quoted: &Decimal,
    ) -> Result<Micros, DecimalError> {
        if quoted.is_zero() {
            return Err(DecimalError::DivisionByZero);
        }
        let numerator = price.mantissa.mul(&paid.mantissa);
        floor_ratio(
            &numerator,
            &quoted.mantissa,
            6 - price.scale - paid.scale + quoted.scale,
        )
    }
}

/// `floor(n × 10^exp / d)` as micro-dollars.
fn floor_ratio(n: &Big, d: &Big, exp: i64) -> Result<Micros, DecimalError> {
    if d.is_zero() {
        return Err(DecimalError::DivisionByZero);
    }
    let (n, d) = if exp >= 0 {
        (n.mul(&Big::pow10(exp as u32)), d.clone())
    } else {
        (n.clone(), d.mul(&Big::pow10((-exp) as u32)))
    };
    // The quotient must fit an i64: check d × 2^63 > n, then find it bit by bit.
    if d.mul_u64(1 << 63).cmp(&n) != Ordering::Greater {
        return Err(DecimalError::TooLarge);
    }
    let mut q: u64 = 0;
    for bit in (0..63).rev() {
        let candidate = q | (1 << bit);
        if d.mul_u64(candidate).cmp(&n) != Ordering::Greater {
            q = candidate;
        }
    }
    Ok(Micros(q as i64))
}

/// An unsigned big integer, little-endian base-2³² limbs, no trailing zero limbs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn one() -> Big {
        Big(vec![1])
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn trimmed(mut limbs: Vec<u32>) -> Big {
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        Big(limbs)
    }

    fn from_digits(digits: &str) -> Big {
        let mut big = Big(Vec::new());
        for b in digits.bytes() {
            big = big.mul_small_add(10, u32::from(b - b'0'));
        }
        big
    }

    fn pow10(exp: u32) -> Big {
        let mut big = Big::one();
        for _ in 0..exp {
            big = big.mul_small_add(10, 0);
        }
        big
    }

    fn to_digits(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut limbs = self.0.clone();
        let mut out = Vec::new();
        while !limbs.is_empty() {
            let mut remainder = 0u64;
            for limb in limbs.iter_mut().rev() {
                let v = (remainder << 32) | u64::from(*limb);
                *limb = (v / 10) as u32;
                remainder = v % 10;
            }
            out.push(b'0' + remainder as u8);
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
        }
        out.reverse();
        String::from_utf8(out).expect("ASCII digits")
    }

    fn mul_small_add(&self, factor: u32, add: u32) -> Big {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut carry = u64::from(add);
        for &limb in &self.0 {
            let v = u64::from(limb) * u64::from(factor) + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        out.push(carry as u32);
        Big::trimmed(out)
    }

    fn mul(&self, other: &Big) -> Big {
        let mut out = vec![0u32; self.0.len() + other.0.len() + 1];
        for (i, &a) in self.0.iter().enumerate() {
            let mut carry = 0u64;
            for (j, &b) in other.0.iter().enumerate() {
                let v = u64::from(a) * u64::from(b) + u64::from(out[i + j]) + carry;
                out[i + j] = v as u32;
                carry = v >> 32;
            }
            let mut k = i + other.0.len();
            while carry > 0 {
                let v = u64::from(out[k]) + carry;
                out[k] = v as u32;
                carry = v >> 32;
                k += 1;
            }
        }
        Big::trimmed(out)
    }

    fn mul_u64(&self, factor: u64) -> Big {
        self.mul(&Big::trimmed(vec![factor as u32, (factor >> 32) as u32]))
    }

    fn cmp(&self, other: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn parses_json_number_text_exactly() {
        assert_eq!(d("10").to_micros_floor(), Ok(Micros(10_000_000)));
        assert_eq!(d("25.50").to_micros_floor(), Ok(Micros(25_500_000)));
        assert_eq!(d("0.1").to_micros_floor(), Ok(Micros(100_000)));
        assert_eq!(d("1.9999999").to_micros_floor(), Ok(Micros(1_999_999)));
        assert_eq!(d("5e-7").to_micros_floor(), Ok(Micros(0)));
        assert_eq!(d("1.5E+2").to_micros_floor(), Ok(Micros(150_000_000)));
        assert_eq!(d("-0").to_micros_floor(), Ok(Micros(0)));
        assert_eq!(d("0.000001").to_micros_floor(), Ok(Micros(1)));
        for bad in [
            "",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "0x1",
            "1,5",
            "+1",
            "NaN",
            "1e9999999",
        ] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Decimal::parse("-1"), Err(DecimalError::Negative));
        assert_eq!(
            d("9223372036854.775808").to_micros_floor(),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(
            d("9223372036854.775807").to_micros_floor(),
            Ok(Micros(i64::MAX))
        );
    }

    #[test]
    fn plain_text() {
        for (text, plain) in [
            ("5e-7", "0.0000005"),
            ("1.50", "1.5"),
            ("1.5E+2", "150"),
            ("0.00", "0"),
            ("155.38559757", "155.38559757"),
            ("12345678901234567890123", "12345678901234567890123"),
            ("0.0001000", "0.0001"),
            ("100", "100"),
        ] {
            assert_eq!(d(text).to_plain_string(), plain, "{text}");
        }
    }

    #[test]
    fn proportions_round_down_exactly() {
        // $170 invoice, 155.38559757 quoted, 77.692798785 paid: exactly half.
        let price = d("170");
        let quoted = d("155.38559757");
        let half = d("77.692798785");
        assert_eq!(
            Decimal::proportion_micros_floor(&price, &half, &quoted),
            Ok(Micros(85_000_000))
        );
        // $10 for 3 units, 1 unit paid: 3.333333 (down).
        assert_eq!(
            Decimal::proportion_micros_floor(&d("10"), &d("1"), &d("3")),
            Ok(Micros(3_333_333))
        );
        // Overpaid: $25.50 for 0.00029, 0.00058 paid.
        assert_eq!(
            Decimal::proportion_micros_floor(&d("25.50"), &d("0.00058"), &d("0.00029")),
            Ok(Micros(51_000_000))
        );
        assert_eq!(
            Decimal::proportion_micros_floor(&d("1"), &d("1"), &d("0")),
            Err(DecimalError::DivisionByZero)
        );
        // Long mantissas do not overflow.
        assert_eq!(
            Decimal::proportion_micros_floor(
                &d("999999.999999"),
                &d("123456789.123456789123456789"),
                &d("123456789.123456789123456789")
            ),
            Ok(Micros(999_999_999_999))
        );
    }
}
