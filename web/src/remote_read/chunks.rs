//! The `STREAMED_XOR_CHUNKS` answer of remote read: each series' samples as Prometheus's XOR
//! chunks (tsdb/chunkenc/xor.go, the Gorilla encoding), sent as frames of
//! `prometheus.ChunkedReadResponse`, each a uvarint length, a big-endian CRC-32C of the
//! message and the message (storage/remote/chunked.go). Thanos, Cortex and other readers of
//! Prometheus's remote read decode these.

use prost::Message;
use vigil_ingest::remote_write::Label;

/// Samples per chunk, as Prometheus's head chunks hold.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Bytes a frame aims at (Prometheus's `remote_read_max_bytes_in_frame` default): a series
/// with more chunks is split over frames, the last chunk may pass it.
pub const MAX_BYTES_IN_FRAME: usize = 1024 * 1024;

/// `Content-Type` of the streamed answer.
pub const CONTENT_TYPE: &str = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// `prometheus.ChunkedReadResponse`: chunked series of one query.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ChunkedSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

/// `prometheus.Chunk`.
#[derive(Clone, PartialEq, Message)]
pub struct Chunk {
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    /// `XOR` = 1.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

const XOR: i32 = 1;

/// Bits written most significant first, exactly as Go's `bstream` lays them out: a whole
/// byte is written across the free bits of the last byte and a new byte, which is added even
/// when it gets no bit (readers stop at the sample count; the bytes match Prometheus's).
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits still free in the last byte.
    free: u32,
}

impl Bits {
    fn bit(&mut self, one: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if one && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << self.free;
        }
    }

    fn byte(&mut self, byte: u8) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if let Some(last) = self.bytes.last_mut() {
            *last |= byte >> (8 - self.free);
        }
        // The byte's low bits, shifted past the part written above (none when it all fit).
        self.bytes.push(byte.checked_shl(self.free).unwrap_or(0));
    }

    /// The low `n` bits of `value`, highest first: whole bytes, then bits.
    fn bits(&mut self, value: u64, n: u32) {
        let mut left = n;
        while left >= 8 {
            self.byte((value >> (left - 8)) as u8);
            left -= 8;
        }
        while left > 0 {
            left -= 1;
            self.bit((value >> left) & 1 == 1);
        }
    }
}

/// One XOR chunk being written.
struct XorChunk {
    bits: Bits,
    samples: u16,
    min_time_ms: i64,
    time_ms: i64,
    time_delta: u64,
    value: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        // Two bytes for the sample count come first.
        let bits = Bits { bytes: vec![0, 0], free: 0 };
        XorChunk { bits, samples: 0, min_time_ms: 0, time_ms: 0, time_delta: 0, value: 0, leading: 0xff, trailing: 0 }
    }
}

/// Whether `x` fits in `n` bits as Prometheus's `bitRange` judges it.
fn bit_range(x: i64, n: u32) -> bool {
    -((1i64 << (n - 1)) - 1) <= x && x <= 1i64 << (n - 1)
}

impl XorChunk {
    /// Appends a sample; times must rise.
    fn append(&mut self, time_ms: i64, value: f64) {
        let value = value.to_bits();
        match self.samples {
            0 => {
                let mut varint = [0u8; 10];
                for &byte in put_varint(&mut varint, time_ms) {
                    self.bits.byte(byte);
                }
                self.bits.bits(value, 64);
                self.min_time_ms = time_ms;
            }
            1 => {
                self.time_delta = time_ms.wrapping_sub(self.time_ms) as u64;
                let mut varint = [0u8; 10];
                for &byte in put_uvarint(&mut varint, self.time_delta) {
                    self.bits.byte(byte);
                }
                self.xor(value);
            }
            _ => {
                let time_delta = time_ms.wrapping_sub(self.time_ms) as u64;
                let dod = time_delta.wrapping_sub(self.time_delta) as i64;
                match dod {
                    0 => self.bits.bit(false),
                    _ if bit_range(dod, 14) => {
                        self.bits.bits(0b10, 2);
                        self.bits.bits(dod as u64, 14);
                    }
                    _ if bit_range(dod, 17) => {
                        self.bits.bits(0b110, 3);
                        self.bits.bits(dod as u64, 17);
                    }
                    _ if bit_range(dod, 20) => {
                        self.bits.bits(0b1110, 4);
                        self.bits.bits(dod as u64, 20);
                    }
                    _ => {
                        self.bits.bits(0b1111, 4);
                        self.bits.bits(dod as u64, 64);
                    }
                }
                self.time_delta = time_delta;
                self.xor(value);
            }
        }
        self.time_ms = time_ms;
        self.value = value;
        self.samples += 1;
    }

    /// A value as its XOR with the one before (Prometheus's `xorWrite`).
    fn xor(&mut self, value: u64) {
        let delta = value ^ self.value;
        if delta == 0 {
            self.bits.bit(false);
            return;
        }
        self.bits.bit(true);
        // At most 31: the count is written in 5 bits.
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.bits.bit(false);
            let significant = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.bits.bits(delta >> self.trailing, significant);
            return;
        }
        (self.leading, self.trailing) = (leading, trailing);
        self.bits.bit(true);
        self.bits.bits(u64::from(leading), 5);
        // 64 significant bits are written as 0 (6 bits hold 0..=63; 0 never occurs otherwise).
        let significant = 64 - u32::from(leading) - u32::from(trailing);
        self.bits.bits(u64::from(significant), 6);
        self.bits.bits(delta >> trailing, significant);
    }

    fn finish(mut self) -> Chunk {
        self.bits.bytes[..2].copy_from_slice(&self.samples.to_be_bytes());
        Chunk { min_time_ms: self.min_time_ms, max_time_ms: self.time_ms, r#type: XOR, data: self.bits.bytes }
    }
}

