//! Front ends: what calls into the capabilities. The internal gRPC services, the embedded
//! local-API gateway and the scheduler.

pub mod grpc;
pub mod local_api_gateway;
pub mod scheduler;
