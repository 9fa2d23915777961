//! The protobuf codec of Tidemark's ingest service: tonic's prost codec,
//! except that a message that does not decode is the sender's fault,
//! `INVALID_ARGUMENT` (not `INTERNAL`, which clients report as a server
//! bug and may retry), and is counted as a `malformed` request of the
//! `grpc` listener.

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Ingest messages that did not decode, not yet added to the listener's
/// counters (the codec has no handle on the control plane; `/metrics` and
/// the status API collect them with [`take_malformed`]).
static MALFORMED: AtomicU64 = AtomicU64::new(0);

/// Malformed ingest messages since the last call.
pub fn take_malformed() -> u64 {
    MALFORMED.swap(0, Ordering::Relaxed)
}

/// The ingest service's codec (`codec_path` in `build.rs`).
pub struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

/// Decodes as prost does; a failure is `INVALID_ARGUMENT`, counted.
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            MALFORMED.fetch_add(1, Ordering::Relaxed);
            Status::invalid_argument(format!(
                "the message is not a valid protobuf WriteRequest: {}",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
