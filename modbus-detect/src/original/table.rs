//! The pipeline's files: feature files read (ours, or the original's own
//! with only its five columns), and one anomaly report per model written
//! as the rows are scored.
//!
//! A report row is the feature row's original columns, `anomaly_score` (the
//! model's decision: negative is anomalous, as scikit-learn's
//! `decision_function`, as many digits as it takes), `threat_label`, then the feature row's other
//! columns as they were (frame, time, ports, ..., capture).

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::Features;
use crate::files::Shown;
use crate::output::inventory::csv_writer;

/// The original's columns, which a feature file must have.
pub const ORIGINAL_COLUMNS: [&str; 5] = [
    "delta_time",
    "packet_length",
    "src_ip_int",
    "src_ip_str",
    "function_code",
];

/// Columns a report adds after the original's.
pub const SCORE_COLUMNS: [&str; 2] = ["anomaly_score", "threat_label"];

/// A feature file that cannot be used: one line naming it.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {problem}", Shown(path), line.map(|l| format!(": line {l}")).unwrap_or_default())]
pub struct TableError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub problem: String,
}

/// One row of a feature file.
#[derive(Debug, Clone)]
pub struct Row {
    pub features: Features,
    pub src: IpAddr,
    pub function_code: u8,
    pub fields: csv::StringRecord,
}

impl Row {
    pub fn delta_time(&self) -> f64 {
        self.features[0]
    }
}

/// Reads a feature file row by row.
pub struct FeatureReader<R: Read> {
    path: PathBuf,
    rd: csv::Reader<R>,
    /// Where the original's columns are.
    at: [usize; 5],
    /// The other columns, in file order.
    rest: Vec<usize>,
    header: csv::StringRecord,
    record: csv::StringRecord,
}

impl FeatureReader<std::fs::File> {
    pub fn open(path: &Path) -> Result<Self, TableError> {
        let file = std::fs::File::open(path).map_err(|e| TableError {
            path: path.into(),
            line: None,
            problem: format!("cannot read: {e}"),
        })?;
        Self::new(path, file)
    }
}

impl<R: Read> FeatureReader<R> {
    pub fn new(path: &Path, input: R) -> Result<Self, TableError> {
        let err = |line, problem: String| TableError {
            path: path.into(),
            line,
            problem,
        };
        let mut rd = csv::ReaderBuilder::new().flexible(false).from_reader(input);
        let header = rd
            .headers()
            .map_err(|e| err(Some(1), format!("not a CSV feature file: {e}")))?
            .clone();
        let mut at = [0; 5];
        for (slot, name) in at.iter_mut().zip(ORIGINAL_COLUMNS) {
            *slot = header.iter().position(|h| h == name).ok_or_else(|| {
                err(
                    Some(1),
                    format!("no {name} column (a feature file has {ORIGINAL_COLUMNS:?})"),
                )
            })?;
        }
        let rest = (0..header.len()).filter(|i| !at.contains(i)).collect();
        Ok(FeatureReader {
            path: path.into(),
            rd,
            at,
            rest,
            header,
            record: csv::StringRecord::new(),
        })
    }

    /// The columns after the original's, as the file names them.
    pub fn other_columns(&self) -> Vec<String> {
        self.rest
            .iter()
            .filter_map(|&i| self.header.get(i).map(str::to_string))
            .collect()
    }

