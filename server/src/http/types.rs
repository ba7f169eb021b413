//! Which entity types a request may name: registered ones (else 400) that
//! the caller's tenant may use (else 403).

use std::collections::HashSet;

use crate::config::Registry as EntityRegistry;
use crate::error::ApiError;

/// 400 for an unregistered type, then 403 for one the tenant may not touch.
pub(crate) fn check_types<'a>(
    registry: &EntityRegistry,
    tenant: &str,
    types: impl IntoIterator<Item = &'a String> + Clone,
) -> Result<(), ApiError> {
    for t in types.clone() {
        if !registry.is_registered(t) {
            return Err(ApiError::UnknownEntityType(t.clone()));
        }
    }
    for t in types {
        if !registry.is_allowed(tenant, t) {
            return Err(ApiError::Forbidden(t.clone()));
        }
    }
    Ok(())
}

/// The requested types, or every type the tenant may use when the list is
/// empty.
pub(crate) fn requested_types(
    registry: &EntityRegistry,
    tenant: &str,
    types: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Ok(registry
            .types()
            .map(|(t, _)| t.to_owned())
            .filter(|t| registry.is_allowed(tenant, t))
            .collect());
    }
    check_types(registry, tenant, &types)?;
    let mut seen = HashSet::new();
    Ok(types
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect())
}
