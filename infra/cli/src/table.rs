//! The CLI's tables (`inlet events`, `inlet dlq list`): columns two spaces apart, no borders,
//! each line's trailing spaces trimmed; wrapped only to fit a terminal.

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

pub fn plain(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// A [`plain`] table that fits the terminal it is printed to: long cells wrap within their
/// column. Into a pipe nothing wraps, so each row stays one line for grep and scripts.
pub fn fitted(header: &[&str]) -> Table {
    let mut table = plain(header);
    if let Some((_, width)) = console::Term::stdout().size_checked() {
        table
            .set_width(width)
            .set_content_arrangement(ContentArrangement::Dynamic);
    }
    table
}

/// Numbers line up on the right.
pub fn align_right(table: &mut Table, column: usize) {
    if let Some(c) = table.column_mut(column) {
        c.set_cell_alignment(CellAlignment::Right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_two_spaces_apart_and_lines_end_with_their_text() {
        let mut t = plain(&["SOURCE", "ATTEMPTS", "REASON"]);
        align_right(&mut t, 1);
        t.add_row(vec!["stripe", "2", "target answered HTTP 500"]);
        t.add_row(vec!["github-enterprise", "10", ""]);
        assert_eq!(
            t.trim_fmt(),
            "SOURCE             ATTEMPTS  REASON\n\
             stripe                    2  target answered HTTP 500\n\
             github-enterprise        10"
        );
    }
}
