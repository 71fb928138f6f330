//! SeaORM entities, hand-written, one module per table.
//!
//! Saving an `ActiveModel` (`insert`, `update`, `save`) fills in what every
//! row needs: a fresh time-ordered id and `created_at` on insert when left
//! unset, and `updated_at` on every save unless set explicitly. Bulk
//! statements (`Entity::insert_many`, `update_many`) bypass these hooks and
//! must set the columns themselves.

use chrono::{DateTime, SubsecRound as _, Utc};
use sea_orm::ActiveValue::{self, Set};

/// The current time at the precision both backends store (microseconds), so
/// a value written and read back compares equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Gives an inserted row a fresh id unless the caller chose one.
fn fill_id<I: Default + Into<sea_orm::Value>>(insert: bool, id: &mut ActiveValue<I>) {
    if insert && id.is_not_set() {
        *id = Set(I::default());
    }
}

/// Stamps `created_at` on insert and `updated_at` on every save, keeping
/// values the caller set explicitly.
fn stamp(
    insert: bool,
    created_at: &mut ActiveValue<DateTime<Utc>>,
    updated_at: &mut ActiveValue<DateTime<Utc>>,
) {
    let now = now();
    if insert && created_at.is_not_set() {
        *created_at = Set(now);
    }
    if !updated_at.is_set() {
        *updated_at = Set(now);
    }
}

/// `ActiveModelBehavior` for an entity with an `id`, `created_at` and
/// `updated_at`: see the module documentation.
macro_rules! stamped_behavior {
    () => {
        #[async_trait::async_trait]
        impl ActiveModelBehavior for ActiveModel {
            async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
            where
                C: ConnectionTrait,
            {
                super::fill_id(insert, &mut self.id);
                super::stamp(insert, &mut self.created_at, &mut self.updated_at);
                Ok(self)
            }
        }
    };
}

/// An enum stored as the snake_case name of its variant in a string column
/// of 32 characters, and named the same way in JSON and the OpenAPI document.
macro_rules! db_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            sea_orm::EnumIter,
            sea_orm::DeriveActiveEnum,
            serde::Serialize,
            serde::Deserialize,
            utoipa::ToSchema,
        )]
        #[sea_orm(
            rs_type = "String",
            db_type = "String(StringLen::N(32))",
            rename_all = "snake_case"
        )]
        #[serde(rename_all = "snake_case")]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }
    };
}

pub mod api_token;
pub mod audit_log;
pub mod coupon;
pub mod coupon_redemption;
pub mod dunning_case;
pub mod email;
pub mod image;
pub mod instance;
pub mod instance_action;
pub mod instance_metric;
pub mod invoice;
pub mod invoice_counter;
pub mod invoice_line;
pub mod ip_address;
pub mod job;
pub mod node;
pub mod notification;
pub mod notification_opt_out;
pub mod one_time_token;
pub mod payment_refund;
pub mod product;
pub mod product_region;
pub mod recovery_code;
pub mod refresh_token;
pub mod region;
pub mod setting;
pub mod ssh_key;
pub mod stripe_event;
pub mod subscription;
pub mod support_ticket;
pub mod ticket_attachment;
pub mod ticket_message;
pub mod transaction;
pub mod usage_segment;
pub mod user;
