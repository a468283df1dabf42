//! The bad-input suite: careless and hostile inputs to every subcommand — images, model
//! directories, checkpoints, configs, manifests, task files, databases, flags, output paths,
//! a full standard output and a full disk. Each case must exit with a clear error naming the
//! problem (or, for unusual but valid input, succeed), never panic, never change an input, and
//! leave no partial output behind. See docs/RELIABILITY.md.
//!
//! `XPROMPT_SUITE_VERBOSE=1 cargo test --release --test bad_input_suite -- --nocapture` lists
//! every case as it finishes.

#[allow(dead_code)] // each test binary uses a part of it
mod common;
mod hostile;

use hostile::runner::{case, Case, Expect::Ok as Accepted, Expect::Refused};

/// The model flags of `generate` with one good example, for cases that vary the rest.
const GEN: &[&str] = &[
    "generate",
    "--model",
    "@fx/model",
    "--example",
    "@fx/img.png=@fx/img2.png",
];

/// `generate` against a model directory that is damaged in one way.
fn model_cases() -> Vec<Case> {
    let damaged: &[(&str, &'static [&'static str])] = &[
        ("m-noconfig", &["config.json"]),
        ("m-badjson", &["config.json"]),
        ("m-config-type", &["config.json", "line 6"]),
        ("m-config-zero", &["num_attention_heads"]),
        ("m-config-heads", &["num_attention_heads"]),
        ("m-config-shapes", &["shape"]),
        ("m-config-layers", &["layers.6"]),
        ("m-config-huge", &["embed_tokens", "1099511627776"]),
        ("m-noweights", &["model.safetensors"]),
        ("m-trunc", &["model.safetensors"]),
        ("m-empty-weights", &["model.safetensors"]),
        ("m-hdr-huge", &["model.safetensors", "header"]),
        ("m-hdr-junk", &["model.safetensors", "header"]),
        ("m-nan", &["non-finite"]),
        ("m-missing-tensor", &["model.norm.weight"]),
        ("m-shape", &["lm_head.weight", "shape"]),
        ("m-dtype", &["model.norm.weight", "dtype"]),
        ("m-offsets", &["model.safetensors"]),
        ("m-notok", &["tokenizer"]),
        ("m-badtok", &["tokenizer.json"]),
        ("m-novq", &["vqgan"]),
        ("m-badyaml", &["vqgan.yaml"]),
        ("m-vq-noweights", &["vqgan"]),
        ("m-vq-trunc", &["vqgan.safetensors"]),
        ("m-file", &["m-file", "directory"]),
        ("m-emptydir", &["config.json"]),
        (
            "does-not-exist",
            &["does-not-exist", "no such model directory"],
        ),
    ];
    let mut cases = Vec::new();
    for (dir, needles) in damaged {
        let model = format!("@fx/{dir}");
        // With an instruction, so a model without its text tokenizer is asked to use it.
        let args = [
            "generate",
            "--model",
            &model,
            "--example",
            "@fx/img.png=@fx/img2.png",
            "--query",
            "@fx/img.png",
            "--prompt",
            "make it brighter",
            "--out",
            "@out",
        ];
        cases.push(case(
            &format!("generate/model/{dir}"),
            &args,
            Refused(needles),
        ));
    }
    // Other commands that load a model, against a few of the same directories.
    for dir in ["m-trunc", "m-badjson", "m-missing-tensor", "m-file"] {
        let model = format!("@fx/{dir}");
        let named: &'static [&'static str] = Box::leak(Box::new([dir]));
        cases.push(case(
            &format!("inspect/{dir}"),
            &["inspect", &model],
            Refused(named),
        ));
        cases.push(case(
            &format!("export/{dir}"),
            &["export", "--model", &model, "--out", "@out"],
            Refused(&[]),
        ));
        cases.push(case(
            &format!("quantize/{dir}"),
            &["quantize", "--model", &model, "--out", "@out"],
            Refused(&[]),
        ));
        cases.push(case(
            &format!("demo/{dir}"),
            &["demo", "--model", &model, "--out", "@out"],
            Refused(&[]),
        ));
        cases.push(case(
            &format!("compile-task/{dir}"),
            &[
                "compile-task",
                "--model",
                &model,
                "--example",
                "@fx/img.png=@fx/img2.png",
                "--out",
                "@out",
            ],
            Refused(&[]),
        ));
        cases.push(case(
            &format!("bench-decode/{dir}"),
            &[
                "bench",
                "decode",
                "--model",
                &model,
                "--gen",
                "2",
                "--prompt-len",
                "4",
            ],
            Refused(&[]),
        ));
    }
    for dir in ["q-trunc", "q-junk"] {
        let model = format!("@fx/{dir}");
        cases.push(case(
            &format!("generate/gguf/{dir}"),
            &[
                "generate",
                "--model",
                &model,
                "--example",
                "@fx/img.png=@fx/img2.png",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            Refused(&["gguf"]),
        ));
        cases.push(case(
            &format!("inspect/{dir}"),
            &["inspect", &model],
            Refused(&["gguf"]),
        ));
    }
    cases
}

