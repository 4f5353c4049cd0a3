//! Graphs drawn as inline SVG, so a page needs no script and no network: columns by depth (a node sits one column
//! right of its deepest input), nodes stacked in each column in the order given.

use std::collections::HashMap;
use std::fmt::Write;

use super::page::esc;

/// One box of a graph.
pub struct Node {
    pub id: String,
    pub label: String,
    /// A second, smaller line: the step kind, the connection kind.
    pub note: String,
    /// `source`, `step`, `destination`, `pipeline`: the CSS class that colours it.
    pub class: &'static str,
    /// Where a click on it goes.
    pub href: Option<String>,
}

const WIDTH: usize = 170;
const HEIGHT: usize = 38;
const COLUMN: usize = 210;
const ROW: usize = 58;

/// The graph of `nodes` and `edges` (from, to), both by node id; edges naming unknown nodes are left out.
pub fn svg(id: &str, nodes: &[Node], edges: &[(String, String)]) -> String {
    let mut inputs: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, to) in edges {
        inputs.entry(to.as_str()).or_default().push(from.as_str());
    }
    let mut depth: HashMap<&str, usize> = HashMap::new();
    fn place<'a>(
        n: &'a str,
        inputs: &HashMap<&'a str, Vec<&'a str>>,
        depth: &mut HashMap<&'a str, usize>,
        seen: usize,
    ) -> usize {
        if let Some(d) = depth.get(n) {
            return *d;
        }
        // A cycle (pipelines waiting on each other) stops at the number of nodes instead of recursing forever.
        let d = match inputs.get(n) {
            Some(from) if seen < 64 => 1 + from.iter().map(|f| place(f, inputs, depth, seen + 1)).max().unwrap_or(0),
            _ => 0,
        };
        depth.insert(n, d);
        d
    }
    for node in nodes {
        place(&node.id, &inputs, &mut depth, 0);
    }
    let mut rows: HashMap<usize, usize> = HashMap::new();
    let mut at: HashMap<&str, (usize, usize)> = HashMap::new();
    for node in nodes {
        let d = depth[node.id.as_str()];
        let row = rows.entry(d).or_default();
        at.insert(&node.id, (20 + d * COLUMN, 20 + *row * ROW));
        *row += 1;
    }
    let width = 40 + (depth.values().max().copied().unwrap_or(0) + 1) * COLUMN;
    let height = 40 + rows.values().max().copied().unwrap_or(1) * ROW;
    let mut out = format!(
        r##"<svg id="{}" class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><defs><marker id="{0}-arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8a93a6"/></marker></defs>"##,
        esc(id)
    );
    for (from, to) in edges {
        let (Some(a), Some(b)) = (at.get(from.as_str()), at.get(to.as_str())) else { continue };
        let _ = write!(
            out,
            r##"<line class="edge" data-from="{}" data-to="{}" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#8a93a6" marker-end="url(#{}-arrow)"/>"##,
            esc(from),
            esc(to),
            a.0 + WIDTH,
            a.1 + HEIGHT / 2,
            b.0,
            b.1 + HEIGHT / 2,
            esc(id)
        );
    }
    for node in nodes {
        let (x, y) = at[node.id.as_str()];
        let label = super::page::cut(&node.label, 24);
        let note = super::page::cut(&node.note, 28);
        let body = format!(
            r#"<g class="node {}" data-node="{}"><title>{}</title><rect x="{x}" y="{y}" width="{WIDTH}" height="{HEIGHT}" rx="6"/><text x="{}" y="{}">{}</text><text x="{}" y="{}" class="note">{}</text></g>"#,
            node.class,
            esc(&node.id),
            esc(&node.label),
            x + 8,
            y + 16,
            esc(&label),
            x + 8,
            y + 31,
            esc(&note)
        );
        match &node.href {
            Some(href) => {
                let _ = write!(out, r#"<a href="{}">{body}</a>"#, esc(href));
            }
            None => out.push_str(&body),
        }
    }
    out.push_str("</svg>");
    out
}
