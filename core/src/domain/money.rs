//! Money: integer micro-dollars (USD × 10⁶). Never floats.
//!
//! Amounts travel as decimal strings (`"10.00"`, up to 6 decimals) and are parsed
//! exactly; anything that does not fit is an error, never rounded silently.

use serde::{Deserialize, Serialize};

/// An amount of US dollars in micro-dollars. Signed, so balances can be computed
/// for every ledger account; amounts moved by one entry are always positive.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Micros(pub i64);

/// Micro-dollars in one dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;
/// The largest amount one request may name: $1,000,000.
pub const MAX_AMOUNT_MICROS: i64 = 1_000_000 * MICROS_PER_USD;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("an amount is a decimal string like \"10.00\" with at most 6 decimals")]
    Malformed,
    #[error("the amount must be more than zero")]
    NotPositive,
    #[error("the amount is over the limit of 1000000.00")]
    TooLarge,
    #[error("amount arithmetic overflowed")]
    Overflow,
}

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_usd(dollars: i64) -> Micros {
        Micros(dollars * MICROS_PER_USD)
    }

    pub fn checked_add(self, other: Micros) -> Result<Micros, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Micros)
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_sub(self, other: Micros) -> Result<Micros, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Micros)
            .ok_or(MoneyError::Overflow)
    }

    /// `self + other` where an overflow was refused before: in event
    /// application, after the decision that made the event. An overflow here is a
    /// bug, and panics in every build profile.
    pub fn strict_add(self, other: Micros) -> Micros {
        self.checked_add(other)
            .expect("amount overflow: the decision must have refused it")
    }

    /// `self - other`, under the same terms as [`Micros::strict_add`].
    pub fn strict_sub(self, other: Micros) -> Micros {
        self.checked_sub(other)
            .expect("amount overflow: the decision must have refused it")
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `basis_points` / 10,000 of this amount, rounded down to a whole micro-dollar
    /// (cashback rounds in the house's favour by at most one micro-dollar).
    pub fn percent_bp_floor(self, basis_points: u32) -> Micros {
        let scaled = i128::from(self.0) * i128::from(basis_points) / 10_000;
        Micros(scaled as i64)
    }

    /// Parses a positive decimal amount of at most 6 decimals and at most
    /// [`MAX_AMOUNT_MICROS`].
    pub fn parse_positive(text: &str) -> Result<Micros, MoneyError> {
        let amount = Self::parse(text)?;
        if !amount.is_positive() {
            return Err(MoneyError::NotPositive);
        }
        if amount.0 > MAX_AMOUNT_MICROS {
            return Err(MoneyError::TooLarge);
        }
        Ok(amount)
    }

    /// Parses `[-]digits[.digits]` exactly.
    pub fn parse(text: &str) -> Result<Micros, MoneyError> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 13
            || fraction.len() > 6
            || (digits.contains('.') && fraction.is_empty())
            || !all_digits(whole)
            || !all_digits(fraction)
        {
            return Err(MoneyError::Malformed);
        }
        let whole: i64 = whole.parse().map_err(|_| MoneyError::Malformed)?;
        let mut fraction_micros: i64 = 0;
        for (i, b) in fraction.bytes().enumerate() {
            fraction_micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
        }
        let micros = whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|w| w.checked_add(fraction_micros))
            .ok_or(MoneyError::TooLarge)?;
        Ok(Micros(if negative { -micros } else { micros }))
    }
}

impl std::fmt::Display for Micros {
    /// Always six decimals, the unit's whole precision, so every amount the
    /// service prints has one shape: `10.000000`, `0.015000`, `-3.500000`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_USD as u64;
        let fraction = abs % MICROS_PER_USD as u64;
        write!(f, "{sign}{whole}.{fraction:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_exactly() {
        let cases = [
            ("10", 10_000_000, "10.000000"),
            ("10.5", 10_500_000, "10.500000"),
            ("0.000001", 1, "0.000001"),
            ("0.015", 15_000, "0.015000"),
            ("1234.567891", 1_234_567_891, "1234.567891"),
            ("-3.5", -3_500_000, "-3.500000"),
            ("-0.5", -500_000, "-0.500000"),
        ];
        for (text, micros, shown) in cases {
            assert_eq!(Micros::parse(text), Ok(Micros(micros)), "{text}");
            assert_eq!(Micros(micros).to_string(), shown);
        }
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "1.0000001",
            "1e3",
            "1,00",
            " 1",
            "+1",
            "--1",
            "0x10",
            "1.2.3",
            "99999999999999",
        ] {
            assert!(Micros::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(Micros::parse_positive("0"), Err(MoneyError::NotPositive));
        assert_eq!(Micros::parse_positive("-1"), Err(MoneyError::NotPositive));
        assert_eq!(
            Micros::parse_positive("1000000.000001"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Micros::parse_positive("1000000"),
            Ok(Micros(MAX_AMOUNT_MICROS))
        );
    }

    #[test]
    fn cashback_rounds_down() {
        assert_eq!(Micros(1_000_000).percent_bp_floor(200), Micros(20_000));
        assert_eq!(Micros(149).percent_bp_floor(200), Micros(2));
        assert_eq!(Micros(0).percent_bp_floor(200), Micros(0));
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Micros(i64::MAX);
        let min = Micros(i64::MIN);
        assert_eq!(Micros(2).checked_add(Micros(3)), Ok(Micros(5)));
        assert_eq!(Micros(2).checked_sub(Micros(3)), Ok(Micros(-1)));
        assert_eq!(max.checked_add(Micros(1)), Err(MoneyError::Overflow));
        assert_eq!(min.checked_sub(Micros(1)), Err(MoneyError::Overflow));
        assert_eq!(Micros(2).strict_add(Micros(3)), Micros(5));
        assert_eq!(Micros(2).strict_sub(Micros(3)), Micros(-1));
        assert_eq!(max.strict_sub(max), Micros::ZERO);
    }

    #[test]
    #[should_panic(expected = "amount overflow")]
    fn strict_add_panics_on_overflow() {
        let _ = Micros(i64::MAX).strict_add(Micros(1));
    }

    #[test]
    #[should_panic(expected = "amount overflow")]
    fn strict_sub_panics_on_overflow() {
        let _ = Micros(i64::MIN).strict_sub(Micros(1));
    }

    proptest! {
        #[test]
        fn display_parses_back(micros in -MAX_AMOUNT_MICROS * 1000..MAX_AMOUNT_MICROS * 1000) {
            let shown = Micros(micros).to_string();
            prop_assert_eq!(Micros::parse(&shown), Ok(Micros(micros)));
            prop_assert_eq!(shown.split('.').nth(1).map(str::len), Some(6), "{}", shown);
        }
    }
}
