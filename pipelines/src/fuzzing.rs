//! The fuzz target for pipeline definitions (`fuzz/`, cargo fuzz): the
//! compiler must answer any text with a plan or located errors, never a
//! panic. The wire formats' targets are in `tidemark_codecs::fuzzing`.

/// A pipeline definition (YAML), as `validate` and the API read it.
pub fn pipeline(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(errors) = crate::compile("fuzz.yaml", text)
    {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(e.pos.line >= 1 && e.pos.column >= 1, "{e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_survive_mutations() {
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/pipelines/quickstart.yaml"
        ))
        .unwrap();
        pipeline(&seed);
        tidemark_codecs::fuzzing::mutations(&seed, 300).for_each(|data| pipeline(&data));
    }
}
