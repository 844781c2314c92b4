//! Client side of gRPC server reflection (`grpc.reflection.v1.ServerReflection`): lists the
//! services and assembles a `DescriptorPool` from the file descriptors the server sends.
//!
//! Each question is its own short bidirectional stream (one request, one response); a handful
//! of them run per felhomctl invocation, all over one HTTP/2 connection. Dependencies the
//! server did not include in an answer are fetched by file name until the set is closed.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use super::CtlError;

/// A reflection client on one channel.
pub(super) struct Reflector {
    client: ServerReflectionClient<Channel>,
}

impl Reflector {
    pub(super) fn new(channel: Channel) -> Self {
        Self {
            client: ServerReflectionClient::new(channel),
        }
    }

    /// Full names of the services the server offers, sorted.
    pub(super) async fn list_services(&mut self) -> Result<Vec<String>, CtlError> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await?
        {
            MessageResponse::ListServicesResponse(list) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                Ok(names)
            }
            other => Err(unexpected("ListServices", &other)),
        }
    }

    /// A pool holding every file that defines one of `services`, plus all their imports.
    pub(super) async fn pool_for(
        &mut self,
        services: &[String],
    ) -> Result<DescriptorPool, CtlError> {
        let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
        for service in services {
            let answer = self
                .ask(MessageRequest::FileContainingSymbol(service.clone()))
                .await?;
            add_files(&mut files, answer, "FileContainingSymbol")?;
        }
        loop {
            let missing: Vec<String> = files
                .values()
                .flat_map(|f| f.dependency.iter())
                .filter(|dep| !files.contains_key(*dep))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
            for name in missing {
                let answer = self.ask(MessageRequest::FileByFilename(name)).await?;
                add_files(&mut files, answer, "FileByFilename")?;
            }
        }
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_protos(files.into_values())
            .map_err(|e| CtlError::Reflection {
                detail: format!("the server's descriptors do not fit together: {e}"),
            })?;
        Ok(pool)
    }

    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, CtlError> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut answers = self
            .client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unimplemented => CtlError::Reflection {
                    detail: "the server does not offer grpc.reflection.v1 (UNIMPLEMENTED)"
                        .to_owned(),
                },
                _ => CtlError::Status { status },
            })?
            .into_inner();
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| CtlError::Reflection {
                detail: "the server closed the stream without an answer".to_owned(),
            })?;
        match answer.message_response {
            Some(MessageResponse::ErrorResponse(e)) => Err(CtlError::Status {
                status: tonic::Status::new(tonic::Code::from_i32(e.error_code), e.error_message),
            }),
            Some(other) => Ok(other),
            None => Err(CtlError::Reflection {
                detail: "the server sent an empty answer".to_owned(),
            }),
        }
    }
}

fn add_files(
    files: &mut BTreeMap<String, FileDescriptorProto>,
    answer: MessageResponse,
    asked: &str,
) -> Result<(), CtlError> {
    let MessageResponse::FileDescriptorResponse(response) = answer else {
        return Err(unexpected(asked, &answer));
    };
    for bytes in response.file_descriptor_proto {
        let file =
            FileDescriptorProto::decode(bytes.as_slice()).map_err(|e| CtlError::Reflection {
                detail: format!("the server sent an undecodable file descriptor: {e}"),
            })?;
        files.entry(file.name().to_owned()).or_insert(file);
    }
    Ok(())
}

fn unexpected(asked: &str, answer: &MessageResponse) -> CtlError {
    let kind = match answer {
        MessageResponse::FileDescriptorResponse(_) => "file descriptors",
        MessageResponse::AllExtensionNumbersResponse(_) => "extension numbers",
        MessageResponse::ListServicesResponse(_) => "a service list",
        MessageResponse::ErrorResponse(_) => "an error",
    };
    CtlError::Reflection {
        detail: format!("asked {asked}, the server answered with {kind}"),
    }
}
