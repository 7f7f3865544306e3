"""Small deterministic environments shipped with rlops for tests, examples and benchmarks."""
