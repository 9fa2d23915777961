//! The protobuf codec of the ingest services (Tidemark's own and OTLP's):
//! a request is handed over encoded ([`Encoded`]), not decoded by tonic,
//! so that the server can measure what decoding it takes, charge that to
//! its decoding budget (`limits.max_decode_mb`) and only then decode it
//! (in place for Tidemark's messages). Replies are encoded by prost.
//! tonic has already uncompressed the message and checked it against the
//! service's `max_decoding_message_size`.

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// A request message as it came, uncompressed and not yet decoded.
#[derive(Debug, Clone)]
pub struct Encoded(pub Bytes);

/// The services' codec (`codec_path` in `build.rs`): replies of type `T`
/// encoded by prost, requests kept [`Encoded`].
pub struct RawCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RawCodec<T, U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<T: Message + Send + 'static> Codec for RawCodec<T, Encoded> {
    type Encode = T;
    type Decode = Encoded;
    type Encoder = ProstEncoder<T>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// Takes a message's bytes as they are.
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Encoded;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Encoded>, Status> {
        Ok(Some(Encoded(buf.copy_to_bytes(buf.remaining()))))
    }
}
