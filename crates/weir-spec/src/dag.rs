//! The steps as a graph: who reads whom, in which order to plan them, and how many times each output is read.

use std::collections::{HashMap, HashSet};

use crate::check::unknown_step;
use crate::diagnostic::{Diagnostic, Pos};
use crate::model::Pipeline;
use crate::step::Category;

/// Steps in an order where every step comes after its inputs, and the edges between them.
#[derive(Debug, Clone)]
pub struct Dag {
    /// Step ids in planning order.
    pub order: Vec<String>,
    /// For each step, the ids it reads.
    pub inputs: HashMap<String, Vec<String>>,
}

impl Dag {
    /// Builds the graph. `sql_inputs` names the tables a SQL step reads (the engine parses the SQL); every table
    /// reference that is a step id becomes an edge, once per mention, so a self-join counts as two reads.
    pub fn build(
        pipeline: &Pipeline,
        mut sql_inputs: impl FnMut(&crate::Step) -> Result<Vec<String>, Diagnostic>,
    ) -> Result<Self, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut inputs: HashMap<String, Vec<String>> = HashMap::new();
        for step in &pipeline.steps {
            let reads = match (step.kind.input(), &step.kind) {
                // Enrichment and extraction read their input twice (its keys or texts, then the join), so the input
                // must run only once.
                (Some(input), crate::StepKind::EnrichApi(_) | crate::StepKind::AiExtract(_)) => {
                    vec![input.value.clone(), input.value.clone()]
                }
                (Some(input), _) => vec![input.value.clone()],
                (None, crate::StepKind::Sql(sql)) => match sql_inputs(step) {
                    Ok(tables) => {
                        let pos = Pos::of(&sql.query);
                        let mut reads = Vec::new();
                        for t in tables {
                            match pipeline.step(&t) {
                                Some(s) if matches!(s.kind.category(), Category::Load | Category::Action) => errors
                                    .push(Diagnostic::new(
                                        pos,
                                        format!(
                                            "step `{}` reads `{t}`, a {} step with no output",
                                            step.id(),
                                            s.kind.name()
                                        ),
                                    )),
                                Some(_) => reads.push(t),
                                None => errors.push(unknown_step(pipeline, &t, pos).with_hint(format!(
                                        "SQL in step `{}` can read the steps {}",
                                        step.id(),
                                        pipeline
                                            .steps
                                            .iter()
                                            .map(|s| format!("`{}`", s.id()))
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ))),
                            }
                        }
                        reads
                    }
                    Err(e) => {
                        errors.push(e);
                        Vec::new()
                    }
                },
                (None, _) => Vec::new(),
            };
            inputs.insert(step.id().to_string(), reads);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        match topological_order(pipeline, &inputs) {
            Ok(order) => Ok(Self { order, inputs }),
            Err(cycle) => {
                let first = pipeline.step(&cycle[0]).expect("cycle members are steps");
                Err(vec![
                    Diagnostic::at(&first.id, format!("steps form a cycle: {}", cycle.join(" -> ")))
                        .with_hint("a step can only read steps that do not, directly or not, read it"),
                ])
            }
        }
    }

    /// How many times each step's output is read by later steps.
    pub fn readers(&self) -> HashMap<&str, usize> {
        let mut count: HashMap<&str, usize> = self.order.iter().map(|s| (s.as_str(), 0)).collect();
        for reads in self.inputs.values() {
            for r in reads {
                *count.entry(r.as_str()).or_default() += 1;
            }
        }
        count
    }

    /// `steps` and every step they read, directly or not.
    pub fn upstream<'a>(&self, steps: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = steps.into_iter().map(str::to_string).collect();
        while let Some(id) = pending.pop() {
            if let Some(reads) = self.inputs.get(&id) {
                pending.extend(reads.iter().filter(|r| !seen.contains(*r)).cloned());
            }
            seen.insert(id);
        }
        seen
    }
}

/// Kahn's algorithm in file order, so plans are stable; on a cycle, returns one cycle as a path.
fn topological_order(pipeline: &Pipeline, inputs: &HashMap<String, Vec<String>>) -> Result<Vec<String>, Vec<String>> {
    let ids: Vec<&str> = pipeline.steps.iter().map(|s| s.id()).collect();
    let mut done: Vec<String> = Vec::with_capacity(ids.len());
    let mut remaining: Vec<&str> = ids.clone();
    while !remaining.is_empty() {
        let ready = remaining.iter().position(|id| inputs[*id].iter().all(|i| done.iter().any(|d| d == i)));
        match ready {
            Some(i) => done.push(remaining.remove(i).to_string()),
            None => return Err(find_cycle(&remaining, inputs)),
        }
    }
    Ok(done)
}

fn find_cycle(stuck: &[&str], inputs: &HashMap<String, Vec<String>>) -> Vec<String> {
    // Every stuck step reads a stuck step, so walking inputs from any of them must revisit one.
    let mut path: Vec<String> = vec![stuck[0].to_string()];
    loop {
        let last = path.last().expect("non-empty");
        let next = inputs[last].iter().find(|i| stuck.contains(&i.as_str())).expect("a stuck step reads a stuck step");
        if let Some(start) = path.iter().position(|p| p == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(next.clone());
            return cycle;
        }
        path.push(next.clone());
    }
}
