//! `index.html` of a demo run: one row per entry, example | query | output | ground truth,
//! with the task, how it was asked, and the time it took.

use std::fmt::Write as _;

use super::set::Kind;

/// One finished entry, paths relative to the output directory.
pub struct Row {
    pub task: String,
    pub kind: Kind,
    pub mode: String,
    pub instruction: String,
    pub example_inputs: Vec<String>,
    pub example_output_image: Option<String>,
    pub example_output_text: Option<String>,
    pub example_instruction: Option<String>,
    pub inputs: Vec<String>,
    pub output_image: Option<String>,
    pub output_text: Option<String>,
    pub reference_image: Option<String>,
    pub reference_text: Option<String>,
    pub seconds: f64,
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn images(out: &mut String, files: &[String]) {
    for f in files {
        let _ = write!(out, r#"<img src="{}" alt="{}">"#, escape(f), escape(f));
    }
}

fn cell(out: &mut String, imgs: &[String], text: Option<&str>, caption: Option<&str>) {
    out.push_str("<td>");
    images(out, imgs);
    if let Some(t) = text {
        let _ = write!(out, r#"<p class="answer">{}</p>"#, escape(t));
    }
    if let Some(c) = caption {
        let _ = write!(out, r#"<p class="caption">{}</p>"#, escape(c));
    }
    out.push_str("</td>");
}

pub fn render(title: &str, model: &str, rows: &[Row], total_seconds: f64) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; text-align: left; }}
img {{ width: 160px; height: 160px; image-rendering: pixelated; margin-right: 4px; }}
.caption {{ color: #555; font-size: 85%; max-width: 280px; }}
.answer {{ font-family: monospace; max-width: 280px; }}
.kind {{ font-size: 85%; color: #036; }}
</style></head><body>
<h1>{t}</h1>
<p>Model: <code>{m}</code> · {n} requests in {s:.1} s. Each row shows the in-context example the
model was given, the query, the model's answer and the ground truth. Held-out tasks were never
trained on: the example is all the model knows of them. Rows marked "example only" carry no
instruction at all; the last rows answer one query under the examples of different tasks.</p>
<table>
<tr><th>task</th><th>example (input → output)</th><th>query</th><th>xprompt output</th><th>ground truth</th></tr>
"#,
        t = escape(title),
        m = escape(model),
        n = rows.len(),
        s = total_seconds
    );
    for r in rows {
        let _ = write!(
            h,
            r#"<tr><td><b>{}</b><br><span class="kind">{}</span><br>{}<br>{:.2} s</td>"#,
            escape(&r.task),
            r.kind.label(),
            escape(&r.mode),
            r.seconds
        );
        let mut ex: Vec<String> = r.example_inputs.clone();
        ex.extend(r.example_output_image.iter().cloned());
        cell(
            &mut h,
            &ex,
            r.example_output_text.as_deref(),
            r.example_instruction.as_deref(),
        );
        let instruction = if r.instruction.trim().is_empty() {
            "(no instruction: example only)"
        } else {
            r.instruction.as_str()
        };
        cell(&mut h, &r.inputs, None, Some(instruction));
        let out: Vec<String> = r.output_image.iter().cloned().collect();
        cell(&mut h, &out, r.output_text.as_deref(), None);
        let truth: Vec<String> = r.reference_image.iter().cloned().collect();
        cell(&mut h, &truth, r.reference_text.as_deref(), None);
        h.push_str("</tr>\n");
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_escaped_and_complete() {
        let row = Row {
            task: "derain".into(),
            kind: Kind::HeldOut,
            mode: "x-prompt".into(),
            instruction: "Remove <rain> & \"streaks\"".into(),
            example_inputs: vec!["a.png".into()],
            example_output_image: Some("b.png".into()),
            example_output_text: None,
            example_instruction: None,
            inputs: vec!["q.png".into()],
            output_image: Some("o.png".into()),
            output_text: None,
            reference_image: Some("t.png".into()),
            reference_text: None,
            seconds: 0.5,
        };
        let page = render("demo", "models/default", &[row], 1.0);
        assert!(page.contains("Remove &lt;rain&gt; &amp; &quot;streaks&quot;"));
        for f in ["a.png", "b.png", "q.png", "o.png", "t.png"] {
            assert!(page.contains(&format!(r#"src="{f}""#)), "{f}");
        }
        assert!(page.contains("held-out task, 1-shot"));
        assert_eq!(page.matches("<tr>").count(), 2);
    }
}
