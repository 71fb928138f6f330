//! The address pool of bridged nodes: admins add ranges of IPv4 addresses
//! to a region (or to one node of it), provisioning takes one per instance
//! and gives it back when the instance goes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _,
};
use serde::{Deserialize, Serialize};
use vmcloud_hypervisor::StaticIpv4;

use crate::db::Database;
use crate::db::entities::{ip_address, node, region};
use crate::error::{Error, FieldError, Result};
use crate::ids::{InstanceId, IpAddressId, NodeId};
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest, fetch_page};

/// The most addresses one request adds.
pub const MAX_RANGE: u32 = 4096;
const MAX_NAMESERVERS: usize = 3;

/// A range of addresses to add to a region's pool.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct NewAddresses {
    /// Region slug.
    pub region: String,
    /// Only this node of the region may use them; by default any may.
    pub node: Option<NodeId>,
    /// First IPv4 address of the range.
    pub first: String,
    /// Last address of the range, inclusive; defaults to `first`.
    pub last: Option<String>,
    /// Prefix length of the subnet the addresses are in, 1 to 32.
    pub prefix_len: u8,
    /// The subnet's router, outside the range.
    pub gateway: Option<String>,
    /// Up to three name servers the guests are told to use.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IpAddressView {
    pub id: IpAddressId,
    /// Region slug.
    pub region: String,
    pub node: Option<NodeId>,
    pub address: String,
    pub prefix_len: i32,
    pub gateway: Option<String>,
    pub nameservers: Vec<String>,
    /// The instance holding it; absent while free.
    pub instance: Option<InstanceId>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AddressFilter {
    /// Region slug.
    pub region: Option<String>,
    pub node: Option<NodeId>,
    /// Only held (`true`) or only free (`false`) addresses.
    pub assigned: Option<bool>,
}

/// The addresses matching `filter`, newest first.
pub async fn list(
    db: &Database,
    actor: &Actor,
    filter: AddressFilter,
    page: PageRequest,
) -> Result<Page<IpAddressView>> {
    actor.require_staff()?;
    let mut select = ip_address::Entity::find();
    if let Some(slug) = &filter.region {
        let region = super::region_by_slug(db, slug).await?;
        select = select.filter(ip_address::Column::RegionId.eq(region.id));
    }
    if let Some(node) = filter.node {
        select = select.filter(ip_address::Column::NodeId.eq(node));
    }
    match filter.assigned {
        Some(true) => select = select.filter(ip_address::Column::InstanceId.is_not_null()),
        Some(false) => select = select.filter(ip_address::Column::InstanceId.is_null()),
        None => {}
    }
    let rows = fetch_page(db.reader(), select, ip_address::Column::Id, page, |row| {
        row.id.0
    })
    .await?;
    let slugs: HashMap<_, _> = region::Entity::find()
        .filter(region::Column::Id.is_in(rows.items.iter().map(|row| row.region_id)))
        .all(db.reader())
        .await?
        .into_iter()
        .map(|region| (region.id, region.slug))
        .collect();
    Ok(rows.map(|row| {
        let slug = slugs.get(&row.region_id).cloned().unwrap_or_default();
        view(row, slug)
    }))
}

fn view(row: ip_address::Model, region: String) -> IpAddressView {
    IpAddressView {
        id: row.id,
        region,
        node: row.node_id,
        nameservers: nameservers(&row),
        address: row.address,
        prefix_len: row.prefix_len,
        gateway: row.gateway,
        instance: row.instance_id,
    }
}

