//! What a component must be to run here: a component (not a core module) exporting
//! `wasi:http/incoming-handler` and importing only the WASI this host links.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadError;

/// The WASI versions the linker provides. wasmtime-wasi 48.0.8 bundles the 0.2.12 WIT and
/// wasmtime matches any older 0.2.x import to it by semver; newer ones cannot be linked.
pub const HOST_WASI_VERSIONS: &str = "WASI 0.2.0 to 0.2.12";
const HOST_WASI_MAX_PATCH: u64 = 12;
/// The WASI packages the linker provides (wasmtime-wasi's p2 set plus wasi:http).
const HOST_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:http",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

#[derive(Debug, PartialEq, Eq)]
pub(super) enum BinaryKind {
    Component,
    CoreModule,
    NotWasm,
}

/// Tells components from core modules by the preamble: magic, then version 1 for modules or
/// version 0x0d with layer 1 for components.
pub(super) fn binary_kind(bytes: &[u8]) -> BinaryKind {
    match bytes {
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => BinaryKind::CoreModule,
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => BinaryKind::Component,
        _ => BinaryKind::NotWasm,
    }
}

pub(super) fn check_kind(bytes: &[u8]) -> Result<(), LoadError> {
    match binary_kind(bytes) {
        BinaryKind::Component => Ok(()),
        BinaryKind::CoreModule => Err(LoadError::NotAComponent),
        BinaryKind::NotWasm => Err(LoadError::NotWasm),
    }
}

pub(super) fn check_exports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let names: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    if names.iter().any(|n| interface_of(n) == INCOMING_HANDLER) {
        return Ok(());
    }
    let found = if names.is_empty() {
        "; it exports nothing".to_owned()
    } else {
        format!("; it exports {}", names.join(", "))
    };
    Err(LoadError::MissingExport(found))
}

/// Checks every import by name before the linker's own type check, for errors that say which
/// versions would work.
pub(super) fn check_imports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    for (name, _) in component.component_type().imports(engine) {
        check_import(name).map_err(|detail| LoadError::UnsupportedImport {
            import: name.to_owned(),
            detail,
        })?;
    }
    Ok(())
}

/// Whether this host can link an import named `name` (e.g. `wasi:http/types@0.2.4`); the error
/// completes "the component imports <name>, ...".
pub fn check_import(name: &str) -> Result<(), String> {
    let (interface, version) = match name.split_once('@') {
        Some((interface, version)) => (interface, Some(version)),
        None => (name, None),
    };
    let package = interface.split('/').next().unwrap_or(interface);
    if !HOST_PACKAGES.contains(&package) {
        return Err(format!(
            "which this host does not provide (it links {} in {HOST_WASI_VERSIONS})",
            HOST_PACKAGES.join(", ")
        ));
    }
    let Some(version) = version else {
        return Err(format!(
            "without a version, but this host supports {HOST_WASI_VERSIONS}"
        ));
    };
    if supported_version(version) {
        Ok(())
    } else {
        Err(format!("but this host supports {HOST_WASI_VERSIONS}"))
    }
}

/// 0.2.x with x up to the host's patch; a pre-release of one of those (old 0.2.0 release
/// candidates) is left to the linker's type check.
fn supported_version(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or(version);
    let mut parts = core.split('.').map(str::parse::<u64>);
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(Ok(0)), Some(Ok(2)), Some(Ok(patch)), None) if patch <= HOST_WASI_MAX_PATCH
    )
}

/// `wasi:http/types@0.2.4` -> `wasi:http/types`.
fn interface_of(name: &str) -> &str {
    name.split_once('@')
        .map_or(name, |(interface, _)| interface)
}

/// Turns the linker's error into one that names the import. The linker reports
/// "component imports instance `wasi:http/types@0.2.4`, but a matching implementation was not
/// found in the linker" with the reason beneath.
pub(super) fn link_error(err: wasmtime::Error) -> LoadError {
    let top = err.to_string();
    let import = top.split('`').nth(1).map(str::to_owned);
    let cause = err
        .chain()
        .skip(1)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    match import {
        Some(import) => LoadError::UnsupportedImport {
            detail: format!(
                "which this host cannot link ({cause}); it supports {HOST_WASI_VERSIONS}"
            ),
            import,
        },
        None => LoadError::Invalid(format!("{err:#}")),
    }
}
