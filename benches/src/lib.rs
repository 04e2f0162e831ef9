//! Benchmarks of kache side by side with kube-runtime; the benches live in `benches/`.
