//! The CLI's tables (`inlet events`, `inlet dlq list`): columns two spaces apart, no borders,
//! never wrapped, each line's trailing spaces trimmed.

use comfy_table::{presets::NOTHING, CellAlignment, Table};

pub fn plain(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
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
