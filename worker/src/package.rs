//! Packages: the wire format of a task, signed and optionally compressed.
//!
//! ```text
//! bytes 0..4   b"q8s1"            magic and format version
//! byte  4      flags              bit 0: body is zlib-compressed
//! bytes 5..37  HMAC-SHA256 tag    over bytes 0..5 followed by the body
//! bytes 37..   body               the task as JSON, or zlib(JSON)
//! ```
//!
//! The HMAC key is derived from the secret key salted with the cluster name,
//! so a package only verifies on clusters that share both.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::task::Task;

/// The magic and version every package starts with.
pub const MAGIC: &[u8; 4] = b"q8s1";
/// Default limit on a package's size in bytes: 256 KiB, SQS's limit.
pub const DEFAULT_MAX_SIZE: usize = 256 * 1024;

const FLAG_COMPRESSED: u8 = 1;
const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 32;
const PREFIX_LEN: usize = HEADER_LEN + TAG_LEN;
/// A compressed body may expand to at most this many times the package limit.
const MAX_EXPANSION: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Refused at enqueue: the package would exceed the configured limit.
    #[error(
        "the task package is {size} bytes, over the limit of {limit} bytes (max_package_size); \
         pass large data by reference (a URL or a key) instead of in the arguments"
    )]
    TooLarge {
        /// Size of the package.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Shorter than a package's fixed prefix.
    #[error("not a package: {0} bytes is shorter than a package header")]
    Truncated(usize),
    /// Does not start with the magic of any known version.
    #[error("not a package: unknown format (does not start with q8s1)")]
    UnknownFormat,
    /// Flags this version does not know.
    #[error("not a package: unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// The signature does not verify with any configured key.
    #[error(
        "package signature does not verify: tampered with, or signed with another secret key or cluster name"
    )]
    BadSignature,
    /// Signed correctly but the body does not decompress.
    #[error("package body does not decompress: {0}")]
    Corrupt(String),
    /// Signed correctly but the body is not a task.
    #[error("package body is not a task: {0}")]
    Malformed(String),
    /// No secret key was given to sign with.
    #[error("no secret key: set secret_key or secret_key_file")]
    NoKey,
}

impl PackageError {
    /// A stable label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            PackageError::TooLarge { .. } => "too_large",
            PackageError::Truncated(_) => "truncated",
            PackageError::UnknownFormat => "unknown_format",
            PackageError::UnknownFlags(_) => "unknown_flags",
            PackageError::BadSignature => "bad_signature",
            PackageError::Corrupt(_) => "corrupt",
            PackageError::Malformed(_) => "malformed",
            PackageError::NoKey => "no_key",
        }
    }
}

/// A signed task package, as bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package(Vec<u8>);

impl Package {
    /// Wraps bytes read from a broker; nothing is verified until `Signer::unpack`.
    pub fn from_bytes(bytes: Vec<u8>) -> Package {
        Package(bytes)
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes to send, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the package has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Packs and signs tasks, verifies and unpacks packages, for one cluster name.
#[derive(Clone)]
pub struct Signer {
    /// Derived HMAC keys; the first signs, any verifies.
    keys: Vec<HmacSha256>,
    compress: bool,
    max_size: usize,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .field("compress", &self.compress)
            .field("max_size", &self.max_size)
            .finish()
    }
}

impl Signer {
    /// A signer for `cluster_name` with `secret_keys` (the first signs).
    pub fn new(
        secret_keys: &[String],
        cluster_name: &str,
        compress: bool,
        max_size: usize,
    ) -> Result<Signer, PackageError> {
        if secret_keys.is_empty() {
            return Err(PackageError::NoKey);
        }
        let keys = secret_keys
            .iter()
            .map(|secret| derive_key(secret, cluster_name))
            .collect();
        Ok(Signer {
            keys,
            compress,
            max_size,
        })
    }

    /// Serializes, optionally compresses, and signs `task`; refuses packages over the limit.
    pub fn pack(&self, task: &Task) -> Result<Package, PackageError> {
        let json = serde_json::to_vec(task).map_err(|e| PackageError::Malformed(e.to_string()))?;
        let (flags, body) = if self.compress {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder
                .write_all(&json)
                .and_then(|()| encoder.finish())
                .map(|body| (FLAG_COMPRESSED, body))
                .map_err(|e| PackageError::Corrupt(e.to_string()))?
        } else {
            (0, json)
        };
        let size = PREFIX_LEN + body.len();
        if size > self.max_size {
            return Err(PackageError::TooLarge {
                size,
                limit: self.max_size,
            });
        }
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(MAGIC);
        bytes.push(flags);
        let tag = self.tag(&self.keys[0], &bytes[..HEADER_LEN], &body);
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(&body);
        Ok(Package(bytes))
    }

