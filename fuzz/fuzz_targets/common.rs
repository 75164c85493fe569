//! Input framing shared by the targets, so a seed is a real SSE stream behind a short header:
//!
//! ```text
//! byte 0        config bits (each target reads its own meaning from them)
//! byte 1        number of cut points, modulo 17
//! 2 bytes each  cut points, u16 little-endian, modulo (body length + 1)
//! rest          the body: raw upstream bytes
//! ```
//!
//! A missing byte reads as 0, so every input is valid. Cut points are sorted and may repeat (a
//! repeated point feeds an empty chunk, which the decoder must also survive).

pub struct Input<'a> {
    pub config: u8,
    pub body: &'a [u8],
    pub chunks: Vec<&'a [u8]>,
}

pub fn split(data: &[u8]) -> Input<'_> {
    let config = data.first().copied().unwrap_or(0);
    let n = usize::from(data.get(1).copied().unwrap_or(0) % 17);
    let header = (2 + 2 * n).min(data.len());
    let raw_cuts = data.get(2..header).unwrap_or_default();
    let body = data.get(header..).unwrap_or_default();
    let mut cuts: Vec<usize> = raw_cuts
        .chunks(2)
        .map(|p| {
            let v = u16::from_le_bytes([p[0], p.get(1).copied().unwrap_or(0)]);
            usize::from(v) % (body.len() + 1)
        })
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        chunks.push(&body[start..cut]);
        start = cut;
    }
    chunks.push(&body[start..]);
    Input {
        config,
        body,
        chunks,
    }
}

/// Byte-at-a-time feeding is the harshest split; it is done only for inputs up to this size so
/// executions stay fast (the fuzzer keeps inputs small anyway).
pub const BYTEWISE_MAX: usize = 4096;
