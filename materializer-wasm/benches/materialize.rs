//! Native materialization timings: snapshot text + patch texts in, document bytes out (parse
//! and serialization included, as in the browser benchmark).
//!
//! `cargo bench -p patchbay-materializer --bench materialize` generates a 1,000-node workflow and
//! times 100, 1,000 and 10,000 patches. To time the exact data the browser benchmark uses, set
//! `MATERIALIZER_BENCH_SNAPSHOT` (a document) and `MATERIALIZER_BENCH_PATCHES` (a JSON array of
//! patches). One JSON object per line on stdout: {"patches", "runs", "best_ms", "median_ms"}.

use std::time::Instant;

use patchbay_materializer::Materializer;
use serde_json::{Value, json};

fn workflow(nodes: usize) -> String {
    let node = |i: usize| {
        let kind = ["http", "log", "transform"][i % 3];
        json!({
            "id": format!("n{i}"), "type": kind,
            "config": {"url": format!("https://example.com/{i}"), "retries": 3, "timeout": 1.5},
            "position": {"x": i as f64 * 10.0, "y": (i % 37) as f64}
        })
    };
    let edges: Vec<Value> = (1..nodes)
        .map(|i| json!({"from": format!("n{}", i / 2), "to": format!("n{i}")}))
        .collect();
    let nodes: Vec<Value> = (0..nodes).map(node).collect();
    json!({"name": "bench", "nodes": nodes, "edges": edges}).to_string()
}

fn patches(count: usize, nodes: usize) -> String {
    let patch = |p: usize| {
        let i = (p * 7919) % nodes;
        match p % 4 {
            0 => {
                json!([{"op": "replace", "path": format!("/nodes/{i}/config/url"), "value": format!("https://x/{p}")}])
            }
            1 => json!([{"op": "test", "path": "/name", "value": "bench"},
                        {"op": "add", "path": format!("/nodes/{i}/config/tag{p}"), "value": {"a": p}}]),
            2 => {
                json!([{"op": "add", "path": "/edges/-", "value": {"from": "n0", "to": format!("n{i}")}}])
            }
            _ => {
                json!([{"op": "replace", "path": format!("/nodes/{i}/position"), "value": {"x": p, "y": 1.25}}])
            }
        }
    };
    Value::Array((0..count).map(patch).collect()).to_string()
}

fn time(snapshot: &str, patches: &str, count: usize) {
    let runs = if count >= 10_000 { 20 } else { 100 };
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut m = Materializer::from_slice(snapshot.as_bytes(), 0).expect("snapshot");
            m.apply_slice(patches.as_bytes()).expect("patches apply");
            std::hint::black_box(m.to_json_bytes());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"patches": count, "runs": runs, "best_ms": samples[0], "median_ms": samples[runs / 2]})
    );
}

fn main() {
    let given = (
        std::env::var("MATERIALIZER_BENCH_SNAPSHOT"),
        std::env::var("MATERIALIZER_BENCH_PATCHES"),
    );
    if let (Ok(snapshot), Ok(patches)) = given {
        let snapshot = std::fs::read_to_string(snapshot).expect("read snapshot");
        let patches = std::fs::read_to_string(patches).expect("read patches");
        let count = serde_json::from_str::<Vec<Value>>(&patches).map_or(0, |p| p.len());
        time(&snapshot, &patches, count);
        return;
    }
    let snapshot = workflow(1000);
    for count in [100, 1000, 10_000] {
        time(&snapshot, &patches(count, 1000), count);
    }
}