fn nameservers(row: &ip_address::Model) -> Vec<String> {
    row.nameservers
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// A checked [`NewAddresses`].
struct Range {
    first: u32,
    last: u32,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    nameservers: Vec<IpAddr>,
}

impl NewAddresses {
    /// Every problem with the request, at once.
    fn check(&self) -> Result<Range> {
        let mut fields = Vec::new();
        let mut ipv4 = |field: &str, text: &str| {
            text.trim().parse::<Ipv4Addr>().map_err(|_| {
                fields.push(FieldError::new(field, "must be an IPv4 address"));
            })
        };
        let first = ipv4("first", &self.first).ok();
        let last = match &self.last {
            Some(last) => ipv4("last", last).ok(),
            None => first,
        };
        let gateway = self.gateway.as_deref().map(|g| ipv4("gateway", g).ok());
        let nameservers: Vec<IpAddr> = self
            .nameservers
            .iter()
            .filter_map(|server| server.trim().parse().ok())
            .collect();
        if nameservers.len() != self.nameservers.len() {
            fields.push(FieldError::new("nameservers", "must be IP addresses"));
        }
        if self.nameservers.len() > MAX_NAMESERVERS {
            fields.push(FieldError::new(
                "nameservers",
                format!("must be at most {MAX_NAMESERVERS}"),
            ));
        }
        if !(1..=32).contains(&self.prefix_len) {
            fields.push(FieldError::new("prefix_len", "must be 1 to 32"));
        }
        if let (Some(first), Some(last)) = (first, last) {
            let (first, last) = (u32::from(first), u32::from(last));
            let subnet = |address: u32| {
                address
                    & u32::MAX
                        .checked_shl(32_u32.saturating_sub(u32::from(self.prefix_len)))
                        .unwrap_or(0)
            };
            if last < first {
                fields.push(FieldError::new("last", "must not come before first"));
            } else if last - first >= MAX_RANGE {
                fields.push(FieldError::new(
                    "last",
                    format!("a range holds at most {MAX_RANGE} addresses"),
                ));
            } else if subnet(first) != subnet(last) {
                fields.push(FieldError::new(
                    "last",
                    "must be in the same subnet as first",
                ));
            }
            if let Some(Some(gateway)) = gateway {
                let gateway = u32::from(gateway);
                if subnet(gateway) != subnet(first) {
                    fields.push(FieldError::new(
                        "gateway",
                        "must be in the addresses' subnet",
                    ));
                } else if (first..=last).contains(&gateway) {
                    fields.push(FieldError::new("gateway", "must not be in the range"));
                }
            }
        }
        Error::check_fields(fields)?;
        let (Some(first), Some(last)) = (first, last) else {
            unreachable!("unparsable addresses were reported as field errors");
        };
        Ok(Range {
            first: first.into(),
            last: last.into(),
            prefix_len: self.prefix_len,
            gateway: gateway.flatten(),
            nameservers,
        })
    }
}

/// Adds a range to a region's pool, all of it or nothing.
pub async fn add(db: &Database, actor: &Actor, new: NewAddresses) -> Result<Vec<IpAddressView>> {
    actor.require_admin()?;
    let range = new.check()?;
    let region = super::region_by_slug(db, &new.region).await?;
    if let Some(node) = new.node {
        let in_region = node::Entity::find_by_id(node)
            .filter(node::Column::RegionId.eq(region.id))
            .one(db.reader())
            .await?;
        if in_region.is_none() {
            return Err(Error::invalid_field("node", "is not a node of this region"));
        }
    }
    let nameservers = serde_json::to_string(&range.nameservers).map_err(anyhow::Error::from)?;
    let txn = db.begin_write().await?;
    let mut added = Vec::new();
    for address in range.first..=range.last {
        let row = ip_address::ActiveModel {
            region_id: Set(region.id),
            node_id: Set(new.node),
            address: Set(Ipv4Addr::from(address).to_string()),
            version: Set(4),
            prefix_len: Set(i32::from(range.prefix_len)),
            gateway: Set(range.gateway.map(|gateway| gateway.to_string())),
            nameservers: Set(Some(nameservers.clone())),
            instance_id: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|err| {
            Error::on_duplicate(
                err,
                format!("{} is in the pool already.", Ipv4Addr::from(address)),
            )
        })?;
        added.push(view(row, region.slug.clone()));
    }
    txn.commit().await?;
    Ok(added)
}

/// Removes a free address from the pool.
pub async fn remove(db: &Database, actor: &Actor, id: IpAddressId) -> Result<()> {
    actor.require_admin()?;
    let row = ip_address::Entity::find_by_id(id)
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("IP address"))?;
    let removed = ip_address::Entity::delete_many()
        .filter(ip_address::Column::Id.eq(id))
        .filter(ip_address::Column::InstanceId.is_null())
        .exec(db.writer())
        .await?;
    if removed.rows_affected == 0 {
        return Err(Error::Conflict(format!(
            "{} is held by an instance; it returns to the pool when the instance is deleted.",
            row.address
        )));
    }
    Ok(())
}

