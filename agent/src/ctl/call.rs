//! Invoking a method with dynamic messages: a tonic `Codec` that encodes any `DynamicMessage`
//! and decodes responses as the method's reflected output type, for all four call shapes.

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::CtlError;

/// Calls `method` with `requests` and hands each response message to `on_response` in arrival
/// order. Unary and server-streaming methods get the first request (the caller checks there
/// is exactly one); client- and bidi-streaming methods get all of them.
pub(super) async fn invoke(
    channel: Channel,
    method: &MethodDescriptor,
    requests: Vec<DynamicMessage>,
    mut on_response: impl FnMut(DynamicMessage) -> Result<(), CtlError>,
) -> Result<(), CtlError> {
    let path: http::uri::PathAndQuery =
        format!("/{}/{}", method.parent_service().full_name(), method.name())
            .parse()
            .map_err(|e| CtlError::Reflection {
                detail: format!("method {} has no valid gRPC path: {e}", method.full_name()),
            })?;
    let codec = DynamicCodec {
        output: method.output(),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| CtlError::Status {
        status: Status::unavailable(format!("connection not ready: {e}")),
    })?;
    let first = requests
        .first()
        .cloned()
        .unwrap_or_else(|| DynamicMessage::new(method.input()));
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => {
            let response = grpc.unary(tonic::Request::new(first), path, codec).await?;
            on_response(response.into_inner())
        }
        (false, true) => {
            let mut stream = grpc
                .server_streaming(tonic::Request::new(first), path, codec)
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                on_response(message)?;
            }
            Ok(())
        }
        (true, false) => {
            let response = grpc
                .client_streaming(
                    tonic::Request::new(tokio_stream::iter(requests)),
                    path,
                    codec,
                )
                .await?;
            on_response(response.into_inner())
        }
        (true, true) => {
            let mut stream = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::iter(requests)),
                    path,
                    codec,
                )
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                on_response(message)?;
            }
            Ok(())
        }
    }
}

/// The canonical upper-case name of a gRPC status code, as grpcurl and the spec print it.
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Encodes any dynamic message; decodes as `output`.
#[derive(Debug, Clone)]
struct DynamicCodec {
    output: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            output: self.output.clone(),
        }
    }
}

#[derive(Debug)]
struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode request: {e}")))
    }
}

#[derive(Debug)]
struct DynamicDecoder {
    output: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.output.clone(), src)
            .map(Some)
            .map_err(|e| {
                Status::internal(format!(
                    "cannot decode response as {}: {e}",
                    self.output.full_name()
                ))
            })
    }
}
