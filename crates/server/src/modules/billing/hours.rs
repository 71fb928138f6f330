//! Usage charges as a pure function of a subscription's segments: which
//! hours are charged, at which price, and how the monthly cap limits them.
//! No database and no clock here, so every rule is tested directly.
//!
//! The rules (Hetzner-style):
//! - every started hour (UTC, on the hour) the instance existed is charged,
//!   from its creation to its deletion;
//! - a stopped instance is charged too, unless the billing policy says
//!   otherwise: an hour is then charged if the instance ran during any part
//!   of it;
//! - a resize takes effect from the hour it happens: an hour is charged at
//!   the price of the last segment that touched it;
//! - what an instance is charged in a calendar month (UTC) never exceeds the
//!   monthly price of the plan it is on.

use chrono::{DateTime, Datelike as _, Duration, DurationRound as _, TimeZone as _, Utc};

use crate::ids::ProductId;

/// A stretch of a subscription with one plan, price and power state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub product_id: ProductId,
    pub running: bool,
    pub hourly_minor: i64,
    pub monthly_minor: i64,
    pub currency: String,
    pub started_at: DateTime<Utc>,
    /// `None` while it lasts.
    pub ended_at: Option<DateTime<Utc>>,
}

/// The charge of one hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourCharge {
    /// The start of the hour.
    pub hour: DateTime<Utc>,
    pub product_id: ProductId,
    pub amount_minor: i64,
    pub currency: String,
}

pub fn hour_floor(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1))
        .expect("an hour divides any UTC time")
}

pub fn hour_ceil(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = hour_floor(at);
    if floor == at {
        at
    } else {
        floor + Duration::hours(1)
    }
}

/// Midnight UTC on the first day of `at`'s month.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists")
}

/// Midnight UTC on the first day of the month after `at`'s.
pub fn next_month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists")
}