    /// The next row, `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Row>, TableError> {
        let line = self.rd.position().line();
        let read = self
            .rd
            .read_record(&mut self.record)
            .map_err(|e| TableError {
                path: self.path.clone(),
                line: Some(line),
                problem: e.to_string(),
            })?;
        if !read {
            return Ok(None);
        }
        let line = self.record.position().map_or(line, |p| p.line());
        let field = |i: usize| self.record.get(self.at[i]).unwrap_or("");
        let bad = |i: usize, what: &str| TableError {
            path: self.path.clone(),
            line: Some(line),
            problem: format!("{}: {:?} is not {what}", ORIGINAL_COLUMNS[i], field(i)),
        };
        let number = |i: usize, max: f64| {
            field(i)
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && (0.0..=max).contains(v))
        };
        let delta = number(0, 1e12).ok_or_else(|| bad(0, "seconds (>= 0)"))?;
        let len = number(1, 1e6).ok_or_else(|| bad(1, "a frame length"))?;
        let ip_int = number(2, u128::MAX as f64).ok_or_else(|| bad(2, "an address as a number"))?;
        let src: IpAddr = field(3)
            .trim()
            .parse()
            .map_err(|_| bad(3, "an IP address"))?;
        let function_code: u8 = field(4)
            .trim()
            .parse()
            .map_err(|_| bad(4, "a function code (0-255)"))?;
        let fields = self.record.clone();
        Ok(Some(Row {
            features: [delta, len, ip_int, f64::from(function_code)],
            src,
            function_code,
            fields,
        }))
    }

    /// A report line's fields after `anomaly_score` and `threat_label`.
    fn original_fields<'a>(&self, row: &'a Row) -> impl Iterator<Item = &'a str> + 'a {
        let at = self.at;
        at.into_iter().map(move |i| row.fields.get(i).unwrap_or(""))
    }

    fn other_fields<'a>(&'a self, row: &'a Row) -> impl Iterator<Item = &'a str> + 'a {
        self.rest
            .iter()
            .map(move |&i| row.fields.get(i).unwrap_or(""))
    }

    /// Write `row` into a report, with its score and label.
    pub fn write_report_row(
        &self,
        out: &mut dyn Write,
        row: &Row,
        score: f64,
        label: &str,
    ) -> std::io::Result<()> {
        let mut w = csv_writer();
        for f in self.original_fields(row) {
            w.write_field(f)?;
        }
        w.write_field(score.to_string())?;
        w.write_field(label)?;
        for f in self.other_fields(row) {
            w.write_field(f)?;
        }
        w.write_record(None::<&[u8]>)?;
        out.write_all(&w.into_inner().map_err(|e| e.into_error())?)
    }

    /// A report's header line.
    pub fn write_report_header(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut w = csv_writer();
        let names = ORIGINAL_COLUMNS
            .iter()
            .chain(&SCORE_COLUMNS)
            .map(|s| s.to_string())
            .chain(self.other_columns());
        w.write_record(names)?;
        out.write_all(&w.into_inner().map_err(|e| e.into_error())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> FeatureReader<&[u8]> {
        FeatureReader::new(Path::new("f.csv"), text.as_bytes()).unwrap()
    }

    #[test]
    fn the_original_s_own_files_are_read_and_bad_rows_are_named() {
        let mut r = reader(
            "src_ip_str,function_code,delta_time,packet_length,src_ip_int\n\
             192.168.1.5,3,0.5,66,3232235781\n",
        );
        let row = r.next_row().unwrap().unwrap();
        assert_eq!(row.features, [0.5, 66.0, 3232235781.0, 3.0]);
        assert_eq!(row.src, IpAddr::from([192, 168, 1, 5]));
        assert!(r.next_row().unwrap().is_none());

        let e = FeatureReader::new(Path::new("f.csv"), "a,b\n1,2\n".as_bytes())
            .err()
            .unwrap();
        assert_eq!(
            e.to_string().split(" (").next().unwrap(),
            "f.csv: line 1: no delta_time column"
        );
        let mut r = reader(
            "delta_time,packet_length,src_ip_int,src_ip_str,function_code\n\
             0.1,66,1,10.0.0.1,3\n\
             -1,66,1,10.0.0.1,3\n",
        );
        r.next_row().unwrap();
        let e = r.next_row().unwrap_err().to_string();
        assert_eq!(e, "f.csv: line 3: delta_time: \"-1\" is not seconds (>= 0)");
        let mut r = reader(
            "delta_time,packet_length,src_ip_int,src_ip_str,function_code\n\
             0.1,66,1,10.0.0.1,300\n",
        );
        assert!(r
            .next_row()
            .unwrap_err()
            .to_string()
            .contains("function_code"));
    }

    #[test]
    fn a_report_row_keeps_the_other_columns_after_score_and_label() {
        let mut r = reader(
            "delta_time,packet_length,src_ip_int,src_ip_str,function_code,frame,capture\n\
             0.1,66,1,0.0.0.1,6,17,a.pcap\n",
        );
        let row = r.next_row().unwrap().unwrap();
        let mut out = Vec::new();
        r.write_report_header(&mut out).unwrap();
        r.write_report_row(&mut out, &row, -0.25, "X").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "delta_time,packet_length,src_ip_int,src_ip_str,function_code,anomaly_score,threat_label,frame,capture\r\n\
             0.1,66,1,0.0.0.1,6,-0.25,X,17,a.pcap\r\n"
        );
    }
}
