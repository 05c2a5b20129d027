use super::*;

const DURATION: Duration = Duration::from_secs(15);

fn held_by(holder: &str, renewed_secs: i64) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.into()),
        lease_duration_seconds: Some(15),
        renew_time: Some(MicroTime(
            Timestamp::from_second(1_700_000_000 + renewed_secs).expect("valid"),
        )),
        lease_transitions: Some(2),
        ..Default::default()
    }
}

#[test]
fn missing_lease_is_created_and_own_lease_renewed() {
    let t0 = Instant::now();
    let mut observed = None;
    assert_eq!(
        next_step(None, "a", &mut observed, t0, DURATION),
        Step::Create
    );
    assert_eq!(
        next_step(Some(&held_by("a", 0)), "a", &mut observed, t0, DURATION),
        Step::Renew
    );
}

#[test]
fn a_live_holder_is_followed_and_an_expired_one_taken_over() {
    let t0 = Instant::now();
    let mut observed = None;
    let lease = held_by("b", 0);
    assert_eq!(
        next_step(Some(&lease), "a", &mut observed, t0, DURATION),
        Step::Follow {
            holder: "b".into(),
            remaining: DURATION
        }
    );
    // The holder renews: the wait starts again from when the change was seen.
    let renewed = held_by("b", 5);
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(
        next_step(Some(&renewed), "a", &mut observed, t1, DURATION),
        Step::Follow {
            holder: "b".into(),
            remaining: DURATION
        }
    );
    let t2 = t1 + Duration::from_secs(14);
    assert!(matches!(
        next_step(Some(&renewed), "a", &mut observed, t2, DURATION),
        Step::Follow { remaining, .. } if remaining == Duration::from_secs(1)
    ));
    // No renewal for a whole duration: taken over.
    let t3 = t1 + DURATION;
    assert_eq!(
        next_step(Some(&renewed), "a", &mut observed, t3, DURATION),
        Step::TakeOver
    );
}

#[test]
fn a_released_lease_is_taken_over_at_once() {
    let mut released = held_by("b", 0);
    released.holder_identity = None;
    assert_eq!(
        next_step(Some(&released), "a", &mut None, Instant::now(), DURATION),
        Step::TakeOver
    );
}

#[test]
fn the_lease_duration_of_the_record_wins_over_the_default() {
    let t0 = Instant::now();
    let mut observed = None;
    let mut lease = held_by("b", 0);
    lease.lease_duration_seconds = Some(60);
    next_step(Some(&lease), "a", &mut observed, t0, DURATION);
    assert!(matches!(
        next_step(
            Some(&lease),
            "a",
            &mut observed,
            t0 + Duration::from_secs(30),
            DURATION
        ),
        Step::Follow { .. }
    ));
}

#[test]
fn claims_record_holder_times_and_transitions() {
    let now = Timestamp::from_second(1_700_000_100).expect("valid");
    let prev = held_by("b", 0);
    let taken = claim(Some(&prev), &Step::TakeOver, "a", DURATION, now);
    assert_eq!(taken.holder_identity.as_deref(), Some("a"));
    assert_eq!(taken.lease_transitions, Some(3));
    assert_eq!(taken.acquire_time, Some(MicroTime(now)));
    assert_eq!(taken.renew_time, Some(MicroTime(now)));
    assert_eq!(taken.lease_duration_seconds, Some(15));

    let later = Timestamp::from_second(1_700_000_105).expect("valid");
    let renewed = claim(Some(&taken), &Step::Renew, "a", DURATION, later);
    assert_eq!(
        renewed.acquire_time,
        Some(MicroTime(now)),
        "acquisition time kept"
    );
    assert_eq!(renewed.renew_time, Some(MicroTime(later)));
    assert_eq!(renewed.lease_transitions, Some(3));

    let created = claim(None, &Step::Create, "a", DURATION, now);
    assert_eq!(created.lease_transitions, Some(0));
}
