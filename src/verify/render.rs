//! The human-readable form of a [`Report`] (kiln diff, kiln verify).

use super::diff::Report;

/// Human-readable report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    if r.identical {
        s.push_str(&format!("identical: {}\n", r.digest_a));
        return s;
    }
    s.push_str(&format!("different: {} vs {}\n", r.digest_a, r.digest_b));
    for line in &r.summary {
        s.push_str(&format!("  * {line}\n"));
    }
    if !r.config.is_empty() {
        s.push_str("config:\n");
        for f in &r.config {
            s.push_str(&format!("  {}: {} -> {}\n", f.field, f.a, f.b));
        }
    }
    for l in &r.layers {
        s.push_str(&format!(
            "layer {}: {} -> {}{}\n",
            l.index,
            l.digest_a,
            l.digest_b,
            if l.diff_id_equal {
                " (same diff_id: compression only)"
            } else {
                ""
            }
        ));
        for f in &l.files {
            s.push_str(&format!("  {} {}\n", f.change, f.path));
            for x in &f.fields {
                s.push_str(&format!("    {}: {} -> {}\n", x.field, x.a, x.b));
            }
            for sec in &f.sections {
                s.push_str(&format!(
                    "    section {}: {} byte(s) differ; looks like {}: {:?} vs {:?}\n",
                    sec.name, sec.bytes_differ, sec.looks_like, sec.sample_a, sec.sample_b
                ));
            }
            if let Some(t) = &f.text {
                for line in t.lines() {
                    s.push_str(&format!("    {line}\n"));
                }
            }
        }
    }
    s
}
