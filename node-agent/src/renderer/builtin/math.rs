//! Just enough vector maths for the ray tracer.

use std::ops::{Add, Mul, Neg, Sub};

/// A 3-vector of `f64`, used for points, directions and colours.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Vec3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

impl Vec3 {
    pub const ZERO: Self = Self::new(0.0, 0.0, 0.0);

    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Self { x, y, z }
    }

    pub fn from_array(a: [f64; 3]) -> Self {
        Self::new(a[0], a[1], a[2])
    }

    pub fn dot(self, o: Self) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    pub fn cross(self, o: Self) -> Self {
        Self::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }

    pub fn length(self) -> f64 {
        self.dot(self).sqrt()
    }

    /// The unit vector, or zero for a zero vector.
    pub fn normalized(self) -> Self {
        let l = self.length();
        if l > 0.0 {
            self * (1.0 / l)
        } else {
            Self::ZERO
        }
    }

    /// Component-wise product (colour filtering).
    pub fn hadamard(self, o: Self) -> Self {
        Self::new(self.x * o.x, self.y * o.y, self.z * o.z)
    }

    /// Linear interpolation: `self` at 0, `o` at 1.
    pub fn lerp(self, o: Self, t: f64) -> Self {
        self + (o - self) * t
    }
}

impl Add for Vec3 {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl Sub for Vec3 {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f64> for Vec3 {
    type Output = Self;
    fn mul(self, s: f64) -> Self {
        Self::new(self.x * s, self.y * s, self.z * s)
    }
}

impl Neg for Vec3 {
    type Output = Self;
    fn neg(self) -> Self {
        Self::new(-self.x, -self.y, -self.z)
    }
}

/// A deterministic hash of a pixel sample to two numbers in `[0, 1)`
/// (SplitMix64 finaliser): the same pixel, sample and seed always jitter the
/// same way, so frames are reproducible bit for bit.
pub(crate) fn jitter(x: u32, y: u32, sample: u32, seed: u64) -> (f64, f64) {
    let mut z = (u64::from(x) << 40) ^ (u64::from(y) << 20) ^ u64::from(sample) ^ seed;
    let mut next = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut v = z;
        v = (v ^ (v >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        v = (v ^ (v >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        v ^= v >> 31;
        // 53 high bits → [0, 1)
        (v >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let a = next();
    let b = next();
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_deterministic_and_in_range() {
        for i in 0..1000 {
            let (a, b) = jitter(i, i * 7, i % 5, 42);
            assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b));
            assert_eq!(jitter(i, i * 7, i % 5, 42), (a, b));
        }
        assert_ne!(jitter(1, 2, 0, 0), jitter(2, 1, 0, 0));
    }

    #[test]
    fn vectors() {
        let a = Vec3::new(1.0, 0.0, 0.0);
        let b = Vec3::new(0.0, 1.0, 0.0);
        assert_eq!(a.cross(b), Vec3::new(0.0, 0.0, 1.0));
        assert_eq!((a * 3.0).normalized(), a);
        assert_eq!(a.lerp(b, 0.5), Vec3::new(0.5, 0.5, 0.0));
        assert_eq!(-a + a, Vec3::ZERO);
    }
}
