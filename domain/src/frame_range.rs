//! Frame ranges, chunk sizes and the chunking of a range into tasks.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The most frames one job may have, so that splitting stays bounded.
pub const MAX_FRAMES_PER_JOB: u64 = 1_000_000;

/// An inclusive, non-empty range of frame numbers: `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawFrameRange", into = "RawFrameRange")]
pub struct FrameRange {
    start: u32,
    end: u32,
}

/// The wire form of [`FrameRange`], checked on the way in.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrameRange {
    start: u32,
    end: u32,
}

impl FrameRange {
    /// The frames `start..=end`; rejects `start > end`.
    pub fn new(start: u32, end: u32) -> Result<Self, ValidationError> {
        if start > end {
            return Err(ValidationError::new(
                "frame_range",
                format!("start {start} is after end {end}"),
            ));
        }
        Ok(Self { start, end })
    }

    /// The first frame.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// The last frame (inclusive).
    pub fn end(&self) -> u32 {
        self.end
    }

    /// How many frames the range holds (at least 1).
    pub fn len(&self) -> u64 {
        u64::from(self.end - self.start) + 1
    }

    /// Always false: a range holds at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `frame` lies in the range.
    pub fn contains(&self, frame: u32) -> bool {
        (self.start..=self.end).contains(&frame)
    }

    /// The frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = u32> {
        self.start..=self.end
    }
}

impl TryFrom<RawFrameRange> for FrameRange {
    type Error = ValidationError;
    fn try_from(raw: RawFrameRange) -> Result<Self, Self::Error> {
        Self::new(raw.start, raw.end)
    }
}

impl From<FrameRange> for RawFrameRange {
    fn from(r: FrameRange) -> Self {
        Self {
            start: r.start,
            end: r.end,
        }
    }
}

/// How many frames one task renders: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// A chunk size; rejects 0.
    pub fn new(frames: u32) -> Result<Self, ValidationError> {
        if frames == 0 {
            return Err(ValidationError::new("chunk_size", "must be at least 1"));
        }
        Ok(Self(frames))
    }

    /// The number of frames.
    pub fn get(&self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for ChunkSize {
    type Error = ValidationError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<ChunkSize> for u32 {
    fn from(c: ChunkSize) -> u32 {
        c.0
    }
}

/// Splits `range` into consecutive chunks of `chunk_size` frames (the last
/// may be shorter): every frame of the range is in exactly one chunk, in
/// order, with no gaps.
pub fn chunk(range: FrameRange, chunk_size: ChunkSize) -> Vec<FrameRange> {
    let size = chunk_size.get();
    let mut chunks =
        Vec::with_capacity(usize::try_from(range.len().div_ceil(u64::from(size))).unwrap_or(0));
    let mut start = range.start;
    loop {
        let end = start.saturating_add(size - 1).min(range.end);
        chunks.push(FrameRange { start, end });
        if end == range.end {
            return chunks;
        }
        start = end + 1;
    }
}
