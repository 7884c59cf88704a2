//! `junit.xml`: one `<testcase>` per gate requirement (when a verdict is
//! given) and one per trust check, for CI systems that display JUnit. A
//! failed requirement or a `fail` check is a `<failure>`; a `warn` check
//! passes with its detail in `<system-out>`. Rendered from [`Results`] and
//! the [`Verdict`] only.

// Rendered from results.json with its per-sample records digested (see super::digest).
use super::digest::Summary as Results;
use super::json::Status;
use crate::gate::Verdict;
use std::fmt::Write as _;

/// XML 1.0 text and attribute escaping; control characters XML cannot carry
/// (everything below U+0020 but tab, newline, carriage return) are dropped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

struct Case {
    class: &'static str,
    name: String,
    failure: Option<String>,
    out: Option<String>,
}

fn suite(s: &mut String, name: &str, cases: &[Case]) {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let _ =
        writeln!(s, r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="0">"#, esc(name), cases.len());
    for c in cases {
        let _ = write!(s, r#"    <testcase classname="{}" name="{}""#, c.class, esc(&c.name));
        if c.failure.is_none() && c.out.is_none() {
            let _ = writeln!(s, "/>");
            continue;
        }
        let _ = writeln!(s, ">");
        if let Some(f) = &c.failure {
            let _ = writeln!(s, r#"      <failure message="{0}">{0}</failure>"#, esc(f));
        }
        if let Some(o) = &c.out {
            let _ = writeln!(s, "      <system-out>{}</system-out>", esc(o));
        }
        let _ = writeln!(s, "    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
}

pub fn render(r: &Results, verdict: Option<&Verdict>) -> String {
    let gate: Vec<Case> = verdict
        .map(|v| {
            v.outcomes
                .iter()
                .map(|o| Case {
                    class: "advscan.gate",
                    name: o.requirement.clone(),
                    failure: (!o.passed).then(|| format!("measured {}, limit {}", o.measured, o.limit)),
                    out: o.passed.then(|| format!("measured {}, limit {}", o.measured, o.limit)),
                })
                .collect()
        })
        .unwrap_or_default();
    let checks: Vec<Case> = r
        .checks
        .iter()
        .map(|c| Case {
            class: "advscan.checks",
            name: c.name.clone(),
            failure: (c.status == Status::Fail).then(|| c.detail.clone()),
            out: (c.status != Status::Fail)
                .then(|| format!("{}: {}", format!("{:?}", c.status).to_lowercase(), c.detail)),
        })
        .collect();
    let tests = gate.len() + checks.len();
    let failures = gate.iter().chain(&checks).filter(|c| c.failure.is_some()).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        r#"<testsuites name="advscan {}" tests="{tests}" failures="{failures}" errors="0">"#,
        esc(&r.model.path)
    );
    if verdict.is_some() {
        suite(&mut s, "gate", &gate);
    }
    suite(&mut s, "trust checks", &checks);
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(esc("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
