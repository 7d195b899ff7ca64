"""ctxstore benchmarks: ``python -m bench [--quick] [--only SECTION]`` prints one table."""