/// `generate` with damaged images in every image slot.
fn image_cases() -> Vec<Case> {
    let bad: &[(&str, &'static [&'static str])] = &[
        ("empty.png", &["empty.png"]),
        ("text.png", &["text.png"]),
        ("trunc.png", &["trunc.png"]),
        ("bomb.png", &["bomb.png", "pixels"]),
        ("zero.png", &["zero.png"]),
        ("sliver.png", &["sliver.png"]),
        ("missing.png", &["missing.png"]),
        ("adir", &["adir"]),
    ];
    let mut cases = Vec::new();
    for (img, needles) in bad {
        let p = format!("@fx/{img}");
        let as_query = [GEN, &["--query", &p, "--out", "@out"]].concat();
        cases.push(case(
            &format!("generate/query/{img}"),
            &as_query,
            Refused(needles),
        ));
        let example_in = format!("{p}=@fx/img2.png");
        let args = [
            "generate",
            "--model",
            "@fx/model",
            "--example",
            &example_in,
            "--query",
            "@fx/img.png",
            "--out",
            "@out",
        ];
        cases.push(case(
            &format!("generate/example-in/{img}"),
            &args,
            Refused(needles),
        ));
        let example_out = format!("@fx/img.png={p}");
        let args = [
            "generate",
            "--model",
            "@fx/model",
            "--example",
            &example_out,
            "--query",
            "@fx/img.png",
            "--out",
            "@out",
        ];
        cases.push(case(
            &format!("generate/example-out/{img}"),
            &args,
            Refused(needles),
        ));
        cases.push(case(
            &format!("vq-encode/{img}"),
            &[
                "vq",
                "encode",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                &p,
                "--out",
                "@out",
            ],
            Refused(needles),
        ));
        cases.push(case(
            &format!("db-add/input/{img}"),
            &[
                "db",
                "add",
                "@fx/db",
                "--instruction",
                "x",
                "--task",
                "t",
                "--input",
                &p,
                "--output",
                "@fx/img2.png",
            ],
            Refused(needles),
        ));
    }
    // Unusual but valid images are converted, not refused.
    for img in ["rgba.png", "gray.png", "jpeg-named.png", "wide.png"] {
        let p = format!("@fx/{img}");
        let args = [
            GEN,
            &["--query", &p, "--out", "@out", "--max-tokens", "400"],
        ]
        .concat();
        cases.push(case(&format!("generate/valid/{img}"), &args, Accepted));
    }
    cases
}

