//! `weir test --update`: expected `rows` rewritten in the test file from what the runs produced, one row per line
//! as a JSON object (which YAML reads as a flow mapping). Only the rows' own lines change; comments inside them go.

use std::path::Path;

use anyhow::Context;

use super::case::Update;

/// Rewrites `updates` in `file`; returns how many it rewrote. A `rows` that does not start its own line (inside a
/// `{ ... }` mapping) is left alone, with a note.
pub fn rewrite(file: &Path, mut updates: Vec<Update>) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    updates.sort_by_key(|u| std::cmp::Reverse(u.line));
    updates.dedup_by_key(|u| u.line);
    let mut done = 0;
    for update in updates {
        match replace(&mut lines, &update) {
            Some(()) => done += 1,
            None => eprintln!(
                "note: {}:{}: cannot rewrite these rows; put `rows:` on a line of its own",
                file.display(),
                update.line
            ),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(file, out).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(done)
}

/// Replaces the block of the `rows:` key whose value starts at `update.line` (1-based).
fn replace(lines: &mut Vec<String>, update: &Update) -> Option<()> {
    let value_line = usize::try_from(update.line).ok()?.checked_sub(1)?;
    let key_line = (0..=value_line.min(lines.len().checked_sub(1)?))
        .rev()
        .find(|&i| lines[i].trim_start().starts_with("rows:"))?;
    let indent = lines[key_line].len() - lines[key_line].trim_start().len();
    let end = (key_line + 1..lines.len())
        .find(|&i| {
            let line = &lines[i];
            !line.trim().is_empty() && line.len() - line.trim_start().len() <= indent
        })
        .unwrap_or(lines.len());
    let pad = " ".repeat(indent);
    let mut block = Vec::new();
    if update.rows.is_empty() {
        block.push(format!("{pad}rows: []"));
    } else {
        block.push(format!("{pad}rows:"));
        for row in &update.rows {
            block.push(format!("{pad}  - {row}"));
        }
    }
    lines.splice(key_line..end, block);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_a_rows_block_and_leaves_the_rest() {
        let mut lines: Vec<String> = "cases:\n  c:\n    expect:\n      steps:\n        load:\n          rows:\n            - { id: 1 }   # old\n            - { id: 2 }\n          count: 2\n"
            .lines()
            .map(str::to_string)
            .collect();
        replace(&mut lines, &Update { line: 7, rows: vec![r#"{"id":3,"v":null}"#.to_string()] }).unwrap();
        assert_eq!(lines[5..].join("\n"), "          rows:\n            - {\"id\":3,\"v\":null}\n          count: 2");
        replace(&mut lines, &Update { line: 7, rows: vec![] }).unwrap();
        assert_eq!(lines[5..].join("\n"), "          rows: []\n          count: 2");
    }
}
