//! The scheduler under a clock moved by hand: cron in a time zone (across a DST change), intervals, falling
//! behind, and the misfire policy after downtime.

use chrono::{DateTime, Utc};
use weir_server::{Fire, Project, Scheduler};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// A project of one pipeline `p` with `trigger` (YAML flow mapping).
fn project(trigger: &str) -> (tempfile::TempDir, Project) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!("name: p\ntriggers:\n  - {trigger}\nsteps:\n  a:\n    read_csv: {{ path: a.csv }}\n  out:\n    write_csv: {{ input: a, path: b.csv }}\n"),
    )
    .unwrap();
    let project = Project::load(dir.path()).unwrap();
    assert!(project.broken.is_empty(), "{:?}", project.broken);
    (dir, project)
}

fn next(trigger: &str, now: &str) -> DateTime<Utc> {
    let (_dir, project) = project(trigger);
    Scheduler::new(&project, at(now), |_| None).next_fires()["p"]
}

#[test]
fn the_seed_schedules_fire_when_expected() {
    let now = "2026-11-25T12:07:00Z"; // a Wednesday
    assert_eq!(next("{ cron: '*/15 * * * *' }", now), at("2026-11-25T12:15:00Z"), "every 15 minutes");
    assert_eq!(next("{ cron: '0 3 * * *' }", now), at("2026-11-26T03:00:00Z"), "daily at 3:00 AM");
    assert_eq!(next("{ cron: '0 6 * * MON' }", now), at("2026-11-30T06:00:00Z"), "weekly on Monday at 6:00 AM");
    assert_eq!(next("{ cron: '0 0 1 * *' }", now), at("2026-12-01T00:00:00Z"), "monthly on the 1st");
    assert_eq!(next("{ cron: '*/30 * * * * *' }", now), at("2026-11-25T12:07:30Z"), "seconds, when given");
    assert_eq!(next("{ every: 90s }", now), at("2026-11-25T12:07:30Z"), "an interval on its grid from the epoch");
}

#[test]
fn cron_reads_in_its_time_zone_across_daylight_saving() {
    // 3:00 in Paris is 02:00 UTC in winter and 01:00 UTC from 29 March 2026 (CEST).
    let trigger = "{ cron: '0 3 * * *', timezone: Europe/Paris }";
    assert_eq!(next(trigger, "2026-03-27T12:00:00Z"), at("2026-03-28T02:00:00Z"));
    assert_eq!(next(trigger, "2026-03-28T12:00:00Z"), at("2026-03-29T01:00:00Z"));
}

#[test]
fn a_schedule_fires_once_when_due_and_once_when_far_behind() {
    let (_dir, project) = project("{ cron: '*/15 * * * *' }");
    let mut s = Scheduler::new(&project, at("2026-11-25T12:07:00Z"), |_| None);
    assert!(s.due(at("2026-11-25T12:14:59Z")).is_empty());
    let fired = s.due(at("2026-11-25T12:15:00Z"));
    assert_eq!(fired, [Fire { pipeline: "p".into(), due: at("2026-11-25T12:15:00Z"), catch_up: false }]);
    assert!(s.due(at("2026-11-25T12:15:00Z")).is_empty(), "a fire is handed out once");
    // The process was suspended for 50 minutes: one fire, not three, and the next is after now.
    let fired = s.due(at("2026-11-25T13:05:00Z"));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].due, at("2026-11-25T12:30:00Z"), "the lag shows how late it is");
    assert_eq!(s.next_fires().get("p").copied(), Some(at("2026-11-25T13:15:00Z")));
}

#[test]
fn missed_fires_are_skipped_or_caught_up_once() {
    let last = |_: &str| Some(at("2026-11-25T10:00:00Z"));
    let now = at("2026-11-25T13:30:00Z");
    let (_dir, skip) = project("{ cron: '0 * * * *' }");
    let mut s = Scheduler::new(&skip, now, last);
    assert!(s.due(now).is_empty(), "misfire: skip forgets 11:00, 12:00 and 13:00");
    assert_eq!(s.next_fires().get("p").copied(), Some(at("2026-11-25T14:00:00Z")));

    let (_dir, catch_up) = project("{ cron: '0 * * * *', misfire: run_once }");
    let mut s = Scheduler::new(&catch_up, now, last);
    let fired = s.due(now);
    assert_eq!(
        fired,
        [Fire { pipeline: "p".into(), due: at("2026-11-25T11:00:00Z"), catch_up: true }],
        "one run for three missed"
    );
    assert!(s.due(now).is_empty());
    assert_eq!(s.next_fires().get("p").copied(), Some(at("2026-11-25T14:00:00Z")));
}

#[test]
fn an_interval_keeps_its_rhythm_across_a_restart() {
    let (_dir, project) = project("{ every: 15m }");
    let s = Scheduler::new(&project, at("2026-11-25T12:05:00Z"), |_| Some(at("2026-11-25T12:00:00Z")));
    assert_eq!(s.next_fires().get("p").copied(), Some(at("2026-11-25T12:15:00Z")));
}

#[test]
fn a_deleted_file_takes_its_schedule_with_it() {
    let (dir, mut project) = project("{ every: 15m }");
    std::fs::remove_file(dir.path().join("p.yaml")).unwrap();
    assert_eq!(project.reload(dir.path()).unwrap(), ["p"]);
    assert!(project.pipelines.is_empty());
    assert_eq!(Scheduler::new(&project, at("2026-11-25T12:00:00Z"), |_| None).next_due(), None);
}

#[test]
fn pipelines_sharing_a_schedule_fire_together_and_each_moves_on_by_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = |name: &str, trigger: &str| {
        let yaml = format!(
            "name: {name}\ntriggers:\n  - {trigger}\nsteps:\n  a:\n    read_csv: {{ path: a.csv }}\n  out:\n    write_csv: {{ input: a, path: b.csv }}\n"
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), yaml).unwrap();
    };
    pipeline("a", "{ cron: '0 * * * *' }");
    pipeline("b", "{ cron: '0 * * * *' }");
    // The same cron in India (UTC+5:30) fires at half past, UTC.
    pipeline("c", "{ cron: '0 * * * *', timezone: Asia/Kolkata }");
    pipeline("d", "{ every: 30m }");
    let project = Project::load(dir.path()).unwrap();
    let mut s = Scheduler::new(&project, at("2026-11-25T12:07:00Z"), |_| None);
    let names = |fires: Vec<Fire>| fires.into_iter().map(|f| f.pipeline).collect::<Vec<_>>();
    assert_eq!(names(s.due(at("2026-11-25T12:30:00Z"))), ["c", "d"]);
    assert_eq!(s.next_fires().get("c").copied(), Some(at("2026-11-25T13:30:00Z")));
    assert_eq!(s.next_fires().get("d").copied(), Some(at("2026-11-25T13:00:00Z")));
    assert_eq!(names(s.due(at("2026-11-25T13:00:00Z"))), ["a", "b", "d"]);
    for p in ["a", "b"] {
        assert_eq!(s.next_fires().get(p).copied(), Some(at("2026-11-25T14:00:00Z")), "{p}");
    }
    assert_eq!(
        s.next_fires().get("c").copied(),
        Some(at("2026-11-25T13:30:00Z")),
        "the time zone is part of the schedule"
    );
    assert_eq!(s.next_fires().get("d").copied(), Some(at("2026-11-25T13:30:00Z")));
}
