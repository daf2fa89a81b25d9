//! DeBERTa-v3 pieces checked against transformers outside a full forward pass: the
//! log-bucketed relative positions and the v3 SentencePiece tokenizer.

use harmaug_core::GuardInput;
use harmaug_core::models::deberta_v2::relative_position;
use harmaug_core::tokenize::TextEncoder;
use harmaug_tests::{deberta_v3_tokenizer, fixture};
use serde::Deserialize;

#[derive(Deserialize)]
struct BucketTable {
    buckets: usize,
    max_position: usize,
    first_distance: i64,
    values: Vec<i64>,
}

#[test]
fn log_buckets_equal_transformers_for_every_distance() {
    let tables: Vec<BucketTable> =
        serde_json::from_slice(&std::fs::read(fixture("log_buckets.json")).unwrap()).unwrap();
    assert_eq!(tables.len(), 3);
    for table in tables {
        for (offset, &expected) in table.values.iter().enumerate() {
            let distance = table.first_distance + offset as i64;
            let ours = relative_position(distance, table.buckets, table.max_position);
            assert_eq!(
                ours, expected,
                "distance {distance} with {} buckets over {} positions",
                table.buckets, table.max_position
            );
        }
    }
}

#[derive(Deserialize)]
struct Encoding {
    prompt: String,
    response: Option<String>,
    max_length: usize,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
}

#[test]
fn deberta_v3_tokenizer_ids_equal_transformers() {
    let rows: Vec<Encoding> =
        serde_json::from_slice(&std::fs::read(fixture("deberta_v3_tokens.json")).unwrap()).unwrap();
    let json = std::fs::read(deberta_v3_tokenizer()).unwrap();
    // Parsing the 128k vocabulary takes a while: one encoder per truncation length.
    let mut encoders = std::collections::BTreeMap::new();
    for row in rows {
        let encoder = encoders
            .entry(row.max_length)
            .or_insert_with(|| TextEncoder::from_bytes(&json, row.max_length, 0).unwrap());
        let input = GuardInput {
            prompt: row.prompt.clone(),
            response: row.response.clone(),
        };
        let encoded = encoder.encode(&input).unwrap();
        assert_eq!(
            encoded.ids, row.input_ids,
            "{:?} at {}",
            row.prompt, row.max_length
        );
        assert_eq!(encoded.type_ids, row.token_type_ids, "{:?}", row.prompt);
    }
}
