//! When scheduled pipelines are due. The scheduler is plain data driven by the times it is given, so tests move
//! its clock by hand; the server's loop feeds it the wall clock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use weir_spec::{CronSchedule, Misfire, Trigger};

use crate::project::Project;

/// A time-based trigger.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<CronSchedule>),
    Every(std::time::Duration),
}

impl Schedule {
    /// The schedule of a trigger, if it is time-based (checked pipelines always parse).
    pub fn of(trigger: &Trigger) -> Option<Self> {
        if let Some(cron) = &trigger.cron {
            let tz = trigger.timezone.as_ref().map(|t| t.value.as_str());
            return CronSchedule::parse(&cron.value, tz).ok().map(|c| Self::Cron(Box::new(c)));
        }
        trigger.every.map(|d| Self::Every(d.0))
    }

    /// The first fire strictly after `t`. An interval fires on a grid counted from the Unix epoch (`every: 15m` at
    /// :00, :15, :30 and :45), so every instance sharing a store, and every restart, agrees on its fire times.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron.next_after(t),
            Self::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok().filter(|s| *s > 0)?;
                DateTime::from_timestamp_millis((t.timestamp_millis().div_euclid(step) + 1) * step)
            }
        }
    }
}

/// A schedule that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub pipeline: String,
    /// When it was due; the difference to when it fired is the schedule's lag.
    pub due: DateTime<Utc>,
    /// A catch-up run for fires missed while the server was down.
    pub catch_up: bool,
}

#[derive(Debug)]
struct Entry {
    pipeline: String,
    schedule: Schedule,
    /// The schedule as written (`cron|timezone` or `every:ms`): entries with the same one fire at the same times.
    key: String,
    next: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Scheduler {
    entries: Vec<Entry>,
    /// Catch-up fires found when the schedules were (re)built, handed out by the next [`Self::due`].
    pending: Vec<Fire>,
}

impl Scheduler {
    /// The schedules of `project` at `now`. `last_fire` tells when a pipeline last ran on a schedule; a schedule
    /// that was due since then missed fires, which `misfire` skips or catches up on with one run now.
    pub fn new(project: &Project, now: DateTime<Utc>, last_fire: impl Fn(&str) -> Option<DateTime<Utc>>) -> Self {
        let mut scheduler = Self::default();
        // Each distinct schedule's next fire after a time is worked out once: 100,000 pipelines on one cron that
        // last fired the same minute are one cron evaluation, not 100,000.
        let mut next_of: HashMap<(String, DateTime<Utc>), Option<DateTime<Utc>>> = HashMap::new();
        let mut next_after = |key: &str, schedule: &Schedule, t: DateTime<Utc>| {
            *next_of.entry((key.to_string(), t)).or_insert_with(|| schedule.next_after(t))
        };
        for (name, entry) in &project.pipelines {
            for trigger in &entry.pipeline.triggers {
                let Some(schedule) = Schedule::of(trigger) else { continue };
                let key = match (&trigger.cron, &trigger.every) {
                    (Some(cron), _) => {
                        format!("{}|{}", cron.value, trigger.timezone.as_ref().map_or("", |t| t.value.as_str()))
                    }
                    (None, every) => format!("every:{:?}", every.map(|d| d.0)),
                };
                let last = last_fire(name);
                let missed = last.and_then(|l| next_after(&key, &schedule, l)).filter(|due| *due <= now);
                if let Some(due) = missed {
                    match trigger.misfire {
                        Misfire::RunOnce => {
                            scheduler.pending.push(Fire { pipeline: name.clone(), due, catch_up: true })
                        }
                        Misfire::Skip => {
                            tracing::info!(pipeline = %name, "Skipping the fires missed since {due} (misfire: skip)")
                        }
                    }
                }
                if let Some(next) = next_after(&key, &schedule, now) {
                    scheduler.entries.push(Entry { pipeline: name.clone(), schedule, key, next });
                }
            }
        }
        scheduler
    }

    /// The next time anything is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        let pending = self.pending.first().map(|f| f.due);
        self.entries.iter().map(|e| e.next).chain(pending).min()
    }

    /// The fires due at `now`, each schedule moved on to its next fire after `now`: a schedule that fell behind by
    /// several fires (a slow machine, a suspended process) fires once, not once per missed fire. The next fire is
    /// worked out once per distinct schedule: thousands of pipelines on `0 * * * *` cost one cron evaluation, not
    /// thousands, while their fires wait to be claimed.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Fire> {
        let mut fires = std::mem::take(&mut self.pending);
        let mut next_of: HashMap<String, DateTime<Utc>> = HashMap::new();
        for entry in &mut self.entries {
            if entry.next > now {
                continue;
            }
            fires.push(Fire { pipeline: entry.pipeline.clone(), due: entry.next, catch_up: false });
            entry.next = match next_of.get(&entry.key) {
                Some(next) => *next,
                None => {
                    let next = entry.schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC);
                    next_of.insert(entry.key.clone(), next);
                    next
                }
            };
        }
        fires
    }

    /// When each scheduled pipeline next fires, for the API: one pass, however many pipelines there are, so the
    /// scheduler's lock is held briefly.
    pub fn next_fires(&self) -> HashMap<String, DateTime<Utc>> {
        let mut next: HashMap<String, DateTime<Utc>> = HashMap::new();
        for entry in &self.entries {
            let at = next.entry(entry.pipeline.clone()).or_insert(entry.next);
            *at = (*at).min(entry.next);
        }
        next
    }
}
