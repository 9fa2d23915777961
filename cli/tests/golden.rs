//! Golden pipeline tests: each directory under `tests/golden/` holds a
//! `pipeline.yaml` (with `${DIR}` for the directory and `${OUT}` for the
//! output path), an `input.jsonl` and the reviewed `expected.jsonl`. Each
//! runs with 1 and 2 workers and must match byte for byte. After a
//! deliberate change, `TIDEMARK_BLESS=1 cargo test --test golden` rewrites
//! the expected files for review.

use tidemark_testkit as common;

use common::{run_text, temp_dir};

#[test]
fn golden_pipelines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let out_dir = temp_dir("golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4);
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(case.join("pipeline.yaml")).unwrap();
        let expected_path = case.join("expected.jsonl");
        for workers in [1, 2] {
            let out = out_dir.join(format!("{name}-{workers}.jsonl"));
            let pipeline = text
                .replace("${DIR}", &case.display().to_string())
                .replace("${OUT}", &out.display().to_string());
            let report = run_text(&pipeline, workers);
            assert_eq!(report.errors, 0, "{name}");
            let got = std::fs::read_to_string(&out).unwrap();
            if std::env::var_os("TIDEMARK_BLESS").is_some() && workers == 1 {
                std::fs::write(&expected_path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!("{name}: no expected.jsonl (run with TIDEMARK_BLESS=1 and review it)")
            });
            assert_eq!(
                got, want,
                "{name} with {workers} workers differs from expected.jsonl"
            );
        }
    }
}
