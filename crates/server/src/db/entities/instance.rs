//! A customer's virtual machine. The size columns are copied from the product
//! at order time, so a later change of the plan does not resize it.

use sea_orm::entity::prelude::*;

use crate::ids::{ImageId, InstanceId, JobId, NodeId, ProductId, RegionId, UserId};

db_enum! {
    /// The lifecycle of an instance.
    pub enum InstanceStatus {
        Provisioning,
        Running,
        Stopped,
        Starting,
        Stopping,
        Rebooting,
        /// Stopped by the platform (unpaid bill, abuse); the owner cannot start it.
        Suspended,
        Error,
        Deleting,
        Deleted,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: InstanceId,
    pub user_id: UserId,
    pub product_id: ProductId,
    pub region_id: RegionId,
    pub image_id: ImageId,
    /// `None` until scheduled.
    pub node_id: Option<NodeId>,
    pub name: String,
    pub hostname: String,
    pub status: InstanceStatus,
    #[sea_orm(column_type = "Text")]
    pub status_reason: Option<String>,
    pub vcpus: i32,
    pub memory_mib: i32,
    pub disk_gib: i32,
    /// The host port forwarded to the guest's SSH, for user-mode networking.
    pub ssh_port: Option<i32>,
    pub ipv4: Option<String>,
    /// Cloud-init user data as given by the customer.
    #[sea_orm(column_type = "Text")]
    pub user_data: Option<String>,
    /// The `Idempotency-Key` of the request that created it, unique per user.
    pub idempotency_key: Option<String>,
    /// The `authorized_keys` lines chosen at creation, as a JSON array: the
    /// instance keeps them even if the account's keys change later.
    #[sea_orm(column_type = "Text")]
    pub ssh_authorized_keys: Option<String>,
    /// The job running the instance's queue, and until when.
    pub queue_holder: Option<JobId>,
    pub queue_lease_until: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "NoAction"
    )]
    User,
    #[sea_orm(
        belongs_to = "super::product::Entity",
        from = "Column::ProductId",
        to = "super::product::Column::Id",
        on_delete = "NoAction"
    )]
    Product,
    #[sea_orm(
        belongs_to = "super::region::Entity",
        from = "Column::RegionId",
        to = "super::region::Column::Id",
        on_delete = "NoAction"
    )]
    Region,
    #[sea_orm(
        belongs_to = "super::image::Entity",
        from = "Column::ImageId",
        to = "super::image::Column::Id",
        on_delete = "NoAction"
    )]
    Image,
    #[sea_orm(
        belongs_to = "super::node::Entity",
        from = "Column::NodeId",
        to = "super::node::Column::Id",
        on_delete = "SetNull"
    )]
    Node,
    #[sea_orm(has_one = "super::ip_address::Entity")]
    IpAddress,
    #[sea_orm(has_one = "super::subscription::Entity")]
    Subscription,
    #[sea_orm(has_many = "super::instance_metric::Entity")]
    Metrics,
    #[sea_orm(has_many = "super::instance_action::Entity")]
    Actions,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::product::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Product.def()
    }
}

impl Related<super::region::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Region.def()
    }
}

impl Related<super::image::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Image.def()
    }
}

impl Related<super::node::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Node.def()
    }
}

impl Related<super::ip_address::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::IpAddress.def()
    }
}

impl Related<super::subscription::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Subscription.def()
    }
}

impl Related<super::instance_metric::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Metrics.def()
    }
}

stamped_behavior!();