/// Numbers and flags out of range, for generate and friends.
fn flag_cases() -> Vec<Case> {
    let q = ["--query", "@fx/img.png", "--out", "@out"];
    let bad: &[(&str, &[&str], &'static [&'static str])] = &[
        (
            "temperature-nan",
            &["--temperature", "NaN"],
            &["--temperature"],
        ),
        (
            "temperature-neg",
            &["--temperature", "-1"],
            &["--temperature"],
        ),
        (
            "temperature-zero",
            &["--temperature", "0"],
            &["--temperature"],
        ),
        (
            "temperature-inf",
            &["--temperature", "inf"],
            &["--temperature"],
        ),
        ("cfg-neg", &["--cfg", "-2"], &["--cfg"]),
        ("cfg-inf", &["--cfg", "inf"], &["--cfg"]),
        ("cfg-text", &["--cfg", "lots"], &["--cfg"]),
        ("max-tokens-zero", &["--max-tokens", "0"], &["--max-tokens"]),
        ("max-tokens-neg", &["--max-tokens", "-5"], &["--max-tokens"]),
        (
            "image-top-k-zero",
            &["--image-top-k", "0"],
            &["--image-top-k"],
        ),
        ("text-top-k-zero", &["--text-top-k", "0"], &["--text-top-k"]),
        ("seed-text", &["--seed", "abc"], &["--seed"]),
        ("size-huge", &["--size", "100000"], &["--size"]),
        ("size-zero", &["--size", "0"], &["--size"]),
        ("size-odd", &["--size", "33"], &["--size"]),
        ("weights-unknown", &["--weights", "f8"], &["--weights"]),
        ("raie-and-example", &["--raie", "@fx/db"], &["--raie"]),
        ("task-and-example", &["--task", "@fx/task.xpt"], &["--task"]),
        (
            "causal-and-xprompt",
            &["--causal", "--xprompt"],
            &["--causal"],
        ),
        ("unknown-flag", &["--frobnicate"], &["--frobnicate"]),
        ("two-out", &["--out", "@out.png"], &["--out"]),
        ("long-instruction", &["--prompt", "@long"], &["positions"]),
    ];
    let long = "word ".repeat(20_000);
    let mut cases = Vec::new();
    for (name, extra, needles) in bad {
        let extra: Vec<&str> = extra
            .iter()
            .map(|a| if *a == "@long" { long.as_str() } else { a })
            .collect();
        let args = [GEN, &q, &extra].concat();
        cases.push(case(
            &format!("generate/flag/{name}"),
            &args,
            Refused(needles),
        ));
    }
    let text_answer = format!("@fx/img.png={long}");
    let raie = |name: &str, db: &str, k: &str, needles: &'static [&'static str]| {
        case(
            &format!("generate/raie/{name}"),
            &[
                "generate",
                "--model",
                "@fx/model",
                "--raie",
                db,
                "--raie-k",
                k,
                "--prompt",
                "make it brighter",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            Refused(needles),
        )
    };
    cases.push(raie("not-a-db", "@fx/notes.txt", "1", &["notes.txt"]));
    cases.push(raie("junk-db", "@fx/db-junk", "1", &["db-junk"]));
    cases.push(raie("k-zero", "@fx/db", "0", &["--raie-k"]));
    cases.push(raie("k-huge", "@fx/db", "100000", &["--raie-k"]));
    let shaped: &[(&str, Vec<&str>, &'static [&'static str])] = &[
        (
            "no-query",
            vec!["generate", "--model", "@fx/model", "--out", "@out"],
            &["--query"],
        ),
        (
            "example-no-equals",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--example",
                "@fx/img.png",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["--example"],
        ),
        (
            "example-text-answer-huge",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--example",
                &text_answer,
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["example"],
        ),
        (
            "fifty-examples",
            [
                vec!["generate", "--model", "@fx/model"],
                ["--example", "@fx/img.png=@fx/img2.png"].repeat(50),
                vec!["--query", "@fx/img.png", "--out", "@out", "--causal"],
            ]
            .concat(),
            &["positions"],
        ),
        (
            // A model that claims 10⁸ positions: 200 examples pass the position check, and
            // their attention (~45 GB) is refused before it is allocated.
            "two-hundred-examples-memory",
            [
                vec!["generate", "--model", "@fx/m-config-longctx"],
                ["--example", "@fx/img.png=@fx/img2.png"].repeat(200),
                vec!["--query", "@fx/img.png", "--out", "@out", "--causal"],
            ]
            .concat(),
            &["GB of memory", "fewer or smaller examples"],
        ),
        (
            "task-trunc",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--task",
                "@fx/task-trunc.xpt",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["task-trunc.xpt"],
        ),
        (
            "task-flip",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--task",
                "@fx/task-flip.xpt",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["task-flip.xpt"],
        ),
        (
            "task-empty",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--task",
                "@fx/task-empty.xpt",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["task-empty.xpt"],
        ),
        (
            "task-text",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--task",
                "@fx/task-text.xpt",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["task-text.xpt"],
        ),
        (
            "task-other-model",
            vec![
                "generate",
                "--model",
                "@fx/model-q8",
                "--task",
                "@fx/task.xpt",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["task.xpt"],
        ),
        (
            "task-missing",
            vec![
                "generate",
                "--model",
                "@fx/model",
                "--task",
                "@fx/nope.xpt",
                "--query",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["nope.xpt"],
        ),
    ];
    for (name, args, needles) in shaped {
        cases.push(case(&format!("generate/{name}"), args, Refused(needles)));
    }
    cases
}

/// Output paths that must be refused: inputs, devices, directories, missing parents.
fn output_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let targets: &[(&str, &str, &'static [&'static str])] = &[
        ("query", "@fx/img.png", &["--out"]),
        ("example", "@fx/img2.png", &["--out"]),
        ("dev-null", "/dev/null", &["/dev/null"]),
        ("model-dir", "@fx/model", &["--out", "--model"]),
        ("inside-model", "@fx/model/answers", &["--out", "inside"]),
    ];
    for (name, target, needles) in targets {
        let args = [GEN, &["--query", "@fx/img.png", "--out", target]].concat();
        cases.push(case(
            &format!("generate/out/{name}"),
            &args,
            Refused(needles),
        ));
    }
    let targets: &[(&str, &str, &'static [&'static str])] = &[
        ("example", "@fx/img.png", &["--out"]),
        ("dev-null", "/dev/null", &["/dev/null"]),
        ("dir", "@fx/adir", &["adir", "directory"]),
    ];
    for (name, target, needles) in targets {
        cases.push(case(
            &format!("compile-task/out/{name}"),
            &[
                "compile-task",
                "--model",
                "@fx/model",
                "--example",
                "@fx/img.png=@fx/img2.png",
                "--out",
                target,
            ],
            Refused(needles),
        ));
    }
    for (name, target) in [
        ("image", "@fx/img.png"),
        ("dev-null", "/dev/null"),
        ("dir", "@fx/adir"),
        ("vqgan-weights", "@fx/model/vqgan/vqgan.safetensors"),
    ] {
        cases.push(case(
            &format!("vq-roundtrip/out/{name}"),
            &[
                "vq",
                "roundtrip",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/img.png",
                "--out",
                target,
            ],
            Refused(&["--out"]),
        ));
    }
    for (name, target) in [
        ("self", "@fx/model"),
        ("inside", "@fx/model/copy"),
        ("db", "@fx/db"),
    ] {
        cases.push(case(
            &format!("export/out/{name}"),
            &["export", "--model", "@fx/model", "--out", target],
            Refused(&["--out"]),
        ));
        cases.push(case(
            &format!("quantize/out/{name}"),
            &["quantize", "--model", "@fx/model", "--out", target],
            Refused(&["--out"]),
        ));
    }
    cases.push(case(
        "train/out/existing-model",
        &["train", "--config", "@fx/t-good.toml", "--out", "@fx/model"],
        Refused(&["--resume"]),
    ));
    cases.push(case(
        "train-vq/out/existing-tokenizer",
        &[
            "train-vq",
            "--config",
            "@fx/v-good.toml",
            "--images",
            "@fx/suite",
            "--out",
            "@fx/model/vqgan",
        ],
        Refused(&["--resume"]),
    ));
    cases.push(case(
        "demo/out/model-dir",
        &["demo", "--model", "@fx/model", "--out", "@fx/model"],
        Refused(&["--out"]),
    ));
    cases
}

