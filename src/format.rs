//! How the commands print what they found: a table for people, JSON for programs, CSV for
//! spreadsheets, CSV quoted by the `csv` crate
//! and guarded against spreadsheet formulas.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// One block of CSV: a header line and its rows, quoted by the `csv` crate. A cell a spreadsheet
/// would run as a formula (one starting `=`, `+`, `-`, `@`, a tab or a carriage return) is
/// neutralised with a leading `'`, since project paths and reasons come from outside.
pub struct CsvBlock {
    writer: csv::Writer<Vec<u8>>,
}

impl CsvBlock {
    /// A block whose header is `header`'s comma-separated names.
    pub fn new(header: &str) -> Self {
        let mut block = CsvBlock {
            writer: csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new()),
        };
        block.row(header.split(','));
        block
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|c| neutralised(c.as_ref()).into_owned())
            .collect();
        // Writing to memory cannot fail; the writer's only errors are its sink's.
        let _ = self.writer.write_record(&cells);
    }

    pub fn finish(self) -> String {
        match self.writer.into_inner() {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => String::from_utf8_lossy(e.into_inner().get_ref()).into_owned(),
        }
    }
}

/// Blocks one after the other, a blank line between them.
pub fn csv_blocks(blocks: impl IntoIterator<Item = CsvBlock>) -> String {
    blocks
        .into_iter()
        .map(CsvBlock::finish)
        .collect::<Vec<_>>()
        .join("\n")
}

fn neutralised(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it_and_neutralises_formulas() {
        let mut block = CsvBlock::new("id,path,reason");
        block.row(["1", "group/project", "a,b"]);
        block.row(["2", "a\"b", "line\nbreak"]);
        block.row(["3", "=HYPERLINK(\"http://x\")", "+1"]);
        block.row(["4", "-2", "@SUM(A1)"]);
        block.row(["5", "\tx", "\rx"]);
        assert_eq!(
            block.finish(),
            "id,path,reason\n\
             1,group/project,\"a,b\"\n\
             2,\"a\"\"b\",\"line\nbreak\"\n\
             3,\"'=HYPERLINK(\"\"http://x\"\")\",'+1\n\
             4,'-2,'@SUM(A1)\n\
             5,'\tx,\"'\rx\"\n"
        );
    }
}
