//! API tokens: roles, making a token (its secret is shown once and only its BLAKE3 hash is
//! stored), and finding the token a request presents by comparing hashes in constant time.
use super::state::{State, StateError};
use rand_core::RngCore;
use subtle::ConstantTimeEq;

/// What a token may do; each role may also do everything of the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    /// Browse and download: plans, operations, repositories, snapshots, files, metrics.
    Read,
    /// Also run plans, pause and resume them, cancel operations, restore and check.
    Operate,
    /// Also forget, prune, manage tokens and read the audit log.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Read, Role::Operate, Role::Admin]
            .into_iter()
            .find(|r| r.name() == text)
    }
}

/// Who a request is: the token's name and role.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

pub(super) fn hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Makes and stores a token named `name`; its secret, to be shown once.
pub fn create(state: &State, name: &str, role: Role) -> Result<String, StateError> {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let secret = format!("strata_{}", hex::encode(bytes));
    state.add_token(name, role.name(), &hash(&secret))?;
    Ok(secret)
}

/// The token whose secret is `presented`, if any. Every stored hash is compared, each in
/// constant time, so the time taken tells nothing about how close a guess was.
pub fn find(state: &State, presented: &str) -> Result<Option<Caller>, StateError> {
    find_hash(state, &hash(presented))
}

/// The token whose secret hashes to `wanted`, if any (still stored: not revoked).
pub(super) fn find_hash(state: &State, wanted: &[u8; 32]) -> Result<Option<Caller>, StateError> {
    let mut found = None;
    for (name, role, stored) in state.token_hashes()? {
        let equal: bool = stored.as_slice().ct_eq(wanted).into();
        if equal {
            found = Role::parse(&role).map(|role| Caller { name, role });
        }
    }
    Ok(found)
}
