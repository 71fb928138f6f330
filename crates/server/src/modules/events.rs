//! Live events: what happened, to which object, and who may hear of it.
//!
//! Modules publish them on the cache's pub/sub, one channel per module
//! ([`EventType::channel`]); every `serve` process relays each one once to
//! the Socket.IO rooms of its audience (see `crate::realtime`). With Redis an
//! event published by a `worker` or by another replica reaches clients on
//! every replica; in-process it reaches this process' clients.
//!
//! Delivery is at most once: a client that was away re-reads the current
//! state over REST. A failure to publish is logged, never the caller's error:
//! the change it reports is already committed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::ids::{InstanceId, UserId};

pub const INSTANCES: &str = "events:instances";
pub const NODES: &str = "events:nodes";
pub const NOTIFICATIONS: &str = "events:notifications";
pub const TICKETS: &str = "events:tickets";
pub const INVOICES: &str = "events:invoices";

/// Every channel live events travel on.
pub const CHANNELS: [&str; 5] = [INSTANCES, NODES, NOTIFICATIONS, TICKETS, INVOICES];

/// The kinds of live event; the serialized name is the Socket.IO event name
/// and the envelope's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// An instance changed state: `from`, `to`, `reason`.
    #[serde(rename = "instance.status")]
    InstanceStatus,
    /// An action of an instance progressed: step n of m, then its outcome.
    #[serde(rename = "instance.action")]
    InstanceAction,
    /// A usage sample of a running instance.
    #[serde(rename = "instance.metrics")]
    InstanceMetrics,
    /// A hypervisor node went online or offline (staff only).
    #[serde(rename = "node.status")]
    NodeStatus,
    /// A message for one account (support and billing modules).
    #[serde(rename = "notification")]
    Notification,
    /// A new message on a support ticket.
    #[serde(rename = "ticket.message")]
    TicketMessage,
    /// An invoice was issued.
    #[serde(rename = "invoice.issued")]
    InvoiceIssued,
}

impl EventType {
    /// The pub/sub channel events of this type are published on.
    pub fn channel(self) -> &'static str {
        match self {
            Self::InstanceStatus | Self::InstanceAction | Self::InstanceMetrics => INSTANCES,
            Self::NodeStatus => NODES,
            Self::Notification => NOTIFICATIONS,
            Self::TicketMessage => TICKETS,
            Self::InvoiceIssued => INVOICES,
        }
    }
}

/// Who may receive an event: each is a Socket.IO room.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "room", content = "id", rename_all = "snake_case")]
pub enum Audience {
    /// Every connection of one account.
    User(UserId),
    /// The connections that subscribed to an instance (after the same
    /// authorization check as the REST API).
    Instance(InstanceId),
    /// Support and admin connections.
    Staff,
    /// Admin connections.
    Admin,
}

impl Audience {
    /// The Socket.IO room's name.
    pub fn room(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Instance(id) => format!("instance:{id}"),
            Self::Staff => "staff".to_owned(),
            Self::Admin => "admin".to_owned(),
        }
    }
}

/// An event as clients receive it: `{"type", "timestamp", "id", …fields}`,
/// where `id` is the object's (the instance's, the node's, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub timestamp: DateTime<Utc>,
    pub id: uuid::Uuid,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event about object `id` now. `fields` should be a JSON object; any
    /// other value is kept under `data`.
    pub fn new(kind: EventType, id: impl Into<uuid::Uuid>, fields: serde_json::Value) -> Self {
        let fields = match fields {
            serde_json::Value::Object(fields) => fields,
            other => serde_json::Map::from_iter([("data".to_owned(), other)]),
        };
        Self {
            kind,
            timestamp: Utc::now(),
            id: id.into(),
            fields,
        }
    }
}

/// What travels over the pub/sub: the event and its audience.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub audience: Vec<Audience>,
    pub event: Event,
}

/// Publishes `event` to `audience` on its type's channel.
pub async fn publish(cache: &Cache, audience: Vec<Audience>, event: Event) {
    let channel = event.kind.channel();
    let id = event.id;
    let envelope = Envelope { audience, event };
    let published = match serde_json::to_vec(&envelope) {
        Ok(payload) => cache.publish(channel, &payload).await,
        Err(err) => Err(err.into()),
    };
    if let Err(err) = published {
        tracing::warn!(channel, object = %id, error = format!("{err:#}"), "cannot publish a live event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_flat_json_with_type_timestamp_and_id() {
        let id = uuid::Uuid::now_v7();
        let event = Event::new(
            EventType::InstanceStatus,
            id,
            serde_json::json!({"from": "running", "to": "stopped"}),
        );
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["type"], "instance.status");
        assert_eq!(json["id"], id.to_string());
        assert_eq!(json["to"], "stopped");
        assert!(json["timestamp"].is_string());
        let back: Event = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn a_value_that_is_not_an_object_is_kept_under_data() {
        let event = Event::new(EventType::Notification, uuid::Uuid::nil(), "hi".into());
        assert_eq!(serde_json::to_value(&event).expect("json")["data"], "hi");
    }

    #[test]
    fn audiences_name_their_rooms_and_survive_the_wire() {
        let user = UserId::from(uuid::Uuid::nil());
        assert_eq!(
            Audience::User(user).room(),
            format!("user:{}", uuid::Uuid::nil())
        );
        assert_eq!(Audience::Staff.room(), "staff");
        let envelope = Envelope {
            audience: vec![Audience::User(user), Audience::Admin],
            event: Event::new(
                EventType::NodeStatus,
                uuid::Uuid::nil(),
                serde_json::json!({}),
            ),
        };
        let wire = serde_json::to_vec(&envelope).expect("json");
        assert_eq!(
            serde_json::from_slice::<Envelope>(&wire).expect("decodes"),
            envelope
        );
    }

    #[test]
    fn every_type_has_a_listened_channel() {
        for kind in [
            EventType::InstanceStatus,
            EventType::InstanceAction,
            EventType::InstanceMetrics,
            EventType::NodeStatus,
            EventType::Notification,
            EventType::TicketMessage,
            EventType::InvoiceIssued,
        ] {
            assert!(CHANNELS.contains(&kind.channel()), "{kind:?}");
        }
    }
}