/// A full standard output and a full disk.
fn full_cases() -> Vec<Case> {
    vec![
        case(
            "stdout-full/inspect",
            &["inspect", "@fx/model"],
            Refused(&["standard output"]),
        )
        .stdout_full(),
        case(
            "stdout-full/db-stats",
            &["db", "stats", "@fx/db"],
            Refused(&["standard output"]),
        )
        .stdout_full(),
        case(
            "stdout-full/db-search",
            &["db", "search", "@fx/db", "brighter"],
            Refused(&["standard output"]),
        )
        .stdout_full(),
        case(
            "stdout-full/generate-json",
            &[
                GEN,
                &[
                    "--query",
                    "@fx/img.png",
                    "--out",
                    "@out",
                    "--json",
                    "--max-tokens",
                    "400",
                ],
            ]
            .concat(),
            Refused(&["standard output"]),
        )
        .stdout_full(),
        case(
            "disk-full/vq-roundtrip",
            &[
                "vq",
                "roundtrip",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            Refused(&["@out"]),
        )
        .disk_full_after(100),
        case(
            "disk-full/compile-task",
            &[
                "compile-task",
                "--model",
                "@fx/model",
                "--example",
                "@fx/img.png=@fx/img2.png",
                "--out",
                "@out",
            ],
            Refused(&["@out"]),
        )
        .disk_full_after(4096),
        case(
            "disk-full/export",
            &["export", "--model", "@fx/model", "--out", "@out"],
            Refused(&[]),
        )
        .disk_full_after(1 << 20),
        case(
            "disk-full/generate",
            &[
                GEN,
                &[
                    "--query",
                    "@fx/img.png",
                    "--out",
                    "@out",
                    "--max-tokens",
                    "400",
                ],
            ]
            .concat(),
            Refused(&["@out"]),
        )
        .disk_full_after(64),
    ]
}

fn db_cases() -> Vec<Case> {
    let c = |name: &str, args: &[&str], needles: &'static [&'static str]| {
        case(&format!("db/{name}"), args, Refused(needles))
    };
    vec![
        c("create-existing", &["db", "create", "@fx/db"], &["exists"]),
        c(
            "create-dim-zero",
            &["db", "create", "@out", "--dim", "0"],
            &["dim"],
        ),
        c(
            "create-dim-huge",
            &["db", "create", "@out", "--dim", "10000000"],
            &["dim"],
        ),
        c(
            "create-embedder",
            &["db", "create", "@out", "--embedder", "word2vec"],
            &["word2vec"],
        ),
        c(
            "create-minilm-missing",
            &["db", "create", "@out", "--embedder", "minilm:@fx/adir"],
            &["adir"],
        ),
        c(
            "create-over-file",
            &["db", "create", "@fx/notes.txt"],
            &["notes.txt"],
        ),
        c(
            "add-no-output",
            &[
                "db",
                "add",
                "@fx/db",
                "--instruction",
                "x",
                "--task",
                "t",
                "--input",
                "@fx/img.png",
            ],
            &["--output"],
        ),
        c(
            "add-both-outputs",
            &[
                "db",
                "add",
                "@fx/db",
                "--instruction",
                "x",
                "--task",
                "t",
                "--input",
                "@fx/img.png",
                "--output",
                "@fx/img2.png",
                "--output-text",
                "hi",
            ],
            &["--output"],
        ),
        c(
            "add-empty-instruction",
            &[
                "db",
                "add",
                "@fx/db",
                "--instruction",
                "",
                "--task",
                "t",
                "--input",
                "@fx/img.png",
                "--output",
                "@fx/img2.png",
            ],
            &["instruction"],
        ),
        c(
            "add-wrong-embedder",
            &[
                "db",
                "add",
                "@fx/db",
                "--embedder",
                "minilm",
                "--instruction",
                "x",
                "--task",
                "t",
                "--input",
                "@fx/img.png",
                "--output",
                "@fx/img2.png",
            ],
            &["embedder"],
        ),
        c(
            "add-junk-db",
            &[
                "db",
                "add",
                "@fx/db-junk",
                "--instruction",
                "x",
                "--task",
                "t",
                "--input",
                "@fx/img.png",
                "--output",
                "@fx/img2.png",
            ],
            &["db-junk"],
        ),
        c(
            "import-badjson",
            &["db", "import", "@fx/db", "@fx/man-badjson.jsonl"],
            &["line 1"],
        ),
        c(
            "import-nofield",
            &["db", "import", "@fx/db", "@fx/man-nofield.jsonl"],
            &["instruction"],
        ),
        c(
            "import-noimage",
            &["db", "import", "@fx/db", "@fx/man-noimage.jsonl"],
            &["missing.png"],
        ),
        c(
            "import-badimage",
            &["db", "import", "@fx/db", "@fx/man-badimage.jsonl"],
            &["trunc.png"],
        ),
        c(
            "import-types",
            &["db", "import", "@fx/db", "@fx/man-types.jsonl"],
            &["line 1", "must be a string"],
        ),
        c(
            "import-both",
            &["db", "import", "@fx/db", "@fx/man-both-outputs.jsonl"],
            &["output"],
        ),
        c(
            "import-binary",
            &["db", "import", "@fx/db", "@fx/man-binary.jsonl"],
            &["line 1"],
        ),
        c(
            "import-missing",
            &["db", "import", "@fx/db", "@fx/nope.jsonl"],
            &["nope.jsonl"],
        ),
        c(
            "import-into-missing-db",
            &["db", "import", "@fx/nodb", "@fx/man-noimage.jsonl"],
            &["nodb"],
        ),
        c(
            "remove-unknown",
            &["db", "remove", "@fx/db", "0123456789abcdef"],
            &["0123456789abcdef"],
        ),
        c(
            "remove-short-prefix",
            &["db", "remove", "@fx/db", "01"],
            &["8"],
        ),
        c(
            "search-k-zero",
            &["db", "search", "@fx/db", "x", "-k", "0"],
            &["k"],
        ),
        // A k beyond the database is clamped to its size (it used to overflow a capacity).
        case(
            "db/search-k-billion",
            &["db", "search", "@fx/db", "x", "-k", "1000000000"],
            Accepted,
        ),
        c(
            "search-k-overflow",
            &[
                "db",
                "search",
                "@fx/db",
                "x",
                "-k",
                "99999999999999999999999",
            ],
            &["k"],
        ),
        c(
            "search-junk-db",
            &["db", "search", "@fx/db-junk", "x"],
            &["db-junk"],
        ),
        c("stats-file", &["db", "stats", "@fx/db-file"], &["db-file"]),
        c("verify-missing", &["db", "verify", "@fx/nodb"], &["nodb"]),
        c(
            "verify-junk",
            &["db", "verify", "@fx/db-junk"],
            &["db-junk"],
        ),
    ]
}

