//! kubectl-style tables: upper-case headers, left-aligned columns three
//! spaces apart.

/// Renders `rows` under `headers`, one line each, ending in a newline.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<pad$}   "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec![
                "blue-10.0.0.0-24".to_owned(),
                "10.0.0.0/24".to_owned(),
                "3".to_owned(),
            ],
            vec!["x".to_owned(), "2001:db8::/64".to_owned(), "12".to_owned()],
        ];
        assert_eq!(
            render(&["NAME", "RANGE", "ALLOCATED"], &rows),
            "NAME               RANGE           ALLOCATED\n\
             blue-10.0.0.0-24   10.0.0.0/24     3\n\
             x                  2001:db8::/64   12\n"
        );
    }
}
