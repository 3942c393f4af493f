//! The fuzz targets' bodies (`hakmem_tests::fuzz`) on stable: every input of
//! the committed corpus (`fuzz/corpus/<target>/`, which holds the inputs of
//! every finding too), then inputs from a seeded generator.

use std::path::PathBuf;

use hakmem_tests::fuzz;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "empty corpus {}", dir.display());
    v
}

fn run(target: &str, body: fn(&[u8]), seeds: u64) {
    for (path, data) in corpus(target) {
        eprintln!("{target}: {}", path.display());
        body(&data);
    }
    for seed in 0..seeds {
        let len = 64 + (seed as usize * 97) % 4000;
        body(&fuzz::random_input(seed, len));
    }
}

#[test]
fn core_corpus_and_random() {
    run("core", fuzz::core_actions, 64);
}

#[test]
fn region_corpus_and_random() {
    run("region", fuzz::region, 64);
}
