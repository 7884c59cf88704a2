//! Per-sample records on disk instead of in memory: `advscan attack` writes
//! each record as one JSON line to a spill file in its staging folder as soon
//! as its batch is done, and streams them back into results.json at the end
//! ([`SpilledSamples`]), so a run's memory does not grow with the data set.
//! The spill files live in the staging folder, so an error or a signal
//! removes them with it; a finished run deletes them before the folder is
//! committed.
//!
//! A record read back is the record written: serde_json prints every f32
//! and f64 in its shortest round-tripping form and (with its
//! `float_roundtrip` feature) parses it back to the same value, as for the
//! results.json that `advscan report` and `advscan merge` read.

use super::json::SampleRecord;
use crate::error::Error;
use serde::ser::{Error as _, Serialize, SerializeSeq, Serializer};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output { path: path.to_path_buf(), reason: format!("sample spill file: {e}") }
}

/// Appends records, one JSON line each.
pub struct SpillWriter {
    file: BufWriter<std::fs::File>,
    path: PathBuf,
    len: u64,
    line: Vec<u8>,
}

impl SpillWriter {
    pub fn create(path: &Path) -> Result<SpillWriter, Error> {
        let file = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
        Ok(SpillWriter { file: BufWriter::new(file), path: path.to_path_buf(), len: 0, line: Vec::new() })
    }

    /// Appends `rec`; returns the offset its line starts at.
    pub fn write(&mut self, rec: &SampleRecord) -> Result<u64, Error> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, rec).map_err(|e| io_err(&self.path, e))?;
        self.line.push(b'\n');
        self.file.write_all(&self.line).map_err(|e| io_err(&self.path, e))?;
        let at = self.len;
        self.len += self.line.len() as u64;
        Ok(at)
    }

    /// Flushes the file (it is read back through another handle).
    pub fn finish(mut self) -> Result<PathBuf, Error> {
        self.file.flush().map_err(|e| io_err(&self.path, e))?;
        Ok(self.path)
    }
}

/// Reads records back, in file order or at given offsets.
pub struct SpillReader {
    file: BufReader<std::fs::File>,
    path: PathBuf,
    pos: u64,
    line: String,
}

impl SpillReader {
    pub fn open(path: &Path) -> Result<SpillReader, Error> {
        let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        Ok(SpillReader { file: BufReader::new(file), path: path.to_path_buf(), pos: 0, line: String::new() })
    }

    /// The next record; `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<SampleRecord>, Error> {
        self.line.clear();
        let n = self.file.read_line(&mut self.line).map_err(|e| io_err(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.pos += n as u64;
        serde_json::from_str(&self.line).map(Some).map_err(|e| io_err(&self.path, e))
    }

    /// The record whose line starts at `offset` (as [`SpillWriter::write`]
    /// returned it). Reading offsets in increasing order without gaps reads
    /// the file sequentially, without seeking.
    pub fn read_at(&mut self, offset: u64) -> Result<SampleRecord, Error> {
        if offset != self.pos {
            self.file.seek(SeekFrom::Start(offset)).map_err(|e| io_err(&self.path, e))?;
            self.pos = offset;
        }
        self.next_record()?.ok_or_else(|| io_err(&self.path, format!("no record at offset {offset}")))
    }
}

/// The `samples` of a results.json being written, streamed from a spill
/// file in file order: serialised exactly as the `Vec<SampleRecord>` it stands for.
pub struct SpilledSamples {
    pub path: PathBuf,
}

impl Serialize for SpilledSamples {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut reader = SpillReader::open(&self.path).map_err(S::Error::custom)?;
        let mut seq = serializer.serialize_seq(None)?;
        while let Some(rec) = reader.next_record().map_err(S::Error::custom)? {
            seq.serialize_element(&rec)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::{Outcome, SampleChecks};

    fn record(i: usize, p: f32) -> SampleRecord {
        SampleRecord {
            id: format!("dir/s{i}.png"),
            index: i,
            label: (i % 2 == 0).then_some(1),
            clean_pred: 1,
            clean_confidence: p,
            outcomes: vec![Outcome {
                attack: "pgd".into(),
                norm: "linf".into(),
                eps: 8.0 / 255.0,
                eps_label: "8/255".into(),
                pred: 0,
                confidence: 1.0 - p / 3.0,
                clean_pred_prob: p / 3.0,
                flipped: true,
                linf: 0.031_372_55,
                l2: 1.0e-7 * i as f32,
                pred_quantized: Some(0),
            }],
            min_eps: Some((i % 3 != 0).then_some(p / 7.0)),
            check_data: SampleChecks {
                engine_gap: Some(3.3e-7),
                directional: Some([0.1, 0.1000001]),
                ..Default::default()
            },
            scan: None,
        }
    }

    #[test]
    fn records_read_back_equal_at_their_offsets_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let mut w = SpillWriter::create(&path).unwrap();
        let records: Vec<SampleRecord> = (0..50).map(|i| record(i, 1.0 / (i as f32 + 1.3))).collect();
        let offsets: Vec<u64> = records.iter().map(|r| w.write(r).unwrap()).collect();
        w.finish().unwrap();
        let mut r = SpillReader::open(&path).unwrap();
        for &k in &[7, 8, 9, 3, 49, 0] {
            assert_eq!(r.read_at(offsets[k]).unwrap(), records[k]);
        }
        let mut r = SpillReader::open(&path).unwrap();
        for rec in &records {
            assert_eq!(r.next_record().unwrap().as_ref(), Some(rec));
        }
        assert_eq!(r.next_record().unwrap(), None);
    }

    #[test]
    fn spilled_samples_serialise_as_the_vec_they_stand_for() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 3] {
            let path = dir.path().join(format!("s{n}.jsonl"));
            let mut w = SpillWriter::create(&path).unwrap();
            let records: Vec<SampleRecord> = (0..n).map(|i| record(i, 0.9)).collect();
            for rec in &records {
                w.write(rec).unwrap();
            }
            w.finish().unwrap();
            let mut r = crate::gate::tests::results();
            r.samples = records;
            let spilled = r.clone().map_samples(|_| SpilledSamples { path: path.clone() });
            assert_eq!(spilled.to_json(), r.to_json(), "{n} records");
        }
    }

    #[test]
    fn a_missing_spill_is_an_error_not_an_empty_array() {
        let mut r =
            crate::gate::tests::results().map_samples(|_| SpilledSamples { path: "/nonexistent/s.jsonl".into() });
        r.gallery.clear();
        let mut out = Vec::new();
        assert!(r.write_json(&mut out).is_err());
    }
}
