//! Who sent a command and what they may do (docs/PROTOCOL.md, "Signed
//! commands"). A principal is an ed25519 public key with roles, registered
//! as events on `principal/<id>` (or named in the node's configuration:
//! the bootstrap admins); its id is the key id its requests carry. A
//! request arrives with a [`Credential`]: signed requests are verified by
//! the handler (the key, the signature over [`signing::message`], the
//! timestamp within the skew window, the nonce never seen), and every
//! principal's command is put to the role table ([`roles`]) before it is
//! decided.
pub mod prepared;
pub mod roles;
pub mod signing;
pub mod verification;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::rejection::{Code, Rejection, Result};

pub use prepared::PreparedKey;
pub use signing::{Signed, Signer};
pub use verification::Verification;

/// What a principal may do; a principal may hold several roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Principals, agents and their capabilities, budgets, modules and
    /// policies.
    Admin,
    /// Tasks.
    Orchestrator,
    /// One agent's own work: its sessions, claims, completions, debits,
    /// actions and module runs.
    Agent,
    /// Expiries of sessions and leases whose deadline passed.
    Ticker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Orchestrator, Role::Agent, Role::Ticker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Orchestrator => "orchestrator",
            Role::Agent => "agent",
            Role::Ticker => "ticker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Rejection;

    fn from_str(s: &str) -> Result<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            Rejection::invalid(format!("unknown role {s:?}; the roles are admin, orchestrator, agent, ticker"))
        })
    }
}

/// An identity that may send commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its key id, recorded as the `actor` of every event it causes.
    pub id: String,
    pub public_key: [u8; 32],
    pub roles: BTreeSet<Role>,
    /// The one agent an `agent` principal acts for.
    pub agent_id: Option<String>,
}

impl Principal {
    /// A principal with `roles` and no key (one that acts in process only,
    /// such as serve's own ticker, never over the wire).
    pub fn in_process(id: &str, roles: &[Role]) -> Principal {
        Principal { id: id.to_owned(), public_key: [0; 32], roles: roles.iter().copied().collect(), agent_id: None }
    }

