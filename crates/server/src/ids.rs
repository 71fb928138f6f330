//! Typed identifiers. Every table's primary key is a UUID (v7, so ids sort by
//! creation time and cursor pagination can key on them), wrapped in a newtype so
//! a `UserId` can never be passed where an `InstanceId` is expected.

/// Declares a UUID newtype usable as a SeaORM column, a serde value and an
/// OpenAPI schema.
macro_rules! typed_id {
    ($($(#[$meta:meta])* $name:ident),+ $(,)?) => {$(
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, sea_orm::DeriveValueType, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = uuid::Uuid)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl sea_orm::TryFromU64 for $name {
            fn try_from_u64(_: u64) -> Result<Self, sea_orm::DbErr> {
                Err(sea_orm::DbErr::ConvertFromU64(stringify!($name)))
            }
        }
    )+};
}

typed_id!(
    UserId,
    RefreshTokenId,
    ApiTokenId,
    SshKeyId,
    ProductId,
    ImageId,
    RegionId,
    NodeId,
    IpAddressId,
    InstanceId,
    SubscriptionId,
    InvoiceId,
    InvoiceLineId,
    TransactionId,
    TicketId,
    TicketMessageId,
    TicketAttachmentId,
    AuditLogId,
    NotificationId,
    JobId,
    InstanceMetricId,
    OneTimeTokenId,
    RecoveryCodeId,
    EmailId,
    InstanceActionId,
    UsageSegmentId,
    DunningCaseId,
    CouponId,
    CouponRedemptionId,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_round_trip_through_strings() {
        let first = UserId::new();
        let second = UserId::new();
        assert!(first < second);
        let parsed: UserId = first.to_string().parse().expect("valid uuid");
        assert_eq!(parsed, first);
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
