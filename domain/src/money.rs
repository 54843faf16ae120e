//! Money in minor units (cents).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A non-negative amount of money in minor units of the platform currency.
/// Prices, charges, top-ups and balances are all `AmountMinor`: a balance
/// can never be negative.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct AmountMinor(i64);

impl AmountMinor {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// An amount; rejects negative values.
    pub fn new(minor: i64) -> Result<Self, ValidationError> {
        if minor < 0 {
            return Err(ValidationError::new("amount_minor", "must not be negative"));
        }
        Ok(Self(minor))
    }

    /// The amount in minor units.
    pub fn get(&self) -> i64 {
        self.0
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: Self) -> Result<Self, ValidationError> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or_else(|| ValidationError::new("amount_minor", "overflows"))
    }

    /// `self - other` if that is not negative.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        (self.0 >= other.0).then(|| Self(self.0 - other.0))
    }

    /// `self * factor`, or an error on overflow (e.g. price per second times seconds).
    pub fn checked_mul(self, factor: u64) -> Result<Self, ValidationError> {
        i64::try_from(factor)
            .ok()
            .and_then(|f| self.0.checked_mul(f))
            .map(Self)
            .ok_or_else(|| ValidationError::new("amount_minor", "overflows"))
    }
}

impl TryFrom<i64> for AmountMinor {
    type Error = ValidationError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<AmountMinor> for i64 {
    fn from(a: AmountMinor) -> i64 {
        a.0
    }
}

impl fmt::Display for AmountMinor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
