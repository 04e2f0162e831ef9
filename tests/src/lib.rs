//! End-to-end and fault tests for kache; the tests live in `tests/`.
