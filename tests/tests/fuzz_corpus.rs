//! The fuzz targets' bodies (`hakmem_tests::fuzz`) on stable: every input of
//! the committed corpus (`fuzz/corpus/<target>/`, which holds the inputs of
//! every finding too), then inputs from a seeded generator.

use hakmem_tests::fuzz;

#[test]
fn core_corpus_and_random() {
    fuzz::replay("core", fuzz::core_actions, 64);
}

#[test]
fn region_corpus_and_random() {
    fuzz::replay("region", fuzz::region, 64);
}