fn vq_cases() -> Vec<Case> {
    let c = |name: &str, args: &[&str], needles: &'static [&'static str]| {
        case(&format!("vq/{name}"), args, Refused(needles))
    };
    let dec = |codes: &str| -> Vec<String> {
        [
            "vq",
            "decode",
            "--vqgan",
            "@fx/model/vqgan",
            "--codes",
            codes,
            "--height",
            "64",
            "--width",
            "64",
            "--out",
            "@out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut cases = Vec::new();
    for (name, codes, needles) in [
        (
            "decode-bad-json",
            "@fx/codes-bad.json",
            &["codes-bad.json"][..],
        ),
        ("decode-out-of-range", "@fx/codes-range.json", &["99999"]),
        ("decode-negative", "@fx/codes-neg.json", &["codes-neg.json"]),
        (
            "decode-float",
            "@fx/codes-float.json",
            &["codes-float.json"],
        ),
        ("decode-too-few", "@fx/codes-short.json", &["3"]),
        ("decode-wrong-object", "@fx/codes-obj.json", &["codes"]),
        ("decode-missing", "@fx/nope.json", &["nope.json"]),
    ] {
        let args = dec(codes);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let needles: &'static [&'static str] = Box::leak(needles.to_vec().into_boxed_slice());
        cases.push(c(name, &args, needles));
    }
    cases.extend([
        c(
            "decode-huge",
            &[
                "vq",
                "decode",
                "--vqgan",
                "@fx/model/vqgan",
                "--codes",
                "@fx/codes-range.json",
                "--height",
                "4000000",
                "--width",
                "4000000",
                "--out",
                "@out",
            ],
            &["--height"],
        ),
        c(
            "decode-not-multiple",
            &[
                "vq",
                "decode",
                "--vqgan",
                "@fx/model/vqgan",
                "--codes",
                "@fx/codes-range.json",
                "--height",
                "60",
                "--width",
                "64",
                "--out",
                "@out",
            ],
            &["60"],
        ),
        c(
            "encode-bad-vqgan",
            &[
                "vq",
                "encode",
                "--vqgan",
                "@fx/m-badyaml/vqgan",
                "--image",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["vqgan.yaml"],
        ),
        c(
            "encode-trunc-vqgan",
            &[
                "vq",
                "encode",
                "--vqgan",
                "@fx/m-vq-trunc/vqgan",
                "--image",
                "@fx/img.png",
                "--out",
                "@out",
            ],
            &["vqgan.safetensors"],
        ),
        c(
            "encode-size-zero",
            &[
                "vq",
                "encode",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/img.png",
                "--size",
                "0",
                "--out",
                "@out",
            ],
            &["--size"],
        ),
        c(
            "encode-size-odd",
            &[
                "vq",
                "encode",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/img.png",
                "--size",
                "30",
                "--out",
                "@out",
            ],
            &["30"],
        ),
        c(
            "encode-max-pixels",
            &[
                "vq",
                "encode",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/img.png",
                "--max-pixels",
                "100",
                "--out",
                "@out",
            ],
            &["img.png"],
        ),
        case(
            "vq/roundtrip-no-resize-96px",
            &[
                "vq",
                "roundtrip",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/wide.png",
                "--no-resize",
                "--out",
                "@out",
            ],
            Accepted,
        ),
        c(
            "roundtrip-no-resize-odd",
            &[
                "vq",
                "roundtrip",
                "--vqgan",
                "@fx/model/vqgan",
                "--image",
                "@fx/odd.png",
                "--no-resize",
                "--out",
                "@out",
            ],
            &["odd.png", "downsampling"],
        ),
        c(
            "eval-empty-dir",
            &[
                "vq",
                "eval",
                "--vqgan",
                "@fx/model/vqgan",
                "--images",
                "@fx/noimages",
            ],
            &["noimages"],
        ),
        c(
            "eval-missing-list",
            &[
                "vq",
                "eval",
                "--vqgan",
                "@fx/model/vqgan",
                "--images",
                "@fx/images-missing.txt",
            ],
            &["does/not/exist.png"],
        ),
        c(
            "eval-corrupt",
            &[
                "vq",
                "eval",
                "--vqgan",
                "@fx/model/vqgan",
                "--images",
                "@fx/images-corrupt.txt",
            ],
            &["trunc.png"],
        ),
        c(
            "convert-trunc",
            &[
                "vq",
                "convert",
                "--vqgan",
                "@fx/vq-ckpt-trunc",
                "--out",
                "@out",
            ],
            &["vqgan.ckpt"],
        ),
        c(
            "convert-junk",
            &[
                "vq",
                "convert",
                "--vqgan",
                "@fx/vq-ckpt-junk",
                "--out",
                "@out",
            ],
            &["vqgan.ckpt"],
        ),
        c(
            "convert-empty",
            &[
                "vq",
                "convert",
                "--vqgan",
                "@fx/vq-ckpt-empty",
                "--out",
                "@out",
            ],
            &["vqgan.ckpt"],
        ),
        c(
            "convert-yaml-wrong",
            &[
                "vq",
                "convert",
                "--vqgan",
                "@fx/vq-yaml-wrong",
                "--out",
                "@out",
            ],
            &["vqgan.yaml"],
        ),
        c(
            "convert-no-ckpt",
            &["vq", "convert", "--vqgan", "@fx/adir", "--out", "@out"],
            &["adir"],
        ),
        c(
            "convert-onto-input",
            &[
                "vq",
                "convert",
                "--vqgan",
                "@fx/vq",
                "--out",
                "@fx/vq/vqgan.ckpt",
            ],
            &["--out"],
        ),
    ]);
    cases
}

fn train_cases() -> Vec<Case> {
    let t = |name: &str, config: &str, needles: &'static [&'static str]| {
        case(
            &format!("train/{name}"),
            &[
                "train",
                "--config",
                &format!("@fx/{config}"),
                "--out",
                "@out",
            ],
            Refused(needles),
        )
    };
    let v = |name: &str, config: &str, images: &str, needles: &'static [&'static str]| {
        case(
            &format!("train-vq/{name}"),
            &[
                "train-vq",
                "--config",
                &format!("@fx/{config}"),
                "--images",
                &format!("@fx/{images}"),
                "--out",
                "@out",
            ],
            Refused(needles),
        )
    };
    vec![
        t("syntax", "t-syntax.toml", &["t-syntax.toml"]),
        t("unknown-key", "t-unknown.toml", &["stepz"]),
        t("negative-lr", "t-neglr.toml", &["lr"]),
        t("nan-lr", "t-nanlr.toml", &["lr"]),
        t("wrong-type", "t-type.toml", &["steps"]),
        t("heads", "t-heads.toml", &["num_attention_heads"]),
        t("hidden-zero", "t-hidden0.toml", &["hidden_size"]),
        t("batch-zero", "t-batch0.toml", &["batch_samples"]),
        t("context-short", "t-ctx-short.toml", &["context_len"]),
        t(
            "no-manifest",
            "t-nomanifest.toml",
            &["nowhere/manifest.jsonl"],
        ),
        t("no-store", "t-nostore.toml", &["nostore"]),
        t("no-vqgan", "t-novqgan.toml", &["/nonexistent/vqgan"]),
        t("dropout", "t-dropout.toml", &["dropout"]),
        t("memory", "t-huge.toml", &["memory"]),
        t("empty-config", "t-empty.toml", &["t-empty.toml"]),
        t("missing-config", "nope.toml", &["nope.toml"]),
        case(
            "train/minutes-zero",
            &[
                "train",
                "--config",
                "@fx/t-good.toml",
                "--out",
                "@out",
                "--minutes",
                "0",
            ],
            Refused(&["--minutes"]),
        ),
        case(
            "train/minutes-nan",
            &[
                "train",
                "--config",
                "@fx/t-good.toml",
                "--out",
                "@out",
                "--minutes",
                "nan",
            ],
            Refused(&["--minutes"]),
        ),
        // --resume with nothing to resume starts at step 0 and says so.
        case(
            "train/resume-nothing",
            &[
                "train",
                "--config",
                "@fx/t-good.toml",
                "--out",
                "@out",
                "--resume",
            ],
            Accepted,
        ),
        v("syntax", "v-syntax.toml", "suite", &["v-syntax.toml"]),
        v("negative-lr", "v-neglr.toml", "suite", &["lr"]),
        v("crop", "v-crop.toml", "suite", &["crop"]),
        v("groups", "v-groups.toml", "suite", &["GroupNorm"]),
        v("unknown-key", "v-unknown.toml", "suite", &["learning"]),
        v("batch-zero", "v-batch0.toml", "suite", &["batch_size"]),
        v("no-images", "v-good.toml", "noimages", &["noimages"]),
        v(
            "missing-images",
            "v-good.toml",
            "images-missing.txt",
            &["does/not/exist.png"],
        ),
        v(
            "corrupt-images",
            "v-good.toml",
            "images-corrupt.txt",
            &["trunc.png"],
        ),
    ]
}