    /// Verifies the signature with any key, then decompresses and parses the task.
    pub fn unpack(&self, bytes: &[u8]) -> Result<Task, PackageError> {
        if bytes.len() < PREFIX_LEN {
            return Err(PackageError::Truncated(bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err(PackageError::UnknownFormat);
        }
        let flags = bytes[4];
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(PackageError::UnknownFlags(flags));
        }
        let header = &bytes[..HEADER_LEN];
        let tag = &bytes[HEADER_LEN..PREFIX_LEN];
        let body = &bytes[PREFIX_LEN..];
        let verified = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(header);
            mac.update(body);
            mac.verify_slice(tag).is_ok()
        });
        if !verified {
            return Err(PackageError::BadSignature);
        }
        let json = if flags & FLAG_COMPRESSED != 0 {
            let limit = self.max_size.saturating_mul(MAX_EXPANSION);
            let mut json = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut json)
                .map_err(|e| PackageError::Corrupt(e.to_string()))?;
            if json.len() > limit {
                return Err(PackageError::Corrupt(format!(
                    "expands beyond {limit} bytes"
                )));
            }
            json
        } else {
            body.to_vec()
        };
        serde_json::from_slice(&json).map_err(|e| PackageError::Malformed(e.to_string()))
    }

    fn tag(&self, key: &HmacSha256, header: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = key.clone();
        mac.update(header);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// HMAC-SHA256(secret, "q8s.package:" + cluster name): the key that signs packages.
fn derive_key(secret: &str, cluster_name: &str) -> HmacSha256 {
    let mut salt = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    salt.update(b"q8s.package:");
    salt.update(cluster_name.as_bytes());
    let derived = salt.finalize().into_bytes();
    HmacSha256::new_from_slice(&derived)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    fn signer(compress: bool) -> Signer {
        Signer::new(
            &["secret-one".to_string()],
            "default",
            compress,
            DEFAULT_MAX_SIZE,
        )
        .expect("a key is given")
    }

    fn task() -> Task {
        let mut task = Task::new("math.copysign");
        task.args = vec![json!(2), json!(-2)];
        task
    }

    #[test]
    fn packed_task_unpacks_to_the_same_task() {
        for compress in [false, true] {
            let signer = signer(compress);
            let package = signer.pack(&task()).expect("packs");
            let unpacked = signer.unpack(package.as_bytes()).expect("verifies");
            assert_eq!(unpacked.func, "math.copysign");
            assert_eq!(unpacked.args, vec![json!(2), json!(-2)]);
        }
    }

    #[test]
    fn package_signed_with_another_key_is_rejected() {
        let other = Signer::new(&["secret-two".into()], "default", false, DEFAULT_MAX_SIZE)
            .expect("a key is given");
        let package = other.pack(&task()).expect("packs");
        assert!(matches!(
            signer(false).unpack(package.as_bytes()),
            Err(PackageError::BadSignature)
        ));
    }

    #[test]
    fn package_signed_for_another_cluster_name_is_rejected() {
        let other = Signer::new(&["secret-one".into()], "reports", false, DEFAULT_MAX_SIZE)
            .expect("a key is given");
        let package = other.pack(&task()).expect("packs");
        assert!(matches!(
            signer(false).unpack(package.as_bytes()),
            Err(PackageError::BadSignature)
        ));
    }

    #[test]
    fn any_configured_key_verifies_and_the_first_signs() {
        let rotated = Signer::new(
            &["secret-new".into(), "secret-one".into()],
            "default",
            false,
            DEFAULT_MAX_SIZE,
        )
        .expect("keys are given");
        let old_package = signer(false).pack(&task()).expect("packs");
        assert!(rotated.unpack(old_package.as_bytes()).is_ok());
        let new_package = rotated.pack(&task()).expect("packs");
        assert!(matches!(
            signer(false).unpack(new_package.as_bytes()),
            Err(PackageError::BadSignature)
        ));
    }

    #[test]
    fn truncated_and_foreign_bytes_are_rejected() {
        let package = signer(false).pack(&task()).expect("packs");
        let bytes = package.as_bytes();
        assert!(matches!(
            signer(false).unpack(&bytes[..10]),
            Err(PackageError::Truncated(10))
        ));
        assert!(matches!(
            signer(false).unpack(&bytes[..bytes.len() - 1]),
            Err(PackageError::BadSignature)
        ));
        assert!(matches!(
            signer(false).unpack(br#"{"func": "q8s.noop", "this is": "not a package at all"}"#),
            Err(PackageError::UnknownFormat)
        ));
    }

    #[test]
    fn oversized_package_is_refused_at_pack() {
        let small = Signer::new(&["k".into()], "default", false, 1024).expect("a key is given");
        let mut big = task();
        big.args = vec![Value::String("x".repeat(2000))];
        assert!(matches!(
            small.pack(&big),
            Err(PackageError::TooLarge { limit: 1024, .. })
        ));
    }

    #[test]
    fn no_key_is_an_error() {
        assert!(matches!(
            Signer::new(&[], "default", false, DEFAULT_MAX_SIZE),
            Err(PackageError::NoKey)
        ));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e12f64..1e12).prop_map(|f| json!(f)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn arbitrary_task() -> impl Strategy<Value = Task> {
        (
            "[a-z]{1,8}\\.[a-z_]{1,12}",
            prop::collection::vec(json_value(), 0..4),
            prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..3),
            proptest::option::of("[a-z ]{0,12}"),
            proptest::option::of(1u64..100_000),
        )
            .prop_map(|(func, args, kwargs, group, timeout)| {
                let mut task = Task::new(func);
                task.args = args;
                task.kwargs = kwargs.into_iter().collect();
                task.group = group;
                task.timeout = timeout;
                task
            })
    }

    proptest! {
        #[test]
        fn round_trip_preserves_any_task(task in arbitrary_task(), compress in any::<bool>()) {
            let signer = signer(compress);
            let package = signer.pack(&task).expect("packs");
            let unpacked = signer.unpack(package.as_bytes()).expect("verifies");
            prop_assert_eq!(unpacked, task);
        }

        #[test]
        fn any_single_byte_change_is_rejected(
            task in arbitrary_task(),
            compress in any::<bool>(),
            position in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let signer = signer(compress);
            let mut bytes = signer.pack(&task).expect("packs").into_bytes();
            let index = position.index(bytes.len());
            bytes[index] ^= xor;
            prop_assert!(signer.unpack(&bytes).is_err());
        }
    }
}
