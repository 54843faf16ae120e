//! Job priority and a tenant's fair-share weight.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The priority of a job, `0..=100`; higher runs first. Defaults to 50.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// The highest priority.
    pub const MAX: u8 = 100;

    /// A priority; rejects values above 100.
    pub fn new(value: u8) -> Result<Self, ValidationError> {
        if value > Self::MAX {
            return Err(ValidationError::new(
                "priority",
                "must be between 0 and 100",
            ));
        }
        Ok(Self(value))
    }

    /// The value.
    pub fn get(&self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self(50)
    }
}

impl TryFrom<u8> for Priority {
    type Error = ValidationError;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

/// A tenant's fair-share weight, `1..=1000`: its share of the farm relative
/// to other tenants with queued work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ShareWeight(u32);

impl ShareWeight {
    /// A weight; rejects 0 and values above 1000.
    pub fn new(value: u32) -> Result<Self, ValidationError> {
        if !(1..=1000).contains(&value) {
            return Err(ValidationError::new("weight", "must be between 1 and 1000"));
        }
        Ok(Self(value))
    }

    /// The value.
    pub fn get(&self) -> u32 {
        self.0
    }
}

impl Default for ShareWeight {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u32> for ShareWeight {
    type Error = ValidationError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<ShareWeight> for u32 {
    fn from(w: ShareWeight) -> u32 {
        w.0
    }
}