fn data_eval_demo_cases() -> Vec<Case> {
    let c = |name: &str, args: &[&str], needles: &'static [&'static str]| {
        case(name, args, Refused(needles))
    };
    vec![
        c(
            "data-validate/bad",
            &["data", "validate", "@fx/suite-bad"],
            &["suite-bad"],
        ),
        c(
            "data-validate/missing",
            &["data", "validate", "@fx/nosuite"],
            &["nosuite"],
        ),
        c(
            "data-build/no-sources",
            &["data", "build", "--sources", "@fx/adir", "--out", "@out"],
            &["adir"],
        ),
        c(
            "data-build/size",
            &[
                "data",
                "build",
                "--sources",
                "@fx/adir",
                "--out",
                "@out",
                "--size",
                "30",
            ],
            &["--size"],
        ),
        c(
            "eval/bad-suite",
            &[
                "eval",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite-bad",
                "--out",
                "@out",
            ],
            &["suite-bad"],
        ),
        c(
            "eval/unknown-task",
            &[
                "eval",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--tasks",
                "teleport",
                "--out",
                "@out",
            ],
            &["teleport"],
        ),
        c(
            "eval/shots",
            &[
                "eval",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--shots",
                "one",
                "--out",
                "@out",
            ],
            &["--shots"],
        ),
        c(
            "eval/split",
            &[
                "eval",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--split",
                "holdout",
                "--out",
                "@out",
            ],
            &["holdout"],
        ),
        c(
            "eval/sources",
            &[
                "eval",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--sources",
                "web",
                "--out",
                "@out",
            ],
            &["web"],
        ),
        c(
            "eval/temperature",
            &[
                "eval",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--temperature",
                "-1",
                "--out",
                "@out",
            ],
            &["--temperature"],
        ),
        c(
            "eval/bad-model",
            &[
                "eval",
                "--model",
                "@fx/m-trunc",
                "--suite",
                "@fx/suite",
                "--out",
                "@out",
            ],
            &["model.safetensors"],
        ),
        c(
            "eval-icl/types",
            &[
                "eval-icl",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--types",
                "alien",
                "--out",
                "@out",
            ],
            &["alien"],
        ),
        c(
            "eval-icl/queries-zero",
            &[
                "eval-icl",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--queries",
                "0",
                "--out",
                "@out",
            ],
            &["--queries"],
        ),
        c(
            "eval-icl/mask",
            &[
                "eval-icl",
                "--model",
                "@fx/model",
                "--suite",
                "@fx/suite",
                "--mask",
                "sideways",
                "--out",
                "@out",
            ],
            &["sideways"],
        ),
        c(
            "demo/missing-image",
            &[
                "demo",
                "--model",
                "@fx/model",
                "--set",
                "@fx/demo-missing",
                "--out",
                "@out",
            ],
            &["demo-missing"],
        ),
        c(
            "demo/bad-json",
            &[
                "demo",
                "--model",
                "@fx/model",
                "--set",
                "@fx/demo-bad",
                "--out",
                "@out",
            ],
            &["demo.json"],
        ),
        c(
            "demo/format",
            &[
                "demo",
                "--model",
                "@fx/model",
                "--set",
                "@fx/demo-format",
                "--out",
                "@out",
            ],
            &["xprompt-demo/99"],
        ),
        c(
            "demo/weights",
            &[
                "demo",
                "--model",
                "@fx/model",
                "--weights",
                "int3",
                "--out",
                "@out",
            ],
            &["--weights"],
        ),
        c(
            "export/dtype",
            &[
                "export",
                "--model",
                "@fx/model",
                "--out",
                "@out",
                "--dtype",
                "f12",
            ],
            &["f12"],
        ),
        c(
            "export/tolerance",
            &[
                "export",
                "--model",
                "@fx/model",
                "--out",
                "@out",
                "--max-rel-logit-error",
                "nan",
            ],
            &["--max-rel-logit-error"],
        ),
        c(
            "quantize/type",
            &[
                "quantize",
                "--model",
                "@fx/model",
                "--out",
                "@out",
                "--type",
                "q2_x",
            ],
            &["q2_x"],
        ),
        c(
            "quantize/gguf-input",
            &["quantize", "--model", "@fx/model-q8", "--out", "@out"],
            &["already quantized"],
        ),
        c(
            "pretokenize/bad-manifest",
            &[
                "pretokenize",
                "--manifest",
                "@fx/man-badjson.jsonl",
                "--vqgan",
                "@fx/model/vqgan",
                "--out",
                "@out",
            ],
            &["man-badjson.jsonl"],
        ),
        c(
            "pretokenize/missing-image",
            &[
                "pretokenize",
                "--manifest",
                "@fx/man-noimage.jsonl",
                "--vqgan",
                "@fx/model/vqgan",
                "--out",
                "@out",
            ],
            &["missing.png"],
        ),
        c(
            "pretokenize/size",
            &[
                "pretokenize",
                "--manifest",
                "@fx/suite/manifest.jsonl",
                "--vqgan",
                "@fx/model/vqgan",
                "--out",
                "@out",
                "--size",
                "7",
            ],
            &["--size"],
        ),
        c(
            "pretokenize/batch-zero",
            &[
                "pretokenize",
                "--manifest",
                "@fx/suite/manifest.jsonl",
                "--vqgan",
                "@fx/model/vqgan",
                "--out",
                "@out",
                "--batch",
                "0",
            ],
            &["--batch"],
        ),
        c(
            "serve/addr",
            &["serve", "--model", "@fx/model", "--addr", "not-an-address"],
            &["--addr"],
        ),
        c(
            "serve/bad-model",
            &["serve", "--model", "@fx/m-trunc"],
            &["model.safetensors"],
        ),
        c(
            "serve/max-batch-zero",
            &["serve", "--model", "@fx/model", "--max-batch", "0"],
            &["--max-batch"],
        ),
        c(
            "serve/db-junk",
            &["serve", "--model", "@fx/model", "--db", "@fx/db-junk"],
            &["db-junk"],
        ),
        c(
            "bench/preset",
            &["bench", "decode", "--preset", "900b"],
            &["900b"],
        ),
        c(
            "bench/random-checkpoint-shape",
            &[
                "bench",
                "random-checkpoint",
                "--shape",
                "gpt5",
                "--out",
                "@out",
            ],
            &["gpt5"],
        ),
        c(
            "bench/random-checkpoint-existing",
            &[
                "bench",
                "random-checkpoint",
                "--shape",
                "tiny",
                "--out",
                "@fx/model",
            ],
            &["--out"],
        ),
        c("unknown-command", &["teleport"], &["teleport"]),
    ]
}

#[test]
fn every_bad_input_is_refused_clearly_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = tmp.path().join("fx");
    hostile::fixtures::build(&fx);
    let before = hostile::runner::content_snapshot(&fx);

    let cases: Vec<Case> = [
        model_cases(),
        image_cases(),
        flag_cases(),
        output_cases(),
        full_cases(),
        db_cases(),
        vq_cases(),
        train_cases(),
        data_eval_demo_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        cases.len() >= 150,
        "the suite has only {} cases",
        cases.len()
    );
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(&c.name), "two cases are called {}", c.name);
    }

    let failures = hostile::runner::run_all(&cases, &fx, &tmp.path().join("out"), 2);
    let after = hostile::runner::content_snapshot(&fx);
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, h)| after.get(*p) != Some(h))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        failures.is_empty() && changed.is_empty(),
        "{} of {} cases failed:\n\n{}\n\ninputs changed by the suite: {changed:?}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