    /// The principal serve's ticker acts as: the `ticker` role only.
    pub fn ticker() -> Principal {
        Principal::in_process("ticker", &[Role::Ticker])
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Its roles, comma-separated, for messages.
    pub fn roles_text(&self) -> String {
        if self.roles.is_empty() {
            return "no role".into();
        }
        self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// How a request's sender is known.
#[derive(Clone, Debug, Default)]
pub enum Credential {
    /// In process and trusted: the command acts as the request's `actor`
    /// with no role check (the embedded log's own user, tests, the demo,
    /// and every request on a node in open mode).
    #[default]
    Trusted,
    /// A principal already established (serve's ticker; the second step of
    /// a saga a verified request started): its roles are checked.
    Principal(Principal),
    /// A signed request from the wire, to be verified.
    Signed(Signed),
    /// A request from the wire that carries no signature: refused as
    /// `unauthenticated` where signing is required.
    Unsigned,
}

/// What a node requires of requests from the wire (`auth.mode = "signed"`).
#[derive(Debug)]
pub struct Auth {
    /// The bootstrap admins, from the configuration: known without an event.
    pub admins: BTreeMap<String, Principal>,
    /// How far a request's timestamp may be from the node's clock, either
    /// way, in nanoseconds.
    pub skew_nanos: u64,
    /// Registered keys prepared for verification ([`PreparedKey`]: 30 KB
    /// and about 1 ms each), keyed by the key's bytes, so one per principal
    /// that has sent a request (a key is only looked up after its principal
    /// was found), the latest [`PREPARED_KEYS`] of them.
    prepared: Mutex<Prepared>,
}

/// How many prepared keys a node keeps (about 30 MB): beyond it, the key
/// prepared longest ago is dropped, and prepared again when next used.
pub const PREPARED_KEYS: usize = 1024;

#[derive(Debug, Default)]
struct Prepared {
    keys: HashMap<[u8; 32], Arc<PreparedKey>>,
    /// The keys in the order they were prepared: the first goes first.
    order: VecDeque<[u8; 32]>,
}

/// The default skew window: a minute each way.
pub const DEFAULT_SKEW_SECONDS: u64 = 60;

impl Auth {
    pub fn new(admins: impl IntoIterator<Item = Principal>, skew_seconds: u64) -> Auth {
        Auth {
            admins: admins.into_iter().map(|p| (p.id.clone(), p)).collect(),
            skew_nanos: skew_seconds.saturating_mul(1_000_000_000),
            prepared: Mutex::default(),
        }
    }

    /// `principal`'s key prepared for verification, once per key (outside
    /// the lock: another request's key is not kept waiting for it).
    pub fn prepared_key(&self, principal: &Principal) -> Result<Arc<PreparedKey>> {
        let lock = || self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = lock().keys.get(&principal.public_key) {
            return Ok(key.clone());
        }
        let key = Arc::new(PreparedKey::new(&principal.public_key).ok_or_else(|| {
            Rejection::new(Code::BadSignature, format!("the registered key of principal {} is unusable", principal.id))
        })?);
        let mut prepared = lock();
        if prepared.keys.insert(principal.public_key, key.clone()).is_none() {
            prepared.order.push_back(principal.public_key);
            while prepared.order.len() > PREPARED_KEYS
                && let Some(oldest) = prepared.order.pop_front()
            {
                prepared.keys.remove(&oldest);
            }
        }
        Ok(key)
    }
}

/// Decodes a 32-byte ed25519 public key from base64 (standard alphabet,
/// padded), as `agentlog keygen` prints it and the configuration holds it.
pub fn public_key_from_base64(what: &str, text: &str) -> Result<[u8; 32]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Rejection::invalid(format!("{what}: not base64 ({e})")))?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        Rejection::invalid(format!("{what}: an ed25519 public key is 32 bytes, this one is {}", bytes.len()))
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|e| Rejection::invalid(format!("{what}: not an ed25519 public key ({e})")))?;
    Ok(key)
}

pub(crate) fn unauthenticated(message: impl Into<String>) -> Rejection {
    Rejection::new(Code::Unauthenticated, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(n: u32) -> Principal {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_le_bytes());
        let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        Principal { public_key: key, ..Principal::in_process(&format!("p{n}"), &[Role::Agent]) }
    }

    #[test]
    fn a_key_is_prepared_once_and_the_oldest_goes_beyond_the_bound() {
        let auth = Auth::new([], DEFAULT_SKEW_SECONDS);
        let first = auth.prepared_key(&principal(0)).unwrap();
        assert!(Arc::ptr_eq(&first, &auth.prepared_key(&principal(0)).unwrap()), "kept, not prepared again");
        let second = auth.prepared_key(&principal(1)).unwrap();
        // One more than the bound in all: the first goes.
        for n in 2..=u32::try_from(PREPARED_KEYS).unwrap() {
            auth.prepared_key(&principal(n)).unwrap();
        }
        assert!(Arc::ptr_eq(&second, &auth.prepared_key(&principal(1)).unwrap()), "the second is still kept");
        let again = auth.prepared_key(&principal(0)).unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "the first key prepared was dropped beyond the bound");
        assert_eq!(auth.prepared.lock().unwrap().keys.len(), PREPARED_KEYS);
        // Prepared again, it verifies as before.
        let signer = ed25519_dalek::SigningKey::from_bytes(&[0; 32]);
        let signature = ed25519_dalek::Signer::sign(&signer, b"m").to_bytes();
        assert!(again.verify_strict(b"m", &signature));
    }

    #[test]
    fn a_registered_key_that_is_no_point_is_refused_as_a_bad_signature() {
        let auth = Auth::new([], DEFAULT_SKEW_SECONDS);
        let mut broken = principal(1);
        broken.public_key = [0; 32];
        broken.public_key[0] = 2;
        assert_eq!(auth.prepared_key(&broken).unwrap_err().code, Code::BadSignature);
    }
}
