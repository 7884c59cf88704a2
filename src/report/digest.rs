//! What the reports need of the per-sample records, gathered one record at a
//! time: the HTML page, the Markdown summary and the terminal table read
//! results.json through a [`SampleDigest`] in place of its `samples`, so that
//! rendering the reports of a large run never holds its records. It keeps a
//! few counters, and one f32 per sample flipped in the minimal-ε search
//! (the histogram plots every value).

use super::json::{Results, SampleRecord};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use std::collections::BTreeMap;

/// results.json as the reports read it: everything but the per-sample records, digested.
pub type Summary = Results<SampleDigest>;

/// The reports' view of the samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleDigest {
    /// Records seen.
    pub n: usize,
    widths: Widths,
    /// Every flipped sample's minimal ε (`min_eps` not null), in sample order.
    pub min_eps_found: Vec<f32>,
    /// Samples per input format: (format, transfer syntax or "", photometric, bits).
    pub formats: BTreeMap<(String, String, String, u16), usize>,
}

/// The display-window width of the samples seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Widths {
    #[default]
    NoSample,
    /// Every sample so far has this width (`None`: the first sample had no window,
    /// which settles the answer as "no shared width").
    Same(Option<f64>),
    Differ,
}

impl SampleDigest {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a SampleRecord>) -> SampleDigest {
        let mut d = SampleDigest::default();
        for s in samples {
            d.add(s);
        }
        d
    }

    pub fn add(&mut self, s: &SampleRecord) {
        self.n += 1;
        let width = s.scan.as_ref().and_then(|sc| sc.window.as_ref()).map(|w| w.0[1]);
        self.widths = match self.widths {
            Widths::NoSample => Widths::Same(width),
            Widths::Same(None) => Widths::Same(None),
            // `==` on f64: a NaN width never matches, as before.
            Widths::Same(first) if width == first => Widths::Same(first),
            _ => Widths::Differ,
        };
        if let Some(v) = s.min_eps.flatten() {
            self.min_eps_found.push(v);
        }
        if let Some(sc) = &s.scan {
            let key =
                (sc.format.clone(), sc.transfer_syntax.clone().unwrap_or_default(), sc.photometric.clone(), sc.bits);
            *self.formats.entry(key).or_default() += 1;
        }
    }

    /// The window width every sample shares; `None` when there is no sample,
    /// one has no window, or they differ.
    pub fn shared_window_width(&self) -> Option<f64> {
        match self.widths {
            Widths::Same(w) => w,
            _ => None,
        }
    }
}

/// Reads a `samples` array record by record into the digest.
impl<'de> Deserialize<'de> for SampleDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fold;
        impl<'de> Visitor<'de> for Fold {
            type Value = SampleDigest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of sample records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SampleDigest, A::Error> {
                let mut d = SampleDigest::default();
                while let Some(s) = seq.next_element::<SampleRecord>()? {
                    d.add(&s);
                }
                Ok(d)
            }
        }
        deserializer.deserialize_seq(Fold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::ScanRecord;

    fn sample(window: Option<f64>, min_eps: Option<Option<f32>>, format: &str) -> SampleRecord {
        SampleRecord {
            id: "a".into(),
            index: 0,
            label: None,
            clean_pred: 0,
            clean_confidence: 1.0,
            outcomes: vec![],
            min_eps,
            check_data: Default::default(),
            scan: Some(ScanRecord {
                format: format.into(),
                transfer_syntax: None,
                photometric: "grey".into(),
                bits: 8,
                size: [1, 2, 2],
                units: "HU".into(),
                rescale: None,
                window: window.map(|w| ([40.0, w], "config".into())),
                frame: None,
            }),
        }
    }

    #[test]
    fn a_width_is_shared_only_when_every_sample_has_it() {
        let shared = |s: &[SampleRecord]| SampleDigest::of(s).shared_window_width();
        assert_eq!(shared(&[]), None);
        assert_eq!(shared(&[sample(Some(400.0), None, "png"), sample(Some(400.0), None, "png")]), Some(400.0));
        assert_eq!(shared(&[sample(Some(400.0), None, "png"), sample(Some(1500.0), None, "png")]), None);
        assert_eq!(shared(&[sample(Some(400.0), None, "png"), sample(None, None, "png")]), None);
        assert_eq!(shared(&[sample(None, None, "png"), sample(Some(400.0), None, "png")]), None);
        assert_eq!(shared(&[sample(Some(f64::NAN), None, "png"), sample(Some(f64::NAN), None, "png")]), None);
    }

    #[test]
    fn reading_a_samples_array_digests_it_as_adding_each_record() {
        let samples = vec![
            sample(Some(400.0), Some(Some(0.5)), "dicom"),
            sample(Some(400.0), Some(None), "png"),
            sample(None, None, "png"),
        ];
        let read: SampleDigest = serde_json::from_str(&serde_json::to_string(&samples).unwrap()).unwrap();
        assert_eq!(read, SampleDigest::of(&samples));
        assert_eq!((read.n, read.min_eps_found.clone()), (3, vec![0.5]));
        assert_eq!(read.formats.values().copied().collect::<Vec<_>>(), vec![1, 2]);
    }
}