/// Go's `binary.PutVarint`: zig-zag, then `PutUvarint`.
fn put_varint(buffer: &mut [u8; 10], value: i64) -> &[u8] {
    put_uvarint(buffer, ((value << 1) ^ (value >> 63)) as u64)
}

fn put_uvarint(buffer: &mut [u8; 10], mut value: u64) -> &[u8] {
    let mut n = 0;
    while value >= 0x80 {
        buffer[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    buffer[n] = value as u8;
    &buffer[..=n]
}

/// A series' samples as chunks of at most [`SAMPLES_PER_CHUNK`].
pub fn chunks(points: &[(i64, f64)]) -> Vec<Chunk> {
    points
        .chunks(SAMPLES_PER_CHUNK)
        .map(|part| {
            let mut chunk = XorChunk::default();
            for &(time_ms, value) in part {
                chunk.append(time_ms, value);
            }
            chunk.finish()
        })
        .collect()
}

/// Appends one frame holding `message` to `out`.
fn frame(out: &mut Vec<u8>, message: &ChunkedReadResponse) {
    let bytes = message.encode_to_vec();
    let mut varint = [0u8; 10];
    out.extend_from_slice(put_uvarint(&mut varint, bytes.len() as u64));
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    out.extend_from_slice(&bytes);
}

/// The frames answering query `query_index`: one series per frame, a series split over
/// frames when its chunks pass `max_bytes_in_frame`; no frame for a series without samples.
pub fn frames(
    out: &mut Vec<u8>,
    query_index: i64,
    series: Vec<(Vec<Label>, Vec<(i64, f64)>)>,
    max_bytes_in_frame: usize,
) {
    for (labels, points) in series {
        let labels_size: usize = labels.iter().map(Message::encoded_len).sum();
        let mut pending: Vec<Chunk> = Vec::new();
        // What a frame's chunks may take beside the labels it repeats.
        let for_chunks = max_bytes_in_frame.saturating_sub(labels_size);
        let mut left = for_chunks;
        let mut all = chunks(&points).into_iter().peekable();
        while let Some(chunk) = all.next() {
            left = left.saturating_sub(chunk.encoded_len());
            pending.push(chunk);
            if left > 0 && all.peek().is_some() {
                continue;
            }
            let chunked_series = vec![ChunkedSeries { labels: labels.clone(), chunks: std::mem::take(&mut pending) }];
            frame(out, &ChunkedReadResponse { chunked_series, query_index });
            left = for_chunks;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames of `bytes`, checked: length, checksum, message.
    fn read_frames(mut bytes: &[u8]) -> Vec<ChunkedReadResponse> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let length = prost::encoding::decode_varint(&mut bytes).unwrap() as usize;
            let (crc, rest) = bytes.split_at(4);
            let (message, rest) = rest.split_at(length);
            assert_eq!(u32::from_be_bytes(crc.try_into().unwrap()), crc32c::crc32c(message));
            out.push(ChunkedReadResponse::decode(message).unwrap());
            bytes = rest;
        }
        out
    }

    #[test]
    fn the_first_samples_are_written_as_prometheus_writes_them() {
        let mut chunk = XorChunk::default();
        chunk.append(1_000, 1.5);
        let data = chunk.finish().data;
        // Count 1; varint of 1000 (zig-zag 2000 = 0xd0 0x0f); 1.5 as 64 bits; the free byte
        // Go's `bstream` adds after a whole byte.
        let mut expected = vec![0, 1, 0xd0, 0x0f];
        expected.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        expected.push(0);
        assert_eq!(data, expected);
        // An unchanged second value at 15 s: uvarint 15000 (0x98 0x75), then one 0 bit.
        let mut chunk = XorChunk::default();
        chunk.append(1_000, 1.5);
        chunk.append(16_000, 1.5);
        let chunk = chunk.finish();
        assert_eq!(&chunk.data[..2], &[0, 2]);
        assert_eq!(&chunk.data[12..], &[0x98, 0x75, 0x00]);
        assert_eq!((chunk.min_time_ms, chunk.max_time_ms), (1_000, 16_000));
    }

    #[test]
    fn series_become_chunks_of_120_and_frames_that_keep_their_bound() {
        let points: Vec<(i64, f64)> = (0..250).map(|i| (i * 15_000, i as f64)).collect();
        let chunks = chunks(&points);
        let counts: Vec<u16> = chunks.iter().map(|c| u16::from_be_bytes([c.data[0], c.data[1]])).collect();
        assert_eq!(counts, [120, 120, 10]);
        assert_eq!((chunks[1].min_time_ms, chunks[1].max_time_ms), (120 * 15_000, 239 * 15_000));

        let labels = vec![Label { name: "__name__".into(), value: "up".into() }];
        let series =
            vec![(labels.clone(), points.clone()), (labels.clone(), Vec::new()), (labels, points[..5].to_vec())];
        let mut out = Vec::new();
        frames(&mut out, 3, series.clone(), MAX_BYTES_IN_FRAME);
        let read = read_frames(&out);
        // One frame per series with samples.
        assert_eq!(read.iter().map(|f| f.chunked_series[0].chunks.len()).collect::<Vec<_>>(), [3, 1]);
        assert!(read.iter().all(|f| f.query_index == 3 && f.chunked_series.len() == 1));
        // A frame of a few bytes holds one chunk: a series is split, labels repeated.
        let mut out = Vec::new();
        frames(&mut out, 0, series, 16);
        let read = read_frames(&out);
        assert_eq!(read.iter().map(|f| f.chunked_series[0].chunks.len()).collect::<Vec<_>>(), [1, 1, 1, 1]);
        assert!(read.iter().all(|f| f.chunked_series[0].labels[0].value == "up"));
    }
}
