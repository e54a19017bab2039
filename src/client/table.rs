//! Plain-text tables for the terminal: columns as wide as their widest cell, up to a bound
//! past which a cell is cut with `…`, so one long name cannot push the rest off the screen.

/// Widest a column other than the last gets, in characters.
pub const COLUMN_WIDTH_MAX: usize = 40;

/// Prints `rows` under `headers`, two spaces between columns. The last column is never cut.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(headers, rows));
}

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate().take(columns) {
            widths[column] = widths[column].max(cell.chars().count().min(COLUMN_WIDTH_MAX));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate().take(columns) {
            if column + 1 == columns {
                line.push_str(cell);
            } else {
                let cell = cut(cell, widths[column]);
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn cut(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        return cell.to_owned();
    }
    let mut cut: String = cell.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_a_long_cell_is_cut_except_in_the_last_column() {
        let long = "x".repeat(COLUMN_WIDTH_MAX + 5);
        let rows = vec![
            vec!["a".to_owned(), long.clone(), long.clone()],
            vec!["bbb".to_owned(), "c".to_owned(), "d".to_owned()],
        ];
        let text = render(&["id", "name", "error"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("id   name{}  error", " ".repeat(COLUMN_WIDTH_MAX - 4)));
        let cut = format!("{}…", "x".repeat(COLUMN_WIDTH_MAX - 1));
        assert_eq!(lines[1], format!("a    {cut}  {long}"));
        assert_eq!(lines[2], format!("bbb  c{}  d", " ".repeat(COLUMN_WIDTH_MAX - 1)));
    }
}
