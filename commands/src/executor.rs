//! [`Executor`]: whatever takes a command to a decision and answers — the
//! [`Handler`] in this process, or the command service's client over NATS.
//! Code that sends commands on its own (the ticker, the demo's workload)
//! names this trait, so it runs against either.
use agentlog_core::Log;

use crate::auth::Principal;
use crate::handler::{Accepted, Handler, Request};
use crate::rejection::Rejection;

pub trait Executor: Sync {
    /// Decides `request` and appends its events, or says why not.
    fn execute(&self, request: Request) -> impl Future<Output = Result<Accepted, Rejection>> + Send;
}

impl<L: Log> Executor for Handler<L> {
    async fn execute(&self, request: Request) -> Result<Accepted, Rejection> {
        Handler::execute(self, request).await
    }
}

/// An executor whose every request is sent as `principal` (its roles
/// checked): serve's ticker acts as [`Principal::ticker`] this way.
#[derive(Debug)]
pub struct AsPrincipal<'a, E> {
    pub executor: &'a E,
    pub principal: Principal,
}

impl<E: Executor> Executor for AsPrincipal<'_, E> {
    async fn execute(&self, request: Request) -> Result<Accepted, Rejection> {
        self.executor.execute(request.as_principal(self.principal.clone())).await
    }
}
