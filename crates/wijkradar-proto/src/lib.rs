//! The wire format of Wijkradar: the generated protobuf messages and gRPC
//! services of package `wijkradar.v1`, and the descriptor set for reflection.
//!
//! This is the only crate that defines protobuf types. Conversions into domain
//! types live at the boundary (the server and agent crates), never here.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("wijkradar.v1");
}

/// The services' codec: prost's, except that a message that does not
/// decode (malformed protobuf, a string that is not UTF-8) is
/// `INVALID_ARGUMENT`, not `INTERNAL`. Clients retry `INTERNAL`; a bad
/// message sent again stays bad.
pub mod codec {
    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
    use tonic::{Code, Status};
    use tonic_prost::{ProstCodec, ProstDecoder};

    #[derive(Debug, Clone, Default)]
    pub struct WireCodec<T, U>(ProstCodec<T, U>);

    impl<T, U> Codec for WireCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
        type Decoder = WireDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            self.0.encoder()
        }

        fn decoder(&mut self) -> Self::Decoder {
            WireDecoder(self.0.decoder())
        }
    }

    #[derive(Debug, Clone, Default)]
    pub struct WireDecoder<U>(ProstDecoder<U>);

    impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            self.0.decode(buf).map_err(|s| {
                if s.code() == Code::Internal {
                    Status::invalid_argument(format!(
                        "the message is not valid protobuf for this call: {}",
                        s.message()
                    ))
                } else {
                    s
                }
            })
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }
}

/// Encoded `FileDescriptorSet` of `wijkradar.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wijkradar_v1_descriptor.bin"));

impl v1::TableColumns {
    /// The cells this compact form stands for, exactly as a cell-layout
    /// answer lists them.
    pub fn cells(&self) -> Vec<v1::Cell> {
        let rows = self.area_codes.len();
        let mut values = self.released_values.iter();
        // Per row whose rate is rolled up: its wijk's place in rolled_up_areas.
        let wijk_of_row: Vec<Option<usize>> = (0..rows)
            .map(|row| {
                let rate_area = self.rate_area_codes.get(row)?;
                if Some(rate_area) == self.area_codes.get(row) {
                    return None;
                }
                self.rolled_up_areas.iter().position(|w| w == rate_area)
            })
            .collect();
        let per_block = self.rolled_up_areas.len();
        let base = |b: Option<&i64>| b.and_then(|&b| u64::try_from(b).ok());
        let mut out = Vec::with_capacity(self.statuses.len());
        for (i, &status) in self.statuses.iter().enumerate() {
            let (block, row) = (i / rows.max(1), i % rows.max(1));
            let status = i32::from(status);
            let value = (status == v1::CellStatus::Released as i32)
                .then(|| values.next().copied())
                .flatten();
            let has_rate = self
                .has_rate_bits
                .get(i / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0);
            let rate = has_rate
                .then(|| match wijk_of_row[row] {
                    None => value,
                    Some(w) => self
                        .rolled_up_values
                        .get(block * per_block + w)
                        .copied()
                        .filter(|&v| v > 0),
                })
                .flatten()
                .zip(base(self.rate_area_bases.get(row)))
                .map(|(n, b)| n as f64 * 1000.0 / b as f64);
            let (rate_area_code, household_base) = match rate {
                Some(_) => (
                    self.rate_area_codes[row].clone(),
                    base(self.rate_area_bases.get(row)),
                ),
                // A part that is not released (pending, purged) has no base.
                None if status == v1::CellStatus::Pending as i32
                    || status == v1::CellStatus::Purged as i32 =>
                {
                    (self.area_codes[row].clone(), None)
                }
                None => (self.area_codes[row].clone(), base(self.own_bases.get(row))),
            };
            out.push(v1::Cell {
                area_code: self.area_codes[row].clone(),
                signal_type: self.block_signal_types[block].clone(),
                month: self.block_periods[block].clone(),
                status,
                value,
                rate_per_1000: rate,
                rate_area_code,
                household_base,
                release_version: self.block_release_versions[block],
                crosses_key_change: self
                    .block_crosses_key_change
                    .get(block)
                    .copied()
                    .unwrap_or(false),
            });
        }
        out
    }
}
