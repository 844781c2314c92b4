//! The one gRPC-code → HTTP-status table, and what the caller is told for each code.
//!
//! Both are exhaustive `match`es on [`tonic::Code`] with no wildcard arm, so a code added to
//! tonic forces a decision here. The agent's messages for codes that describe the caller's
//! request (auth, validation, conflicts) are written for the guest and forwarded; for codes that
//! describe an agent fault the caller gets a fixed text and the detail goes to the log.

use http::StatusCode;
use tonic::Code;

/// The HTTP status for a LocalApi gRPC status code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        // Success never reaches this table (the reply is built from the response message);
        // should an agent ever send OK as an error, it is a broken agent, not a success.
        Code::Ok => StatusCode::INTERNAL_SERVER_ERROR,
        // The call was cancelled (by the agent shutting down mid-call): an agent-side fault.
        Code::Cancelled => StatusCode::INTERNAL_SERVER_ERROR,
        // The agent could not classify its own error.
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        // Bad request field (e.g. a snapshot name Proxmox would reject).
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        // The agent's own deadline expired (e.g. a Proxmox task that did not finish in time).
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // E.g. rollback to a snapshot the guest does not have.
        Code::NotFound => StatusCode::NOT_FOUND,
        // E.g. a snapshot with that name exists already: a conflict with current state.
        Code::AlreadyExists => StatusCode::CONFLICT,
        // Valid token, but not allowed for this guest (LOCAL-API.md: 403).
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        // The agent's own rate or queue limit.
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // The guest is not in a state for this (locked, stopped, …): conflict.
        Code::FailedPrecondition => StatusCode::CONFLICT,
        // Lost a race (e.g. another operation took the guest's lock): conflict, retry later.
        Code::Aborted => StatusCode::CONFLICT,
        // A value outside its range is a bad request.
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        // The agent does not offer this RPC (older agent than gateway).
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        // An invariant broke inside the agent.
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        // The agent is down, restarting or unreachable (also what a failed connect yields).
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Unrecoverable data loss in the agent: an agent fault, not the caller's.
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        // No/unknown token (LOCAL-API.md: 401).
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// The `error` text the caller sees for a failed LocalApi call.
pub fn caller_message(status: &tonic::Status) -> String {
    let forward = || {
        if status.message().is_empty() {
            default_text(status.code()).to_owned()
        } else {
            status.message().to_owned()
        }
    };
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::DeadlineExceeded => forward(),
        // Transport errors and agent faults: their text describes the agent's internals (socket
        // paths, connection errors), which are none of the guest's business.
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => default_text(status.code()).to_owned(),
    }
}

fn default_text(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unknown or revoked token",
        Code::PermissionDenied => "this operation is not allowed for this guest",
        Code::InvalidArgument | Code::OutOfRange => "invalid request",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition | Code::Aborted => "the guest is busy or not in a state for this",
        Code::ResourceExhausted => "too many requests; retry later",
        Code::DeadlineExceeded => "the agent did not finish in time",
        Code::Unimplemented => "this agent does not implement the operation",
        Code::Unavailable => "the host agent is unavailable",
        Code::Ok | Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            "internal error in the host agent"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code tonic knows, by its wire number (0–16).
    fn all_codes() -> Vec<Code> {
        (0..=16).map(Code::from_i32).collect()
    }

    #[test]
    fn every_grpc_code_has_the_documented_status() {
        let expected = [
            (Code::Ok, 500),
            (Code::Cancelled, 500),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 409),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        let codes = all_codes();
        assert_eq!(codes.len(), expected.len());
        for (code, (want_code, want_status)) in codes.into_iter().zip(expected) {
            assert_eq!(code, want_code, "table order follows wire numbers");
            assert_eq!(http_status(code).as_u16(), want_status, "{code:?}");
        }
    }

    #[test]
    fn caller_errors_forward_the_agents_text() {
        let s = tonic::Status::not_found("snapshot 'before-upgrade' does not exist");
        assert_eq!(
            caller_message(&s),
            "snapshot 'before-upgrade' does not exist"
        );
    }

    #[test]
    fn agent_faults_hide_their_detail() {
        let s = tonic::Status::unavailable("error trying to connect: /run/felhom/agent.sock");
        assert_eq!(caller_message(&s), "the host agent is unavailable");
        let s = tonic::Status::internal("database is locked at state.rs:42");
        assert_eq!(caller_message(&s), "internal error in the host agent");
    }

    #[test]
    fn empty_agent_message_gets_a_default() {
        let s = tonic::Status::unauthenticated("");
        assert_eq!(caller_message(&s), "unknown or revoked token");
    }
}