/// The address `instance` holds, taking a free one usable on `node` if it
/// holds none. `None` when the pool has none left. Conditional updates
/// settle races between workers: an address goes to one instance only.
pub async fn claim(
    conn: &impl ConnectionTrait,
    node: &node::Model,
    instance: InstanceId,
) -> Result<Option<ip_address::Model>> {
    loop {
        if let Some(held) = held_by(conn, instance).await? {
            return Ok(Some(held));
        }
        let Some(free) = ip_address::Entity::find()
            .filter(ip_address::Column::RegionId.eq(node.region_id))
            .filter(ip_address::Column::Version.eq(4))
            .filter(ip_address::Column::InstanceId.is_null())
            .filter(
                Condition::any()
                    .add(ip_address::Column::NodeId.is_null())
                    .add(ip_address::Column::NodeId.eq(node.id)),
            )
            .order_by_asc(ip_address::Column::Id)
            .one(conn)
            .await?
        else {
            return Ok(None);
        };
        ip_address::Entity::update_many()
            .col_expr(ip_address::Column::InstanceId, Expr::value(instance))
            .col_expr(
                ip_address::Column::UpdatedAt,
                Expr::value(crate::db::entities::now()),
            )
            .filter(ip_address::Column::Id.eq(free.id))
            .filter(ip_address::Column::InstanceId.is_null())
            .exec(conn)
            .await?;
    }
}

pub async fn held_by(
    conn: &impl ConnectionTrait,
    instance: InstanceId,
) -> Result<Option<ip_address::Model>> {
    Ok(ip_address::Entity::find()
        .filter(ip_address::Column::InstanceId.eq(instance))
        .one(conn)
        .await?)
}

/// Gives `instance`'s address back to the pool.
pub async fn release(conn: &impl ConnectionTrait, instance: InstanceId) -> Result<()> {
    ip_address::Entity::update_many()
        .col_expr(
            ip_address::Column::InstanceId,
            Expr::value(Option::<InstanceId>::None),
        )
        .col_expr(
            ip_address::Column::UpdatedAt,
            Expr::value(crate::db::entities::now()),
        )
        .filter(ip_address::Column::InstanceId.eq(instance))
        .exec(conn)
        .await?;
    Ok(())
}

/// The guest's static configuration for a held address.
pub fn static_ipv4(row: &ip_address::Model) -> anyhow::Result<StaticIpv4> {
    Ok(StaticIpv4 {
        address: row.address.parse()?,
        prefix_len: u8::try_from(row.prefix_len)?,
        gateway: row.gateway.as_deref().map(str::parse).transpose()?,
        nameservers: nameservers(row)
            .iter()
            .map(|server| server.parse())
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        first: &str,
        last: Option<&str>,
        prefix_len: u8,
        gateway: Option<&str>,
    ) -> NewAddresses {
        NewAddresses {
            region: "local".into(),
            node: None,
            first: first.into(),
            last: last.map(Into::into),
            prefix_len,
            gateway: gateway.map(Into::into),
            nameservers: vec!["192.0.2.53".into()],
        }
    }

    fn fields_of(request: &NewAddresses) -> Vec<String> {
        match request.check() {
            Err(Error::Validation { fields, .. }) => fields.into_iter().map(|f| f.field).collect(),
            other => panic!("expected field errors, got {:?}", other.map(|r| r.first)),
        }
    }

    #[test]
    fn a_range_in_one_subnet_with_its_gateway_outside_is_accepted() {
        let range = request("192.0.2.10", Some("192.0.2.20"), 24, Some("192.0.2.1"))
            .check()
            .expect("valid range");
        assert_eq!(range.last - range.first + 1, 11);
        assert_eq!(range.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        let single = request("192.0.2.10", None, 32, None)
            .check()
            .expect("one address");
        assert_eq!(single.first, single.last);
    }

    #[test]
    fn bad_ranges_name_their_fields() {
        assert_eq!(fields_of(&request("nope", None, 24, None)), ["first"]);
        assert_eq!(
            fields_of(&request("192.0.2.20", Some("192.0.2.10"), 24, None)),
            ["last"]
        );
        assert_eq!(
            fields_of(&request("192.0.2.10", Some("192.0.3.10"), 24, None)),
            ["last"]
        );
        assert_eq!(
            fields_of(&request("10.0.0.0", Some("10.0.255.255"), 8, None)),
            ["last"],
            "more than {MAX_RANGE} addresses"
        );
        assert_eq!(
            fields_of(&request(
                "192.0.2.10",
                Some("192.0.2.20"),
                24,
                Some("192.0.2.15")
            )),
            ["gateway"]
        );
        assert_eq!(
            fields_of(&request("192.0.2.10", None, 24, Some("198.51.100.1"))),
            ["gateway"]
        );
        assert_eq!(
            fields_of(&request("192.0.2.10", None, 33, None)),
            ["prefix_len"]
        );
        let mut bad_dns = request("192.0.2.10", None, 24, None);
        bad_dns.nameservers = vec!["dns.example".into()];
        assert_eq!(fields_of(&bad_dns), ["nameservers"]);
    }
}
