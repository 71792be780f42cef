//! A command type's policy binding (stream `policy/<command>`): which
//! policy module, if any, is asked about each such command.
use agentlog_core::schema::SandboxPolicyBound;
use agentlog_core::{Body, Envelope};
use serde::Serialize;

use super::{Decision, Module};
use crate::module::ModuleKind;
use crate::rejection::{Code, Rejection};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The policy module's hash; `None`: no policy.
    pub module_hash: Option<String>,
}

impl Binding {
    pub fn apply(&mut self, event: &Envelope) {
        if let Some(Body::SandboxPolicyBound(e)) = &event.body {
            self.module_hash = Some(e.module_hash.clone()).filter(|h| !h.is_empty());
        }
    }
}

/// Binds `module` (registered as a policy) to `command`, or unbinds it.
pub fn bind(binding: &Binding, command: &str, module_hash: &str, module: Option<&Module>) -> Decision {
    if let Some(module) = module {
        match &module.registered {
            None => {
                return Err(Rejection::new(Code::NotFound, format!("no module {module_hash} is registered")).into());
            }
            Some(registered) if registered.kind != ModuleKind::Policy => {
                return Err(Rejection::new(
                    Code::WrongModuleKind,
                    format!("module {module_hash} is an {} module; only a policy is bound", registered.kind.as_str()),
                )
                .into());
            }
            Some(_) => {}
        }
    }
    let previous = binding.module_hash.clone().unwrap_or_default();
    if previous == module_hash {
        let what = if module_hash.is_empty() { "no policy".to_owned() } else { format!("policy {module_hash}") };
        return Err(Rejection::new(Code::AlreadyExists, format!("{command} has {what} already")).into());
    }
    Ok(vec![Body::SandboxPolicyBound(SandboxPolicyBound {
        command: command.to_owned(),
        module_hash: module_hash.to_owned(),
        previous_module_hash: previous,
    })])
}
