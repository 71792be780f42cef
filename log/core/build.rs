//! Compiles `proto/agentlog/v1/*.proto` with protox (pure Rust, no system
//! `protoc`) and prost. Event bodies get `serde::Serialize` so that tools can
//! print them as JSON; enum fields print their short names.
use std::io::Result;

fn main() -> Result<()> {
    let protos = ["../proto/agentlog/v1/events.proto", "../proto/agentlog/v1/commands.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["../proto"]).map_err(std::io::Error::other)?;
    let mut config = prost_build::Config::new();
    config
        .type_attribute(".agentlog.v1", "#[derive(serde::Serialize)]")
        .type_attribute(".agentlog.v1.Envelope.body", "#[serde(tag = \"type\", rename_all = \"snake_case\")]")
        .field_attribute(
            ".agentlog.v1.RecordAction.kind",
            "#[serde(serialize_with = \"crate::schema::json::action_kind\")]",
        )
        .field_attribute(
            ".agentlog.v1.ActionRecorded.kind",
            "#[serde(serialize_with = \"crate::schema::json::action_kind\")]",
        );
    for field in [
        ".agentlog.v1.ActionRecorded.outcome",
        ".agentlog.v1.BudgetDebited.outcome",
        ".agentlog.v1.RecordAction.outcome",
    ] {
        config.field_attribute(field, "#[serde(serialize_with = \"crate::schema::json::outcome\")]");
    }
    // Bytes print as base64 (standard alphabet, padded), not as arrays of
    // numbers.
    for field in [
        ".agentlog.v1.SandboxModuleRegistered.module",
        ".agentlog.v1.SandboxRunCompleted.input",
        ".agentlog.v1.SandboxRunCompleted.output",
        ".agentlog.v1.SandboxRunTrapped.input",
        ".agentlog.v1.RegisterModule.module",
        ".agentlog.v1.RunModule.input",
        ".agentlog.v1.RunResult.output",
        ".agentlog.v1.PrincipalRegistered.public_key",
        ".agentlog.v1.RegisterPrincipal.public_key",
    ] {
        config.field_attribute(field, "#[serde(serialize_with = \"crate::schema::json::base64\")]");
    }
    for field in ["event_id", "correlation_id", "causation_id", "session_id", "saga_id", "hash"] {
        config.field_attribute(
            format!(".agentlog.v1.Envelope.{field}"),
            "#[serde(serialize_with = \"crate::schema::json::base64\")]",
        );
    }
    for field in [".agentlog.v1.SandboxModuleRegistered.kind", ".agentlog.v1.RegisterModule.kind"] {
        config.field_attribute(field, "#[serde(serialize_with = \"crate::schema::json::module_kind\")]");
    }
    config.compile_fds(descriptors)
}
