"""The workshop: the local lab, benchmarks, offline tools and the toolchain build."""
