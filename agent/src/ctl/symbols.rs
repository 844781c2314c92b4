//! Resolving the names an operator types (`pkg.Service`, `pkg.Service/Method`,
//! `pkg.Service.Method`, `pkg.Message`, `pkg.Enum`, with or without a leading dot) against the
//! reflected descriptors. Failures list what does exist, so the next try can be right.

use prost_reflect::{
    DescriptorPool, EnumDescriptor, MessageDescriptor, MethodDescriptor, ServiceDescriptor,
};

use super::CtlError;

/// Something `describe` can show.
#[derive(Debug)]
pub(super) enum Symbol {
    Service(ServiceDescriptor),
    Method(MethodDescriptor),
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

/// The service named `name` among the server's `services`.
pub(super) fn service(
    pool: &DescriptorPool,
    services: &[String],
    name: &str,
) -> Result<ServiceDescriptor, CtlError> {
    let name = name.trim_start_matches('.');
    // Only services the server lists count: the pool also holds services of imported files
    // that the server does not serve.
    services
        .iter()
        .any(|s| s == name)
        .then(|| pool.get_service_by_name(name))
        .flatten()
        .ok_or_else(|| CtlError::UnknownService {
            name: name.to_owned(),
            known: services.to_vec(),
        })
}

/// The method named `pkg.Service/Method` or `pkg.Service.Method`.
pub(super) fn method(
    pool: &DescriptorPool,
    services: &[String],
    name: &str,
) -> Result<MethodDescriptor, CtlError> {
    let name = name.trim_start_matches('.');
    let split = name.rsplit_once('/').or_else(|| name.rsplit_once('.'));
    let Some((service_name, method_name)) = split else {
        return Err(CtlError::UnknownService {
            name: name.to_owned(),
            known: services.to_vec(),
        });
    };
    let service = match self::service(pool, services, service_name) {
        Ok(service) => service,
        Err(unknown) => {
            // `call pkg.Service` names a service where a method belongs.
            if let Ok(whole) = self::service(pool, services, name) {
                return Err(CtlError::ServiceNotMethod {
                    name: name.to_owned(),
                    known: method_names(&whole),
                });
            }
            return Err(unknown);
        }
    };
    service
        .methods()
        .find(|m| m.name() == method_name)
        .ok_or_else(|| CtlError::UnknownMethod {
            service: service.full_name().to_owned(),
            name: method_name.to_owned(),
            known: method_names(&service),
        })
}

/// Any describable symbol.
pub(super) fn resolve(
    pool: &DescriptorPool,
    services: &[String],
    name: &str,
) -> Result<Symbol, CtlError> {
    let name = name.trim_start_matches('.');
    if let Ok(service) = service(pool, services, name) {
        return Ok(Symbol::Service(service));
    }
    if let Some(message) = pool.get_message_by_name(name) {
        return Ok(Symbol::Message(message));
    }
    if let Some(en) = pool.get_enum_by_name(name) {
        return Ok(Symbol::Enum(en));
    }
    let looks_like_method = name
        .rsplit_once('/')
        .or_else(|| name.rsplit_once('.'))
        .is_some_and(|(svc, _)| services.iter().any(|s| s == svc));
    if looks_like_method {
        return method(pool, services, name).map(Symbol::Method);
    }
    Err(CtlError::UnknownSymbol {
        name: name.to_owned(),
        services: services.to_vec(),
    })
}

fn method_names(service: &ServiceDescriptor) -> Vec<String> {
    service.methods().map(|m| m.name().to_owned()).collect()
}
