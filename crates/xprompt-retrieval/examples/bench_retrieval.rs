//! Retrieval benchmark: exact vs HNSW search on synthetic clustered unit embeddings, and
//! database import/search throughput with the lexical embedder. Prints markdown tables.
//!
//! ```text
//! cargo run --release -p xprompt-retrieval --example bench_retrieval -- \
//!     --sizes 1000,10000,100000,1000000 --dim 384 --queries 200 --import 1000,100000
//! ```

use std::io::Write;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xprompt_retrieval::embed::l2_normalise;
use xprompt_retrieval::embed::lexical::LexicalParams;
use xprompt_retrieval::index::ann::{AnnIndex, AnnParams};
use xprompt_retrieval::index::exact;
use xprompt_retrieval::{Database, EmbedderChoice, SearchMode};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn list(s: &str) -> Vec<usize> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("number"))
        .collect()
}

fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller.
    let u: f32 = rng.random_range(1e-7..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// `n` unit vectors in clusters of about 50 (like near-duplicate instructions), plus queries
/// that are noisy copies of random database rows.
fn synthetic(
    n: usize,
    dim: usize,
    queries: usize,
    seed: u64,
    noise: f32,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centers = (n / 50).max(1);
    let mut c = vec![0f32; centers * dim];
    c.iter_mut().for_each(|x| *x = gauss(&mut rng));
    c.chunks_exact_mut(dim).for_each(l2_normalise);
    let mut m = vec![0f32; n * dim];
    for row in m.chunks_exact_mut(dim) {
        let k = rng.random_range(0..centers);
        for (x, cx) in row.iter_mut().zip(&c[k * dim..(k + 1) * dim]) {
            *x = cx + noise * gauss(&mut rng);
        }
        l2_normalise(row);
    }
    let qs = (0..queries)
        .map(|_| {
            let r = rng.random_range(0..n);
            let mut q: Vec<f32> = m[r * dim..(r + 1) * dim]
                .iter()
                .map(|x| x + 0.5 * noise * gauss(&mut rng))
                .collect();
            l2_normalise(&mut q);
            q
        })
        .collect();
    (m, qs)
}

fn index_bench(
    sizes: &[usize],
    dim: usize,
    queries: usize,
    params: AnnParams,
    ann_max: usize,
    noise: f32,
) {
    println!("\n### Search on synthetic embeddings (dim {dim}, clusters of ~50, noise sigma {noise}, {queries} queries, M={}, ef_construction={}, ef_search={})\n",
        params.max_connections, params.ef_construction, params.ef_search);
    println!(
        "| rows | exact query (ms) | HNSW build (s) | HNSW query (ms) | recall@1 | recall@10 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let (m, qs) = synthetic(n, dim, queries, n as u64, noise);
        let t = Instant::now();
        let exact_hits: Vec<_> = qs
            .iter()
            .map(|q| exact::search(&m, dim, q, 10, None))
            .collect();
        let exact_ms = t.elapsed().as_secs_f64() * 1e3 / queries as f64;
        if n > ann_max {
            println!("| {n} | {exact_ms:.3} | (skipped) | | | |");
            continue;
        }
        let t = Instant::now();
        let ann = AnnIndex::build(&m, dim, params);
        let build_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ann_hits: Vec<_> = qs.iter().map(|q| ann.search(q, 10, None)).collect();
        let ann_ms = t.elapsed().as_secs_f64() * 1e3 / queries as f64;
        let mut r1 = 0usize;
        let mut r10 = 0usize;
        for (e, a) in exact_hits.iter().zip(&ann_hits) {
            // Ties in score count as found.
            if a.first()
                .is_some_and(|h| (h.score - e[0].score).abs() < 1e-6)
            {
                r1 += 1;
            }
            r10 += e
                .iter()
                .filter(|x| a.iter().any(|y| y.row == x.row))
                .count();
        }
        println!(
            "| {n} | {exact_ms:.3} | {build_s:.1} | {ann_ms:.3} | {:.3} | {:.3} |",
            r1 as f64 / queries as f64,
            r10 as f64 / (10 * queries) as f64
        );
        std::io::stdout().flush().ok();
    }
}

const VERBS: &[&str] = &[
    "make", "turn", "change", "add", "remove", "replace", "put", "erase", "paint", "convert",
];
const OBJS: &[&str] = &[
    "the sky",
    "the dog",
    "the car",
    "the house",
    "the tree",
    "the shirt",
    "the cat",
    "the road",
    "the boat",
    "the flowers",
    "the man",
    "the table",
];
const MODS: &[&str] = &[
    "into a panda",
    "blue",
    "at night",
    "in winter",
    "with snow",
    "like a watercolor",
    "in red",
    "golden",
    "smaller",
    "on fire",
    "made of glass",
    "covered in moss",
];

fn import_bench(sizes: &[usize], queries: usize) {
    println!(
        "\n### Database import and search (lexical embedder, dim {})\n",
        LexicalParams::default().dim
    );
    println!("| examples | import (examples/s) | import total (s) | open (s) | search incl. embedding (ms) | log (MB) | index (MB) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let t = tempfile::tempdir().expect("tempdir");
        let imgs = t.path().join("imgs");
        std::fs::create_dir_all(&imgs).expect("mkdir");
        for i in 0..32u32 {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                image::Rgb([(i * 8) as u8, (x * 30) as u8, (y * 30) as u8])
            });
            img.save(imgs.join(format!("{i}.png"))).expect("png");
        }
        let manifest = t.path().join("manifest.jsonl");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        {
            let mut f =
                std::io::BufWriter::new(std::fs::File::create(&manifest).expect("manifest"));
            for i in 0..n {
                let ins = format!(
                    "{} {} {} #{i}",
                    VERBS[rng.random_range(0..VERBS.len())],
                    OBJS[rng.random_range(0..OBJS.len())],
                    MODS[rng.random_range(0..MODS.len())]
                );
                let task = format!("task{}", i % 20);
                writeln!(
                    f,
                    r#"{{"task":"{task}","family":"editing","instruction":"{ins}","input":"imgs/{}.png","output":"imgs/{}.png","split":"train"}}"#,
                    i % 32,
                    (i + 1) % 32
                )
                .expect("write");
            }
        }
        let dbp = t.path().join("db");
        let mut db = Database::create(&dbp, &EmbedderChoice::Lexical(LexicalParams::default()))
            .expect("create");
        let t0 = Instant::now();
        let rep = db.import_manifest(&manifest).expect("import");
        let import_s = t0.elapsed().as_secs_f64();
        assert_eq!(
            rep.added,
            n,
            "{:?}",
            &rep.skipped[..rep.skipped.len().min(3)]
        );
        drop(db);
        let t0 = Instant::now();
        let db = Database::open(&dbp, &Default::default()).expect("open");
        let open_s = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for q in 0..queries {
            let hits = db
                .search(
                    &format!(
                        "{} {} {}",
                        VERBS[q % VERBS.len()],
                        OBJS[q % OBJS.len()],
                        MODS[q % MODS.len()]
                    ),
                    1,
                    None,
                    SearchMode::Exact,
                )
                .expect("search");
            assert_eq!(hits.len(), 1);
        }
        let search_ms = t0.elapsed().as_secs_f64() * 1e3 / queries as f64;
        let st = db.stats().expect("stats");
        println!(
            "| {n} | {:.0} | {import_s:.2} | {open_s:.2} | {search_ms:.2} | {:.1} | {:.1} |",
            n as f64 / import_s,
            st.log_bytes as f64 / 1e6,
            st.index_bytes as f64 / 1e6
        );
        std::io::stdout().flush().ok();
    }
}

fn main() {
    let sizes = list(&arg("--sizes", "1000,10000,100000"));
    let dim: usize = arg("--dim", "384").parse().expect("dim");
    let queries: usize = arg("--queries", "200").parse().expect("queries");
    let imports = list(&arg("--import", "1000"));
    let noise: f32 = arg("--noise", "0.025").parse().expect("noise");
    let ann_max: usize = arg("--ann-max", "1000000").parse().expect("ann-max");
    let params = AnnParams {
        max_connections: arg("--m", "16").parse().expect("m"),
        ef_construction: arg("--ef-construction", "100").parse().expect("efc"),
        ef_search: arg("--ef-search", "64").parse().expect("efs"),
    };
    println!(
        "threads available: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if !sizes.is_empty() {
        index_bench(&sizes, dim, queries, params, ann_max, noise);
    }
    if !imports.is_empty() {
        import_bench(&imports, queries);
    }
}