/// The charges of the hours starting in `[from, until)` (both on the hour).
/// `charged_in_month` is what was charged already in `from`'s month before
/// `from`, which the cap counts. Hours that cost nothing (capped, or stopped
/// when stopped instances are free) are left out.
pub fn charges(
    segments: &[Segment],
    charge_stopped: bool,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    mut charged_in_month: i64,
) -> Vec<HourCharge> {
    debug_assert_eq!(hour_floor(from), from, "from is on the hour");
    let mut out = Vec::new();
    let mut month = month_start(from);
    let mut hour = from;
    while hour < until {
        if month_start(hour) != month {
            month = month_start(hour);
            charged_in_month = 0;
        }
        let next = hour + Duration::hours(1);
        let priced = segments
            .iter()
            .filter(|s| s.running || charge_stopped)
            .filter(|s| s.started_at < next && s.ended_at.is_none_or(|end| end > hour))
            .max_by_key(|s| s.started_at);
        if let Some(segment) = priced {
            let amount = segment
                .hourly_minor
                .min(segment.monthly_minor - charged_in_month)
                .max(0);
            if amount > 0 {
                charged_in_month += amount;
                out.push(HourCharge {
                    hour,
                    product_id: segment.product_id,
                    amount_minor: amount,
                    currency: segment.currency.clone(),
                });
            }
        }
        hour = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0).unwrap()
    }

    fn segment(
        plan: ProductId,
        hourly: i64,
        monthly: i64,
        running: bool,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Segment {
        Segment {
            product_id: plan,
            running,
            hourly_minor: hourly,
            monthly_minor: monthly,
            currency: "EUR".to_owned(),
            started_at: from,
            ended_at: to,
        }
    }

    fn total(charges: &[HourCharge]) -> i64 {
        charges.iter().map(|c| c.amount_minor).sum()
    }

    #[test]
    fn every_started_hour_from_creation_to_deletion_is_charged() {
        let plan = ProductId::new();
        // 10:30 to 12:10: the hours of 10, 11 and 12 started.
        let s = [segment(
            plan,
            7,
            5000,
            true,
            at(2, 10, 30),
            Some(at(2, 12, 10)),
        )];
        let charged = charges(&s, true, at(2, 0, 0), at(3, 0, 0), 0);
        let hours: Vec<_> = charged.iter().map(|c| c.hour).collect();
        assert_eq!(hours, [at(2, 10, 0), at(2, 11, 0), at(2, 12, 0)]);
        assert_eq!(total(&charged), 21);
    }

    #[test]
    fn an_instance_living_a_minute_pays_one_hour_and_one_ending_on_the_hour_no_more() {
        let plan = ProductId::new();
        let brief = [segment(
            plan,
            7,
            5000,
            true,
            at(2, 10, 0),
            Some(at(2, 10, 1)),
        )];
        assert_eq!(
            total(&charges(&brief, true, at(2, 0, 0), at(3, 0, 0), 0)),
            7
        );
        let on_the_hour = [segment(
            plan,
            7,
            5000,
            true,
            at(2, 10, 0),
            Some(at(2, 12, 0)),
        )];
        assert_eq!(
            total(&charges(&on_the_hour, true, at(2, 0, 0), at(3, 0, 0), 0)),
            14
        );
    }

    #[test]
    fn an_open_segment_is_charged_up_to_the_limit_only() {
        let plan = ProductId::new();
        let s = [segment(plan, 7, 5000, true, at(2, 10, 30), None)];
        let charged = charges(&s, true, at(2, 10, 0), at(2, 15, 0), 0);
        assert_eq!(charged.len(), 5);
        assert_eq!(charged.last().expect("charges").hour, at(2, 14, 0));
    }

    #[test]
    fn the_month_is_capped_at_the_monthly_price_and_the_cap_resets_next_month() {
        let plan = ProductId::new();
        let s = [segment(plan, 10, 95, true, at(31, 10, 0), None)];
        let april = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let charged = charges(&s, true, at(31, 10, 0), april + Duration::hours(3), 0);
        // March: 9 full hours then 5 to reach 95; nothing more until April.
        let march: Vec<_> = charged.iter().filter(|c| c.hour < april).collect();
        assert_eq!(march.len(), 10);
        assert_eq!(march.last().expect("March charges").amount_minor, 5);
        assert_eq!(march.iter().map(|c| c.amount_minor).sum::<i64>(), 95);
        let next: Vec<_> = charged.iter().filter(|c| c.hour >= april).collect();
        assert_eq!(next.len(), 3);
        assert!(next.iter().all(|c| c.amount_minor == 10));
    }

    #[test]
    fn what_was_charged_earlier_in_the_month_counts_towards_the_cap() {
        let plan = ProductId::new();
        let s = [segment(plan, 10, 100, true, at(1, 0, 0), None)];
        let charged = charges(&s, true, at(2, 0, 0), at(3, 0, 0), 95);
        assert_eq!(charged.len(), 1);
        assert_eq!(charged[0].amount_minor, 5);
    }

    #[test]
    fn a_resize_takes_effect_from_the_hour_it_happens() {
        let (small, large) = (ProductId::new(), ProductId::new());
        let s = [
            segment(small, 7, 5000, true, at(2, 10, 0), Some(at(2, 11, 40))),
            segment(large, 20, 9000, true, at(2, 11, 40), Some(at(2, 13, 0))),
        ];
        let charged = charges(&s, true, at(2, 0, 0), at(3, 0, 0), 0);
        let prices: Vec<_> = charged
            .iter()
            .map(|c| (c.hour, c.product_id, c.amount_minor))
            .collect();
        assert_eq!(
            prices,
            [
                (at(2, 10, 0), small, 7),
                (at(2, 11, 0), large, 20),
                (at(2, 12, 0), large, 20),
            ]
        );
    }

    #[test]
    fn stopped_hours_are_charged_unless_the_policy_frees_them() {
        let plan = ProductId::new();
        // Runs 10:00-11:15, stopped until 14:30, runs until 15:00.
        let s = [
            segment(plan, 7, 5000, true, at(2, 10, 0), Some(at(2, 11, 15))),
            segment(plan, 7, 5000, false, at(2, 11, 15), Some(at(2, 14, 30))),
            segment(plan, 7, 5000, true, at(2, 14, 30), Some(at(2, 15, 0))),
        ];
        let charged_all = charges(&s, true, at(2, 0, 0), at(3, 0, 0), 0);
        assert_eq!(charged_all.len(), 5);
        let running_only = charges(&s, false, at(2, 0, 0), at(3, 0, 0), 0);
        let hours: Vec<_> = running_only.iter().map(|c| c.hour).collect();
        assert_eq!(hours, [at(2, 10, 0), at(2, 11, 0), at(2, 14, 0)]);
    }

    #[test]
    fn hour_and_month_boundaries() {
        assert_eq!(hour_floor(at(2, 10, 30)), at(2, 10, 0));
        assert_eq!(hour_ceil(at(2, 10, 30)), at(2, 11, 0));
        assert_eq!(hour_ceil(at(2, 10, 0)), at(2, 10, 0));
        assert_eq!(month_start(at(17, 5, 5)), at(1, 0, 0));
        let december = Utc.with_ymd_and_hms(2026, 12, 9, 8, 0, 0).unwrap();
        assert_eq!(
            next_month_start(december),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
    }
}
