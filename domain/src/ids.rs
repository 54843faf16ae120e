//! UUID newtypes for every kind of id. The nil UUID is rejected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "Uuid", into = "Uuid")]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID; the nil UUID is rejected.
            pub fn new(id: Uuid) -> Result<Self, ValidationError> {
                if id.is_nil() {
                    Err(ValidationError::new($field, "must not be the nil UUID"))
                } else {
                    Ok(Self(id))
                }
            }

            /// Parses the hyphenated text form.
            pub fn parse(text: &str) -> Result<Self, ValidationError> {
                let id = Uuid::parse_str(text)
                    .map_err(|_| ValidationError::new($field, "must be a UUID"))?;
                Self::new(id)
            }

            /// For fixed, non-zero sample ids inside this crate.
            #[allow(dead_code)]
            pub(crate) const fn fixed(n: u128) -> Self {
                assert!(n != 0, "the nil UUID is not an id");
                Self(Uuid::from_u128(n))
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl TryFrom<Uuid> for $name {
            type Error = ValidationError;
            fn try_from(id: Uuid) -> Result<Self, Self::Error> {
                Self::new(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant (a studio or a reseller's customer).
    TenantId, "tenant_id"
);
uuid_id!(
    /// A render job.
    JobId, "job_id"
);
uuid_id!(
    /// A task (a chunk of frames) of a render job.
    TaskId, "task_id"
);
uuid_id!(
    /// A render-farm node.
    NodeId, "node_id"
);
uuid_id!(
    /// A stored file (scene, input or output frame).
    FileId, "file_id"
);
uuid_id!(
    /// A user (a person or a service account of a tenant).
    UserId, "user_id"
);
uuid_id!(
    /// An API key.
    ApiKeyId, "api_key_id"
);
uuid_id!(
    /// A webhook endpoint.
    EndpointId, "endpoint_id"
);
uuid_id!(
    /// One notification sent to a webhook endpoint.
    NotificationId, "notification_id"
);
uuid_id!(
    /// The id under which a node's HMAC secret is stored; never the secret.
    SecretKeyId, "secret_key_id"
);

impl TaskId {
    /// The id of the `index`-th task of a job, derived from the job id so
    /// that splitting a job is a pure function of its submission. It is a
    /// UUID of version 8: 96 bits hashed from the job id, then the index in
    /// the low 32 bits, so the tasks of one job never collide and tasks of
    /// different jobs collide only with negligible probability.
    pub fn derive(job_id: JobId, index: u32) -> Self {
        fn mix(mut z: u64) -> u64 {
            // The splitmix64 finalizer.
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let job = job_id.0.as_u128();
        let (hi, lo) = ((job >> 64) as u64, job as u64);
        let a = mix(hi ^ mix(lo));
        let b = mix(lo ^ a.rotate_left(29));
        let raw = (u128::from(a) << 64) | (u128::from(b >> 32) << 32) | u128::from(index);
        // Version 8 has a non-zero version nibble, so this is never nil.
        Self(uuid::Builder::from_custom_bytes(raw.to_be_bytes()).into_uuid())
    }
}
